"""Float64 NumPy reference of dense attention (semantics.md section 1), for the Python tests.

Written from the formulas, one (sequence, query head) at a time, with its own mask predicate:

    s_ij = scale * <q_i, k_j>                  then c * tanh(s_ij / c) when softcap c > 0
    visible(i, j) iff  i + (Sk - Sq) - left <= j <= i + (Sk - Sq) + right   (-1 = unbounded; causal: right = 0)
    lse_i = log(sum_visible exp(s_ij) [+ exp(sink_h)])           natural log; -inf for an empty row
    p_ij  = exp(s_ij - lse_i) over visible j (0 elsewhere);      o_i = sum_j p_ij v_j (0 for an empty row)

Backward, with dO the gradient of o and D_i = <dO_i, o_i>:

    dp_ij = <dO_i, v_j>,   ds_ij = p_ij (dp_ij - D_i),   dt_ij = ds_ij * (1 - tanh^2(raw_ij / c)) with softcap
    dq_i = scale * sum_j dt_ij k_j,   dk_j = scale * sum_i dt_ij q_i,   dv_j = sum_i p_ij dO_i
    dsink_h = -sum_i exp(sink_h - lse_i) D_i          (dk, dv of a kv head sum over its G query heads)

`compute` and `round_to` also give the "naive low-precision" formula of the accuracy rule (quality.md):
compute=float32 with every stage (scores, probabilities, outputs) rounded to the input dtype, except lse,
which is taken from the fp32 scores before rounding (lse is an fp32 output; as in reference/).
"""

import math

import numpy as np


def visible_mask(seqlen_q, seqlen_k, left, right):
    """bool [Sq, Sk]: the bottom-right aligned window (causal is right = 0)."""
    i = np.arange(seqlen_q)[:, None]
    j = np.arange(seqlen_k)[None, :]
    diagonal = i + (seqlen_k - seqlen_q)
    visible = np.ones((seqlen_q, seqlen_k), dtype=bool)
    if left >= 0:
        visible &= j >= diagonal - left
    if right >= 0:
        visible &= j <= diagonal + right
    return visible


def _identity(x):
    return x


def _varlen_slices(cu_seqlens_q, cu_seqlens_k):
    """[(q rows, k rows)]: one pair of slices per sequence."""
    cu_q = np.asarray(cu_seqlens_q, dtype=np.int64)
    cu_k = np.asarray(cu_seqlens_k, dtype=np.int64)
    return [(slice(cu_q[n], cu_q[n + 1]), slice(cu_k[n], cu_k[n + 1])) for n in range(len(cu_q) - 1)]


class _Problem:
    """BSHD and varlen as one list of sequences: slices[n] = (q rows, k rows), an int (batch entry) for
    BSHD or a pair of slices for varlen; sequence(n) = (q [Sq, Hq, D], k [Sk, Hkv, D], v [Sk, Hkv, Dv])."""

    def __init__(self, q, k, v, cu_seqlens_q, cu_seqlens_k, causal, window, scale):
        self.varlen = cu_seqlens_q is not None
        self.q, self.k, self.v = q, k, v
        if self.varlen:
            self.slices = _varlen_slices(cu_seqlens_q, cu_seqlens_k)
        else:
            self.slices = [(b, b) for b in range(q.shape[0])]
        self.heads_q = q.shape[-2]
        self.heads_kv = k.shape[-2]
        self.group = self.heads_q // self.heads_kv if self.heads_kv else 1
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        left, right = window
        self.left, self.right = left, (0 if causal else right)

    def sequence(self, index):
        qs, ks = self.slices[index]
        return self.q[qs], self.k[ks], self.v[ks]


def attention_reference(q, k, v, *, causal=False, window=(-1, -1), softcap=0.0, sinks=None, scale=None,
                        cu_seqlens_q=None, cu_seqlens_k=None, compute=np.float64, round_to=_identity):
    """(o, lse) of dense attention. BSHD: q [B, Sq, Hq, D] -> o [B, Sq, Hq, Dv], lse [B, Hq, Sq].
    Varlen (cu_seqlens given): q [Tq, Hq, D] -> o [Tq, Hq, Dv], lse [Hq, Tq]. Arrays of any float dtype."""
    q, k, v = (np.asarray(x).astype(compute) for x in (q, k, v))
    problem = _Problem(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, window, scale)
    o = np.zeros(q.shape[:-1] + (v.shape[-1],), dtype=compute)
    lse = np.full((q.shape[0], q.shape[2], q.shape[1]) if not problem.varlen else (q.shape[1], q.shape[0]),
                  -np.inf, dtype=np.float64)
    for index in range(len(problem.slices)):
        qs, ks, vs = problem.sequence(index)
        visible = visible_mask(qs.shape[0], ks.shape[0], problem.left, problem.right)
        for h in range(problem.heads_q):
            kv = h // problem.group
            s, _, unrounded = _scores(qs[:, h], ks[:, kv], problem.scale, softcap, compute, round_to)
            sink = None if sinks is None else float(np.asarray(sinks)[h])
            p, _ = _probabilities(s, visible, sink, compute, round_to)
            # lse is an fp32 output computed from fp32 scores: the naive formula takes it from the scores
            # before they are rounded to the input dtype (as the C++ reference does), so its bound stays
            # at fp32 level instead of the input dtype's rounding.
            _, row_lse = _probabilities(unrounded, visible, sink, compute, round_to)
            o_head = round_to((p @ vs[:, kv]).astype(compute))
            if problem.varlen:
                rows = problem.slices[index][0]
                o[rows, h] = o_head
                lse[h, rows] = row_lse
            else:
                o[index, :, h] = o_head
                lse[index, h] = row_lse
    return o, lse


def _scores(q_head, k_head, scale, softcap, compute, round_to):
    """(s [Sq, Sk] after scale and softcap and rounding, raw s before the softcap, s before rounding)."""
    raw = (q_head @ k_head.T).astype(compute) * compute(scale)
    s = softcap * np.tanh(raw / softcap) if softcap > 0 else raw
    return round_to(s.astype(compute)), raw, s


def _probabilities(s, visible, sink, compute, round_to):
    """(p [Sq, Sk], lse [Sq]): p = 0 on masked keys and on empty rows, lse = -inf on empty rows."""
    masked = np.where(visible, s, -np.inf)
    logits = masked if sink is None else np.concatenate([masked, np.full((s.shape[0], 1), sink)], axis=1)
    row_max = np.max(logits, axis=1, initial=-np.inf)
    nonempty = np.isfinite(row_max)
    shift = np.where(nonempty, row_max, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.sum(np.exp(logits - shift[:, None]), axis=1)
        lse = np.where(nonempty, shift + np.log(np.where(nonempty, total, 1.0)), -np.inf).astype(np.float64)
        p = np.exp(masked - np.where(nonempty, lse, 0.0)[:, None])
    p = np.where(visible & nonempty[:, None], p, 0.0)
    return round_to(p.astype(compute)), lse


def attention_reference_backward(dout, q, k, v, *, causal=False, window=(-1, -1), softcap=0.0, sinks=None,
                                 scale=None, cu_seqlens_q=None, cu_seqlens_k=None, compute=np.float64,
                                 round_to=_identity):
    """(dq, dk, dv, dsinks or None) of attention_reference; dout shaped like o."""
    q, k, v, dout = (np.asarray(x).astype(compute) for x in (q, k, v, dout))
    problem = _Problem(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, window, scale)
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    dsinks = None if sinks is None else np.zeros(problem.heads_q, dtype=np.float64)
    for index in range(len(problem.slices)):
        q_rows, k_rows = problem.slices[index]
        qs, ks, vs = problem.sequence(index)
        dos = dout[q_rows]
        # Views of this sequence's rows ([S, H, D]): an int (BSHD batch) or a slice (varlen) both view.
        dq_rows, dk_rows, dv_rows = dq[q_rows], dk[k_rows], dv[k_rows]
        visible = visible_mask(qs.shape[0], ks.shape[0], problem.left, problem.right)
        for h in range(problem.heads_q):
            kv = h // problem.group
            s, raw, unrounded = _scores(qs[:, h], ks[:, kv], problem.scale, softcap, compute, round_to)
            sink = None if sinks is None else float(np.asarray(sinks)[h])
            p, _ = _probabilities(s, visible, sink, compute, round_to)
            _, lse = _probabilities(unrounded, visible, sink, compute, round_to)  # as forward wrote it
            o_head = round_to((p @ vs[:, kv]).astype(compute))  # the backward reads o as forward stored it
            do_head = dos[:, h]
            delta = np.sum(do_head * o_head, axis=1)  # D_i = <dO_i, o_i>
            dp = round_to((do_head @ vs[:, kv].T).astype(compute))
            ds = round_to((p * (dp - delta[:, None])).astype(compute))
            if softcap > 0:
                ds = ds * (1.0 - np.tanh(raw / softcap) ** 2)
            dq_rows[:, h] += round_to((problem.scale * (ds @ ks[:, kv])).astype(compute))
            dk_rows[:, kv] += (problem.scale * (ds.T @ qs[:, h])).astype(compute)
            dv_rows[:, kv] += (p.T @ do_head).astype(compute)
            if dsinks is not None:
                weight = np.where(np.isfinite(lse), np.exp(sink - np.where(np.isfinite(lse), lse, 0.0)), 0.0)
                dsinks[h] -= float(np.sum(weight * delta))
    return round_to(dq), round_to(dk), round_to(dv), dsinks


def rounding_to(dtype):
    """round_to for the naive low-precision formula: values pass through `dtype` and come back as fp32."""
    if np.dtype(dtype) == np.float32:
        return _identity

    def round_values(x):
        return np.asarray(x).astype(dtype).astype(np.float32)

    return round_values


def assert_close_by_rule(name, actual, reference, naive_lowp, factor, atol):
    """quality.md: max|out - ref| <= factor * max|naive_lowp - ref| + atol, and NaN nowhere unless the
    reference has NaN there (it never does here: empty rows are 0 / -inf)."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    naive_lowp = np.asarray(naive_lowp, dtype=np.float64)
    assert actual.shape == reference.shape, f"{name}: shape {actual.shape} != reference {reference.shape}"
    assert not np.isnan(actual).any(), f"{name}: NaN at {np.argwhere(np.isnan(actual))[:5].tolist()}"
    same_inf = np.isinf(reference)
    assert np.array_equal(np.isinf(actual), same_inf), f"{name}: infinities differ from the reference"
    assert np.array_equal(actual[same_inf], reference[same_inf]), f"{name}: infinite values differ"
    finite = ~same_inf
    if not finite.any():
        return
    error = np.max(np.abs(actual[finite] - reference[finite]))
    naive_error = np.max(np.abs(naive_lowp[finite] - reference[finite]))
    bound = factor * naive_error + atol
    assert error <= bound, (f"{name}: max error {error:.3e} > {factor} * naive {naive_error:.3e} + atol {atol:.1e} "
                            f"= {bound:.3e}")
