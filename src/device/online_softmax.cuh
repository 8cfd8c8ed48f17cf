// The online softmax of one CTA's query rows, held in registers: the one object that the dense forward,
// its split-KV variant and later kernels share (architecture.md, convention 7).
//
// Scores arrive key tile by key tile as an fp32 fragment in (rows, cols) form (see
// accumulator_rows_cols): each thread holds kRows rows, and the columns of one row are spread over the
// 4 threads of a quad (lanes 4r .. 4r+3), so row reductions are two xor-shuffles.
//
// Units: scores are kept in "score units" u, with the true logit s = u * logit_per_unit (this lets the
// caller fold the softmax scale, or the softcap c, into one multiply). Exponentials are taken in base 2
// with the constant scale_log2 = logit_per_unit * log2(e), so exp(s - m) = exp2(u * scale_log2 - m2).
//
// Per row, after all tiles (semantics.md section 1):
//   m  = max over visible keys of s,   l = sum over visible keys of exp(s - m)
//   with an attention sink z:  l' = l * exp(m - M) + exp(z - M),  M = max(m, z)
//   o  = (sum_j exp(s_j - m) v_j) * exp(m - M) / l'        lse = M + log(l')
// Masked scores are -inf and contribute exp(-inf) = 0.
//
// Empty-row rule (written here, where it is enforced): a row that saw no visible key (every score -inf,
// or no tile at all) has m = -inf and l = 0. Its exponent reference is taken as 0 instead of -inf so
// that exp2(-inf - ref) = 0 instead of NaN, and finalize() writes o = 0 and lse = -inf (or lse = z
// when a sink is present, since the sink alone is then the whole denominator). Never NaN.
#pragma once

#include <cmath>

#include <cute/tensor.hpp>

namespace attnkit::device {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// x reduced over the 4 threads of a quad (lanes sharing a row of an m16n8 accumulator).
template <class ReduceOp>
__device__ __forceinline__ float quad_allreduce(float x, ReduceOp op) {
  x = op(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return op(x, __shfl_xor_sync(0xffffffffu, x, 1));
}

// 2^x with one MUFU.EX2 (ex2.approx: a few ulp of error, subnormal results flushed, -inf -> 0). exp2f() without
// --use_fast_math adds range handling around the same instruction, on the hottest line of the kernel.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

template <int kRows>
class OnlineSoftmax {
 public:
  // scale_log2 = (logit per score unit) * log2(e).
  __device__ explicit OnlineSoftmax(float scale_log2) : scale_log2_(scale_log2) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max_[r] = -INFINITY;
      row_sum_[r] = 0.0f;
    }
  }

  // Folds one key tile into the running state. `scores` (rows, cols) is overwritten with the
  // unnormalised probabilities exp(s - m_new); `output` (rows, cols_v), the running sum of p * v, is
  // rescaled by exp(m_old - m_new). kFirstTile skips that rescale (the output is still zero).
  template <bool kFirstTile, class ScoreTensor, class OutputTensor>
  __device__ __forceinline__ void update(ScoreTensor&& scores, OutputTensor&& output) {
    using namespace cute;
    static_assert(size<0>(std::decay_t<ScoreTensor>{}) == kRows);
    static_assert(size<0>(std::decay_t<OutputTensor>{}) == kRows);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float tile_max = row_max_[r];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) tile_max = fmaxf(tile_max, scores(r, c));
      tile_max = quad_allreduce(tile_max, MaxOp{});
      const float reference = exponent_reference(tile_max);
      if constexpr (!kFirstTile) {
        // exp2(-inf) = 0 when the row had no visible key so far; the reference is never -inf.
        const float correction = fast_exp2(row_max_[r] * scale_log2_ - reference);
        row_sum_[r] *= correction;
        CUTE_UNROLL
        for (int c = 0; c < size<1>(output); ++c) output(r, c) *= correction;
      }
      row_max_[r] = tile_max;
      float tile_sum = 0.0f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const float p = fast_exp2(scores(r, c) * scale_log2_ - reference);  // one FFMA + one MUFU.EX2
        scores(r, c) = p;
        tile_sum += p;
      }
      row_sum_[r] += tile_sum;  // this thread's columns only; reduced over the quad in finalize()
    }
  }

  // Normalises `output` (rows, cols_v) in place and returns each row's natural-log LSE in `lse`.
  // sink_logit: the attention sink z of this head in logit units, or -inf for none.
  template <class OutputTensor>
  __device__ __forceinline__ void finalize(OutputTensor&& output, float sink_logit, float (&lse)[kRows]) {
    using namespace cute;
    const float sink_log2 = sink_logit * kLog2e;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float sum = quad_allreduce(row_sum_[r], SumOp{});
      // The reference the exponentials of this row were taken against (0 for an empty row, where sum = 0).
      const float reference = exponent_reference(row_max_[r]);
      // Merge the sink as one more key with no value row: M = max(reference, z).
      const float merged_max = fmaxf(reference, sink_log2);
      const float keys_weight = exp2f(reference - merged_max);
      const float total = sum * keys_weight + exp2f(sink_log2 - merged_max);
      // total == 0 only when nothing is visible and there is no sink: o = 0, lse = -inf.
      const float output_scale = total > 0.0f ? keys_weight / total : 0.0f;
      lse[r] = total > 0.0f ? (merged_max + log2f(total)) * kLn2 : -INFINITY;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(output); ++c) output(r, c) *= output_scale;
    }
  }

 private:
  // m * scale_log2, or 0 for a row whose maximum is still -inf (see the empty-row rule above).
  __device__ __forceinline__ float exponent_reference(float row_max) const {
    return row_max == -INFINITY ? 0.0f : row_max * scale_log2_;
  }

  float scale_log2_;
  float row_max_[kRows];  // running max in score units; -inf until a visible key is seen
  float row_sum_[kRows];  // running sum of exp2(u * scale_log2 - reference) over this thread's columns
};

}  // namespace attnkit::device
