"""Shared helpers of the Python tests: fresh random inputs, the dtypes under test, and the accuracy checks
of quality.md against the float64 reference (reference.py)."""

import zlib

import numpy as np

from reference import (assert_close_by_rule, attention_reference, attention_reference_backward, rounding_to)

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # bf16 NumPy arrays need ml_dtypes; fp16/fp32 are tested without it
    BF16 = None

DTYPES = [np.dtype(np.float32), np.dtype(np.float16)] + ([BF16] if BF16 is not None else [])


def dtype_id(dtype) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[np.dtype(dtype).name]


def rng_for(*parts) -> np.random.Generator:
    """A generator seeded from the test's own parameters: fresh data per case, reproducible per case."""
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def random_array(rng, shape, dtype):
    return rng.standard_normal(shape).astype(np.float32).astype(dtype)


def unit_roundoff(dtype) -> float:
    return {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}[np.dtype(dtype).name]


def _atol(dtype, reference) -> float:
    """Rounding noise at the values' magnitude, as the C++ test support defines it (tolerance.h):
    (2 u_stored + 16 u_fp32) * max(max|ref|, 1): one ulp of the stored dtype, plus the fp32 accumulation
    noise of sums of a few hundred terms that the naive formula can miss."""
    finite = np.asarray(reference, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    magnitude = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
    return (2.0 * unit_roundoff(dtype) + 16.0 * 2.0 ** -24) * magnitude


def as_float64(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def check_forward(out, lse, q, k, v, **options):
    """out (and lse when not None) against the reference by the rule, in q's dtype."""
    dtype = np.asarray(q).dtype
    reference_out, reference_lse = attention_reference(as_float64(q), as_float64(k), as_float64(v), **options)
    naive_out, naive_lse = attention_reference(q, k, v, compute=np.float32, round_to=rounding_to(dtype), **options)
    assert np.asarray(out).dtype == dtype, f"out dtype {np.asarray(out).dtype} != {dtype}"
    assert_close_by_rule("out", out, reference_out, naive_out, 2.0, _atol(dtype, reference_out))
    if lse is not None:
        assert np.asarray(lse).dtype == np.float32
        assert_close_by_rule("lse", lse, reference_lse, naive_lse, 2.0, _atol(np.float32, reference_lse))
    return reference_out, reference_lse


def check_backward(gradients, dout, q, k, v, **options):
    """(dq, dk, dv, dsinks) against the reference backward by the rule (factor 3 for gradients)."""
    dtype = np.asarray(q).dtype
    reference = attention_reference_backward(as_float64(dout), as_float64(q), as_float64(k), as_float64(v),
                                             **options)
    naive = attention_reference_backward(dout, q, k, v, compute=np.float32, round_to=rounding_to(dtype), **options)
    for name, actual, expected, lowp in zip(("dq", "dk", "dv"), gradients[:3], reference[:3], naive[:3]):
        assert np.asarray(actual).dtype == dtype, f"{name} dtype {np.asarray(actual).dtype} != {dtype}"
        assert_close_by_rule(name, actual, expected, lowp, 3.0, _atol(dtype, expected))
    if options.get("sinks") is not None:
        assert np.asarray(gradients[3]).dtype == np.float32
        assert_close_by_rule("dsinks", gradients[3], reference[3], naive[3], 3.0, _atol(np.float32, reference[3]))
    else:
        assert gradients[3] is None
    return reference
