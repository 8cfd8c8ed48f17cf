"""Bad inputs raise typed, descriptive exceptions before anything runs: ValueError for a bad argument,
NotImplementedError for a valid call this build cannot run, TypeError for a non-array."""

import ast
import pathlib

import numpy as np
import pytest

import attnkit
from support import BF16, random_array, rng_for


def arrays(dtype=np.float32, batch=1, seqlen_q=5, seqlen_k=7, heads_q=4, heads_kv=2, dim=32, dim_v=32):
    rng = rng_for("errors", np.dtype(dtype).name, batch, seqlen_q, seqlen_k, heads_q, heads_kv, dim, dim_v)
    return (random_array(rng, (batch, seqlen_q, heads_q, dim), dtype),
            random_array(rng, (batch, seqlen_k, heads_kv, dim), dtype),
            random_array(rng, (batch, seqlen_k, heads_kv, dim_v), dtype))


def raises(error, match, function, *args, **kwargs):
    with pytest.raises(error, match=match):
        function(*args, **kwargs)


def test_rank():
    q, k, v = arrays()
    raises(ValueError, r"q: expected rank 4 \(\[B, Sq, Hq, D\]\), got rank 3", attnkit.attention, q[0], k, v)
    raises(ValueError, r"k: expected rank 4, got rank 3", attnkit.attention, q, k[0], v)
    raises(ValueError, r"q: expected rank 3 \(\[Tq, Hq, D\] for varlen\)", attnkit.attention_varlen, q, k, v,
           np.array([0, 5], np.int32), np.array([0, 7], np.int32), 5, 7)


def test_dtypes():
    q, k, v = arrays()
    raises(ValueError, r"q: dtype must be fp16, bf16 or fp32.*got fp64", attnkit.attention, q.astype(np.float64),
           k.astype(np.float64), v.astype(np.float64))
    raises(ValueError, r"k: expected dtype fp32 \(the dtype of q\), got fp16", attnkit.attention, q,
           k.astype(np.float16), v)
    raises(ValueError, r"q: dtype int64 is not supported", attnkit.attention, q.astype(np.int64), k, v)
    raises(ValueError, r"sinks: expected dtype fp32", attnkit.attention, q, k, v,
           sinks=np.zeros(4, np.float16))


@pytest.mark.skipif(BF16 is None, reason="ml_dtypes is not installed (bf16 NumPy arrays need it)")
def test_uint16_is_not_taken_for_bf16():
    q, k, v = arrays(BF16)
    raises(ValueError, r"k: dtype uint16 is not supported", attnkit.attention, q, k.view(np.uint16), v)


def test_shapes_and_heads():
    q, k, v = arrays()
    raises(ValueError, r"k: expected shape \[1, 7, 2, 32\].*got \[1, 7, 2, 24\]", attnkit.attention, q, k[..., :24],
           v)
    raises(ValueError, r"v: expected shape", attnkit.attention, q, k, v[:, :6])
    q3, k3, v3 = arrays(heads_q=3, heads_kv=2)
    raises(ValueError, r"Hq = 3 is not a multiple of Hkv = 2", attnkit.attention, q3, k3, v3)
    raises(ValueError, r"sinks: expected shape \[4\]", attnkit.attention, q, k, v, sinks=np.zeros(3, np.float32))


def test_unsupported_head_dim_lists_the_supported_ones():
    q, k, v = arrays(dim=12, dim_v=12)
    raises(NotImplementedError, r"D \(head dim of q and k\) = 12 is not supported; supported head dims are the "
           r"multiples of 8 from 8 to 256", attnkit.attention, q, k, v)
    q, k, v = arrays(dim=264, dim_v=264)
    raises(NotImplementedError, r"= 264 is not supported", attnkit.attention, q, k, v)


def test_last_dim_must_be_contiguous():
    q, k, v = arrays(dim=64)
    raises(ValueError, r"q: the last dimension must be contiguous \(stride 1\), got stride 2", attnkit.attention,
           q[..., ::2], k[..., ::2], v[..., ::2])


def test_options():
    q, k, v = arrays()
    raises(ValueError, r"window: bounds must be >= -1", attnkit.attention, q, k, v, window=(-2, 0))
    raises(ValueError, r"window: expected a pair", attnkit.attention, q, k, v, window=3)
    raises(ValueError, r"window: expected a pair", attnkit.attention, q, k, v, window=(1.5, 0))
    raises(ValueError, r"window: causal means window_right = 0, but window_right = 3", attnkit.attention, q, k, v,
           causal=True, window=(-1, 3))
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        raises(ValueError, r"scale: must be finite and > 0", attnkit.attention, q, k, v, scale=scale)
    raises(ValueError, r"scale: expected a float", attnkit.attention, q, k, v, scale="big")
    for softcap in (-1.0, float("nan")):
        raises(ValueError, r"softcap: must be 0 \(off\) or finite and > 0", attnkit.attention, q, k, v,
               softcap=softcap)
    raises(ValueError, r"backend: expected one of auto, cpu, sm80, sm90, got 'gpu'", attnkit.attention, q, k, v,
           backend="gpu")


def test_varlen_offsets():
    q = random_array(rng_for("varlen-errors"), (6, 2, 32), np.float32)
    good = np.array([0, 2, 6], np.int32)
    raises(ValueError, r"cu_seqlens_q: must start at 0", attnkit.attention_varlen, q, q, q,
           np.array([1, 2, 6], np.int32), good, 4, 4)
    raises(ValueError, r"cu_seqlens_k: must be non-decreasing", attnkit.attention_varlen, q, q, q, good,
           np.array([0, 5, 4], np.int32), 4, 5)
    raises(ValueError, r"cu_seqlens_q: last entry 5 is inconsistent with the token count 6",
           attnkit.attention_varlen, q, q, q, np.array([0, 2, 5], np.int32), good, 4, 4)
    raises(ValueError, r"cu_seqlens_q: sequence 1 has length 4 > max_seqlen_q = 3", attnkit.attention_varlen, q, q,
           q, good, good, 3, 4)
    raises(ValueError, r"cu_seqlens_k: expected length 3", attnkit.attention_varlen, q, q, q, good,
           np.array([0, 6], np.int32), 4, 6)
    raises(ValueError, r"cu_seqlens_q: dtype int64 is not supported", attnkit.attention_varlen, q, q, q,
           good.astype(np.int64), good, 4, 4)
    raises(ValueError, r"varlen needs both cu_seqlens_q and cu_seqlens_k", attnkit.attention_varlen, q, q, q, good,
           None, 4, 4)
    raises(ValueError, r"max_seqlen_q / max_seqlen_k: expected ints", attnkit.attention_varlen, q, q, q, good, good,
           4.5, 4)


def test_backward_arguments():
    q, k, v = arrays()
    out, lse = attnkit.attention(q, k, v, return_lse=True)
    raises(ValueError, r"dout: expected shape", attnkit.attention_backward, out[:, :4], q, k, v, out, lse)
    raises(ValueError, r"lse: backward needs the fp32 lse written by forward", attnkit.attention_backward, out, q, k,
           v, out, None)
    raises(ValueError, r"lse: expected dtype fp32", attnkit.attention_backward, out, q, k, v, out,
           lse.astype(np.float16))


def test_not_arrays():
    q, k, v = arrays()
    raises(TypeError, r"q: expected a numpy.ndarray, torch.Tensor, cupy.ndarray or jax.Array, got builtins.list",
           attnkit.attention, q.tolist(), k, v)
    raises(TypeError, r"k: expected an array \(DLPack or buffer protocol\), got list", attnkit.attention, q,
           k.tolist(), v)


def test_explicit_backend_that_cannot_run_is_not_a_fallback():
    q, k, v = arrays()
    sm80_compiled = any(name.startswith("sm80") for name in attnkit.build_info().compiled_backends)
    reason = "tensors are on the CPU, not a CUDA device" if sm80_compiled else "not compiled: needs ATTNKIT_ENABLE_CUDA=ON"
    with pytest.raises(NotImplementedError, match=r"backend sm80 cannot run this call: " + reason):
        attnkit.attention(q, k, v, backend="sm80")
    with pytest.raises(NotImplementedError, match=r"backend sm90 cannot run this call"):
        attnkit.attention(q, k, v, backend="sm90")


def test_cpu_arrays_on_a_gpu_backend_say_where_they_are():
    q, k, v = arrays()
    explanation = attnkit.explain(q, k, v, backend="sm80")
    assert explanation.chosen is None
    reasons = {verdict.backend: verdict.reason for verdict in explanation.verdicts}
    assert set(reasons) == {"sm90", "sm80", "cpu"}
    assert "not requested" in reasons["cpu"]


def test_the_package_has_no_assert_statements():
    """Errors are raised as typed exceptions; `assert` disappears under python -O."""
    package = pathlib.Path(attnkit.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
        assert not asserts, f"{source.name}: assert statements at lines {asserts}"
