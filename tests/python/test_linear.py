"""Linear attention (Gated DeltaNet, KDA) from Python: forward, backward and decode on the CPU backend against a
float64 recurrence written here from semantics.md section 5 (gradients: its central differences), for NumPy
and (where installed) torch autograd; bad input."""

import numpy as np
import pytest

import attnkit


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(q, k, v, g, beta, *, variant="gdn", scale=None, initial_state=None, l2norm_qk=False,
              gate="log_decay", A_log=None, dt_bias=None, gate_lower_bound=-5.0, beta_form="value",
              cu_seqlens=None):
    """(out [B, T, HV, V], final state [N, HV, K, V]) in float64, one token at a time (the output reads
    the state after the token is written)."""
    q, k, v, g, beta = (np.asarray(a, np.float64) for a in (q, k, v, g, beta))
    batch, tokens, heads, key_dim = q.shape
    heads_v, value_dim = v.shape[2], v.shape[3]
    group = heads_v // heads
    scale = key_dim ** -0.5 if scale is None else scale
    if l2norm_qk:
        q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6)
        k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    if gate != "log_decay":
        bias = 0.0 if dt_bias is None else np.asarray(dt_bias, np.float64)
        a = np.exp(np.asarray(A_log, np.float64))
        a = a[:, None] if variant == "kda" else a
        g = -a * softplus(g + bias) if gate == "softplus" else gate_lower_bound * sigmoid(a * (g + bias))
    if beta_form == "sigmoid":
        beta = sigmoid(beta)
    elif beta_form == "two_sigmoid":
        beta = 2 * sigmoid(beta)
    spans = [(b, 0, tokens) for b in range(batch)] if cu_seqlens is None else \
        [(0, int(cu_seqlens[n]), int(cu_seqlens[n + 1])) for n in range(len(cu_seqlens) - 1)]
    out = np.zeros(v.shape)
    final = np.zeros((len(spans), heads_v, key_dim, value_dim))
    for n, (b, begin, end) in enumerate(spans):
        for j in range(heads_v):
            h = j // group
            state = np.zeros((key_dim, value_dim)) if initial_state is None else \
                np.asarray(initial_state[n, j], np.float64).copy()
            for t in range(begin, end):
                decay = np.exp(g[b, t, j])
                state = state * (decay[:, None] if variant == "kda" else decay)
                state = state + beta[b, t, j] * np.outer(k[b, t, h], v[b, t, j] - state.T @ k[b, t, h])
                out[b, t, j] = state.T @ (scale * q[b, t, h])
            final[n, j] = state
    return out, final


def inputs(batch=2, tokens=37, heads=2, group=2, key_dim=16, value_dim=24, variant="gdn", seed=0, fused=False):
    rng = np.random.default_rng(seed)
    heads_v = heads * group
    q = rng.standard_normal((batch, tokens, heads, key_dim)).astype(np.float32)
    k = (rng.standard_normal((batch, tokens, heads, key_dim)) / np.sqrt(key_dim)).astype(np.float32)
    v = rng.standard_normal((batch, tokens, heads_v, value_dim)).astype(np.float32)
    gate_shape = (batch, tokens, heads_v) + ((key_dim,) if variant == "kda" else ())
    if fused:  # raw gate values and beta logits
        g = rng.standard_normal(gate_shape).astype(np.float32)
        beta = rng.standard_normal((batch, tokens, heads_v)).astype(np.float32)
    else:
        g = -rng.uniform(0.01, 1.0, gate_shape).astype(np.float32)  # log decays from weak to strong
        beta = rng.uniform(0.0, 1.0, (batch, tokens, heads_v)).astype(np.float32)
    return q, k, v, g, beta


def assert_close(got, expected, rms_bound=5e-4):
    """fp32 against float64: the section 6 RMS ratio (well inside its 0.005) and no NaN."""
    assert not np.isnan(got).any()
    rms = np.sqrt(np.mean((got - expected) ** 2)) / np.sqrt(np.mean(expected ** 2))
    assert rms < rms_bound, f"rms error ratio {rms:.2e}"


@pytest.mark.parametrize("variant", ["gdn", "kda"])
def test_forward_matches_the_recurrence_with_states(variant):
    q, k, v, g, beta = inputs(variant=variant)
    rng = np.random.default_rng(1)
    initial = rng.standard_normal((2, 4, 16, 24)).astype(np.float32)
    out, final = attnkit.linear_attention(q, k, v, g, beta, variant=variant, initial_state=initial,
                                          output_final_state=True)
    assert out.shape == v.shape and out.dtype == np.float32 and final.shape == (2, 4, 16, 24)
    expected_out, expected_final = reference(q, k, v, g, beta, variant=variant, initial_state=initial)
    assert_close(out, expected_out)
    assert_close(final, expected_final)


@pytest.mark.parametrize("variant", ["gdn", "kda"])
@pytest.mark.parametrize("gate", ["softplus", "lower_bound_sigmoid"])
def test_fused_options(variant, gate):
    q, k, v, g, beta = inputs(variant=variant, fused=True, seed=2)
    rng = np.random.default_rng(3)
    A_log = rng.uniform(-1.0, 0.5, 4).astype(np.float32)
    dt_bias = rng.standard_normal((4, 16) if variant == "kda" else 4).astype(np.float32)
    options = dict(variant=variant, l2norm_qk=True, gate=gate, A_log=A_log, dt_bias=dt_bias, gate_lower_bound=-3.0,
                   beta_form="two_sigmoid", scale=0.3)
    out = attnkit.linear_attention(q, k, v, g, beta, **options)
    assert_close(out, reference(q, k, v, g, beta, **options)[0])


def test_varlen_and_the_vk_state_layout():
    q, k, v, g, beta = inputs(batch=1, tokens=41, seed=4)
    cu_seqlens = np.array([0, 5, 5, 41], np.int32)  # an empty sequence in the middle
    out, final = attnkit.linear_attention(q, k, v, g, beta, cu_seqlens=cu_seqlens, output_final_state=True,
                                          state_layout="vk")
    expected_out, expected_final = reference(q, k, v, g, beta, cu_seqlens=cu_seqlens)
    assert final.shape == (3, 4, 24, 16)
    assert_close(out, expected_out)
    assert_close(final, expected_final.transpose(0, 1, 3, 2))
    assert np.all(final[1] == 0)  # the empty sequence keeps its zero initial state


def test_decode_steps_continue_the_forward_and_skip_padding_slots():
    q, k, v, g, beta = inputs(batch=2, tokens=12, seed=5)
    prefix_out, state = attnkit.linear_attention(q[:, :10], k[:, :10], v[:, :10], g[:, :10], beta[:, :10],
                                                 output_final_state=True)
    expected_out, _ = reference(q, k, v, g, beta)
    # The two states in a pool of 3, sequence 0 in slot 2 and sequence 1 in slot 0; slot 1 stays untouched.
    pool = np.full((3,) + state.shape[1:], 7.0, np.float32)
    pool[2], pool[0] = state[0], state[1]
    indices = np.array([2, 0], np.int32)
    for t in (10, 11):
        step = slice(t, t + 1)
        out = attnkit.linear_decode(q[:, step], k[:, step], v[:, step], g[:, step], beta[:, step], pool,
                                    state_indices=indices)
        assert_close(out, expected_out[:, step])
    assert np.all(pool[1] == 7.0)
    padded = np.array([-1, 0], np.int32)
    out = attnkit.linear_decode(q[:, :1], k[:, :1], v[:, :1], g[:, :1], beta[:, :1], pool, state_indices=padded)
    assert np.all(out[0] == 0)


def test_bad_input():
    q, k, v, g, beta = inputs()
    with pytest.raises(ValueError, match=r"variant: expected one of gdn, kda, got 'mamba'"):
        attnkit.linear_attention(q, k, v, g, beta, variant="mamba")
    with pytest.raises(ValueError, match=r"v: expected rank 4"):
        attnkit.linear_attention(q, k, v[0], g, beta)
    with pytest.raises(ValueError, match=r"^g: "):
        attnkit.linear_attention(q, k, v, g[..., :3], beta)
    with pytest.raises(ValueError, match=r"A_log"):
        attnkit.linear_attention(q, k, v, g, beta, gate="softplus")
    with pytest.raises(NotImplementedError, match=r"backend sm90 cannot run this call"):
        attnkit.linear_attention(q, k, v, g, beta, backend="sm90")
    state = np.zeros((2, 4, 16, 24), np.float32)
    state.flags.writeable = False
    with pytest.raises(ValueError, match=r"state: is read-only"):
        attnkit.linear_decode(q[:, :1], k[:, :1], v[:, :1], g[:, :1], beta[:, :1], state)


GRADIENT_CASE = dict(batch=1, tokens=6, heads=1, group=2, key_dim=4, value_dim=3)


def gradient_problem(variant):
    """A tiny fused problem (every gradient output in use) and the weights of L = <dout, out> +
    <dfinal, final>."""
    q, k, v, g, beta = inputs(variant=variant, fused=True, seed=7, **GRADIENT_CASE)
    rng = np.random.default_rng(8)
    tensors = dict(q=q, k=k, v=v, g=g, beta=beta,
                   initial_state=rng.standard_normal((1, 2, 4, 3)).astype(np.float32),
                   A_log=rng.uniform(-1.0, 0.5, 2).astype(np.float32),
                   dt_bias=rng.standard_normal((2, 4) if variant == "kda" else 2).astype(np.float32))
    options = dict(variant=variant, l2norm_qk=True, gate="softplus", beta_form="sigmoid")
    dout = rng.standard_normal(v.shape).astype(np.float32)
    dfinal = rng.standard_normal((1, 2, 4, 3)).astype(np.float32)
    return tensors, options, dout, dfinal


def finite_difference_gradients(tensors, options, dout, dfinal, step=1e-6):
    def loss(values):
        out, final = reference(**values, **options)
        return float((out * dout).sum() + (final * dfinal).sum())

    base = {name: np.asarray(a, np.float64) for name, a in tensors.items()}
    gradients = {}
    for name, array in base.items():
        gradient = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            plus, minus = dict(base), dict(base)
            plus[name], minus[name] = array.copy(), array.copy()
            plus[name][index] += step
            minus[name][index] -= step
            gradient[index] = (loss(plus) - loss(minus)) / (2 * step)
        gradients[name] = gradient
    return gradients


@pytest.mark.parametrize("variant", ["gdn", "kda"])
def test_backward_matches_finite_differences_of_the_recurrence(variant):
    tensors, options, dout, dfinal = gradient_problem(variant)
    got = attnkit.linear_attention_backward(dout, **tensors, dfinal_state=dfinal, **options)
    expected = finite_difference_gradients(tensors, options, dout, dfinal)
    for name in tensors:
        gradient = getattr(got, "d_initial_state" if name == "initial_state" else "d" + name)
        assert gradient.shape == tensors[name].shape and gradient.dtype == np.float32, name
        scale = np.abs(expected[name]).max()
        assert np.abs(gradient - expected[name]).max() <= 1e-4 * scale + 1e-6, name


def test_torch_autograd_and_no_autograd_for_decode():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    tensors, options, dout, dfinal = gradient_problem("kda")
    leaves = {name: torch.from_numpy(a).requires_grad_(True) for name, a in tensors.items()}
    out, final = attnkit.linear_attention(**leaves, output_final_state=True, **options)
    assert isinstance(out, torch.Tensor) and final.dtype == torch.float32
    expected_out, expected_final = reference(**tensors, **options)
    assert_close(out.detach().numpy(), expected_out)
    assert_close(final.detach().numpy(), expected_final)
    ((out * torch.from_numpy(dout)).sum() + (final * torch.from_numpy(dfinal)).sum()).backward()
    direct = attnkit.linear_attention_backward(dout, **tensors, dfinal_state=dfinal, **options)
    for name, leaf in leaves.items():
        expected = getattr(direct, "d_initial_state" if name == "initial_state" else "d" + name)
        assert np.array_equal(leaf.grad.numpy(), expected), name
    q, k, v, g, beta = (leaves[name][:, :1] for name in ("q", "k", "v", "g", "beta"))
    state = torch.zeros(1, 2, 4, 3)
    with pytest.raises(NotImplementedError, match=r"linear_decode: no autograd"):
        attnkit.linear_decode(q, k, v, g, beta, state, variant="kda")
