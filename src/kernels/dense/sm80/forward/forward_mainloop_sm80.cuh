// The sm80 forward mainloop: for one query tile, walk its key tiles from the last to the first with
// cp.async loads, S = Q K^T and O += P V on mma.sync, and the online softmax in registers.
//
// Pipeline (one K and one V buffer; FlashAttention-2's schedule): the load of V[n] flies during
// S = Q K[n]^T, and the load of K[n - 1] during the softmax and O += P V[n]:
//
//   wait K[n]; sync | issue V[n] | S = Q K[n]^T; softcap; mask | wait V[n]; sync | issue K[n-1] |
//   softmax(S) -> P | O += P V[n]
//
// Each sync also guarantees that every warp finished reading the buffer the following issue
// overwrites. Tiles go from last to first so that the boundary tiles (causal diagonal, key-length tail),
// which need the mask, come first while the rest run unmasked.
//
// Config::kPlainInteriorStep (D = 64 and 256): two bodies, as FlashAttention-2 keeps its masked and
// unmasked iterations apart: interior tiles, fully visible with kBlockN keys, take a plain body without
// mask, softcap or load predicates when the head dims fill the tile and softcap is off; every other tile
// takes the general one. Other tile shapes run the general body for every tile.
#pragma once

#include <cute/tensor.hpp>

#include "device/mask_policy.cuh"
#include "device/mma_fragment_sm80.cuh"
#include "device/online_softmax.cuh"
#include "device/tile_copy_sm80.cuh"
#include "device/warp_gemm_sm80.cuh"
#include "kernels/dense/sm80/forward/forward_tile_scheduler.cuh"

namespace attnkit::sm80 {

template <class Config>
struct ForwardMainloopSm80 {
  using Element = typename Config::Element;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kHeadDim = Config::kHeadDim;
  static constexpr int kHeadDimV = Config::kHeadDimV;

  // Shared memory: Q (kBlockM, D) | K (kBlockN, D) | V (kBlockN, Dv), each swizzled.
  __device__ static Element* smem_q(char* smem) { return reinterpret_cast<Element*>(smem); }
  __device__ static Element* smem_k(char* smem) { return smem_q(smem) + Config::kSmemElementsQ; }
  __device__ static Element* smem_v(char* smem) { return smem_k(smem) + Config::kSmemElementsK; }

  // device::copy_tile_async with each chunk's predicate taken against the tile's residue from this
  // thread's first chunk: (row - row0) < valid_rows - row0, where row - row0 is a compile-time constant.
  // Written as row < valid_rows, nvcc keeps every chunk's row live across the key-tile loop (eight
  // registers at D = 64, where ptxas then spills 84 bytes instead of 64).
  template <class TiledCopy, class SrcTensor, class DstTensor, class CoordTensor>
  __device__ __forceinline__ static void copy_rows_async(const TiledCopy& tiled_copy, const SrcTensor& src,
                                                         DstTensor&& dst, const CoordTensor& coords, int valid_rows,
                                                         int valid_cols) {
    using namespace cute;
    const int rows_left = valid_rows - get<0>(coords(0, 0, 0));
    const int cols_left = valid_cols - get<1>(coords(0, 0, 0));
    CUTE_UNROLL
    for (int m = 0; m < size<1>(src); ++m) {
      const bool row_ok = get<0>(coords(0, m, 0)) - get<0>(coords(0, 0, 0)) < rows_left;
      CUTE_UNROLL
      for (int k = 0; k < size<2>(src); ++k) {
        const bool ok = row_ok && get<1>(coords(0, m, k)) - get<1>(coords(0, 0, 0)) < cols_left;
        copy(tiled_copy.with(ok), src(_, m, k), dst(_, m, k));
      }
    }
  }

  // Accumulates O (unnormalised, in acc_o: (MMA, MMA_M, MMA_Dv)) and the softmax state of the rows
  // [m_block * kBlockM, + kBlockM) of `head` over the key tiles `tiles`. Empty `tiles`: nothing is read.
  template <class AccO, class Softmax>
  __device__ __forceinline__ static void run(const ForwardParams& p, const SequenceSpan& seq, int m_block,
                                             int head, device::TileRange tiles, const device::WindowMask& mask,
                                             char* smem, AccO& acc_o, Softmax& softmax) {
    using namespace cute;
    if (tiles.empty()) return;
    const int tid = threadIdx.x;
    const int row_begin = m_block * kBlockM;
    const int kv_head = head / p.group;

    Tensor sQ = make_tensor(make_smem_ptr(smem_q(smem)), typename Config::SmemLayoutQ{});    // (kBlockM, D)
    Tensor sK = make_tensor(make_smem_ptr(smem_k(smem)), typename Config::SmemLayoutK{});    // (kBlockN, D)
    Tensor sV = make_tensor(make_smem_ptr(smem_v(smem)), typename Config::SmemLayoutV{});    // (kBlockN, Dv)
    Tensor sVt = make_tensor(make_smem_ptr(smem_v(smem)), typename Config::SmemLayoutVt{});  // (Dv, kBlockN)

    // Global tiles at row 0 of their sequence; a key tile n is the same view moved by n * kBlockN rows.
    const Element* q_rows = static_cast<const Element*>(p.q) + seq.q_offset + head * p.q_head_stride +
                            std::int64_t{row_begin} * p.q_row_stride;  // [Sq - row_begin rows, D], row stride
    const Element* k_rows =
        static_cast<const Element*>(p.k) + seq.k_offset + kv_head * p.k_head_stride;  // [Sk rows, D]
    const Element* v_rows =
        static_cast<const Element*>(p.v) + seq.v_offset + kv_head * p.v_head_stride;  // [Sk rows, Dv]
    Tensor gQ = make_tensor(make_gmem_ptr(q_rows), Shape<Int<kBlockM>, Int<kHeadDim>>{},
                            make_stride(p.q_row_stride, _1{}));  // (kBlockM, D)

    typename Config::GmemTileCopy gmem_copy;
    auto gmem_thread = gmem_copy.get_thread_slice(tid);
    Tensor tQsQ = gmem_thread.partition_D(sQ);  // (CPY, CPY_M, CPY_D)
    Tensor tKsK = gmem_thread.partition_D(sK);  // (CPY, CPY_N, CPY_D)
    Tensor tVsV = gmem_thread.partition_D(sV);  // (CPY, CPY_N, CPY_Dv)
    // (row, col) within the tile of the first element of each of this thread's 16-byte chunks.
    Tensor tQcQ = gmem_thread.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));   // like tQsQ
    Tensor tKcK = gmem_thread.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));   // like tKsK
    Tensor tVcV = gmem_thread.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDimV>>{}));  // like tVsV

    // full: the tile has kBlockN valid rows and the head dims fill it, so no chunk needs a predicate.
    auto load_k = [&](auto full, int n) {
      Tensor gK = make_tensor(make_gmem_ptr(k_rows + std::int64_t{n} * kBlockN * p.k_row_stride),
                              Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_stride(p.k_row_stride, _1{}));
      if constexpr (decltype(full)::value) {
        copy(gmem_copy, gmem_thread.partition_S(gK), tKsK);
      } else {
        copy_rows_async(gmem_copy, gmem_thread.partition_S(gK), tKsK, tKcK, seq.seqlen_k - n * kBlockN, p.head_dim);
      }
    };
    auto load_v = [&](auto full, int n) {
      Tensor gV = make_tensor(make_gmem_ptr(v_rows + std::int64_t{n} * kBlockN * p.v_row_stride),
                              Shape<Int<kBlockN>, Int<kHeadDimV>>{}, make_stride(p.v_row_stride, _1{}));
      if constexpr (decltype(full)::value) {
        copy(gmem_copy, gmem_thread.partition_S(gV), tVsV);
      } else {
        copy_rows_async(gmem_copy, gmem_thread.partition_S(gV), tVsV, tVcV, seq.seqlen_k - n * kBlockN,
                        p.head_dim_v);
      }
    };

    typename Config::TiledMma mma;
    auto thread_mma = mma.get_thread_slice(tid);
    Tensor tSrQ = thread_mma.partition_fragment_A(sQ);    // (MMA, MMA_M, MMA_D)
    Tensor tSrK = thread_mma.partition_fragment_B(sK);    // (MMA, MMA_N, MMA_D)
    Tensor tOrVt = thread_mma.partition_fragment_B(sVt);  // (MMA, MMA_Dv, MMA_N)
    auto smem_copy_q = make_tiled_copy_A(typename Config::SmemCopyAtomA{}, mma);
    auto smem_copy_k = make_tiled_copy_B(typename Config::SmemCopyAtomA{}, mma);
    auto smem_copy_v = make_tiled_copy_B(typename Config::SmemCopyAtomVt{}, mma);
    Tensor tSsQ = smem_copy_q.get_thread_slice(tid).partition_S(sQ);    // (CPY, CPY_M, CPY_D)
    Tensor tSsK = smem_copy_k.get_thread_slice(tid).partition_S(sK);    // (CPY, CPY_N, CPY_D)
    Tensor tOsVt = smem_copy_v.get_thread_slice(tid).partition_S(sVt);  // (CPY, CPY_Dv, CPY_N)
    // (row, col) within the (kBlockM, kBlockN) score tile of each of this thread's accumulators.
    Tensor tScS = thread_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));

    device::copy_tile_async(gmem_copy, gmem_thread.partition_S(gQ), tQsQ, tQcQ, seq.seqlen_q - row_begin,
                            p.head_dim);
    load_k(false_type{}, tiles.end - 1);
    cp_async_fence();

    // What step() reads, by reference.
    struct TileOperands {
      const ForwardParams& p;
      const device::WindowMask& mask;
      int row_begin;
      int first_tile;
      decltype(mma)& mma;
      decltype(tSrQ)& tSrQ;
      decltype(tSrK)& tSrK;
      decltype(tOrVt)& tOrVt;
      decltype(tSsQ)& tSsQ;
      decltype(tSsK)& tSsK;
      decltype(tOsVt)& tOsVt;
      decltype(smem_copy_q)& smem_copy_q;
      decltype(smem_copy_k)& smem_copy_k;
      decltype(smem_copy_v)& smem_copy_v;
      decltype(tScS)& tScS;
      decltype(load_k)& load_k;
      decltype(load_v)& load_v;
    } ops{p,    mask,  row_begin,   tiles.begin, mma,         tSrQ,        tSrK,  tOrVt, tSsQ,
          tSsK, tOsVt, smem_copy_q, smem_copy_k, smem_copy_v, tScS, load_k, load_v};

    if constexpr (Config::kPlainInteriorStep) {
      const bool plain_shape = !p.softcap && p.head_dim == kHeadDim && p.head_dim_v == kHeadDimV;
      step<false>(ops, tiles.end - 1, true, acc_o, softmax);
      for (int n = tiles.end - 2; n >= tiles.begin; --n) {
        if (plain_shape &&
            mask.tile_fully_visible(row_begin, row_begin + kBlockM, n * kBlockN, (n + 1) * kBlockN)) {
          step<true>(ops, n, false, acc_o, softmax);
        } else {
          step<false>(ops, n, false, acc_o, softmax);
        }
      }
    } else {
      for (int n = tiles.end - 1; n >= tiles.begin; --n) step<false>(ops, n, n == tiles.end - 1, acc_o, softmax);
    }
  }

 private:
  // One key tile n. kPlain: see the top of the file. first: the range's first tile (O is still zero: no
  // rescale). Force-inlined: as a call, the accumulators would pass through local memory (nvcc outlined
  // such a step written as a lambda, with a 608-byte stack frame at D = 64).
  template <bool kPlain, class Operands, class AccO, class Softmax>
  __device__ __forceinline__ static void step(Operands& o, int n, bool first, AccO& acc_o, Softmax& softmax) {
    using namespace cute;
    Tensor acc_s = partition_fragment_C(o.mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc_s);
    cp_async_wait<0>();
    __syncthreads();
    o.load_v(bool_constant<kPlain>{}, n);
    cp_async_fence();
    device::gemm_smem_smem(o.mma, acc_s, o.tSrQ, o.tSrK, o.tSsQ, o.tSsK, o.smem_copy_q, o.smem_copy_k);
    if constexpr (!kPlain) {
      if (o.p.softcap) {
        CUTE_UNROLL
        for (int i = 0; i < size(acc_s); ++i) acc_s(i) = tanhf(acc_s(i) * o.p.score_premultiplier);
      }
      if (!o.mask.tile_fully_visible(o.row_begin, o.row_begin + kBlockM, n * kBlockN, (n + 1) * kBlockN)) {
        o.mask.apply(device::rows_cols_view(acc_s), device::rows_cols_view(o.tScS), o.row_begin, n * kBlockN);
      }
    }
    cp_async_wait<0>();
    __syncthreads();
    if (n > o.first_tile) {
      o.load_k(bool_constant<kPlain>{}, n - 1);  // tile n - 1 < n is full whenever n is
      cp_async_fence();
    }
    if (first) {
      softmax.template update<true>(device::rows_cols_view(acc_s), device::rows_cols_view(acc_o));
    } else {
      softmax.template update<false>(device::rows_cols_view(acc_s), device::rows_cols_view(acc_o));
    }
    Tensor p_regs = device::convert_fragment<Element>(acc_s);  // (MMA, MMA_M, MMA_N), P rounded to Element
    // The same registers as the A operand of O += P V: (MMA, MMA_M, MMA_N / 2), k running over keys.
    Tensor tOrP = make_tensor(p_regs.data(), device::accumulator_as_operand_a(p_regs.layout()));
    device::gemm_regs_smem(o.mma, acc_o, tOrP, o.tOrVt, o.tOsVt, o.smem_copy_v);
  }
};

}  // namespace attnkit::sm80
