// The Hopper (sm_90a) dense forward: a warp-specialised kernel with TMA loads and wgmma, assembled as
// Kernel<Mainloop, Epilogue, TileScheduler> (architecture.md, convention 1), and the launch that
// forward_instance_sm90_*.cu instantiate. docs/design/hopper-forward.md draws the pipeline.
//
// One CTA computes one query tile of block_m rows of one head:
//   warpgroup 0, the producer (24 registers): one thread issues the TMA loads of Q (once) and of K[n],
//     V[n] for every key tile n, from the last tile to the first, into `stages` buffers each;
//   warpgroups 1 .. block_m / 64, the consumers (240 registers): each owns 64 query rows, runs
//     S = Q K^T (wgmma, both operands in shared memory), the online softmax in registers, and
//     O += P V (wgmma, P from registers), then writes O and LSE.
// K and V have a pipeline each (full barrier: TMA transaction bytes; empty barrier: consumer arrivals),
// so that S = Q K[n]^T starts as soon as K[n] lands. Intra-warpgroup overlap (FlashAttention-3): the
// GEMM S[n] = Q K[n]^T and O += P[n+1] V[n+1] are issued back to back; the softmax of S[n] runs while
// the second is still on the tensor cores, and O is rescaled once it retires.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

// The wgmma shapes whose N is not a multiple of 32 (n80, n112, n176, ...: every multiple of 8) are
// behind this switch in CUTLASS; without it GMMA::ss_op_selector builds the 80-key S tile of D = 256
// from five m64n16 instructions, each of which re-reads the warpgroup's 64 x 16 slice of Q from shared
// memory (the D = 256 kernel of d611b38 did so: 0.67-0.78x cuDNN). ForwardConfig asserts the shapes.
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/pipeline/sm90_pipeline.hpp>

#include "device/kernel_attributes.cuh"
#include "device/mask_policy.cuh"
#include "device/mma_fragment_sm80.cuh"
#include "device/tile_copy_sm80.cuh"
#include "kernels/dense/sm90/forward/forward_params_sm90.h"
#include "kernels/dense/sm90/forward/forward_softmax_sm90.cuh"

namespace attnkit::sm90 {

template <DType kDType>
using CuteElement = std::conditional_t<kDType == DType::kBFloat16, cute::bfloat16_t, cute::half_t>;

struct ForwardWork {
  int m_block;  // query tile
  int head;     // query head
  int batch;    // batch entry or varlen sequence
};

// Where one batch entry (or varlen sequence) starts: token indices for TMA coordinates and element
// offsets for the stores. Varlen offsets come from device memory the host cannot check without a sync:
// they are clamped into [0, total] and lengths to their max_seqlen bound, so bad metadata gives wrong
// numbers at worst, never an access out of bounds (TMA clips reads at total; stores are predicated).
struct SequenceSpan {
  int seqlen_q;
  int seqlen_k;
  int first_token_q;  // varlen: first row of the sequence among all tokens; BSHD: 0
  int first_token_k;
  std::int64_t out_offset;
  std::int64_t lse_offset;
};

// A decoded work tile, as the producer thread writes it into shared memory for the consumers (one slot
// of the tile pipeline): the consumers then do no division between tiles. ncu (NOTES.md, run 14) had
// the consumers' tile plan at 2.6% of their time at D = 128 S = 1024 and 3.7% at D = 64 causal. Measured
// (run 18, H100, the same order): causal S = 1024 +8.2% at D = 64 (three consumer warpgroups decoded
// each tile), +1.3% at D = 128.
struct ForwardTilePlan {
  enum Kind : int { kWork, kNoRows, kEnd };
  ForwardWork work;
  SequenceSpan seq;
  device::WindowMask mask;
  device::TileRange tiles;  // the key tiles any of the tile's rows sees; empty: O = 0 (store_empty)
  int row_begin;            // the tile's first query row
  Kind kind;                // kNoRows: no row of the sequence in this tile (varlen); kEnd: no more work
};

template <int kShapeIndex, DType kDType>
struct ForwardConfig {
  static_assert(kDType == DType::kFloat16 || kDType == DType::kBFloat16);
  static constexpr ForwardTileShape kShape = kForwardTileShapesSm90[kShapeIndex];
  using Element = CuteElement<kDType>;

  static constexpr int kHeadDim = kShape.head_dim;
  static constexpr int kHeadDimV = kShape.head_dim_v;
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kStages = kShape.stages;
  static constexpr int kConsumerWarpgroups = kBlockM / 64;
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  static constexpr int kThreads = 128 + kConsumerThreads;
  static_assert(kBlockM % 64 == 0 && kBlockN % 16 == 0);
  static_assert(kHeadDim % 64 == 0 && kHeadDimV % 64 == 0, "padded head dims are multiples of the 128-byte swizzle");

  using TileShapeQK = cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>, cute::Int<kHeadDim>>;   // (M, N, D)
  using TileShapePV = cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDimV>, cute::Int<kBlockN>>;  // (M, Dv, N)
  // One 64-row wgmma atom per consumer warpgroup, stacked along M.
  using AtomLayout = cute::Layout<cute::Shape<cute::Int<kConsumerWarpgroups>, cute::_1, cute::_1>>;
  using TiledMmaQK = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, TileShapeQK>(), AtomLayout{}));
  // B = V seen as (Dv, N): Dv is contiguous, the MN-major (transposed) B operand of 16-bit wgmma.
  using TiledMmaPV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, TileShapePV, cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      AtomLayout{}));
  // One wgmma instruction spans the whole key tile (S) and the whole Dv (O); a narrower atom would
  // re-read its A operand (Q from shared memory) once per instruction.
  static_assert(cute::size<1>(typename TiledMmaQK::AtomShape_MNK{}) == kBlockN,
                "S = Q K^T must be one wgmma wide: is CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED set before CuTe?");
  static_assert(cute::size<1>(typename TiledMmaPV::AtomShape_MNK{}) == kHeadDimV);

  // 128-byte swizzled, K-major: the layout TMA writes and wgmma reads without conflicts.
  using SmemAtom = cute::GMMA::Layout_K_SW128_Atom<Element>;  // (8, 64)
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutK = decltype(cute::tile_to_shape(
      SmemAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));  // (N, D, PIPE)
  using SmemLayoutV = decltype(cute::tile_to_shape(
      SmemAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDimV>, cute::Int<kStages>>{}));  // (N, Dv, PIPE)
  // The same bytes as (Dv, N, PIPE).
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutV{}, cute::make_ordered_layout(
                         cute::make_shape(cute::Int<kHeadDimV>{}, cute::Int<kBlockN>{}, cute::Int<kStages>{}),
                         cute::Step<cute::_2, cute::_1, cute::_3>{})));
  // O on its way out: written from the accumulators with stmatrix, stored by TMA (one 64-row box
  // column per consumer warpgroup), in a buffer of its own where shared memory has room (then the next
  // tile's Q can land during this tile's epilogue), else where Q was (the same layout as Q's there).
  using SmemLayoutO = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDimV>>{}));
  using SmemLayoutOWarpgroup = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::_64, cute::Int<kHeadDimV>>{}));
  static_assert(cute::cosize_v<SmemLayoutO> <= cute::cosize_v<SmemLayoutQ>);
  static constexpr int kSmemBudget = 227 * 1024 - 1024;  // H100 opt-in limit, less the barriers
  static constexpr bool kSeparateO =
      kShape.shared_memory_bytes() + kBlockM * kHeadDimV * int(sizeof(Element)) <= kSmemBudget;
  // O in Q's buffer is written row for row over Q (ForwardEpilogueSm90), which needs the same width.
  static_assert(kSeparateO || kHeadDim == kHeadDimV);

  using PipelineK = cutlass::PipelineTmaAsync<kStages>;
  using PipelineV = cutlass::PipelineTmaAsync<kStages>;
  // Work-tile indices from the producer (which takes them from the global counter) to the consumers.
  using PipelineTile = cutlass::PipelineAsync<2>;

  struct SharedStorage {
    cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>, 1024> q;  // also O without kSeparateO
    cute::array_aligned<Element, cute::cosize_v<SmemLayoutK>, 1024> k;
    cute::array_aligned<Element, cute::cosize_v<SmemLayoutV>, 1024> v;
    cute::array_aligned<Element, kSeparateO ? cute::cosize_v<SmemLayoutO> : 8, 1024> o;  // 8: unused
    cutlass::arch::ClusterTransactionBarrier::ValueType barrier_q_full;  // Q landed (TMA bytes)
    cutlass::arch::ClusterBarrier::ValueType barrier_q_empty;  // every consumer thread is done with Q
    typename PipelineK::SharedStorage pipeline_k;
    typename PipelineV::SharedStorage pipeline_v;
    typename PipelineTile::SharedStorage pipeline_tile;
    ForwardTilePlan tile_slots[2];
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static constexpr std::uint32_t kBytesQ = kBlockM * kHeadDim * sizeof(Element);
  static constexpr std::uint32_t kBytesK = kBlockN * kHeadDim * sizeof(Element);
  static constexpr std::uint32_t kBytesV = kBlockN * kHeadDimV * sizeof(Element);

  // Global tensors as TMA sees them: (rows, D, heads, batch), rows of a varlen tensor being all tokens.
  using GmemShape = cute::Shape<int, int, int, int>;
  using GmemStride = cute::Stride<std::int64_t, cute::_1, std::int64_t, std::int64_t>;
  using GmemTensor = decltype(cute::make_tensor(cute::make_gmem_ptr(static_cast<const Element*>(nullptr)),
                                                GmemShape{}, GmemStride{}));
  using TmaQ = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQ{},
                                            cute::select<0, 2>(TileShapeQK{}), cute::_1{}));
  using TmaK = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{}, cute::take<0, 2>(SmemLayoutK{}),
                                            cute::select<1, 2>(TileShapeQK{}), cute::_1{}));
  using TmaV = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{}, cute::take<0, 2>(SmemLayoutV{}),
                                            cute::select<2, 1>(TileShapePV{}), cute::_1{}));
  using GmemTensorOut = decltype(cute::make_tensor(cute::make_gmem_ptr(static_cast<Element*>(nullptr)), GmemShape{},
                                                   GmemStride{}));
  using TmaO = decltype(cute::make_tma_copy(cute::SM90_TMA_STORE{}, GmemTensorOut{}, SmemLayoutOWarpgroup{},
                                            cute::Shape<cute::_64, cute::Int<kHeadDimV>>{}, cute::_1{}));

  // Conditional rescaling (SplitOnlineSoftmax) where it measured faster: D = 256 gained 2-4% on every
  // issue-5 case (the rescale of its 64 x 256 O is 128 multiplies per thread and key tile), D = 128
  // lost 3-7% (NOTES.md, run 6), D = 64 moved by less than the noise (+1% on average).
  static constexpr bool kConditionalRescale = kHeadDimV == 256;
  // The softmax's row reductions in parallel chains (SplitOnlineSoftmax) where they measured faster:
  // D = 128 +0.4-1.7% below S = 8192, D = 64 within 0.7%, D = 256 -0.3-0.7% (NOTES.md, runs 11, 12).
  static constexpr bool kParallelReductionChains = kHeadDimV <= 128;

  // Register budget per thread (65,536 per SM, one CTA): 128 x 24 + 256 x 240 = 64,512.
  static constexpr int kProducerRegisters = 24;
  static constexpr int kConsumerRegisters = kConsumerWarpgroups == 2 ? 240 : 160;
};

template <class Config>
struct KernelParams {
  ForwardParams args;
  typename Config::TmaQ tma_q;
  typename Config::TmaK tma_k;
  typename Config::TmaV tma_v;
  typename Config::TmaO tma_o;
};


// Persistent and dynamic: p.num_ctas CTAs (one per SM) start on tiles 0 .. num_ctas - 1 and then take
// the next linear tile index from a global counter (p.tile_counter, zero at the launch and left at zero
// by it: next_tile) as they finish, so tiles of unequal work (causal / window) balance themselves. Only
// the producer thread decodes a tile (its divisions by run-time sizes and, for varlen, the loads of
// cu_seqlens); the consumers read the decoded plan from shared memory (ForwardTilePlan).
//
// Without a mask the query tiles of one head are adjacent, so CTAs running together share K/V in L2
// (causal S = 1024 ran at 279 TFLOP/s, bound by HBM, when all heads were interleaved). Under a causal
// or window mask (heavy_first) the (batch, head) pairs go in sections of p.section_heads, whose K/V
// the host sizes to 32 MiB of the 50 MiB L2, and within a section query tile by query tile, heaviest
// first, over the section's heads. Head by head, the last heads' heaviest tiles were drawn near the
// end of the launch and ran on while the other SMs had nothing left: a list-scheduling model of the
// issue-5 causal grid (132 SMs, tile cost = key tiles + 1.9 of fixed cost, ncu run 14) puts that tail
// at 3.4-4.6% of the launch at D = 64, 5.6-6.7% at D = 128 and 11-13.5% at D = 256 for S <= 8192, and
// at 0.1-2.3% with sections (NOTES.md, run 17). Heads of at most 8 query tiles measured slower in
// sections (run 17); there the first p.head_by_head_pairs pairs go head by head and only the launch's
// last section (the tail) is interleaved (NOTES.md, run 18).
struct ForwardTileScheduler {
  CUTE_HOST_DEVICE static std::int64_t tile_count(const ForwardParams& p) {
    return std::int64_t{p.num_m_blocks} * p.batch * p.heads_q;
  }

  __device__ static ForwardWork work(const ForwardParams& p, int linear) {
    ForwardWork w;
    int pair;  // batch * heads_q + head
    if (p.heavy_first) {
      const int head_by_head_tiles = p.head_by_head_pairs * p.num_m_blocks;
      if (linear < head_by_head_tiles) {
        pair = linear / p.num_m_blocks;
        w.m_block = p.num_m_blocks - 1 - (linear - pair * p.num_m_blocks);
      } else {
        // Section s holds the pairs head_by_head_pairs + s * section_heads ..; the last may hold fewer.
        const int rest = linear - head_by_head_tiles;
        const int section_tiles = p.num_m_blocks * p.section_heads;
        const int section = rest / section_tiles;
        const int first_pair = p.head_by_head_pairs + section * p.section_heads;
        const int pairs = min(p.section_heads, p.batch * p.heads_q - first_pair);
        const int within = rest - section * section_tiles;
        w.m_block = p.num_m_blocks - 1 - within / pairs;
        pair = first_pair + within % pairs;
      }
    } else {
      w.m_block = linear % p.num_m_blocks;
      pair = linear / p.num_m_blocks;
    }
    w.head = pair % p.heads_q;
    w.batch = pair / p.heads_q;
    return w;
  }
};

__device__ __forceinline__ SequenceSpan sequence_span(const ForwardParams& p, int batch) {
  SequenceSpan s;
  if (p.varlen) {
    const std::int64_t q_begin = min(max(std::int64_t{p.cu_seqlens_q[batch]}, std::int64_t{0}), p.total_q);
    const std::int64_t q_end = min(max(std::int64_t{p.cu_seqlens_q[batch + 1]}, q_begin), p.total_q);
    const std::int64_t k_begin = min(max(std::int64_t{p.cu_seqlens_k[batch]}, std::int64_t{0}), p.total_k);
    const std::int64_t k_end = min(max(std::int64_t{p.cu_seqlens_k[batch + 1]}, k_begin), p.total_k);
    s.seqlen_q = static_cast<int>(min(q_end - q_begin, std::int64_t{p.seqlen_q}));
    s.seqlen_k = static_cast<int>(min(k_end - k_begin, std::int64_t{p.seqlen_k}));
    s.first_token_q = static_cast<int>(q_begin);
    s.first_token_k = static_cast<int>(k_begin);
    s.out_offset = q_begin * p.out_row_stride;
    s.lse_offset = q_begin * p.lse_row_stride;
  } else {
    s.seqlen_q = p.seqlen_q;
    s.seqlen_k = p.seqlen_k;
    s.first_token_q = 0;
    s.first_token_k = 0;
    s.out_offset = batch * p.out_batch_stride;
    s.lse_offset = batch * p.lse_batch_stride;
  }
  return s;
}

// Issues one warpgroup-wide wgmma chain C (+)= A B over the k blocks of A and B, without waiting.
// kZeroInit: C = A B (the first k block overwrites C).
template <bool kZeroInit, class TiledMma, class TensorA, class TensorB, class TensorC>
__device__ __forceinline__ void wgmma_issue(TiledMma& mma, TensorA& a, const TensorB& b, TensorC& c) {
  using namespace cute;
  // A in registers (P of O += P V) rather than a shared-memory descriptor (Q of S = Q K^T).
  constexpr bool kRegisterA = !is_same_v<typename TensorA::iterator, GMMA::DescriptorIterator>;
  if constexpr (kRegisterA) warpgroup_fence_operand(a);
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(a); ++k) {
    gemm(mma, a(_, _, k), b(_, _, k), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(c);
  if constexpr (kRegisterA) warpgroup_fence_operand(a);
}

// The producer: thread 0 of warpgroup 0 issues every TMA load of the tile.
template <class Config>
struct ForwardProducerSm90 {
  // q_loads: the tiles of this CTA that loaded Q before this one (the phase of the Q barriers).
  template <class SharedStorage, class PipelineK, class PipelineV, class PipelineState>
  __device__ static void run(const KernelParams<Config>& params, const ForwardWork& work, const SequenceSpan& seq,
                             device::TileRange tiles, SharedStorage& shared, PipelineK& pipeline_k,
                             PipelineV& pipeline_v, PipelineState& state, int q_loads) {
    using namespace cute;
    const ForwardParams& p = params.args;
    const int kv_head = work.head / p.group;
    const int batch = p.varlen ? 0 : work.batch;
    Tensor sQ = make_tensor(make_smem_ptr(shared.q.data()), typename Config::SmemLayoutQ{});  // (M, D)
    Tensor sK = make_tensor(make_smem_ptr(shared.k.data()), typename Config::SmemLayoutK{});  // (N, D, PIPE)
    Tensor sV = make_tensor(make_smem_ptr(shared.v.data()), typename Config::SmemLayoutV{});  // (N, Dv, PIPE)

    // Coordinate tensors of the TMA descriptors, moved to row 0 of this sequence.
    Tensor mQ = domain_offset(make_coord(seq.first_token_q, _0{}),
                              params.tma_q.get_tma_tensor(make_shape(int(p.varlen ? p.total_q : p.seqlen_q), p.head_dim,
                                                                     p.heads_q, p.varlen ? 1 : p.batch))(
                                  _, _, work.head, batch));  // (rows, D)
    Tensor mK = domain_offset(make_coord(seq.first_token_k, _0{}),
                              params.tma_k.get_tma_tensor(make_shape(int(p.varlen ? p.total_k : p.seqlen_k), p.head_dim,
                                                                     p.heads_kv, p.varlen ? 1 : p.batch))(
                                  _, _, kv_head, batch));  // (keys, D)
    Tensor mV = domain_offset(make_coord(seq.first_token_k, _0{}),
                              params.tma_v.get_tma_tensor(make_shape(int(p.varlen ? p.total_k : p.seqlen_k),
                                                                     p.head_dim_v, p.heads_kv, p.varlen ? 1 : p.batch))(
                                  _, _, kv_head, batch));  // (keys, Dv)
    Tensor gQ = local_tile(mQ, select<0, 2>(typename Config::TileShapeQK{}), make_coord(work.m_block, _0{}));  // (M, D)
    Tensor gK = local_tile(mK, select<1, 2>(typename Config::TileShapeQK{}), make_coord(_, _0{}));  // (N, D, n)
    Tensor gV = local_tile(mV, select<2, 1>(typename Config::TileShapePV{}), make_coord(_, _0{}));  // (N, Dv, n)

    auto [tQgQ, tQsQ] = tma_partition(params.tma_q, _0{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
    auto [tKgK, tKsK] = tma_partition(params.tma_k, _0{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
    auto [tVgV, tVsV] = tma_partition(params.tma_v, _0{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));

    // The first K tile goes before Q, whose buffer may still be in use by the previous tile.
    for (int n = tiles.end - 1; n >= tiles.begin; --n) {
      pipeline_k.producer_acquire(state);
      copy(params.tma_k.with(*pipeline_k.producer_get_barrier(state), 0), tKgK(_, n), tKsK(_, state.index()));
      if (n == tiles.end - 1) {
        if (q_loads > 0) cutlass::arch::ClusterBarrier::wait(&shared.barrier_q_empty, (q_loads - 1) & 1);
        cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&shared.barrier_q_full, Config::kBytesQ);
        copy(params.tma_q.with(shared.barrier_q_full, 0), tQgQ, tQsQ);
      }
      pipeline_v.producer_acquire(state);
      copy(params.tma_v.with(*pipeline_v.producer_get_barrier(state), 0), tVgV(_, n), tVsV(_, state.index()));
      ++state;
    }
  }
};

// One consumer warpgroup's share: 64 rows of the tile, walked over the key tiles from last to first
// (the masked boundary tiles of causal attention and of the key tail come first).
template <class Config>
struct ForwardMainloopSm90 {
  static constexpr int kSchedulerBarrier = 2;  // and 3: named barriers of the pingpong
  using Element = typename Config::Element;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;

  // tiles: the key tiles loaded for the work tile; own: those this warpgroup's 64 rows see, a subrange
  // of tiles (empty when its rows see no key). read_k / read_v: the consumer states of the pipelines,
  // carried from tile to tile.
  template <class SharedStorage, class PipelineK, class PipelineV, class PipelineState, class AccO, class Softmax>
  __device__ static void run(const ForwardParams& p, int row_begin, device::TileRange tiles, device::TileRange own,
                             const device::WindowMask& mask, SharedStorage& shared, PipelineK& pipeline_k,
                             PipelineV& pipeline_v, PipelineState& read_k, PipelineState& read_v, AccO& acc_o,
                             Softmax& softmax) {
    using namespace cute;
    const int thread = threadIdx.x - 128;  // among the consumers
    const int consumer = thread / 128;
    const int own_row_begin = row_begin + 64 * consumer;
    Tensor sQ = make_tensor(make_smem_ptr(shared.q.data()), typename Config::SmemLayoutQ{});    // (M, D)
    Tensor sK = make_tensor(make_smem_ptr(shared.k.data()), typename Config::SmemLayoutK{});    // (N, D, PIPE)
    Tensor sVt = make_tensor(make_smem_ptr(shared.v.data()), typename Config::SmemLayoutVt{});  // (Dv, N, PIPE)

    typename Config::TiledMmaQK mma_qk;
    typename Config::TiledMmaPV mma_pv;
    auto thread_qk = mma_qk.get_thread_slice(thread);
    auto thread_pv = mma_pv.get_thread_slice(thread);
    Tensor tSrQ = thread_qk.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_D) descriptors
    Tensor tSrK = thread_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_D, PIPE)
    Tensor tOrV = thread_pv.partition_fragment_B(sVt);  // (MMA, MMA_Dv, MMA_N, PIPE)
    // (row, col) within the (M, N) score tile of each of this thread's accumulators.
    Tensor tScS = thread_qk.partition_C(make_identity_tensor(select<0, 1>(typename Config::TileShapeQK{})));
    Tensor acc_s = partition_fragment_C(mma_qk, select<0, 1>(typename Config::TileShapeQK{}));  // (MMA, MMA_M, MMA_N)
    // P in the input dtype, laid out as the A operand of O += P V.
    Tensor tOrP = make_tensor<Element>(wgmma_accumulator_as_operand_a(acc_s.layout()));

    auto score_mod = [&](int n) {
      if (p.softcap) {
        CUTE_UNROLL
        for (int i = 0; i < size(acc_s); ++i) acc_s(i) = tanhf(acc_s(i) * p.score_premultiplier);
      }
      // This warpgroup's rows only: the causal diagonal of its 64 rows crosses one 128-key tile where
      // that of the 192-row D = 64 tile crosses two.
      if (!mask.tile_fully_visible(own_row_begin, own_row_begin + 64, n * kBlockN, (n + 1) * kBlockN)) {
        mask.apply(wgmma_rows_cols_view(acc_s), wgmma_rows_cols_view(tScS), row_begin, n * kBlockN);
      }
    };
    auto convert_p = [&]() {
      Tensor converted = device::convert_fragment<Element>(acc_s);
      CUTE_UNROLL
      for (int i = 0; i < size(converted); ++i) tOrP(i) = converted(i);
    };

    float correction[Softmax::kRowCount];

    // Pingpong (FlashAttention-3's warp scheduler barriers): the consumer warpgroups take turns to
    // issue their GEMMs, so that one's softmax runs while the other's GEMMs hold the tensor cores.
    // Warpgroup w waits on barrier kSchedulerBarrier + w before issuing and then lets the next one go;
    // the second warpgroup lets the first start.
    constexpr bool pingpong = Config::kConsumerWarpgroups == 2;
    auto scheduler_wait = [&]() {
      if constexpr (pingpong) {
        cutlass::arch::NamedBarrier::sync(Config::kConsumerThreads, kSchedulerBarrier + consumer);
      }
    };
    auto scheduler_release = [&]() {
      if constexpr (pingpong) {
        cutlass::arch::NamedBarrier::arrive(Config::kConsumerThreads, kSchedulerBarrier + (1 - consumer));
      }
    };

    // A key tile loaded for the other warpgroups' rows that none of this warpgroup's rows sees: the
    // causal diagonal of the 192-row D = 64 tile spans two 128-key tiles, so its first 64 rows see one
    // tile less than its last 64 (a quarter of the causal S = 1024 work); rows past the sequence see
    // none. Its buffers go back unread; no GEMM, mask or softmax runs. Waiting for the loads first keeps
    // the release in its phase (released before the fill, it would count towards the stage's next
    // one). Under pingpong the warpgroup still takes its turn (first, so that the other warpgroup never
    // waits for these loads), so both take tiles.end - tiles.begin + 1 turns per work tile and the
    // alternation stays matched.
    auto skip = [&]() {
      scheduler_wait();
      scheduler_release();
      pipeline_k.consumer_wait(read_k);
      pipeline_k.consumer_release(read_k);
      ++read_k;
      pipeline_v.consumer_wait(read_v);
      pipeline_v.consumer_release(read_v);
      ++read_v;
    };
    // This warpgroup's last read of Q is its last S = Q K^T: with O in a buffer of its own, the next
    // tile's Q may land from then on, while the last O += P V and the epilogue still run (one GEMM and
    // a softmax earlier than after the last O += P V; ncu had the consumers waiting for Q 2% of their
    // time at D = 128 S = 1024, 3.7% at D = 64 causal). Measured with the epilogue of run 15: D = 128
    // S = 1024 +1.5% over the release after the last O += P V, no difference from S = 4096 up
    // (NOTES.md, run 16).
    auto release_q = [&]() {
      if constexpr (Config::kSeparateO) cutlass::arch::ClusterBarrier::arrive(&shared.barrier_q_empty);
    };
    for (int n = tiles.end - 1; n >= own.end; --n) skip();
    if (own.empty()) {
      // No key for any of these rows: O stays zero (the epilogue writes 0 and LSE -inf, or the sink's)
      // after the turn its last O += P V would have taken.
      release_q();
      scheduler_wait();
      scheduler_release();
    } else {
      // First (last in key order) tile: S, softmax, P; its O += P V is issued with the next S.
      int n = own.end - 1;
      pipeline_k.consumer_wait(read_k);
      scheduler_wait();
      wgmma_issue<true>(mma_qk, tSrQ, tSrK(_, _, _, read_k.index()), acc_s);
      scheduler_release();
      warpgroup_wait<0>();
      pipeline_k.consumer_release(read_k);
      ++read_k;
      if (n == own.begin) release_q();
      score_mod(n);
      softmax.template update<true>(wgmma_rows_cols_view(acc_s), correction);
      convert_p();

      for (--n; n >= own.begin; --n) {
        pipeline_k.consumer_wait(read_k);
        pipeline_v.consumer_wait(read_v);
        scheduler_wait();
        wgmma_issue<true>(mma_qk, tSrQ, tSrK(_, _, _, read_k.index()), acc_s);
        wgmma_issue<false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
        scheduler_release();
        warpgroup_wait<1>();  // S[n] is ready; O += P V[n + 1] may still run
        pipeline_k.consumer_release(read_k);
        ++read_k;
        if (n == own.begin) release_q();
        score_mod(n);
        const bool rescale_o = softmax.template update<false>(wgmma_rows_cols_view(acc_s), correction);
        warpgroup_wait<0>();
        pipeline_v.consumer_release(read_v);
        ++read_v;
        if (rescale_o) Softmax::rescale(wgmma_rows_cols_view(acc_o), correction);
        convert_p();
      }

      pipeline_v.consumer_wait(read_v);
      scheduler_wait();
      wgmma_issue<false>(mma_pv, tOrP, tOrV(_, _, _, read_v.index()), acc_o);
      scheduler_release();
      warpgroup_wait<0>();
      pipeline_v.consumer_release(read_v);
      ++read_v;
      for (int n = own.begin - 1; n >= tiles.begin; --n) skip();
    }
  }

  // Before the first tile: the second consumer warpgroup lets the first take the first turn.
  __device__ static void start_pingpong(const ForwardParams& p) {
    const int consumer = (threadIdx.x - 128) / 128;
    if (Config::kConsumerWarpgroups == 2 && consumer == 1) {
      cutlass::arch::NamedBarrier::arrive(Config::kConsumerThreads, kSchedulerBarrier);
    }
  }
};

// Normalise O, write it through shared memory (16-byte rows, predicated on the sequence's length and
// Dv) and write LSE.
template <class Config>
struct ForwardEpilogueSm90 {
  using Element = typename Config::Element;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kHeadDimV = Config::kHeadDimV;
  static constexpr int kEpilogueBarrier = 4;  // + consumer warpgroup: its own named barrier

  // A tile that sees no key: O = 0 and LSE = -inf (or the sink alone: lse = z, semantics.md), written
  // straight from registers so that shared memory (Q's, which the next tile's load may be filling)
  // stays untouched.
  __device__ static void store_empty(const ForwardParams& p, const SequenceSpan& seq, const ForwardWork& work) {
    const int thread = threadIdx.x - 128;
    const int row_begin = work.m_block * kBlockM;
    const int valid_rows = min(seq.seqlen_q - row_begin, kBlockM);
    Element* out_rows = static_cast<Element*>(p.out) + seq.out_offset + work.head * p.out_head_stride +
                        std::int64_t{row_begin} * p.out_row_stride;
    const int chunks_per_row = p.head_dim_v / 8;  // 16-byte chunks; Dv is a multiple of 8
    for (int chunk = thread; chunk < valid_rows * chunks_per_row; chunk += Config::kConsumerThreads) {
      const int row = chunk / chunks_per_row;
      *reinterpret_cast<uint4*>(out_rows + std::int64_t{row} * p.out_row_stride + (chunk % chunks_per_row) * 8) =
          make_uint4(0, 0, 0, 0);
    }
    if (p.lse != nullptr) {
      const float lse = p.sinks != nullptr ? p.sinks[work.head] : -INFINITY;
      float* lse_head = p.lse + seq.lse_offset + work.head * p.lse_head_stride;
      for (int row = thread; row < valid_rows; row += Config::kConsumerThreads) {
        lse_head[std::int64_t{row_begin + row} * p.lse_row_stride] = lse;
      }
    }
  }

  template <class SharedStorage, class AccO, class Softmax>
  __device__ static void store(const KernelParams<Config>& params, const SequenceSpan& seq, const ForwardWork& work,
                               SharedStorage& shared, AccO& acc_o, Softmax& softmax) {
    using namespace cute;
    const ForwardParams& p = params.args;
    const int thread = threadIdx.x - 128;
    const int consumer = thread / 128;
    const bool store_leader = thread % 128 == 0;  // issues (and waits for) this warpgroup's TMA stores
    const int row_begin = work.m_block * kBlockM;
    const int valid_rows = seq.seqlen_q - row_begin;
    // TMA clips the box at the tensor's row extent, which for BSHD is the sequence's end. A varlen
    // tensor's rows run on into the next sequence, so a warpgroup whose 64 rows pass the end of its
    // sequence stores them with predicated 16-byte stores instead.
    const bool tma_store = !p.varlen || valid_rows >= 64 * (consumer + 1);
    typename Config::TiledMmaPV mma_pv;
    auto thread_pv = mma_pv.get_thread_slice(thread);
    Tensor tOcO = thread_pv.partition_C(make_identity_tensor(select<0, 1>(typename Config::TileShapePV{})));
    Tensor tOcO_rows = wgmma_rows_cols_view(tOcO);  // (rows, cols)

    constexpr int kRows = decltype(size<0>(tOcO_rows))::value;
    float lse[kRows];
    const float sink = p.sinks != nullptr ? p.sinks[work.head] : -INFINITY;
    softmax.finalize(wgmma_rows_cols_view(acc_o), sink, lse);

    // Each consumer warpgroup writes and stores only its own 64 rows of O, so the warpgroups wait only
    // on themselves and keep the offset of their pingpong from tile to tile. In Q's buffer (D = Dv,
    // the same layout) those rows take exactly the bytes of the warpgroup's own rows of Q, which its
    // last S GEMM has finished reading. The first barrier also keeps this tile's writes behind the
    // reads of the previous tile's O (the leader's TMA store, waited for here, or every thread's).
    if (store_leader) tma_store_wait<0>();
    cutlass::arch::NamedBarrier::sync(128, kEpilogueBarrier + consumer);
    Element* o_buffer = Config::kSeparateO ? shared.o.data() : shared.q.data();
    Tensor sO = make_tensor(make_smem_ptr(o_buffer), typename Config::SmemLayoutO{});  // (M, Dv)
    Tensor rO = device::convert_fragment<Element>(acc_o);
    // stmatrix: four 8 x 8 matrices per instruction, 8 instructions per thread at Dv = 128 where 32-bit
    // stores took 32.
    auto smem_copy_o = make_tiled_copy_C(Copy_Atom<SM90_U32x4_STSM_N, Element>{}, mma_pv);
    auto smem_thread_o = smem_copy_o.get_thread_slice(thread);
    copy(smem_copy_o, smem_thread_o.retile_S(rO), smem_thread_o.partition_D(sO));
    if (tma_store) tma_store_fence();  // the generic-proxy writes, visible to the TMA unit
    cutlass::arch::NamedBarrier::sync(128, kEpilogueBarrier + consumer);

    using WarpgroupTile = Shape<_64, Int<kHeadDimV>>;
    Tensor sO_rows = local_tile(sO, WarpgroupTile{}, make_coord(consumer, _0{}));  // (64, Dv)
    if (tma_store) {
      // One thread stores the warpgroup's 64 rows and goes on; the next tile's epilogue waits for the
      // store to have read them (above). ncu, NOTES.md run 14: the per-thread shared -> global copy
      // (8 predicated 16-byte loads and stores a thread at Dv = 128) was a quarter of the epilogue.
      if (store_leader) {
        Tensor mO = domain_offset(
            make_coord(seq.first_token_q, _0{}),
            params.tma_o.get_tma_tensor(make_shape(int(p.varlen ? p.total_q : p.seqlen_q), p.head_dim_v, p.heads_q,
                                                   p.varlen ? 1 : p.batch))(_, _, work.head, p.varlen ? 0 : work.batch));
        Tensor gO_rows = local_tile(mO, WarpgroupTile{},
                                    make_coord(work.m_block * Config::kConsumerWarpgroups + consumer, _0{}));
        auto [tOgO, tOsO] =
            tma_partition(params.tma_o, _0{}, Layout<_1>{}, group_modes<0, 2>(sO_rows), group_modes<0, 2>(gO_rows));
        copy(params.tma_o, tOsO, tOgO);
        tma_store_arrive();
        // O in Q's buffer: the next Q may land only once the store has read it.
        if constexpr (!Config::kSeparateO) tma_store_wait<0>();
      }
    } else {
      Element* out_rows = static_cast<Element*>(p.out) + seq.out_offset + work.head * p.out_head_stride +
                          std::int64_t{row_begin + 64 * consumer} * p.out_row_stride;
      Tensor gO_rows = make_tensor(make_gmem_ptr(out_rows), WarpgroupTile{}, make_stride(p.out_row_stride, _1{}));
      auto store_copy = device::make_vector_tile_copy<Element, 128>();
      auto store_thread = store_copy.get_thread_slice(thread % 128);
      device::store_tile(store_copy, store_thread.partition_S(sO_rows), store_thread.partition_D(gO_rows),
                         store_thread.partition_D(make_identity_tensor(WarpgroupTile{})), valid_rows - 64 * consumer,
                         p.head_dim_v);
    }
    // O in Q's buffer: this thread's reads of it are done (or the store's, for the leader); the next Q
    // may land once all are.
    if constexpr (!Config::kSeparateO) cutlass::arch::ClusterBarrier::arrive(&shared.barrier_q_empty);

    // The first lane of each quad holds column 0 of its rows and writes their LSE.
    if (p.lse != nullptr && get<1>(tOcO_rows(0, 0)) == 0) {
      float* lse_head = p.lse + seq.lse_offset + work.head * p.lse_head_stride;
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        const int row = get<0>(tOcO_rows(r, 0));
        if (row < valid_rows) lse_head[std::int64_t{row_begin + row} * p.lse_row_stride] = lse[r];
      }
    }
  }

  // At the end of the launch: shared memory must outlive the reads of the last TMA store.
  __device__ static void finish() {
    if ((threadIdx.x - 128) % 128 == 0) cute::tma_store_wait<0>();
  }
};

// The key tiles that a consumer warpgroup's 64 rows from row_begin see, within the work tile's (the
// rows' visible keys are a subset of the tile's, clipped here so that the mainloop may rely on it);
// an empty range starts and ends at tiles.begin, so the mainloop hands every loaded tile back.
template <int kBlockN>
__device__ __forceinline__ device::TileRange own_key_tiles(const device::WindowMask& mask, device::TileRange tiles,
                                                           int row_begin) {
  device::TileRange own = mask.template key_tiles<kBlockN>(row_begin, row_begin + 64);
  own.begin = max(own.begin, tiles.begin);
  own.end = min(own.end, tiles.end);
  if (own.empty()) own = {tiles.begin, tiles.begin};
  return own;
}

// The next work tile from the global counter, which this launch leaves at zero: every CTA takes tiles
// until it draws one past the end, so the draws number exactly tile_count (tile_count - gridDim.x
// tiles beyond each CTA's first, and one past the end per CTA), the counter returns 0 .. tile_count - 1
// in order, and the draw that returns tile_count - 1 is the last one of the launch. That CTA puts the
// counter back to zero, so a caller that zeroes the workspace once may launch again without a memset.
__device__ __forceinline__ int next_tile(int* counter, int tile_count) {
  const int drawn = atomicAdd(counter, 1);
  if (drawn == tile_count - 1) atomicExch(counter, 0);
  return drawn + static_cast<int>(gridDim.x);
}

template <class Config, class Mainloop, class Epilogue, class TileScheduler>
struct DenseForwardKernelSm90 {
  using SharedStorage = typename Config::SharedStorage;

  __device__ void operator()(const KernelParams<Config>& params, char* smem) const {
    using namespace cute;
    const ForwardParams& p = params.args;
    SharedStorage& shared = *reinterpret_cast<SharedStorage*>(smem);
    const int warp = cutlass::canonical_warp_idx_sync();
    const int warpgroup = cutlass::canonical_warp_group_idx();
    const bool lane_leader = cute::elect_one_sync();

    if (warp == 0 && lane_leader) {
      prefetch_tma_descriptor(params.tma_q.get_tma_descriptor());
      prefetch_tma_descriptor(params.tma_k.get_tma_descriptor());
      prefetch_tma_descriptor(params.tma_v.get_tma_descriptor());
      cutlass::arch::ClusterTransactionBarrier::init(&shared.barrier_q_full, 1);
      cutlass::arch::ClusterBarrier::init(&shared.barrier_q_empty, Config::kConsumerThreads);
    }
    using PipelineK = typename Config::PipelineK;
    using PipelineV = typename Config::PipelineV;
    typename PipelineK::Params pipeline_params;
    pipeline_params.role = warpgroup == 0 ? PipelineK::ThreadCategory::Producer : PipelineK::ThreadCategory::Consumer;
    pipeline_params.is_leader = warpgroup == 0 && threadIdx.x % 128 == 0;
    pipeline_params.num_consumers = Config::kConsumerThreads;
    pipeline_params.transaction_bytes = Config::kBytesK;
    PipelineK pipeline_k(shared.pipeline_k, pipeline_params, Shape<_1, _1, _1>{});
    typename PipelineV::Params pipeline_params_v = pipeline_params;
    pipeline_params_v.transaction_bytes = Config::kBytesV;
    PipelineV pipeline_v(shared.pipeline_v, pipeline_params_v, Shape<_1, _1, _1>{});
    using PipelineTile = typename Config::PipelineTile;
    typename PipelineTile::Params tile_params;
    tile_params.role = warpgroup == 0 ? PipelineTile::ThreadCategory::Producer : PipelineTile::ThreadCategory::Consumer;
    tile_params.producer_arv_count = 1;
    tile_params.consumer_arv_count = Config::kConsumerThreads;
    PipelineTile pipeline_tile(shared.pipeline_tile, tile_params);
    __syncthreads();  // barriers initialised and visible to every warp

    // The producer thread decodes each work tile once and hands the plan to the consumers through the
    // tile pipeline; both roles then walk the same tiles, so every barrier phase (the Q barriers count
    // tiles that load Q; the pipelines count key tiles) agrees between them.
    const int tile_count = static_cast<int>(TileScheduler::tile_count(p));
    auto plan = [&](int linear) {
      ForwardTilePlan t{};
      if (linear >= tile_count) {
        t.kind = ForwardTilePlan::kEnd;
        return t;
      }
      t.work = TileScheduler::work(p, linear);
      t.seq = sequence_span(p, t.work.batch);
      t.row_begin = t.work.m_block * Config::kBlockM;
      // Varlen: the grid covers max_seqlen_q rows; shorter sequences have nothing in this tile.
      if (t.row_begin >= t.seq.seqlen_q) {
        t.kind = ForwardTilePlan::kNoRows;
        return t;
      }
      t.mask = device::WindowMask{t.seq.seqlen_q, t.seq.seqlen_k, p.window_left, p.window_right};
      t.tiles = t.mask.template key_tiles<Config::kBlockN>(t.row_begin, t.row_begin + Config::kBlockM);
      t.kind = ForwardTilePlan::kWork;
      return t;
    };

    if (warpgroup == 0) {
      cutlass::arch::warpgroup_reg_dealloc<Config::kProducerRegisters>();
      // Thread 0: the pipelines' leader, which also posts the expected transaction bytes.
      if (threadIdx.x == 0) {
        // The buffers start empty: the producer's first wait on each empty barrier must pass at once.
        auto state = cutlass::make_producer_start_state<PipelineK>();
        auto tile_state = cutlass::make_producer_start_state<PipelineTile>();
        int q_loads = 0;
        for (int linear = blockIdx.x;; linear = next_tile(p.tile_counter, tile_count)) {
          // The plan goes straight into the slot and what the loads need is read back from it: a plan
          // held in registers across the slot's wait had this 24-register thread shuffle it through
          // local memory on its way to the next tile's first K (b6b1fd6: 35 more spill stores, 42 more
          // loads at D = 128; S = 1024 non-causal 1.6-3.3% slower, NOTES.md run 18).
          pipeline_tile.producer_acquire(tile_state);
          ForwardTilePlan& slot = shared.tile_slots[tile_state.index()];
          slot = plan(linear);
          // The barrier's arrive is an asm statement without a memory clobber: keep the stores before it
          // (and the loads below after them).
          asm volatile("" ::: "memory");
          pipeline_tile.producer_commit(tile_state);
          ++tile_state;
          const ForwardTilePlan t = slot;
          if (t.kind == ForwardTilePlan::kEnd) break;
          if (t.kind == ForwardTilePlan::kNoRows || t.tiles.empty()) continue;
          ForwardProducerSm90<Config>::run(params, t.work, t.seq, t.tiles, shared, pipeline_k, pipeline_v, state,
                                           q_loads);
          ++q_loads;
        }
      }
      return;
    }
    cutlass::arch::warpgroup_reg_alloc<Config::kConsumerRegisters>();
    cutlass::PipelineState<Config::kStages> read_k;  // index 0, phase 0
    cutlass::PipelineState<Config::kStages> read_v;
    cutlass::PipelineState<2> read_tile;
    int q_loads = 0;
    const int consumer = warpgroup - 1;  // owns rows 64 * consumer .. + 63 of each work tile
    Mainloop::start_pingpong(p);
    while (true) {
      pipeline_tile.consumer_wait(read_tile);
      const ForwardTilePlan t = shared.tile_slots[read_tile.index()];
      // Every load of the slot before the release, after which the producer may write it again.
      asm volatile("" ::: "memory");
      pipeline_tile.consumer_release(read_tile);
      ++read_tile;
      if (t.kind == ForwardTilePlan::kEnd) break;
      if (t.kind == ForwardTilePlan::kNoRows) continue;
      if (t.tiles.empty()) {
        Epilogue::store_empty(p, t.seq, t.work);
        continue;
      }
      typename Config::TiledMmaPV mma_pv;
      // (MMA, MMA_M, MMA_Dv)
      Tensor acc_o = partition_fragment_C(mma_pv, select<0, 1>(typename Config::TileShapePV{}));
      clear(acc_o);
      constexpr int kRows = decltype(size<0>(wgmma_rows_cols(acc_o.layout())))::value;
      SplitOnlineSoftmax<kRows, Config::kConditionalRescale, Config::kParallelReductionChains> softmax(
          p.softmax_scale_log2);
      cutlass::arch::ClusterTransactionBarrier::wait(&shared.barrier_q_full, q_loads & 1);
      const device::TileRange own = own_key_tiles<Config::kBlockN>(t.mask, t.tiles, t.row_begin + 64 * consumer);
      Mainloop::run(p, t.row_begin, t.tiles, own, t.mask, shared, pipeline_k, pipeline_v, read_k, read_v, acc_o,
                    softmax);
      Epilogue::store(params, t.seq, t.work, shared, acc_o, softmax);
      ++q_loads;
    }
    Epilogue::finish();
  }
};

template <class Kernel, class Config>
__global__ void __launch_bounds__(Config::kThreads, 1)
    dense_forward_sm90_kernel(const __grid_constant__ KernelParams<Config> params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) char shared_memory[];
  Kernel{}(params, shared_memory);
#endif
}

template <int kShapeIndex, DType kDType>
Status launch_dense_forward_sm90(const ForwardParams& p, void* stream) {
  using namespace cute;
  using Config = ForwardConfig<kShapeIndex, kDType>;
  using Element = typename Config::Element;
  using Kernel = DenseForwardKernelSm90<Config, ForwardMainloopSm90<Config>, ForwardEpilogueSm90<Config>,
                                        ForwardTileScheduler>;
  // (rows, D, heads, batch); a varlen tensor is one batch entry of all tokens. The host made every
  // stride of an axis of extent 1 a valid TMA stride, and points K and V at q's memory when there is
  // no key row (forward_host_sm90.cu): a descriptor needs at least one row of real memory.
  const int batch = p.varlen ? 1 : p.batch;
  auto gmem = [&](const void* data, std::int64_t rows, int cols, int heads, std::int64_t row_stride,
                  std::int64_t head_stride, std::int64_t batch_stride) {
    return make_tensor(make_gmem_ptr(static_cast<const Element*>(data)),
                       make_shape(static_cast<int>(std::max<std::int64_t>(rows, 1)), cols, heads, batch),
                       make_stride(row_stride, _1{}, head_stride, batch_stride));
  };
  const auto mQ = gmem(p.q, p.varlen ? p.total_q : p.seqlen_q, p.head_dim, p.heads_q, p.q_row_stride, p.q_head_stride,
                       p.q_batch_stride);
  const auto mK = gmem(p.k, p.varlen ? p.total_k : p.seqlen_k, p.head_dim, p.heads_kv, p.k_row_stride,
                       p.k_head_stride, p.k_batch_stride);
  const auto mV = gmem(p.v, p.varlen ? p.total_k : p.seqlen_k, p.head_dim_v, p.heads_kv, p.v_row_stride,
                       p.v_head_stride, p.v_batch_stride);
  const auto mO = make_tensor(make_gmem_ptr(static_cast<Element*>(p.out)),
                              make_shape(static_cast<int>(std::max<std::int64_t>(p.varlen ? p.total_q : p.seqlen_q, 1)),
                                         p.head_dim_v, p.heads_q, batch),
                              make_stride(p.out_row_stride, _1{}, p.out_head_stride, p.out_batch_stride));
  const KernelParams<Config> params{
      p,
      make_tma_copy(SM90_TMA_LOAD{}, mQ, typename Config::SmemLayoutQ{}, select<0, 2>(typename Config::TileShapeQK{}),
                    _1{}),
      make_tma_copy(SM90_TMA_LOAD{}, mK, take<0, 2>(typename Config::SmemLayoutK{}),
                    select<1, 2>(typename Config::TileShapeQK{}), _1{}),
      make_tma_copy(SM90_TMA_LOAD{}, mV, take<0, 2>(typename Config::SmemLayoutV{}),
                    select<2, 1>(typename Config::TileShapePV{}), _1{}),
      make_tma_copy(SM90_TMA_STORE{}, mO, typename Config::SmemLayoutOWarpgroup{},
                    Shape<_64, Int<Config::kHeadDimV>>{}, _1{})};

  constexpr auto kernel = &dense_forward_sm90_kernel<Kernel, Config>;
  cudaError_t error = device::ensure_dynamic_shared_memory<kernel>(Config::kSmemBytes);
  if (error == cudaSuccess) {
    const auto blocks = static_cast<unsigned>(p.num_ctas);
    kernel<<<blocks, Config::kThreads, Config::kSmemBytes, static_cast<cudaStream_t>(stream)>>>(params);
    error = cudaGetLastError();
  }
  if (error != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm90 dense forward launch: ") + cudaGetErrorString(error)};
  }
  return Status::ok();
}

}  // namespace attnkit::sm90
