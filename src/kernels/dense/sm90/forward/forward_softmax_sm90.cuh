// Register views of the Hopper wgmma fragments, and the online softmax split into the two halves the
// overlapped mainloop needs.
//
// A wgmma m64nNk16 accumulator gives each thread of the warpgroup the value mode (2, 2, N / 8)
// (PTX ISA, "wgmma register fragments"): a column pair, a row pair (rows r and r + 8 of the warp's 16),
// and N / 8 column chunks of 8. That is the m16n8 accumulator of mma.sync repeated along N, so the
// columns of one row are still spread over the 4 lanes of a quad and the row reductions of
// device::quad_allreduce apply unchanged.
#pragma once

#include <cmath>
#include <type_traits>

#include <cute/tensor.hpp>

#include "device/online_softmax.cuh"

namespace attnkit::sm90 {

// Accumulator layout ((2, 2, N / 8), MMA_M, MMA_N) -> ((2, MMA_M), (2, N / 8, MMA_N)): (rows, cols).
template <class AccumulatorLayout>
CUTE_HOST_DEVICE constexpr auto wgmma_rows_cols(AccumulatorLayout layout) {
  using namespace cute;
  static_assert(rank(AccumulatorLayout{}) == 3 && rank<0>(AccumulatorLayout{}) == 3,
                "expected a wgmma accumulator layout ((2, 2, N / 8), MMA_M, MMA_N)");
  return make_layout(make_layout(get<0, 1>(layout), get<1>(layout)),
                     make_layout(get<0, 0>(layout), get<0, 2>(layout), get<2>(layout)));
}

template <class Tensor>
CUTE_HOST_DEVICE auto wgmma_rows_cols_view(Tensor&& accumulators) {
  return cute::make_tensor(accumulators.data(), wgmma_rows_cols(accumulators.layout()));
}

// Accumulator layout ((2, 2, N / 8), MMA_M, MMA_N) of S -> register A-operand layout
// ((2, 2, 2), MMA_M, N / 16 * MMA_N) of O += P V, whose k runs over S's columns: a 16-bit A atom
// (64 x 16) holds (column pair, row pair, k half), and the two k halves are two neighbouring column
// chunks of the accumulator, value for value.
template <class AccumulatorLayout>
CUTE_HOST_DEVICE constexpr auto wgmma_accumulator_as_operand_a(AccumulatorLayout layout) {
  using namespace cute;
  static_assert(size<0, 2>(AccumulatorLayout{}) % 2 == 0, "N / 8 must be even to pair chunks into k16");
  auto chunks = logical_divide(get<0, 2>(layout), Tile<_2>{});  // ((2, N / 16))
  return make_layout(make_layout(get<0, 0>(layout), get<0, 1>(layout), get<0, 0>(chunks)), get<1>(layout),
                     coalesce(make_layout(get<0, 1>(chunks), get<2>(layout))));
}

// The online softmax of device::OnlineSoftmax (same units, same empty-row rule, same finalize), with
// the update split in two: update() turns a score tile into probabilities and returns each row's
// correction exp(m_old - m_new) while O += P V of the previous tile is still in flight on the tensor
// cores; rescale() applies it to O once that GEMM has retired.
//
// kConditional (conditional rescaling): a row's reference maximum moves only when the tile's maximum
// passes it by more than kRescaleThreshold (log2 units). Below that the row keeps its old reference,
// its probabilities may reach 2^kRescaleThreshold = 256 (far inside bf16/fp16 range and exact to the
// same relative precision; the sums and O stay fp32), and its correction is 1. update() tells whether
// any row of the warp moved: when none did, the warp skips the rescale of O altogether. After the
// first few key tiles the running maximum rarely grows by a factor 256, so most tiles skip it.
// Without kConditional every row's reference follows its maximum and O is always rescaled.
//
// kParallelChains: the row reductions laid out for instruction-level parallelism. Each row's maximum
// and sum run as two chains over alternate columns, every row's chains side by side, the quad shuffles
// of all rows after them; row by row, each row is one chain of 32 dependent FMNMX and one of 32
// dependent FADD (a 128-key tile) with its shuffles in between. Maxima and probabilities are the same
// bit for bit; the sums add the same values in another order. Measured (NOTES.md, runs 11 and 12):
// D = 128 +0.4-1.7% below S = 8192, D = 64 within 0.7%, D = 256 -0.3-0.7% (hence row by row there).
template <int kRows, bool kConditional, bool kParallelChains>
class SplitOnlineSoftmax {
 public:
  static constexpr int kRowCount = kRows;
  static constexpr float kRescaleThreshold = 8.0f;

  __device__ explicit SplitOnlineSoftmax(float scale_log2) : scale_log2_(scale_log2) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max_[r] = -INFINITY;
      row_sum_[r] = 0.0f;
    }
  }

  // scores (rows, cols): overwritten with exp(s - m_ref). correction: exp(m_old - m_ref) per row, 1
  // where the reference stayed (unused on the first tile, where O is still zero). Returns whether O
  // needs rescale() (the same answer for every thread of the warp; always, without kConditional).
  template <bool kFirstTile, class ScoreTensor>
  __device__ __forceinline__ bool update(ScoreTensor&& scores, float (&correction)[kRows]) {
    if constexpr (kParallelChains) {
      return update_parallel_chains<kFirstTile>(scores, correction);
    } else {
      return update_row_by_row<kFirstTile>(scores, correction);
    }
  }

  template <class OutputTensor>
  __device__ __forceinline__ static void rescale(OutputTensor&& output, const float (&correction)[kRows]) {
    using namespace cute;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(output); ++c) output(r, c) *= correction[r];
    }
  }

  // As device::OnlineSoftmax::finalize: normalises output (rows, cols_v) in place and returns each row's
  // natural-log LSE; sink_logit is the head's sink in logit units or -inf.
  //
  // Branch-free, so that the rows' chains interleave: this runs once per work tile between the last
  // O += P V and the store, while the tensor cores wait for the next tile (ncu, NOTES.md run 14: the
  // epilogue was 9% of a consumer warp's time at D = 128 S = 1024, half of it here, where IEEE division
  // and exp2f's range handling put a branch and a slow-path call on each row). The weights use the
  // MUFU exp2 of the main loop (exact at 0 and -inf, the values they take without a sink), the scale an
  // approximate division (2 ulp on an fp32 factor of a 16-bit output); LSE keeps the accurate log2f
  // (log2f(0) = -inf gives the empty row's -inf without a branch).
  template <class OutputTensor>
  __device__ __forceinline__ void finalize(OutputTensor&& output, float sink_logit, float (&lse)[kRows]) {
    using namespace cute;
    const float sink_log2 = sink_logit * device::kLog2e;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float sum = device::quad_allreduce(row_sum_[r], device::SumOp{});
      const float reference = exponent_reference(row_max_[r]);
      const float merged_max = fmaxf(reference, sink_log2);
      const float keys_weight = device::fast_exp2(reference - merged_max);
      const float total = sum * keys_weight + device::fast_exp2(sink_log2 - merged_max);
      const float output_scale = total > 0.0f ? __fdividef(keys_weight, total) : 0.0f;
      lse[r] = (merged_max + log2f(total)) * device::kLn2;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(output); ++c) output(r, c) *= output_scale;
    }
  }

 private:
  // Old maximum -inf (no visible key yet): the difference is +inf and the reference moves. Both -inf:
  // NaN compares false and the row stays empty (reference 0, every p = 0).
  template <bool kFirstTile>
  __device__ __forceinline__ bool reference_moves(float tile_max, float row_max) const {
    return kFirstTile || !kConditional || (tile_max - row_max) * scale_log2_ > kRescaleThreshold;
  }

  template <bool kFirstTile, class ScoreTensor>
  __device__ __forceinline__ bool update_parallel_chains(ScoreTensor&& scores, float (&correction)[kRows]) {
    using namespace cute;
    constexpr int kCols = decltype(size<1>(std::decay_t<ScoreTensor>{}))::value;
    static_assert(kCols % 2 == 0);
    float chain_max[kRows][2];
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) chain_max[r][0] = chain_max[r][1] = row_max_[r];
    CUTE_UNROLL
    for (int c = 0; c < kCols; ++c) {
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) chain_max[r][c % 2] = fmaxf(chain_max[r][c % 2], scores(r, c));
    }
    float tile_max[kRows];
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) tile_max[r] = fmaxf(chain_max[r][0], chain_max[r][1]);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
    bool moved = false;
    float reference[kRows];
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      correction[r] = 1.0f;
      if (reference_moves<kFirstTile>(tile_max[r], row_max_[r])) {
        const float moved_reference = exponent_reference(tile_max[r]);
        if (!kFirstTile) correction[r] = device::fast_exp2(row_max_[r] * scale_log2_ - moved_reference);
        row_max_[r] = tile_max[r];
        moved = true;
      }
      reference[r] = exponent_reference(row_max_[r]);
    }
    float chain_sum[kRows][2];
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) chain_sum[r][0] = chain_sum[r][1] = 0.0f;
    CUTE_UNROLL
    for (int c = 0; c < kCols; ++c) {
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const float p = device::fast_exp2(scores(r, c) * scale_log2_ - reference[r]);
        scores(r, c) = p;
        chain_sum[r][c % 2] += p;
      }
    }
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_sum_[r] = (kFirstTile ? 0.0f : row_sum_[r] * correction[r]) + (chain_sum[r][0] + chain_sum[r][1]);
    }
    if constexpr (kFirstTile) return false;
    if constexpr (!kConditional) return true;
    return __any_sync(0xffffffffu, moved);
  }

  template <bool kFirstTile, class ScoreTensor>
  __device__ __forceinline__ bool update_row_by_row(ScoreTensor&& scores, float (&correction)[kRows]) {
    using namespace cute;
    bool moved = false;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float tile_max = row_max_[r];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) tile_max = fmaxf(tile_max, scores(r, c));
      tile_max = device::quad_allreduce(tile_max, device::MaxOp{});
      correction[r] = 1.0f;
      if (reference_moves<kFirstTile>(tile_max, row_max_[r])) {
        const float reference = exponent_reference(tile_max);
        if (!kFirstTile) correction[r] = device::fast_exp2(row_max_[r] * scale_log2_ - reference);
        row_max_[r] = tile_max;
        moved = true;
      }
      const float reference = exponent_reference(row_max_[r]);
      float tile_sum = 0.0f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const float p = device::fast_exp2(scores(r, c) * scale_log2_ - reference);
        scores(r, c) = p;
        tile_sum += p;
      }
      row_sum_[r] = (kFirstTile ? 0.0f : row_sum_[r] * correction[r]) + tile_sum;
    }
    if constexpr (kFirstTile) return false;
    if constexpr (!kConditional) return true;
    return __any_sync(0xffffffffu, moved);
  }

  __device__ __forceinline__ float exponent_reference(float row_max) const {
    return row_max == -INFINITY ? 0.0f : row_max * scale_log2_;
  }

  float scale_log2_;
  float row_max_[kRows];
  float row_sum_[kRows];
};

}  // namespace attnkit::sm90
