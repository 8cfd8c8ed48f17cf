"""PyTorch: autograd (against finite differences in float64 and the float64 reference), the torch.library
ops and their fake implementations (opcheck), torch.compile(fullgraph=True) without graph breaks, and on
a GPU: the current stream, no host synchronisation, bf16/fp16 accuracy. Skipped where torch is absent."""

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI runs the NumPy tests without it)")

import attnkit  # noqa: E402  (after torch: registers the torch.library ops at import)
from reference import attention_reference  # noqa: E402
from support import check_backward, check_forward  # noqa: E402

BUILD = attnkit.build_info()
HAS_GPU_KERNELS = "sm80-forward" in BUILD.compiled_backends and "sm80-backward" in BUILD.compiled_backends
CUDA = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
needs_gpu = pytest.mark.skipif(not (CUDA and HAS_GPU_KERNELS),
                               reason=f"needs an sm_80+ GPU (found: {CUDA}) and a build with the sm80 kernels "
                                      f"(compiled: {' '.join(BUILD.compiled_backends)})")


def numpy_of(t):
    return t.detach().float().cpu().numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()


def tensors(shape_q, shape_k, shape_v, dtype=torch.float32, device="cpu", seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    made = [torch.randn(s, generator=generator).to(dtype=dtype, device=device) for s in (shape_q, shape_k, shape_v)]
    for t in made:
        t.requires_grad_(requires_grad)
    return made


def bf16_numpy(t):
    """A bf16 torch tensor as an ml_dtypes bf16 NumPy array (the reference's low-precision input)."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bf16 reference inputs need ml_dtypes")
    return t.detach().cpu().view(torch.int16).numpy().view(ml_dtypes.bfloat16)


def reference_inputs(*ts):
    return [bf16_numpy(t) if t.dtype == torch.bfloat16 else t.detach().cpu().numpy() for t in ts]


# ---- The ops. ---------------------------------------------------------------------------------------


def test_ops_are_registered():
    assert torch.ops.attnkit.dense_fwd.default is not None
    assert torch.ops.attnkit.dense_bwd.default is not None


def test_fast_path_and_op_path_agree_bitwise():
    q, k, v = tensors((2, 9, 4, 32), (2, 11, 2, 32), (2, 11, 2, 32))
    with torch.no_grad():
        fast = attnkit.attention(q, k, v, causal=True)
    op_out, _ = torch.ops.attnkit.dense_fwd(q, k, v, None, None, None, 0, 0, None, True, -1, -1, 0.0, False, "auto")
    assert torch.equal(fast, op_out)
    check_forward(fast.numpy(), None, q.numpy(), k.numpy(), v.numpy(), causal=True)


def test_eager_autograd_and_op_autograd_agree_bitwise():
    """attnkit.attention on plain tensors records _EagerAttention, not the op: both must give the same
    outputs and gradients (sinks included)."""
    q, k, v = tensors((2, 9, 4, 32), (2, 11, 2, 32), (2, 11, 2, 32), seed=3, requires_grad=True)
    sinks = torch.randn(4, requires_grad=True)
    dout = torch.randn(2, 9, 4, 32)
    eager_out, eager_lse = attnkit.attention(q, k, v, sinks=sinks, causal=True, return_lse=True)
    assert type(eager_out.grad_fn).__name__ == "_EagerAttentionBackward"
    eager_grads = torch.autograd.grad(eager_out, (q, k, v, sinks), dout)
    op_out, op_lse = torch.ops.attnkit.dense_fwd(q, k, v, sinks, None, None, 0, 0, None, True, -1, -1, 0.0, False,
                                                 "auto")
    op_grads = torch.autograd.grad(op_out, (q, k, v, sinks), dout)
    assert torch.equal(eager_out, op_out) and torch.equal(eager_lse, op_lse)
    for eager, op in zip(eager_grads, op_grads):
        assert torch.equal(eager, op)


def test_opcheck_forward_and_backward():
    q, k, v = tensors((1, 5, 2, 16), (1, 7, 1, 16), (1, 7, 1, 16), requires_grad=True)
    sinks = torch.randn(2, requires_grad=True)
    forward_args = (q, k, v, sinks, None, None, 0, 0, 0.5, True, 3, 0, 4.0, False, "auto")
    torch.library.opcheck(torch.ops.attnkit.dense_fwd.default, forward_args)
    out, lse = torch.ops.attnkit.dense_fwd(*forward_args)
    backward_args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, sinks.detach(),
                     None, None, 0, 0, 0.5, True, 3, 0, 4.0, True, "auto")
    torch.library.opcheck(torch.ops.attnkit.dense_bwd.default, backward_args)


def test_opcheck_varlen():
    q, k, v = tensors((9, 2, 16), (7, 2, 16), (7, 2, 16), requires_grad=True)
    cu_q = torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 2, 5, 7], dtype=torch.int32)
    torch.library.opcheck(torch.ops.attnkit.dense_fwd.default,
                          (q, k, v, None, cu_q, cu_k, 5, 3, None, True, -1, -1, 0.0, False, "auto"))


# ---- Autograd. --------------------------------------------------------------------------------------


def test_autograd_matches_finite_differences_in_float64():
    """d(sum(out * w))/d(q, k, v, sinks) from autograd (fp32 CPU backward) against central differences of
    the float64 reference forward."""
    q, k, v = tensors((1, 4, 2, 8), (1, 5, 1, 8), (1, 5, 1, 8), seed=1, requires_grad=True)
    sinks = torch.randn(2, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    options = {"causal": True, "softcap": 3.0, "scale": 0.6}
    weights = torch.randn(1, 4, 2, 8, generator=torch.Generator().manual_seed(3))
    out = attnkit.attention(q, k, v, sinks=sinks, **options)
    (out * weights).sum().backward()

    arrays = [x.detach().double().numpy().copy() for x in (q, k, v, sinks)]
    w = weights.double().numpy()

    def loss():
        o, _ = attention_reference(arrays[0], arrays[1], arrays[2], sinks=arrays[3], **options)
        return float(np.sum(o * w))

    step = 1e-6
    for index, tensor in enumerate((q, k, v, sinks)):
        numeric = np.zeros_like(arrays[index])
        for position in np.ndindex(arrays[index].shape):
            saved = arrays[index][position]
            arrays[index][position] = saved + step
            plus = loss()
            arrays[index][position] = saved - step
            minus = loss()
            arrays[index][position] = saved
            numeric[position] = (plus - minus) / (2 * step)
        analytic = tensor.grad.double().numpy()
        scale = max(1.0, np.abs(numeric).max())
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=2e-5 * scale, err_msg=f"input {index}")


AUTOGRAD_CASES = {
    "gqa_causal": ((2, 9, 4, 32), (2, 13, 2, 32), {"causal": True}),
    "window_softcap_sinks": ((1, 17, 2, 32), (1, 17, 1, 32), {"window": (4, 1), "softcap": 2.0, "sinks": True}),
    "empty_rows": ((1, 9, 2, 32), (1, 4, 2, 32), {"causal": True}),
}


@pytest.mark.parametrize("name", list(AUTOGRAD_CASES))
def test_autograd_matches_the_reference(name):
    shape_q, shape_k, options = AUTOGRAD_CASES[name]
    options = dict(options)
    q, k, v = tensors(shape_q, shape_k, shape_k, seed=4, requires_grad=True)
    sinks = None
    if options.pop("sinks", False):
        sinks = torch.randn(shape_q[2]).requires_grad_(True)
    out = attnkit.attention(q, k, v, sinks=sinks, **options)
    dout = torch.randn_like(out)
    out.backward(dout)
    reference_options = dict(options, sinks=None if sinks is None else sinks.detach().numpy())
    gradients = (q.grad.numpy(), k.grad.numpy(), v.grad.numpy(), None if sinks is None else sinks.grad.numpy())
    check_backward(gradients, dout.numpy(), q.detach().numpy(), k.detach().numpy(), v.detach().numpy(),
                   **reference_options)


def test_autograd_varlen():
    lengths_q, lengths_k = [3, 0, 6], [4, 5, 2]
    cu_q = torch.tensor(np.concatenate([[0], np.cumsum(lengths_q)]), dtype=torch.int32)
    cu_k = torch.tensor(np.concatenate([[0], np.cumsum(lengths_k)]), dtype=torch.int32)
    q, k, v = tensors((9, 4, 16), (11, 2, 16), (11, 2, 16), seed=5, requires_grad=True)
    out = attnkit.attention_varlen(q, k, v, cu_q, cu_k, 6, 5, causal=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    check_backward((q.grad.numpy(), k.grad.numpy(), v.grad.numpy(), None), dout.numpy(), q.detach().numpy(),
                   k.detach().numpy(), v.detach().numpy(), causal=True, cu_seqlens_q=cu_q.numpy(),
                   cu_seqlens_k=cu_k.numpy())


def test_lse_is_returned_without_gradient_and_expanded_gradients_work():
    q, k, v = tensors((1, 5, 2, 16), (1, 5, 2, 16), (1, 5, 2, 16), requires_grad=True)
    out, lse = attnkit.attention(q, k, v, return_lse=True)
    assert out.requires_grad and not lse.requires_grad
    out.sum().backward()  # dout is an expanded tensor (stride 0): made contiguous for the library
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_parameters_go_through_autograd():
    """Parameters (learned sinks, say) take the eager path and get the op path's gradients."""
    q, k, v = tensors((1, 5, 2, 16), (1, 5, 2, 16), (1, 5, 2, 16))
    q = torch.nn.Parameter(q)
    sinks = torch.nn.Parameter(torch.randn(2))
    out = attnkit.attention(q, k, v, sinks=sinks)
    assert type(out.grad_fn).__name__ == "_EagerAttentionBackward"
    out.sum().backward()
    op_out, _ = torch.ops.attnkit.dense_fwd(q, k, v, sinks, None, None, 0, 0, None, False, -1, -1, 0.0, False, "auto")
    op_grads = torch.autograd.grad(op_out.sum(), (q, sinks))
    assert torch.equal(q.grad, op_grads[0]) and torch.equal(sinks.grad, op_grads[1])


# ---- torch.compile. ---------------------------------------------------------------------------------


def _train_step(q, k, v, sinks):
    out = attnkit.attention(q, k, v, causal=True, sinks=sinks, softcap=5.0)
    return (out * out).sum()


def test_compile_fullgraph_forward_and_backward_without_graph_breaks():
    torch._dynamo.reset()
    q, k, v = tensors((1, 8, 2, 16), (1, 8, 2, 16), (1, 8, 2, 16), requires_grad=True)
    sinks = torch.randn(2, requires_grad=True)
    explanation = torch._dynamo.explain(_train_step)(q, k, v, sinks)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1

    compiled = torch.compile(_train_step, fullgraph=True, backend="aot_eager")
    loss = compiled(q, k, v, sinks)
    loss.backward()
    compiled_grads = [t.grad.clone() for t in (q, k, v, sinks)]
    for t in (q, k, v, sinks):
        t.grad = None
    _train_step(q, k, v, sinks).backward()
    torch.testing.assert_close(loss, _train_step(q, k, v, sinks))
    for compiled_grad, t in zip(compiled_grads, (q, k, v, sinks)):
        torch.testing.assert_close(compiled_grad, t.grad)


def test_compile_varlen_inference():
    torch._dynamo.reset()
    q, k, v = tensors((9, 2, 16), (7, 2, 16), (7, 2, 16))
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 3, 7], dtype=torch.int32)

    def run(q, k, v):
        return attnkit.attention_varlen(q, k, v, cu_q, cu_k, 5, 4, causal=True, return_lse=True)

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(q, k, v), run(q, k, v)):
        torch.testing.assert_close(got, expected)


# ---- Errors with torch tensors. ---------------------------------------------------------------------


def test_torch_errors():
    q, k, v = tensors((1, 5, 2, 16), (1, 5, 2, 16), (1, 5, 2, 16))
    with pytest.raises(TypeError, match=r"k: expected a torch.Tensor \(like q\), got numpy.ndarray"):
        attnkit.attention(q, k.numpy(), v)
    with pytest.raises(ValueError, match=r"q: the last dimension must be contiguous"):
        attnkit.attention(q.transpose(1, 3).contiguous().transpose(1, 3), k, v)
    with pytest.raises(ValueError, match=r"q: dtype torch.int64 is not supported"):
        attnkit.attention(q.long(), k, v)
    with pytest.raises(ValueError, match=r"q: expected rank 4"):
        attnkit.attention(q[0].requires_grad_(True), k, v)  # the op path checks ranks before tracing


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_on_a_build_without_gpu_kernels_list_every_reason():
    if HAS_GPU_KERNELS:
        pytest.skip("this build has the sm80 kernels")
    q, k, v = tensors((1, 5, 2, 16), (1, 5, 2, 16), (1, 5, 2, 16), dtype=torch.bfloat16, device="cuda")
    with pytest.raises(NotImplementedError) as error:
        attnkit.attention(q, k, v)
    message = str(error.value)
    assert "no backend can run this call" in message
    for backend in ("sm90:", "sm80:", "cpu: tensors are on cuda:0, not the CPU"):
        assert backend in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_devices_are_a_value_error():
    q, k, v = tensors((1, 5, 2, 16), (1, 5, 2, 16), (1, 5, 2, 16), dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"k: is on cuda:0 but q is on cpu"):
        attnkit.attention(q, k.cuda(), v)


# ---- out= and lse_out=. ------------------------------------------------------------------------------


def test_out_and_lse_out_are_written_and_returned():
    q, k, v = tensors((2, 9, 4, 32), (2, 11, 2, 32), (2, 11, 2, 16), seed=3)
    expected_out, expected_lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    out = torch.full((2, 9, 4, 16), float("nan"))
    lse = torch.full((2, 4, 9), float("nan"))
    with torch.no_grad():
        got_out, got_lse = attnkit.attention(q, k, v, causal=True, return_lse=True, out=out, lse_out=lse)
    assert got_out is out and got_lse is lse
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    # lse_out is written without return_lse too; out may be a strided view (last dimension contiguous).
    wide = torch.full((2, 9, 4, 40), float("nan"))
    lse.fill_(float("nan"))
    assert attnkit.attention(q, k, v, causal=True, out=wide[..., 8:24], lse_out=lse) is not None
    assert torch.equal(wide[..., 8:24], expected_out) and torch.equal(lse, expected_lse)
    assert torch.isnan(wide[..., :8]).all() and torch.isnan(wide[..., 24:]).all(), "written outside the view"


def test_out_varlen_and_the_op_path():
    q, k, v = tensors((9, 4, 32), (11, 2, 32), (11, 2, 32), seed=4)
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 11], dtype=torch.int32)
    expected = attnkit.attention_varlen(q, k, v, cu_q, cu_k, 5, 6, causal=True)
    out = torch.full_like(expected, float("nan"))
    assert attnkit.attention_varlen(q, k, v, cu_q, cu_k, 5, 6, causal=True, out=out) is out
    assert torch.equal(out, expected)
    # Traced (torch.compile): the op's result is copied into out, without a graph break.
    torch._dynamo.reset()

    def step(q, k, v, out):
        attnkit.attention_varlen(q, k, v, cu_q, cu_k, 5, 6, causal=True, out=out)
        return out * 2

    out.fill_(float("nan"))
    doubled = torch.compile(step, fullgraph=True, backend="aot_eager")(q, k, v, out)
    assert torch.equal(out, expected) and torch.equal(doubled, expected * 2)


def test_out_errors():
    q, k, v = tensors((1, 8, 2, 16), (1, 8, 2, 16), (1, 8, 2, 16), seed=5)
    with pytest.raises(ValueError, match=r"out"):
        attnkit.attention(q, k, v, out=torch.empty(1, 8, 2, 8))
    with pytest.raises(ValueError, match=r"out"):
        attnkit.attention(q, k, v, out=torch.empty(1, 8, 2, 16, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"lse"):
        attnkit.attention(q, k, v, lse_out=torch.empty(1, 8, 2))
    with pytest.raises(ValueError, match=r"out.*(contiguous|stride)"):
        attnkit.attention(q, k, v, out=torch.empty(1, 8, 16, 2).transpose(2, 3))
    with pytest.raises(ValueError, match=r"overlaps input"):
        attnkit.attention(q, k, v, out=q)
    with pytest.raises(TypeError, match=r"out: expected a torch.Tensor"):
        attnkit.attention(q, k, v, out=np.empty((1, 8, 2, 16), np.float32))
    with pytest.raises(ValueError, match=r"PyTorch tensors only"):
        attnkit.attention(q.numpy(), k.numpy(), v.numpy(), out=np.empty((1, 8, 2, 16), np.float32))
    leaf = q.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"out/lse_out: not supported when autograd records the call"):
        attnkit.attention(leaf, k, v, out=torch.empty(1, 8, 2, 16))
    with torch.no_grad():  # without recording, the same call is fine
        attnkit.attention(leaf, k, v, out=torch.empty(1, 8, 2, 16))


# ---- On the GPU. ------------------------------------------------------------------------------------

GPU_CASES = {
    "causal_gqa": ((2, 200, 8, 128), (2, 300, 2, 128), {"causal": True}),
    "window_softcap_sinks": ((1, 130, 4, 64), (1, 130, 4, 64), {"window": (17, 3), "softcap": 20.0, "sinks": True}),
    "d256_empty_rows": ((1, 70, 2, 256), (1, 33, 2, 256), {"causal": True}),
}


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_gpu_forward_and_backward_match_the_reference(name, dtype):
    shape_q, shape_k, options = GPU_CASES[name]
    options = dict(options)
    q, k, v = tensors(shape_q, shape_k, shape_k, dtype=dtype, device="cuda", seed=6, requires_grad=True)
    sinks = None
    if options.pop("sinks", False):
        sinks = torch.randn(shape_q[2], device="cuda", requires_grad=True)
    out, lse = attnkit.attention(q, k, v, sinks=sinks, return_lse=True, **options)
    dout = torch.randn_like(out)
    out.backward(dout)
    qn, kn, vn, doutn = reference_inputs(q, k, v, dout)
    reference_options = dict(options, sinks=None if sinks is None else sinks.detach().cpu().numpy())
    check_forward(reference_inputs(out)[0], lse.cpu().numpy(), qn, kn, vn, **reference_options)
    gradients = reference_inputs(q.grad, k.grad, v.grad) + [None if sinks is None else sinks.grad.cpu().numpy()]
    check_backward(gradients, doutn, qn, kn, vn, **reference_options)


@needs_gpu
def test_gpu_runs_on_the_current_stream():
    q, k, v = tensors((1, 256, 4, 64), (1, 256, 4, 64), (1, 256, 4, 64), dtype=torch.bfloat16, device="cuda")
    expected = attnkit.attention(q, k, v, causal=True)
    side = torch.cuda.Stream()
    late_q = torch.empty_like(q)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s: late_q is written only after this on `side`
        late_q.copy_(q)
        got = attnkit.attention(late_q, k, v, causal=True)  # correct only if queued on `side`
    side.synchronize()
    assert torch.equal(got, expected)


@needs_gpu
def test_gpu_concurrent_streams_get_their_own_workspace():
    """Calls queued on two streams at once: each stream's reusable workspace (the sm90 forward's tile
    counter) must be its own, or concurrent kernels would take each other's tiles and leave rows unwritten.
    Each call has its own inputs, so that a stale output could not pass for the right one."""
    q, k, v = tensors((4, 1024, 8, 64), (4, 1024, 8, 64), (4, 1024, 8, 64), dtype=torch.bfloat16, device="cuda",
                      seed=11)
    rounds = 6
    inputs = [(q * (1 + 0.125 * i), k, v) for i in range(2 * rounds)]
    expected = [attnkit.attention(*args, causal=True) for args in inputs]
    streams = (torch.cuda.Stream(), torch.cuda.Stream())
    torch.cuda.synchronize()
    for stream in streams:
        with torch.cuda.stream(stream):
            torch.cuda._sleep(20_000_000)  # both streams start their queues together
    got = []
    for i, args in enumerate(inputs):
        with torch.cuda.stream(streams[i % 2]):
            got.append(attnkit.attention(*args, causal=True))
    torch.cuda.synchronize()
    for i, (out, reference) in enumerate(zip(got, expected)):
        assert torch.equal(out, reference), f"call {i} (stream {i % 2}) differs from the same call made alone"


@needs_gpu
def test_gpu_cuda_graph_capture_and_replay():
    """A captured call gets its own workspace (torch's graph pool), so replays and eager calls on the
    capturing stream do not share a tile counter."""
    q, k, v = tensors((2, 512, 8, 64), (2, 512, 8, 64), (2, 512, 8, 64), dtype=torch.bfloat16, device="cuda",
                      seed=12)
    static_q = q.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch's CUDA graph guide asks
        attnkit.attention(static_q, k, v, causal=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = attnkit.attention(static_q, k, v, causal=True)
    for scale in (0.5, 2.0, 3.0):
        static_q.copy_(q * scale)
        eager = attnkit.attention(q * scale, k, v, causal=True)  # queued next to the replay, same stream
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, eager), f"replay with q * {scale} differs from the eager call"


@needs_gpu
def test_gpu_calls_never_synchronise_the_host():
    q, k, v = tensors((1, 256, 4, 64), (1, 256, 4, 64), (1, 256, 4, 64), dtype=torch.bfloat16, device="cuda",
                      requires_grad=True)

    def calls():
        """Host seconds of each call of a forward (no_grad), a forward with autograd, and its backward."""
        for t in (q, k, v):
            # Each round starts without gradients, so it runs the same kernels as the first: a backward into
            # existing .grad would add with a torch kernel the first round never loaded (see below).
            t.grad = None
        seconds = {}
        start = time.perf_counter()
        with torch.no_grad():
            attnkit.attention(q, k, v, causal=True)
        seconds["forward, no_grad"] = time.perf_counter() - start
        out = attnkit.attention(q, k, v, causal=True)
        seconds["forward, autograd"] = time.perf_counter() - start - sum(seconds.values())
        out.backward(torch.ones_like(out))
        seconds["backward"] = time.perf_counter() - start - sum(seconds.values())
        return seconds

    # A first round loads every kernel involved, torch's included: under CUDA lazy loading (torch's
    # default) a kernel's first use may synchronise the context (CUDA programming guide, "Lazy Loading").
    calls()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # torch-side syncs raise
    try:
        torch.cuda._sleep(1_000_000_000)  # ~0.5 s of GPU work ahead of the calls
        seconds = calls()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    waited = {call: round(s, 3) for call, s in seconds.items() if s > 0.05}
    assert not waited, f"host seconds per call {waited}: these waited for the GPU"


@needs_gpu
def test_gpu_compile_inductor_fullgraph():
    torch._dynamo.reset()
    q, k, v = tensors((2, 128, 4, 64), (2, 128, 4, 64), (2, 128, 4, 64), dtype=torch.bfloat16, device="cuda",
                      requires_grad=True)

    def step(q, k, v):
        return (attnkit.attention(q * 2, k, v, causal=True).float() ** 2).sum()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(q, k, v)
    loss.backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    eager = step(q, k, v)
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-2, atol=1e-2)
    for got, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(got, t.grad, rtol=2e-2, atol=2e-2)


@needs_gpu
def test_gpu_out_and_lse_out():
    q, k, v = tensors((2, 300, 8, 128), (2, 300, 2, 128), (2, 300, 2, 128), dtype=torch.bfloat16, device="cuda",
                      seed=13)
    expected_out, expected_lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    out = torch.full_like(expected_out, float("nan"))
    lse = torch.full_like(expected_lse, float("nan"))
    got = attnkit.attention(q, k, v, causal=True, return_lse=True, out=out, lse_out=lse)
    assert got[0] is out and got[1] is lse
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)


@needs_gpu
def test_gpu_back_to_back_calls_on_one_stream_share_the_zeroed_workspace():
    """The sm90 forward skips its tile-counter memset on the per-stream buffer, which every launch leaves at
    zero: calls of different tile counts, one after the other on one stream, with calls of other backends
    between them (sm80's split-KV uses a scratch workspace of its own), must each compute every tile. Each
    out starts as NaN, so a tile skipped because of a stale counter would show; a second round of the same
    calls must give the same bits, and the first sm90 call matches the reference."""
    shapes = [((1, 128, 8, 64), (1, 128, 8, 64), {}),              # 8 tiles, fewer than the SMs
              ((4, 2048, 16, 64), (4, 2048, 4, 64), {}),           # hundreds of tiles: the dynamic scheduler
              ((1, 64, 8, 64), (1, 16384, 8, 64), {}),             # few query tiles, long keys: sm80 split-KV
              ((2, 700, 4, 128), (2, 900, 4, 128), {}),            # D = 128
              ((3, 333, 4, 64), (3, 333, 4, 64), {"backend": "sm80"})]
    calls = []
    for i, (shape_q, shape_k, options) in enumerate(shapes):
        q, k, v = tensors(shape_q, shape_k, shape_k, dtype=torch.bfloat16, device="cuda", seed=20 + i)
        calls.append((q, k, v, options))
        assert attnkit.explain(q, k, v, causal=True, **options).chosen in ("sm80", "sm90")
    rounds = []
    for _ in range(2):
        outs = []
        for q, k, v, options in calls:
            out = torch.full(q.shape[:3] + v.shape[3:], float("nan"), dtype=q.dtype, device="cuda")
            attnkit.attention(q, k, v, causal=True, out=out, **options)
            outs.append(out)
        rounds.append(outs)
    torch.cuda.synchronize()
    for i, (first, second) in enumerate(zip(*rounds)):
        assert not torch.isnan(first).any() and not torch.isnan(second).any(), f"call {i}: rows left unwritten"
        assert torch.equal(first, second), f"call {i}: the second round differs"
    q, k, v, _ = calls[0]
    check_forward(reference_inputs(rounds[0][0])[0], None, *reference_inputs(q, k, v), causal=True)
