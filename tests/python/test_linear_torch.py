"""PyTorch ops for linear attention: attnkit::linear_fwd, attnkit::linear_bwd and attnkit::linear_decode
(opcheck: schema, fake implementations, autograd registration), torch.compile(fullgraph=True) of the
forward, backward and decode without graph breaks, the op path against the eager path. CPU tensors (the
CPU backend). Skipped where torch is absent."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI runs the NumPy tests without it)")

import attnkit  # noqa: E402  (after torch: registers the torch.library ops at import)

# The option arguments of the ops, in schema order: variant, scale, l2norm_qk, gate, gate_lower_bound,
# beta_form, state_layout, backend.
FUSED = dict(variant="kda", l2norm_qk=True, gate="softplus", beta_form="sigmoid")
FUSED_ARGS = ("kda", None, True, "softplus", -5.0, "sigmoid", "kv", "auto")
PLAIN_ARGS = ("gdn", 0.4, False, "log_decay", -5.0, "value", "vk", "cpu")


def problem(variant="kda", batch=2, tokens=7, heads=1, group=2, key_dim=4, value_dim=3, fused=True, seed=0,
            requires_grad=True):
    """Inputs as a dict (q, k, v, g, beta, A_log, dt_bias, initial_state), each a leaf."""
    gen = torch.Generator().manual_seed(seed)
    heads_v = heads * group
    gate_shape = (batch, tokens, heads_v) + ((key_dim,) if variant == "kda" else ())
    made = dict(q=torch.randn(batch, tokens, heads, key_dim, generator=gen),
                k=torch.randn(batch, tokens, heads, key_dim, generator=gen) / key_dim ** 0.5,
                v=torch.randn(batch, tokens, heads_v, value_dim, generator=gen))
    if fused:
        made["g"] = torch.randn(gate_shape, generator=gen)
        made["beta"] = torch.randn(batch, tokens, heads_v, generator=gen)
        made["A_log"] = torch.rand(heads_v, generator=gen) - 0.5
        made["dt_bias"] = torch.randn((heads_v, key_dim) if variant == "kda" else (heads_v,), generator=gen)
    else:
        made["g"] = -torch.rand(gate_shape, generator=gen) * 0.9 - 0.01
        made["beta"] = torch.rand(batch, tokens, heads_v, generator=gen)
    made["initial_state"] = torch.randn(batch, heads_v, key_dim, value_dim, generator=gen)
    return {name: t.requires_grad_(requires_grad) for name, t in made.items()}


def forward_args(t, options, output_final_state=True, cu_seqlens=None):
    return (t["q"], t["k"], t["v"], t["g"], t["beta"], t.get("A_log"), t.get("dt_bias"), t.get("initial_state"),
            cu_seqlens) + options + (output_final_state,)


# ---- opcheck. ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_final_state", [True, False])
def test_opcheck_linear_fwd_fused(output_final_state):
    t = problem()
    torch.library.opcheck(torch.ops.attnkit.linear_fwd.default, forward_args(t, FUSED_ARGS, output_final_state))


def test_opcheck_linear_fwd_gdn_varlen_vk_layout():
    t = problem(variant="gdn", batch=1, tokens=9, fused=False)
    cu_seqlens = torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    t["initial_state"] = torch.randn(3, 2, 3, 4, requires_grad=True)  # vk layout: [N, HV, V, K]
    torch.library.opcheck(torch.ops.attnkit.linear_fwd.default, forward_args(t, PLAIN_ARGS, True, cu_seqlens))


@pytest.mark.parametrize("with_dfinal", [True, False])
def test_opcheck_linear_bwd(with_dfinal):
    t = problem(requires_grad=False)
    out, final_state = torch.ops.attnkit.linear_fwd(*forward_args(t, FUSED_ARGS))
    dfinal = torch.randn_like(final_state) if with_dfinal else None
    args = (torch.randn_like(out), dfinal) + forward_args(t, FUSED_ARGS)[:-1]
    torch.library.opcheck(torch.ops.attnkit.linear_bwd.default, args)
    # Without the optional inputs their gradients are empty placeholders.
    plain = problem(variant="gdn", fused=False, requires_grad=False)
    del plain["initial_state"]
    args = (torch.randn_like(out), None) + forward_args(plain, PLAIN_ARGS)[:-1]
    torch.library.opcheck(torch.ops.attnkit.linear_bwd.default, args)
    grads = torch.ops.attnkit.linear_bwd(*args)
    assert [tuple(grad.shape) for grad in grads[5:]] == [(0,), (0,), (0,)]


def test_opcheck_linear_decode():
    t = problem(tokens=1, requires_grad=False)
    state = torch.randn(3, 2, 4, 3)
    indices = torch.tensor([2, 0], dtype=torch.int32)
    args = (t["q"], t["k"], t["v"], t["g"], t["beta"], t["A_log"], t["dt_bias"], state, indices) + FUSED_ARGS
    torch.library.opcheck(torch.ops.attnkit.linear_decode.default, args)


# ---- The op path against the eager path. --------------------------------------------------------------


def loss_of(out, final_state):
    return (out * out).sum() + (final_state * final_state).sum() * 0.5


def test_op_autograd_matches_eager_autograd_bitwise():
    t = problem()
    leaves = tuple(t.values())
    eager_out, eager_final = attnkit.linear_attention(**t, output_final_state=True, **FUSED)
    assert type(eager_out.grad_fn).__name__ == "_LinearAttentionBackward"
    eager_grads = torch.autograd.grad(loss_of(eager_out, eager_final), leaves)
    op_out, op_final = torch.ops.attnkit.linear_fwd(*forward_args(t, FUSED_ARGS))
    op_grads = torch.autograd.grad(loss_of(op_out, op_final), leaves)
    assert torch.equal(eager_out, op_out) and torch.equal(eager_final, op_final)
    for name, eager, op in zip(t, eager_grads, op_grads):
        assert torch.equal(eager, op), name
    # linear_attention_backward (no autograd) gives the same gradients.
    direct = attnkit.linear_attention_backward(2 * eager_out.detach(), *(t[n].detach() for n in "q k v g beta".split()),
                                               dfinal_state=eager_final.detach(),
                                               A_log=t["A_log"].detach(), dt_bias=t["dt_bias"].detach(),
                                               initial_state=t["initial_state"].detach(), **FUSED)
    for name, grad in zip(("q", "k", "v", "g", "beta"), direct[:5]):
        assert torch.equal(grad, eager_grads[list(t).index(name)]), name


def _train_step(q, k, v, g, beta, A_log, dt_bias, initial_state):
    out, final_state = attnkit.linear_attention(q, k, v, g, beta, A_log=A_log, dt_bias=dt_bias,
                                                initial_state=initial_state, output_final_state=True, **FUSED)
    return loss_of(out, final_state)


def test_compile_fullgraph_forward_and_backward_without_graph_breaks():
    torch._dynamo.reset()
    t = problem()
    leaves = tuple(t.values())
    explanation = torch._dynamo.explain(_train_step)(*leaves)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1

    compiled = torch.compile(_train_step, fullgraph=True, backend="aot_eager")
    loss = compiled(*leaves)
    compiled_grads = torch.autograd.grad(loss, leaves)
    eager_loss = _train_step(*leaves)
    eager_grads = torch.autograd.grad(eager_loss, leaves)
    torch.testing.assert_close(loss, eager_loss, rtol=0, atol=0)
    for name, compiled_grad, eager_grad in zip(t, compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-6, msg=name)


def test_compile_out_only_gdn_varlen_and_backward_function():
    """Without output_final_state (the placeholder output carries no gradient), varlen, and
    linear_attention_backward itself inside the graph."""
    torch._dynamo.reset()
    t = problem(variant="gdn", batch=1, tokens=9, fused=False)
    del t["initial_state"]
    cu_seqlens = torch.tensor([0, 4, 9], dtype=torch.int32)

    def step(q, k, v, g, beta):
        out = attnkit.linear_attention(q, k, v, g, beta, cu_seqlens=cu_seqlens, scale=0.4)
        return out.sum()

    def backward(dout, q, k, v, g, beta):
        return attnkit.linear_attention_backward(dout, q, k, v, g, beta, cu_seqlens=cu_seqlens, scale=0.4)

    leaves = tuple(t.values())
    compiled_grads = torch.autograd.grad(torch.compile(step, fullgraph=True, backend="aot_eager")(*leaves), leaves)
    eager_grads = torch.autograd.grad(step(*leaves), leaves)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-6)
    detached = [x.detach() for x in leaves]
    dout = torch.ones_like(detached[2])
    got = torch.compile(backward, fullgraph=True, backend="aot_eager")(dout, *detached)
    expected = backward(dout, *detached)
    assert isinstance(got, attnkit.LinearGradients) and got.dA_log is None and got.d_initial_state is None
    for compiled_grad, eager_grad in zip(got[:5], expected[:5]):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-6)
    for compiled_grad, eager_grad in zip(got[:5], eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-6)


def test_compile_decode_updates_the_state_in_place():
    torch._dynamo.reset()
    t = problem(tokens=1, requires_grad=False)
    indices = torch.tensor([2, 0], dtype=torch.int32)

    def step(q, k, v, g, beta, state):
        return attnkit.linear_decode(q, k, v, g, beta, state, state_indices=indices, A_log=t["A_log"],
                                     dt_bias=t["dt_bias"], **FUSED)

    inputs = [t[name] for name in ("q", "k", "v", "g", "beta")]
    pool = torch.randn(3, 2, 4, 3)
    eager_state, compiled_state = pool.clone(), pool.clone()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for _ in range(2):  # two steps: the second reads the state the first wrote
        eager_out = step(*inputs, eager_state)
        compiled_out = compiled(*inputs, compiled_state)
        torch.testing.assert_close(compiled_out, eager_out, rtol=0, atol=0)
        torch.testing.assert_close(compiled_state, eager_state, rtol=0, atol=0)
    assert torch.equal(compiled_state[1], pool[1])  # slot 1 is no sequence's
    assert not torch.equal(compiled_state[0], pool[0])


def test_errors_on_the_op_path():
    torch._dynamo.reset()
    t = problem(requires_grad=False)

    def bad_rank(q, k, v, g, beta):
        return attnkit.linear_attention(q, k, v[0], g, beta)

    with pytest.raises(Exception, match=r"v: expected rank 4"):
        torch.compile(bad_rank, fullgraph=True, backend="aot_eager")(t["q"], t["k"], t["v"], t["g"], t["beta"])
    with torch.enable_grad():
        q = t["q"].clone().requires_grad_(True)

        def decode(q, k, v, g, beta, state):
            return attnkit.linear_decode(q, k, v, g, beta, state, variant="kda")

        with pytest.raises(Exception, match=r"linear_decode: no autograd"):
            torch.compile(decode, fullgraph=True, backend="aot_eager")(
                q[:, :1], t["k"][:, :1], t["v"][:, :1], t["g"][:, :1], t["beta"][:, :1], torch.zeros(2, 2, 4, 3))
