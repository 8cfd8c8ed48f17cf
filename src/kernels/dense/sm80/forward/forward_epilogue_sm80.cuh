// The sm80 forward epilogue: normalise O, then either
//   - write O (input dtype) and LSE (fp32) to the caller's tensors, the sink merged in, or
//   - (split-KV) write the fp32 partial state (O, LSE) of this key split to the workspace; the sink is
//     merged once, by the combine kernel.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "device/mma_fragment_sm80.cuh"
#include "device/online_softmax.cuh"
#include "device/tile_copy_sm80.cuh"
#include "kernels/dense/sm80/forward/forward_tile_scheduler.cuh"

namespace attnkit::sm80 {

template <class Config>
struct ForwardEpilogueSm80 {
  using Element = typename Config::Element;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kHeadDimV = Config::kHeadDimV;

  // acc_o: (MMA, MMA_M, MMA_Dv) unnormalised; softmax: the state after the last key tile.
  // smem: the mainloop's buffer (O goes where Q was).
  template <class AccO, class Softmax, int kRows>
  __device__ static void store(const ForwardParams& p, const SequenceSpan& seq, const ForwardWork& work, AccO& acc_o,
                               Softmax& softmax, float (&lse)[kRows], char* smem) {
    using namespace cute;
    const int tid = threadIdx.x;
    const int row_begin = work.m_block * kBlockM;
    const int valid_rows = seq.seqlen_q - row_begin;
    typename Config::TiledMma mma;
    auto thread_mma = mma.get_thread_slice(tid);
    // (row, col) within the (kBlockM, Dv) output tile of each of this thread's accumulators.
    Tensor tOcO = thread_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDimV>>{}));
    Tensor tOcO_rows = device::rows_cols_view(tOcO);  // (rows, cols)

    if (p.num_splits > 1) {
      softmax.finalize(device::rows_cols_view(acc_o), -INFINITY, lse);
      store_partial(p, seq, work, acc_o, tOcO, tOcO_rows, lse, valid_rows);
      return;
    }

    const float sink = p.sinks != nullptr ? p.sinks[work.head] : -INFINITY;
    softmax.finalize(device::rows_cols_view(acc_o), sink, lse);

    // O through shared memory, so that global stores are 16-byte rows instead of 4-byte scatter.
    // Every warp passed the mainloop's last barrier after its last read of Q, and an empty key range
    // issued no copy into Q's space, so Q's buffer is free; the barrier below publishes O.
    Tensor sO = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Config::SmemLayoutO{});
    Tensor rO = device::convert_fragment<Element>(acc_o);
    auto smem_copy_o = make_tiled_copy_C(typename Config::SmemCopyAtomO{}, mma);
    auto smem_thread_o = smem_copy_o.get_thread_slice(tid);
    copy(smem_copy_o, smem_thread_o.retile_S(rO), smem_thread_o.partition_D(sO));
    __syncthreads();

    Element* out_rows = static_cast<Element*>(p.out) + seq.out_offset + work.head * p.out_head_stride +
                        std::int64_t{row_begin} * p.out_row_stride;
    Tensor gO = make_tensor(make_gmem_ptr(out_rows), Shape<Int<kBlockM>, Int<kHeadDimV>>{},
                            make_stride(p.out_row_stride, _1{}));  // (kBlockM, Dv)
    typename Config::GmemStoreCopy store_copy;
    auto store_thread = store_copy.get_thread_slice(tid);
    device::store_tile(store_copy, store_thread.partition_S(sO), store_thread.partition_D(gO),
                       store_thread.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDimV>>{})),
                       valid_rows, p.head_dim_v);

    // The first thread of each quad holds column 0 of its rows and writes their LSE.
    if (p.lse != nullptr && get<1>(tOcO_rows(0, 0)) == 0) {
      float* lse_head = p.lse + seq.lse_offset + work.head * p.lse_head_stride;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const int row = get<0>(tOcO_rows(r, 0));
        if (row < valid_rows) lse_head[std::int64_t{row_begin + row} * p.lse_row_stride] = lse[r];
      }
    }
  }

 private:
  // Workspace rows are tokens t of all total_q; layouts in ForwardParams. Each accumulator pair
  // (c0, c1) / (c2, c3) is two adjacent columns: one 8-byte store.
  template <class AccO, class Coords, class CoordsRows, int kRows>
  __device__ static void store_partial(const ForwardParams& p, const SequenceSpan& seq, const ForwardWork& work,
                                       const AccO& acc_o, const Coords& tOcO, const CoordsRows& tOcO_rows,
                                       const float (&lse)[kRows], int valid_rows) {
    using namespace cute;
    const std::int64_t first_token = seq.first_token_q + std::int64_t{work.m_block} * kBlockM;
    float* o_split = p.o_partial + std::int64_t{work.split} * p.total_q * p.heads_q * p.head_dim_v;
    CUTE_UNROLL
    for (int m = 0; m < size<1>(acc_o); ++m) {
      CUTE_UNROLL
      for (int row_pair = 0; row_pair < 2; ++row_pair) {
        const int row = get<0>(tOcO(make_coord(0, row_pair), m, 0));
        if (row >= valid_rows) continue;
        float* o_row = o_split + ((first_token + row) * p.heads_q + work.head) * p.head_dim_v;
        CUTE_UNROLL
        for (int n = 0; n < size<2>(acc_o); ++n) {
          const int col = get<1>(tOcO(make_coord(0, row_pair), m, n));
          if (col < p.head_dim_v) {
            *reinterpret_cast<float2*>(o_row + col) =
                make_float2(acc_o(make_coord(0, row_pair), m, n), acc_o(make_coord(1, row_pair), m, n));
          }
        }
      }
    }
    if (get<1>(tOcO_rows(0, 0)) == 0) {
      float* lse_split = p.lse_partial + (std::int64_t{work.split} * p.heads_q + work.head) * p.total_q + first_token;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const int row = get<0>(tOcO_rows(r, 0));
        if (row < valid_rows) lse_split[row] = lse[r];
      }
    }
  }
};

}  // namespace attnkit::sm80
