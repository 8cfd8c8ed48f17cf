"""The float64 reference checks itself: its backward against central finite differences of its forward,
its forward against the closed forms of simple cases. Everything else in this suite trusts it."""

import math

import numpy as np
import pytest

from reference import attention_reference, attention_reference_backward, visible_mask
from support import rng_for

FD_CASES = {
    # name: (q shape, k shape, v shape, options); GQA 4/2, Sq != Sk, D != Dv in several.
    "plain": ((1, 3, 2, 8), (1, 4, 2, 8), (1, 4, 2, 8), {}),
    "gqa_causal_sq_lt_sk": ((2, 3, 4, 8), (2, 5, 2, 8), (2, 5, 2, 16), {"causal": True}),
    "window_softcap_sinks": ((1, 5, 2, 8), (1, 6, 1, 8), (1, 6, 1, 8),
                             {"window": (2, 1), "softcap": 1.5, "sinks": "random", "scale": 0.7}),
    "causal_sq_gt_sk_sinks": ((1, 5, 2, 8), (1, 3, 2, 8), (1, 3, 2, 8), {"causal": True, "sinks": "random"}),
    "varlen": ((7, 2, 8), (9, 1, 8), (9, 1, 8),
               {"cu_seqlens_q": [0, 3, 3, 7], "cu_seqlens_k": [0, 2, 6, 9], "causal": True, "sinks": "random"}),
}


def _loss_and_inputs(name):
    q_shape, k_shape, v_shape, options = FD_CASES[name]
    rng = rng_for("fd", name)
    q, k, v = (rng.standard_normal(s) for s in (q_shape, k_shape, v_shape))
    options = dict(options)
    if options.get("sinks") == "random":
        options["sinks"] = rng.standard_normal(q_shape[-2])
    out, _ = attention_reference(q, k, v, **options)
    dout = rng.standard_normal(out.shape)

    def loss(q, k, v, sinks):
        opts = dict(options)
        if sinks is not None:
            opts["sinks"] = sinks
        o, _ = attention_reference(q, k, v, **opts)
        return float(np.sum(o * dout))

    return loss, q, k, v, options, dout


def central_difference(loss, arrays, which, step=1e-6):
    """d loss / d arrays[which], element by element (float64)."""
    target = arrays[which]
    gradient = np.zeros_like(target)
    for index in np.ndindex(target.shape):
        saved = target[index]
        target[index] = saved + step
        plus = loss(*arrays)
        target[index] = saved - step
        minus = loss(*arrays)
        target[index] = saved
        gradient[index] = (plus - minus) / (2 * step)
    return gradient


@pytest.mark.parametrize("name", sorted(FD_CASES))
def test_reference_backward_matches_finite_differences(name):
    loss, q, k, v, options, dout = _loss_and_inputs(name)
    sinks = options.get("sinks")
    dq, dk, dv, dsinks = attention_reference_backward(dout, q, k, v, **options)
    arrays = [q.copy(), k.copy(), v.copy(), None if sinks is None else np.array(sinks, dtype=np.float64)]
    for which, analytic in enumerate((dq, dk, dv, dsinks)):
        if analytic is None:
            continue
        numeric = central_difference(loss, arrays, which)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=f"{name}: input {which}")


def test_reference_closed_forms():
    rng = rng_for("closed")
    q = rng.standard_normal((1, 1, 1, 8))
    k = rng.standard_normal((1, 4, 1, 8))
    v = rng.standard_normal((1, 4, 1, 8))
    scores = (k[0, :, 0] @ q[0, 0, 0]) / math.sqrt(8)
    weights = np.exp(scores - scores.max())
    out, lse = attention_reference(q, k, v)
    np.testing.assert_allclose(out[0, 0, 0], weights @ v[0, :, 0] / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(lse[0, 0, 0], np.log(np.sum(np.exp(scores))), rtol=1e-12)
    # A sink only adds exp(sink) to the denominator.
    out_sink, lse_sink = attention_reference(q, k, v, sinks=np.array([0.3]))
    np.testing.assert_allclose(lse_sink[0, 0, 0], np.log(np.sum(np.exp(scores)) + np.exp(0.3)), rtol=1e-12)
    np.testing.assert_allclose(out_sink[0, 0, 0], out[0, 0, 0] * np.exp(lse[0, 0, 0] - lse_sink[0, 0, 0]),
                               rtol=1e-12)


def test_reference_mask_is_bottom_right():
    # Sq = 2, Sk = 4: the last query sees every key, the first all but the last.
    assert visible_mask(2, 4, -1, 0).tolist() == [[True, True, True, False], [True, True, True, True]]
    # Sq = 4, Sk = 2: the first two queries see nothing.
    assert visible_mask(4, 2, -1, 0).sum(axis=1).tolist() == [0, 0, 1, 2]
    # window (1, 0) around the diagonal i + Sk - Sq.
    assert visible_mask(3, 3, 1, 0).astype(int).tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]


def test_reference_empty_rows_are_zero_and_minus_inf():
    rng = rng_for("empty")
    q = rng.standard_normal((1, 4, 1, 8))
    k = rng.standard_normal((1, 2, 1, 8))
    out, lse = attention_reference(q, k, k, causal=True)
    assert np.all(out[0, :2] == 0) and np.all(np.isneginf(lse[0, 0, :2]))
    assert np.all(np.isfinite(lse[0, 0, 2:]))
    out, lse = attention_reference(q, k[:, :0], k[:, :0])  # Sk = 0
    assert np.all(out == 0) and np.all(np.isneginf(lse))
