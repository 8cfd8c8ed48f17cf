"""NumPy arrays through DLPack on the CPU backend: the dtype, feature and layout matrix of forward and
backward against the float64 reference (no torch needed; this is what CI runs)."""

import numpy as np
import pytest

import attnkit
from support import DTYPES, check_backward, check_forward, dtype_id, random_array, rng_for

# name: (B, Sq, Sk, Hq, Hkv, D, Dv, options). Small enough that the reference runs in milliseconds.
CASES = {
    "basic": (2, 17, 17, 2, 2, 64, 64, {}),
    "length_1": (1, 1, 1, 1, 1, 8, 8, {}),
    "causal": (2, 17, 17, 2, 2, 64, 64, {"causal": True}),
    "causal_sq_lt_sk": (1, 5, 19, 2, 2, 32, 32, {"causal": True}),
    "causal_sq_gt_sk_empty_rows": (1, 19, 5, 2, 2, 32, 32, {"causal": True}),
    "window": (1, 23, 23, 2, 1, 32, 32, {"window": (4, 2)}),
    "window_left_causal": (1, 23, 29, 2, 2, 32, 32, {"window": (3, 0), "causal": True}),
    "softcap": (1, 13, 15, 2, 2, 32, 32, {"softcap": 2.0}),
    "sinks": (1, 13, 15, 4, 2, 32, 32, {"sinks": True}),
    "sinks_empty_rows": (1, 9, 4, 2, 2, 32, 32, {"sinks": True, "causal": True}),
    "gqa_4": (2, 11, 13, 8, 2, 32, 32, {}),
    "mqa": (1, 11, 13, 4, 1, 32, 32, {"causal": True}),
    "scale": (1, 11, 13, 2, 2, 32, 32, {"scale": 0.3}),
    "d40_dv24": (1, 11, 13, 2, 2, 40, 24, {}),
    "d192_dv128": (1, 7, 9, 2, 1, 192, 128, {"causal": True}),
    "d256": (1, 7, 9, 1, 1, 256, 256, {}),
    "sk_0": (1, 5, 0, 2, 2, 32, 32, {}),
}

BACKWARD_CASES = ["basic", "causal_sq_gt_sk_empty_rows", "window", "softcap", "sinks", "sinks_empty_rows", "gqa_4",
                  "d40_dv24", "causal_sq_lt_sk"]


def make_case(name, dtype):
    batch, seqlen_q, seqlen_k, heads_q, heads_kv, dim, dim_v, options = CASES[name]
    rng = rng_for(name, dtype_id(dtype))
    q = random_array(rng, (batch, seqlen_q, heads_q, dim), dtype)
    k = random_array(rng, (batch, seqlen_k, heads_kv, dim), dtype)
    v = random_array(rng, (batch, seqlen_k, heads_kv, dim_v), dtype)
    options = dict(options)
    if options.pop("sinks", False):
        options["sinks"] = rng.standard_normal(heads_q).astype(np.float32)
    return rng, q, k, v, options


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference(name, dtype, guarded_outputs):
    _, q, k, v, options = make_case(name, dtype)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **options)
    assert isinstance(out, np.ndarray) and out.shape == q.shape[:3] + (v.shape[3],)
    assert lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    check_forward(out, lse, q, k, v, **options)
    # Without return_lse only out comes back, with the same values.
    np.testing.assert_array_equal(attnkit.attention(q, k, v, **options).view(np.uint8), out.view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", BACKWARD_CASES)
def test_backward_matches_reference(name, dtype, guarded_outputs):
    rng, q, k, v, options = make_case(name, dtype)
    out, lse = attnkit.attention(q, k, v, return_lse=True, **options)
    dout = random_array(rng, out.shape, dtype)
    gradients = attnkit.attention_backward(dout, q, k, v, out, lse, **options)
    assert isinstance(gradients, attnkit.Gradients)
    check_backward(gradients, dout, q, k, v, **options)


def test_empty_rows_are_exactly_zero_and_minus_inf():
    _, q, k, v, options = make_case("causal_sq_gt_sk_empty_rows", np.dtype(np.float32))
    out, lse = attnkit.attention(q, k, v, return_lse=True, **options)
    empty = q.shape[1] - k.shape[1]  # the first Sq - Sk queries see no key
    assert np.all(out[:, :empty] == 0) and np.all(np.isneginf(lse[:, :, :empty]))
    gradients = attnkit.attention_backward(np.ones_like(out), q, k, v, out, lse, **options)
    assert np.all(gradients.dq[:, :empty] == 0)


def test_sink_on_an_empty_row_gives_zero_out_and_the_sink_as_lse():
    _, q, k, v, options = make_case("sinks_empty_rows", np.dtype(np.float32))
    out, lse = attnkit.attention(q, k, v, return_lse=True, **options)
    empty = q.shape[1] - k.shape[1]
    assert np.all(out[:, :empty] == 0)
    np.testing.assert_allclose(lse[0, :, :empty], np.repeat(options["sinks"][:, None], empty, axis=1), rtol=1e-6)


# ---- Layouts: strided views pass through as they are (the last dim must be contiguous). --------------


def _packed_qkv(rng, dtype, batch, seqlen, heads, dim):
    """q, k, v as views into one [B, S, 3, H, D] tensor (a fused QKV projection's output)."""
    qkv = random_array(rng, (batch, seqlen, 3, heads, dim), dtype)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def _packed_heads(rng, dtype, batch, seqlen, heads_q, heads_kv, dim):
    """GQA heads packed along one axis: [B, S, Hq + 2 Hkv, D]."""
    qkv = random_array(rng, (batch, seqlen, heads_q + 2 * heads_kv, dim), dtype)
    return qkv[:, :, :heads_q], qkv[:, :, heads_q:heads_q + heads_kv], qkv[:, :, heads_q + heads_kv:]


def _from_bhsd(rng, dtype, batch, seqlen, heads, dim):
    """[B, H, S, D] storage seen as BSHD through a transpose (heads outermost)."""
    return tuple(random_array(rng, (batch, heads, seqlen, dim), dtype).transpose(0, 2, 1, 3) for _ in range(3))


def _nan_padded(rng, dtype, batch, seqlen, heads, dim):
    """Rows padded with NaN beyond the logical D: the padding must never be read."""
    views = []
    for _ in range(3):
        storage = np.full((batch, seqlen, heads, dim + 8), np.nan, dtype=np.float32).astype(dtype)
        storage[..., :dim] = random_array(rng, (batch, seqlen, heads, dim), dtype)
        views.append(storage[..., :dim])
    return tuple(views)


def _broadcast_kv(rng, dtype, batch, seqlen, heads, dim):
    """k and v shared by every batch entry: stride 0 on the batch axis (read-only NumPy views)."""
    q = random_array(rng, (batch, seqlen, heads, dim), dtype)
    k = np.broadcast_to(random_array(rng, (1, seqlen, heads, dim), dtype), (batch, seqlen, heads, dim))
    v = np.broadcast_to(random_array(rng, (1, seqlen, heads, dim), dtype), (batch, seqlen, heads, dim))
    return q, k, v


LAYOUTS = {
    "packed_qkv": lambda rng, dtype: _packed_qkv(rng, dtype, 2, 13, 2, 32),
    "packed_gqa_heads": lambda rng, dtype: _packed_heads(rng, dtype, 2, 13, 4, 2, 32),
    "from_bhsd": lambda rng, dtype: _from_bhsd(rng, dtype, 2, 13, 2, 32),
    "nan_padded_rows": lambda rng, dtype: _nan_padded(rng, dtype, 2, 13, 2, 32),
    "broadcast_kv": lambda rng, dtype: _broadcast_kv(rng, dtype, 2, 13, 2, 32),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_strided_layouts_forward_and_backward(layout, dtype, guarded_outputs):
    rng = rng_for(layout, dtype_id(dtype))
    q, k, v = LAYOUTS[layout](rng, dtype)
    assert not (q.flags.c_contiguous and k.flags.c_contiguous and v.flags.c_contiguous)
    out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    check_forward(out, lse, q, k, v, causal=True)
    dout = random_array(rng, out.shape, dtype)
    gradients = attnkit.attention_backward(dout, q, k, v, out, lse, causal=True)
    check_backward(gradients, dout, q, k, v, causal=True)


# ---- Varlen. ----------------------------------------------------------------------------------------

VARLEN_CASES = {
    # name: (lengths q, lengths k, Hq, Hkv, D, options); empty sequences on both sides.
    "plain": ([3, 0, 5, 1, 7], [4, 2, 0, 6, 7], 2, 2, 32, {}),
    "causal_gqa": ([3, 0, 5, 1, 7], [4, 2, 0, 6, 7], 4, 2, 32, {"causal": True}),
    "window_sinks": ([6, 9, 2], [6, 4, 8], 2, 1, 32, {"window": (2, 1), "sinks": True}),
}


def _varlen_case(name, dtype):
    lengths_q, lengths_k, heads_q, heads_kv, dim, options = VARLEN_CASES[name]
    rng = rng_for("varlen", name, dtype_id(dtype))
    cu_q = np.concatenate([[0], np.cumsum(lengths_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lengths_k)]).astype(np.int32)
    q = random_array(rng, (int(cu_q[-1]), heads_q, dim), dtype)
    k = random_array(rng, (int(cu_k[-1]), heads_kv, dim), dtype)
    v = random_array(rng, (int(cu_k[-1]), heads_kv, dim), dtype)
    options = dict(options)
    if options.pop("sinks", False):
        options["sinks"] = rng.standard_normal(heads_q).astype(np.float32)
    return rng, q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k), options


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", list(VARLEN_CASES))
def test_varlen_forward_and_backward(name, dtype, guarded_outputs):
    rng, q, k, v, cu_q, cu_k, max_q, max_k, options = _varlen_case(name, dtype)
    out, lse = attnkit.attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, return_lse=True, **options)
    assert out.shape == q.shape[:2] + (v.shape[2],) and lse.shape == (q.shape[1], q.shape[0])
    reference_options = dict(options, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    check_forward(out, lse, q, k, v, **reference_options)
    dout = random_array(rng, out.shape, dtype)
    gradients = attnkit.attention_backward(dout, q, k, v, out, lse, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                           max_seqlen_q=max_q, max_seqlen_k=max_k, **options)
    check_backward(gradients, dout, q, k, v, **reference_options)


# ---- Zero-size work, determinism. -------------------------------------------------------------------

ZERO_SIZES = {
    "batch_0": (0, 5, 5, 2, 2),
    "seqlen_q_0": (2, 0, 5, 2, 2),
    "both_lengths_0": (2, 0, 0, 2, 2),
    "heads_0": (2, 5, 5, 0, 2),
}


@pytest.mark.parametrize("name", list(ZERO_SIZES))
def test_zero_size_work_is_a_no_op(name):
    batch, seqlen_q, seqlen_k, heads_q, heads_kv = ZERO_SIZES[name]
    rng = rng_for("zero", name)
    q = random_array(rng, (batch, seqlen_q, heads_q, 32), np.float32)
    k = random_array(rng, (batch, seqlen_k, heads_kv, 32), np.float32)
    v = random_array(rng, (batch, seqlen_k, heads_kv, 32), np.float32)
    out, lse = attnkit.attention(q, k, v, return_lse=True, causal=True)
    assert out.shape == (batch, seqlen_q, heads_q, 32) and lse.shape == (batch, heads_q, seqlen_q)
    gradients = attnkit.attention_backward(np.zeros_like(out), q, k, v, out, lse, causal=True)
    # Keys that no query sees get zero gradients.
    assert np.all(gradients.dk == 0) and np.all(gradients.dv == 0)
    assert gradients.dq.shape == q.shape


def test_deterministic_backward_is_bit_identical():
    rng, q, k, v, options = make_case("gqa_4", np.dtype(np.float16))
    out, lse = attnkit.attention(q, k, v, return_lse=True, **options)
    dout = random_array(rng, out.shape, np.float16)
    first = attnkit.attention_backward(dout, q, k, v, out, lse, deterministic=True, **options)
    for _ in range(3):
        again = attnkit.attention_backward(dout, q, k, v, out, lse, deterministic=True, **options)
        for a, b in zip(first[:3], again[:3]):
            np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))


def test_explicit_cpu_backend_runs():
    _, q, k, v, options = make_case("basic", np.dtype(np.float32))
    np.testing.assert_array_equal(attnkit.attention(q, k, v, backend="cpu"), attnkit.attention(q, k, v))
