// float64 CPU references of dense softmax attention (semantics.md section 1) and of the attention-state
// merge (section 3), written loop by loop from the formulas, with their own mask predicate: nothing here
// calls or shares code with src/, so a mask or indexing bug in a backend cannot hide in its reference.
//
// Inputs are host TensorRefs of fp16, bf16, fp32 or fp64 with arbitrary strides (the last one included),
// BSHD or varlen (host int32 cu_seqlens). fp64 is accepted so that gradients can be checked by finite
// differences. Bad arguments throw std::invalid_argument: these are test tools, not the library.
//
// Output order (every result is a contiguous std::vector<double>, row-major):
//   BSHD:   out [B, Sq, Hq, Dv]   lse [B, Hq, Sq]   dq [B, Sq, Hq, D]   dk [B, Sk, Hkv, D]   dv [B, Sk, Hkv, Dv]
//   varlen: out [Tq, Hq, Dv]      lse [Hq, Tq]      dq [Tq, Hq, D]      dk [Tk, Hkv, D]      dv [Tk, Hkv, Dv]
//   dsinks [Hq] (empty when there are no sinks).
// These are the logical shapes of the API's tensors, so element e of a result is the element of the
// API tensor whose row-major index is e.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/dense.h"

namespace attnkit::reference {

// One dense attention problem as the reference reads it.
struct DenseReferenceInputs {
  TensorRef q;             // [B, Sq, Hq, D] or varlen [Tq, Hq, D]
  TensorRef k;             // [B, Sk, Hkv, D] or varlen [Tk, Hkv, D]
  TensorRef v;             // [B, Sk, Hkv, Dv] or varlen [Tk, Hkv, Dv]
  TensorRef sinks;         // optional [Hq], fp32 or fp64
  TensorRef cu_seqlens_q;  // varlen only: host int32 [N + 1]
  TensorRef cu_seqlens_k;  // varlen only: host int32 [N + 1]
  // scale (default 1 / sqrt(D)), causal, window_left/right and softcap are read; backend and stream
  // are ignored.
  DenseOptions options;
};

struct DenseForwardResult {
  std::vector<double> out;  // [B, Sq, Hq, Dv] or [Tq, Hq, Dv]
  std::vector<double> lse;  // [B, Hq, Sq] or [Hq, Tq]; natural log, sink included; -inf for an empty row
  double max_abs_score = 0.0;  // max |s_ij| over visible pairs (0 when none): the tolerance's score scale
};

struct DenseBackwardResult {
  std::vector<double> dq;      // the shape of q, contiguous
  std::vector<double> dk;      // the shape of k, contiguous; summed over the G query heads of a kv head
  std::vector<double> dv;      // the shape of v, contiguous; summed over the G query heads of a kv head
  std::vector<double> dsinks;  // [Hq], or empty without sinks
};

// The mask, written from semantics.md section 1 and nowhere else: key j is visible to query i of a
// sequence with Sq queries and Sk keys iff
//   i + (Sk - Sq) - left <= j <= i + (Sk - Sq) + right   (bottom-right aligned; -1 = unbounded side),
// with causal meaning right = 0, and always 0 <= j < Sk.
bool reference_key_visible(std::int64_t i, std::int64_t j, std::int64_t seqlen_q, std::int64_t seqlen_k,
                           std::int64_t window_left, std::int64_t window_right, bool causal);

// Forward in float64. For each sequence, query head h (kv head h / G, G = Hq / Hkv) and query row i:
//   x_ij = scale * sum_d q_id k_jd                       (scale defaults to 1 / sqrt(D))
//   s_ij = x_ij, or c * tanh(x_ij / c) when softcap c > 0
//   V_i  = { j : reference_key_visible(i, j) }
//   lse_i = log( sum_{j in V_i} exp(s_ij) + [sinks] exp(sink_h) )  (computed around the row maximum)
//   o_i   = sum_{j in V_i} exp(s_ij - lse_i) v_j
//   V_i empty and no sink: o_i = 0, lse_i = -inf. V_i empty with a sink: o_i = 0, lse_i = sink_h.
DenseForwardResult dense_forward_reference(const DenseReferenceInputs& inputs);

// Backward in float64 of the loss L = sum_i <dout_i, o_i> through the forward above (o and lse are
// recomputed from q, k, v; the caller's o and lse are not read). With p_ij = exp(s_ij - lse_i):
//   dp_ij    = <dout_i, v_j>
//   delta_i  = <dout_i, o_i>               (= sum_j p_ij dp_ij)
//   ds_ij    = p_ij (dp_ij - delta_i)
//   dx_ij    = ds_ij, or ds_ij (1 - (s_ij / c)^2) with softcap c   (d/dx of c tanh(x / c))
//   dq_i     = scale sum_j dx_ij k_j
//   dk_j     = scale sum_{i, h in group} dx_ij q_i
//   dv_j     = sum_{i, h in group} p_ij dout_i
//   dsink_h  = - sum_{sequences, i} exp(sink_h - lse_i) delta_i
// Sums run over visible pairs only; keys no query sees get dk = dv = 0.
DenseBackwardResult dense_backward_reference(const DenseReferenceInputs& inputs, const TensorRef& dout);

// The "naive formula in the input precision" of quality.md's tolerance rule
//   max|out - ref| <= 2 * max|naive_lowp - ref| + atol   (3x for gradients).
// It is the unfused textbook computation (what a framework's eager attention does with fp16/bf16
// tensors): every product is accumulated in fp32 and the intermediate tensors are rounded to the input
// dtype T (the dtype of q) at the points where an eager implementation materialises them:
//   s   = round_T(scale * fp32_dot(q_i, k_j))              the score matrix
//   s   = round_T(c * tanhf(s / c))                         softcap, when on
//   m_i = max visible s; e_ij = expf(s_ij - m_i); l_i = fp32 sum e_ij (+ expf(sink_h - m_i))
//   p   = round_T(e_ij / l_i)                               the probability matrix
//   o_i = round_T(fp32 sum_j p_ij v_j)                       the output
//   lse_i = fp32 logsumexp of the fp32 scores, before they are rounded to T (+ the sink): the API's
//           lse is an fp32 output computed from fp32 scores; taking it from the rounded scores would
//           loosen its bound to the rounding of T (2^-8 |s| in bf16), which hides lse bugs of 1e-3
// T = fp32 means no rounding beyond fp32 arithmetic; T = fp64 computes in float64 throughout, which is
// the reference itself (naive error 0). Empty rows follow the reference (o = 0, lse = -inf or sink).
// Results are returned as doubles that are exactly representable in T (fp32 for lse).
DenseForwardResult dense_forward_naive_lowp(const DenseReferenceInputs& inputs);

// Backward in the input precision: the textbook attention backward given what the backward API
// receives, o (`out`, the shape of out) and dout, both rounded to T; s and p are the naive forward's
// rounded tensors, T as above, fp32 accumulation everywhere. Taking the caller's o (not the naive
// forward's) gives delta the same o rounding the backend sees, which dominates dsinks.
//   dv_j  = round_T(fp32 sum_{i, h} p_ij dout_i)             rounded once, after the GQA sum
//   dp_ij = round_T(fp32_dot(dout_i, v_j))
//   delta_i = fp32_dot(dout_i, o_i)
//   ds_ij = round_T(p_ij (dp_ij - delta_i))
//   dx_ij = round_T(ds_ij (1 - t_ij^2)), t_ij = tanhf(x_ij / c)   softcap, when on
//   dq_i  = round_T(scale fp32 sum_j dx_ij k_j);  dk_j = round_T(scale fp32 sum_{i, h} dx_ij q_i)
//   dsink_h = fp32 - sum_i expf(sink_h - lse_i) delta_i, with the naive forward's fp32 lse (dsinks are
//             fp32, computed from the fp32 lse as numerics.md writes it; from the rounded scores instead,
//             a ~2^-9 |s| error in exp(sink - lse) could cancel the error that o's rounding puts into
//             delta and make the bound of this handful of numbers too tight by chance). One partial sum
//             per sequence, the partials added in sequence order.
// The references run (sequence, head) tasks on OpenMP threads; every sum keeps one fixed order, so
// results do not depend on the number of threads.
DenseBackwardResult dense_backward_naive_lowp(const DenseReferenceInputs& inputs, const TensorRef& dout,
                                              const TensorRef& out);

// Merge of two attention states over disjoint key sets (semantics.md section 3), row by row.
// o_a, o_b, o: [rows, dv]; lse_a, lse_b, lse: [rows].
//   m = max(lse_a, lse_b), w_a = exp(lse_a - m), w_b = exp(lse_b - m)
//   o = (w_a o_a + w_b o_b) / (w_a + w_b),  lse = m + log(w_a + w_b)
//   both lse = -inf: o = 0, lse = -inf.
void merge_states_reference(const std::vector<double>& o_a, const std::vector<double>& lse_a,
                            const std::vector<double>& o_b, const std::vector<double>& lse_b, std::int64_t dv,
                            std::vector<double>* o, std::vector<double>* lse);

}  // namespace attnkit::reference
