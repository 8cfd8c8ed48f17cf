"""Linear attention (Gated DeltaNet, KDA) on CUDA tensors through torch: forward, backward (or its
NotImplementedError where this build has no GPU backward) and decode with state_indices, against the float64
recurrence of test_linear.py run on the same rounded inputs, and against the CPU backend. Skipped without torch,
without a CUDA device of sm_80 or newer, or on a build without CUDA.

Bounds: the GPU kernels keep intermediates in bf16/fp16 (tensor-core chunks), so results are held to the
section-6 RMS ratios of semantics.md: 0.005 for outputs and states (and dq, dk, dv, d_initial_state), 0.02 for
the gate and beta gradients (dg, dbeta, dA_log, ddt_bias). The gate decays are kept in [-1, -0.1]: with decays near 0 over many
tokens the bf16 forward's error grows past 0.005 (src/kernels/linear/NOTES.md, weak-decay cases); that
accuracy question is the C++ kernel tests', this file checks what Python adds: strides, dtypes, devices, the
current stream, state_indices and the in-place state update."""

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI runs the NumPy tests without it)")

import attnkit  # noqa: E402  (after torch: registers the torch.library ops at import)
from test_linear import reference  # noqa: E402  (the float64 recurrence)

BUILD = attnkit.build_info()
CUDA = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
pytestmark = pytest.mark.skipif(not (CUDA and BUILD.cuda_enabled and "80" in "".join(BUILD.cuda_archs)),
                                reason=f"needs an sm_80+ GPU (found: {CUDA}) and a CUDA build with sm_80 "
                                       f"(archs: {' '.join(BUILD.cuda_archs) or 'none'})")

SECTION6_RMS = 5e-3  # outputs and states
SECTION6_GATE_GRAD_RMS = 2e-2  # gate and beta gradients
FUSED = dict(l2norm_qk=True, gate="softplus", beta_form="sigmoid")


def rms_ratio(got, expected) -> float:
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    assert np.isfinite(got).all(), "non-finite values"
    return float(np.sqrt(np.mean((got - expected) ** 2)) / max(np.sqrt(np.mean(expected ** 2)), 1e-30))


def numpy64(t):
    return t.detach().to("cpu", torch.float64).numpy()


def make_inputs(variant, dtype, batch=2, tokens=37, heads=2, group=2, key_dim=64, value_dim=64, fused=False,
                seed=0, states=None):
    """CUDA tensors: q, k, v in `dtype`, g and beta fp32, optional fused-gate parameters and an fp32 initial
    state of `states` sequences. Fresh random data per case, seeded by the case."""
    gen = torch.Generator().manual_seed(seed)
    heads_v = heads * group
    gate_shape = (batch, tokens, heads_v) + ((key_dim,) if variant == "kda" else ())
    t = dict(q=torch.randn(batch, tokens, heads, key_dim, generator=gen),
             k=torch.randn(batch, tokens, heads, key_dim, generator=gen) / key_dim ** 0.5,
             v=torch.randn(batch, tokens, heads_v, value_dim, generator=gen))
    if fused:  # raw gate values and beta logits; A_log keeps the decays in about [-1, -0.1]
        t["g"] = torch.randn(gate_shape, generator=gen) * 0.5
        t["beta"] = torch.randn(batch, tokens, heads_v, generator=gen)
        t["A_log"] = torch.rand(heads_v, generator=gen) * 0.5 - 1.0
        t["dt_bias"] = torch.randn((heads_v, key_dim) if variant == "kda" else (heads_v,), generator=gen) * 0.1
    else:
        t["g"] = -(torch.rand(gate_shape, generator=gen) * 0.9 + 0.1)
        t["beta"] = torch.rand(batch, tokens, heads_v, generator=gen)
    if states is not None:
        t["initial_state"] = torch.randn(states, heads_v, key_dim, value_dim, generator=gen) * 0.5
    out = {}
    for name, value in t.items():
        low = name in ("q", "k", "v")
        out[name] = value.to("cuda", dtype if low else torch.float32)
    return out


def reference_of(t, variant, **options):
    """The float64 recurrence on the tensors as passed (already rounded to their dtypes)."""
    extra = {name: numpy64(t[name]) for name in ("A_log", "dt_bias", "initial_state") if name in t}
    return reference(*(numpy64(t[n]) for n in ("q", "k", "v", "g", "beta")), variant=variant, **extra, **options)


# ---- Forward. -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["gdn", "kda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_gpu_forward_matches_float64(variant, dtype, fused):
    t = make_inputs(variant, dtype, fused=fused, seed=zlib.crc32(repr((variant, str(dtype), fused)).encode()),
                    states=2)
    options = FUSED if fused else {}
    out, final_state = attnkit.linear_attention(**t, variant=variant, output_final_state=True, **options)
    assert out.device == t["q"].device and out.dtype == dtype and out.shape == t["v"].shape
    assert final_state.device == t["q"].device and final_state.dtype == torch.float32
    expected_out, expected_final = reference_of(t, variant, **options)
    assert rms_ratio(numpy64(out), expected_out) < SECTION6_RMS
    assert rms_ratio(numpy64(final_state), expected_final) < SECTION6_RMS


def test_gpu_forward_varlen_vk_layout_and_strided_q_match_float64():
    """Packed sequences (one empty), the [N, HV, V, K] state layout, and q, k, v as views into one packed
    [B, T, H + H + HV, K] tensor (strides that are not those of a compact tensor)."""
    heads, group, key_dim = 2, 2, 64
    base = make_inputs("gdn", torch.bfloat16, batch=1, tokens=41, heads=heads, group=group, key_dim=key_dim,
                       value_dim=key_dim, seed=11)
    packed = torch.cat([base["q"], base["k"], base["v"]], dim=2)
    q, k, v = packed[:, :, :heads], packed[:, :, heads:2 * heads], packed[:, :, 2 * heads:]
    assert not q.is_contiguous()
    cu_seqlens = torch.tensor([0, 16, 16, 41], dtype=torch.int32, device="cuda")
    gen = torch.Generator().manual_seed(12)
    initial_vk = (torch.randn(3, heads * group, key_dim, key_dim, generator=gen) * 0.5).cuda()
    out, final_vk = attnkit.linear_attention(q, k, v, base["g"], base["beta"], initial_state=initial_vk,
                                             cu_seqlens=cu_seqlens, state_layout="vk", output_final_state=True)
    t = dict(q=q, k=k, v=v, g=base["g"], beta=base["beta"], initial_state=initial_vk.transpose(-1, -2))
    expected_out, expected_final = reference_of(t, "gdn", cu_seqlens=cu_seqlens.cpu().numpy())
    assert rms_ratio(numpy64(out), expected_out) < SECTION6_RMS
    assert rms_ratio(numpy64(final_vk.transpose(-1, -2)), expected_final) < SECTION6_RMS


def test_gpu_forward_runs_on_the_current_stream():
    """The inputs are written on a side stream after a ~0.1 s sleep; a call made on that stream must read the
    written values (a call on another stream would race and read the old ones)."""
    t = make_inputs("gdn", torch.bfloat16, seed=21)
    expected = attnkit.linear_attention(**t)
    late_q = torch.zeros_like(t["q"])
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)
        late_q.copy_(t["q"])
        got = attnkit.linear_attention(late_q, t["k"], t["v"], t["g"], t["beta"])
    torch.cuda.synchronize()
    assert torch.equal(got, expected)


# ---- Backward. ----------------------------------------------------------------------------------------

NO_GPU_BACKWARD = r"sm80: this backend has no linear-attention backward kernel yet"


def _gpu_backward_or_reason(call):
    """The call's result, or None after checking that the NotImplementedError is the missing GPU backward's
    (with the CPU backend's own reason listed beside it), not some other refusal."""
    try:
        return call()
    except NotImplementedError as error:
        message = str(error)
        assert "sm80: this backend has no linear-attention backward kernel yet" in message, message
        assert "cpu: " in message and "not the CPU" in message, message
        return None


@pytest.mark.parametrize("variant", ["gdn", "kda"])
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_gpu_backward_matches_the_cpu_backend_or_names_its_absence(variant, fused):
    t = make_inputs(variant, torch.bfloat16, tokens=29, key_dim=32, value_dim=32, fused=fused, seed=31, states=2)
    options = dict(FUSED if fused else {}, variant=variant)
    out = attnkit.linear_attention(**t, **options)
    gen = torch.Generator().manual_seed(32)
    dout = torch.randn(out.shape, generator=gen).to("cuda", out.dtype)
    dfinal = (torch.randn(t["initial_state"].shape, generator=gen) * 0.1).cuda()
    names = ("q", "k", "v", "g", "beta")
    extra = {n: t[n] for n in ("A_log", "dt_bias", "initial_state") if n in t}
    gpu = _gpu_backward_or_reason(lambda: attnkit.linear_attention_backward(
        dout, *(t[n] for n in names), dfinal_state=dfinal, **extra, **options))
    # The same gradients from the CPU backend, on the same (rounded) values in fp32.
    cpu_args = {n: x.detach().cpu().float() for n, x in t.items()}
    expected = attnkit.linear_attention_backward(dout.cpu().float(), *(cpu_args[n] for n in names),
                                                 dfinal_state=dfinal.cpu(),
                                                 **{n: cpu_args[n] for n in extra}, **options)
    if gpu is None:
        # Through autograd the refusal comes at backward time, with the same reason.
        leaves = {n: x.clone().requires_grad_(True) for n, x in t.items()}
        result = attnkit.linear_attention(**leaves, **options)
        with pytest.raises(NotImplementedError, match=NO_GPU_BACKWARD):
            result.backward(dout)
        return
    bounds = dict(dq=SECTION6_RMS, dk=SECTION6_RMS, dv=SECTION6_RMS, d_initial_state=SECTION6_RMS,
                  dg=SECTION6_GATE_GRAD_RMS, dbeta=SECTION6_GATE_GRAD_RMS)
    if fused:
        bounds.update(dA_log=SECTION6_GATE_GRAD_RMS, ddt_bias=SECTION6_GATE_GRAD_RMS)
    for name, bound in bounds.items():
        got = getattr(gpu, name)
        assert got.device == t["q"].device, name
        assert rms_ratio(numpy64(got), numpy64(getattr(expected, name))) < bound, name


# ---- Decode. ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["gdn", "kda"])
@pytest.mark.parametrize("tokens", [1, 3])
def test_gpu_decode_with_state_indices_matches_float64(variant, tokens):
    """Three sequences own slots 4, 0 and 2 of a pool of 5 states (slots 1 and 3 belong to nobody), plus a
    padding sequence (index -1): out and the owned slots against the float64 recurrence started from the
    pool's slots; the other slots and the padding rows untouched (bitwise)."""
    t = make_inputs(variant, torch.bfloat16, batch=4, tokens=tokens, seed=41 + tokens)
    heads_v, key_dim, value_dim = t["v"].shape[2], t["q"].shape[3], t["v"].shape[3]
    gen = torch.Generator().manual_seed(42)
    pool = (torch.randn(5, heads_v, key_dim, value_dim, generator=gen) * 0.5).cuda()
    before = pool.clone()
    indices = torch.tensor([4, 0, 2, -1], dtype=torch.int32, device="cuda")
    with torch.no_grad():
        out = attnkit.linear_decode(t["q"], t["k"], t["v"], t["g"], t["beta"], pool, state_indices=indices,
                                    variant=variant)
    assert out.device == t["q"].device and out.dtype == torch.bfloat16
    owned = [4, 0, 2]
    real = {n: x[:3] for n, x in t.items()}
    real["initial_state"] = before[owned]
    expected_out, expected_state = reference_of(real, variant)
    assert rms_ratio(numpy64(out[:3]), expected_out) < SECTION6_RMS
    assert rms_ratio(numpy64(pool[owned]), expected_state) < SECTION6_RMS
    assert torch.equal(pool[[1, 3]], before[[1, 3]]), "a slot no sequence owns was written"
    assert torch.count_nonzero(out[3]) == 0, "the padding sequence's out rows must be zeros"


def test_gpu_decode_continues_the_forward():
    """A forward over T tokens that returns its final state, then one decode step from that state, gives
    the forward over T + 1 tokens (its last token and final state)."""
    t = make_inputs("gdn", torch.bfloat16, tokens=17, seed=51)
    head = {n: x[:, :16] for n, x in t.items()}
    tail = {n: x[:, 16:] for n, x in t.items()}
    with torch.no_grad():
        _, state = attnkit.linear_attention(**head, output_final_state=True)
        step_out = attnkit.linear_decode(tail["q"], tail["k"], tail["v"], tail["g"], tail["beta"], state)
        full_out, full_final = attnkit.linear_attention(**t, output_final_state=True)
    expected_out, expected_final = reference_of(t, "gdn")
    assert rms_ratio(numpy64(step_out), expected_out[:, 16:]) < SECTION6_RMS
    assert rms_ratio(numpy64(state), expected_final) < SECTION6_RMS
    assert rms_ratio(numpy64(full_out[:, 16:]), expected_out[:, 16:]) < SECTION6_RMS
    assert rms_ratio(numpy64(full_final), expected_final) < SECTION6_RMS
