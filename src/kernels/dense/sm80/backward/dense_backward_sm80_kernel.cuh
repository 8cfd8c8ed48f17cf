// The main sm_80+ dense attention backward kernel (FlashAttention-2 scheme, written for attnkit).
//
// One CTA owns kBlockN keys of one kv head. It keeps K and V in shared memory and dK, dV in fp32
// registers, and walks every query tile of every query head of its GQA group that can see its keys:
//   S   = Q K^T                     (kBlockM x kBlockN)
//   P   = exp(s - lse),  s = scale S  (or s = c tanh(scale S / c) with softcap c)
//   dP  = dO V^T
//   dS  = P (dP - delta),  delta_i = <dO_i, O_i>   (times 1 - tanh^2 with softcap: ds/d(scale S))
//   dV += P^T dO,  dK += dS^T Q,  dQ += dS K   (dK and dQ take the factor `scale` at the end)
// dQ of a query tile gets contributions from every key tile, so it is added in fp32 to dq_accum with
// atomics; in deterministic mode the key tiles of one query tile add in ascending order, each waiting
// on a per-(batch, head, query tile) counter for its turn. dK and dV are written once, deterministically.
//
// Masking: key j is visible to query i iff diag_lo <= j - i <= diag_hi (bottom-right aligned window,
// semantics.md section 1) and both lie inside the sequence. Query tiles that see none of the CTA's keys
// are skipped; the element mask runs only on tiles that straddle a boundary.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "device/backward_mma_sm80.cuh"
#include "device/kernel_attributes.cuh"
#include "kernels/dense/sm80/backward/dense_backward_sm80_config.h"
#include "kernels/dense/sm80/backward/dense_backward_sm80_params.h"

namespace attnkit::sm80::backward {
namespace detail {

using device::backward::cp_async_16;
using device::backward::cp_async_4;
using device::backward::cp_async_commit;
using device::backward::cp_async_wait;
using device::backward::ldmatrix_x4;
using device::backward::ldmatrix_x4_trans;
using device::backward::mma_16x8x16;
using device::backward::MmaElement;
using device::backward::smem_address;
using device::backward::SwizzledTile;

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Fire-and-forget fp32 adds to global memory (no return value, so no round trip). dQ takes
// (key tiles) x (query rows) x D of them; sm_90's vector form (four neighbours, 16-byte aligned) is used
// there, sm_80's PTX has only the scalar one. What a warp request spans matters more than how many
// there are: DqAccumLayout makes each one contiguous (backward/README.md, round 3).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void red_add_quad(float* address, float x0, float x1, float x2, float x3) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(address), "f"(x0), "f"(x1), "f"(x2), "f"(x3)
               : "memory");
}
#else
__device__ __forceinline__ void red_add(float* address, float x) {
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(address), "f"(x) : "memory");
}
#endif

__device__ __forceinline__ int load_acquire(const std::int32_t* pointer) {
  int value;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(value) : "l"(pointer) : "memory");
  return value;
}

// The rows of one sequence and the band of (query, key) pairs it lets through.
struct SequenceView {
  // All int (the host keeps every extent below 2^31 - 1024): 64-bit members would hold two registers
  // each through the whole kernel, which has none to spare.
  int len_q = 0;
  int len_k = 0;
  int q_row0 = 0;      // first row of the sequence in q / dO / lse (varlen: cu_seqlens_q[b]; BSHD: 0)
  int k_row0 = 0;      // first row in k / v / dk / dv
  int delta_row0 = 0;  // first row in delta (varlen: cu_seqlens_q[b]; BSHD: b * Sq)
  // visible iff diag_lo <= j - i <= diag_hi. Both are clamped to [-len_q, len_k], which changes no
  // test since j - i lies in [-(len_q - 1), len_k - 1]; an unbounded side is its clamp.
  int diag_lo = 0;
  int diag_hi = 0;

  __host__ __device__ SequenceView(const DenseBackwardParams& p, int b) {
    if (p.cu_seqlens_q != nullptr) {
      // Device-resident offsets are not validated on the host: clamp so that no index leaves the tensors.
      const int q_begin = min(max(p.cu_seqlens_q[b], 0), p.total_q);
      const int q_end = min(max(p.cu_seqlens_q[b + 1], q_begin), p.total_q);
      const int k_begin = min(max(p.cu_seqlens_k[b], 0), p.total_k);
      const int k_end = min(max(p.cu_seqlens_k[b + 1], k_begin), p.total_k);
      len_q = min(q_end - q_begin, p.seqlen_q);
      len_k = min(k_end - k_begin, p.seqlen_k);
      q_row0 = q_begin;
      k_row0 = k_begin;
      delta_row0 = q_begin;
    } else {
      len_q = p.seqlen_q;
      len_k = p.seqlen_k;
      delta_row0 = b * p.seqlen_q;
    }
    const std::int64_t offset = static_cast<std::int64_t>(len_k) - len_q;  // bottom-right alignment
    const std::int64_t lo = p.window_left < 0 ? -len_q : offset - p.window_left;
    const std::int64_t hi = p.window_right < 0 ? len_k : offset + p.window_right;
    diag_lo = static_cast<int>(min(max(lo, static_cast<std::int64_t>(-len_q)), static_cast<std::int64_t>(len_k)));
    diag_hi = static_cast<int>(min(max(hi, static_cast<std::int64_t>(-len_q)), static_cast<std::int64_t>(len_k)));
  }

  // Query tiles [first, last] (of kBlockM rows) that see at least one key of key tile n_block;
  // first > last when none does. Both ends are non-decreasing in n_block, also across empty ranges
  // (the deterministic mode's turn order relies on it): rows below 0 give last = -1.
  template <int kBlockM, int kBlockN>
  __host__ __device__ void query_tiles_for_key_tile(int n_block, int* first, int* last) const {
    const std::int64_t key_begin = static_cast<std::int64_t>(n_block) * kBlockN;
    const std::int64_t key_end = key_begin + kBlockN < len_k ? key_begin + kBlockN : len_k;
    // key j is seen by queries i with j - diag_hi <= i <= j - diag_lo.
    const std::int64_t row_min = key_begin - diag_hi > 0 ? key_begin - diag_hi : 0;
    const std::int64_t row_max_band = key_end - 1 - static_cast<std::int64_t>(diag_lo);
    const std::int64_t row_max = row_max_band < len_q - 1 ? row_max_band : len_q - 1;
    *first = static_cast<int>(row_min / kBlockM);
    *last = row_max < 0 ? -1 : static_cast<int>(row_max / kBlockM);
  }

  // The band in the coordinates (r, c) of tile (m_block, n_block): visible iff lo <= c - r <= hi
  // (with r < len_q - row0, c < len_k - col0). c - r lies in [-(kBlockM - 1), kBlockN - 1], so the
  // bounds are clamped to one past that range, which changes no test and fits int.
  template <int kBlockM, int kBlockN>
  __host__ __device__ void tile_band(int m_block, int n_block, int* lo, int* hi) const {
    const std::int64_t shift = static_cast<std::int64_t>(n_block) * kBlockN - static_cast<std::int64_t>(m_block) * kBlockM;
    const std::int64_t tile_lo = diag_lo - shift;
    const std::int64_t tile_hi = diag_hi - shift;
    *lo = static_cast<int>(tile_lo < -kBlockM ? -kBlockM : (tile_lo > kBlockN ? kBlockN : tile_lo));
    *hi = static_cast<int>(tile_hi < -kBlockM ? -kBlockM : (tile_hi > kBlockN ? kBlockN : tile_hi));
  }

  // True when every (i, j) of the tile is inside the sequence and inside the band.
  template <int kBlockM, int kBlockN>
  __host__ __device__ bool tile_fully_visible(int m_block, int n_block) const {
    const std::int64_t row0 = static_cast<std::int64_t>(m_block) * kBlockM;
    const std::int64_t col0 = static_cast<std::int64_t>(n_block) * kBlockN;
    if (row0 + kBlockM > len_q || col0 + kBlockN > len_k) return false;
    return col0 - (row0 + kBlockM - 1) >= diag_lo && col0 + kBlockN - 1 - row0 <= static_cast<std::int64_t>(diag_hi);
  }
};

// kDeterministic: the dQ turn-taking of deterministic mode is compiled only into its own kernel, so that
// the default kernel carries none of its registers (its counter address, the binary search).
// kSoftcap: likewise the softcap element loops. kMaskFree (tiles with kMaskFreeKernel; the launch checks:
// no window, no varlen, both lengths whole tiles): no tile needs the element mask, its loops are left out.
// kTailSplit: the second launch of a tail split (params.tail_tiles > 0): CTA j takes its share of the
// steps of the last tail_tiles key tiles (the first launch, without kTailSplit, ran the others whole),
// and the parts of each tile are summed through tail_parts.
template <typename Element_, typename Tile_, bool kDeterministic, bool kSoftcap, bool kMaskFree, bool kTailSplit = false>
struct BackwardKernel {
  using Element = Element_;
  using Tile = Tile_;
  using Convert = MmaElement<Element>;

  static constexpr int kHeadDim = Tile::kHeadDim;
  static constexpr int kBlockM = Tile::kBlockM;
  static constexpr int kBlockN = Tile::kBlockN;
  static constexpr int kWarps = Tile::kWarps;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = Tile::kStages;
  static constexpr bool kTailSplitKernel = kTailSplit;
  // Two stages: the next step's Q, dO and row statistics start loading after the barrier that publishes
  // P and dS (FlashAttention-2 issues its next Q there too), not right after the step's first barrier;
  // they still have the dK, dV and dQ GEMMs, over half the step, to land. In the profile (ncu, D = 256)
  // the first half of the step, the S and dP GEMMs waiting on their ldmatrix, lost time to the copies'
  // issue. H100 A/B beside flash (backward/README.md, round 10, three calls): D = 128 -0.6% to +2.9%,
  // D = 256 +0.9-1.9%, D = 64 causal +1.0-2.7%. Not in the mask-free kernel (D = 64 non-causal -1.5% to
  // -5%: ptxas spilled 40 bytes there, against 0) and not in the deterministic ones (not timed; ptxas:
  // D = 256 0 -> 80 bytes of spills).
  static constexpr bool kNextLoadsAfterPdS = kStages == 2 && !kMaskFree && !kDeterministic;

  // S and dP: (kBlockM x kBlockN), warp grid kSdpWarpsM x kSdpWarpsN.
  static constexpr int kSdpWarpsM = Tile::kWarpsMForSdP;
  static constexpr int kSdpWarpsN = kWarps / kSdpWarpsM;
  static constexpr int kSdpWarpRows = kBlockM / kSdpWarpsM;
  static constexpr int kSdpWarpCols = kBlockN / kSdpWarpsN;
  static constexpr int kSdpTilesM = kSdpWarpRows / 16;
  static constexpr int kSdpTilesN = kSdpWarpCols / 8;

  // dK and dV: (kBlockN x kHeadDim), warp grid kDkvWarpsN x kDkvWarpsD.
  static constexpr int kDkvWarpsN = Tile::kWarpsNForDkv;
  static constexpr int kDkvWarpsD = kWarps / kDkvWarpsN;
  static constexpr int kDkvWarpRows = kBlockN / kDkvWarpsN;
  static constexpr int kDkvWarpCols = kHeadDim / kDkvWarpsD;
  static constexpr int kDkvTilesM = kDkvWarpRows / 16;
  static constexpr int kDkvTilesN = kDkvWarpCols / 8;

  // dQ: (kBlockM x kHeadDim) in kDqPasses column slices, warp grid kDqWarpsM x kDqWarpsD per slice;
  // dq_accum keeps the accumulators' order (DqAccumLayout, dense_backward_sm80_config.h).
  using DqLayout = DqAccumLayout<Tile>;
  static constexpr int kDqWarpsM = DqLayout::kWarpsM;
  static constexpr int kDqWarpsD = DqLayout::kWarpsD;
  static constexpr int kDqPassCols = DqLayout::kPassCols;
  static constexpr int kDqWarpRows = DqLayout::kWarpRows;
  static constexpr int kDqWarpCols = DqLayout::kWarpCols;
  static constexpr int kDqTilesM = DqLayout::kTilesM;
  static constexpr int kDqTilesN = DqLayout::kTilesN;

  static_assert(kSdpWarpRows % 16 == 0 && kSdpTilesN % 2 == 0, "S/dP warp tile: 16-row, 16-column multiples");
  static_assert(kDkvWarpRows % 16 == 0 && kDkvTilesN % 2 == 0, "dK/dV warp tile: 16-row, 16-column multiples");
  static_assert(kDqWarpRows % 16 == 0 && kDqTilesN % 2 == 0, "dQ warp tile: 16-row, 16-column multiples");

  using TileKV = SwizzledTile<kBlockN, kHeadDim>;  // K, V; reused to stage dK, dV at the end
  using TileQ = SwizzledTile<kBlockM, kHeadDim>;   // Q, dO (per stage)
  using TileP = SwizzledTile<kBlockM, kBlockN>;    // P, dS (rows = queries, cols = keys)

  static constexpr int kSmemK = 0;
  static constexpr int kSmemV = kSmemK + TileKV::kBytes;
  static constexpr int kSmemQ = kSmemV + TileKV::kBytes;
  static constexpr int kSmemDo = kSmemQ + kStages * TileQ::kBytes;
  static constexpr int kSmemP = kSmemDo + kStages * TileQ::kBytes;
  static constexpr int kSmemDs = kSmemP + TileP::kBytes;
  static constexpr int kSmemLse = kSmemDs + TileP::kBytes;                  // fp32 [kStages][kBlockM], row_stat_slot order
  static constexpr int kSmemDelta = kSmemLse + kStages * kBlockM * 4;        // fp32 [kStages][kBlockM], row_stat_slot order
  static constexpr int kSmemBytes = kSmemDelta + kStages * kBlockM * 4;
  static_assert(kSmemBytes == backward_smem_bytes<Tile>(), "host and device agree on shared memory");

  // ---- Copies ----------------------------------------------------------------------------------------

  // lse and delta of a tile's rows sit in shared memory in the order the S/dP fragments use them: the
  // 2 * kSdpTilesM rows of one lane (rows g + 8 * j of its warp's block, g = lane / 4) are contiguous,
  // so a lane reads them with one 16-byte load each (8-byte at D = 256) instead of one 4-byte load per
  // row (ncu on the H100 counted 67 M of those 4-byte loads in one D = 64, S = 16384 backward of the
  // 2 x 4 S/dP warp grid; with the 4 x 2 grid this took the spills from 92 to 72 bytes and the backward
  // +2-6%: backward/README.md, round 4c).
  static constexpr int kRowStatsPerLane = 2 * kSdpTilesM;
  static __device__ __forceinline__ int row_stat_slot(int row) {
    const int block = row / kSdpWarpRows;
    const int rest = row % kSdpWarpRows;
    return block * kSdpWarpRows + (rest & 7) * kRowStatsPerLane + (rest / 16) * 2 + ((rest >> 3) & 1);
  }
  // The kRowStatsPerLane values of one lane, from its first slot (entry 2 tm + half: row tm * 16 + half * 8).
  static __device__ __forceinline__ void load_row_stats_of_lane(const float* first, float (&out)[kRowStatsPerLane]) {
    if constexpr (kRowStatsPerLane % 4 == 0) {
#pragma unroll
      for (int i = 0; i < kRowStatsPerLane / 4; ++i) {
        const float4 v = reinterpret_cast<const float4*>(first)[i];
        out[4 * i] = v.x;
        out[4 * i + 1] = v.y;
        out[4 * i + 2] = v.z;
        out[4 * i + 3] = v.w;
      }
    } else {
      static_assert(kRowStatsPerLane == 2, "one 16-row tile per warp at least");
      const float2 v = *reinterpret_cast<const float2*>(first);
      out[0] = v.x;
      out[1] = v.y;
    }
  }

  // Rows [0, kRows) x cols [0, kHeadDim) of a tile whose row 0 is `rows` (stride `row_stride`);
  // rows >= valid_rows and columns >= valid_cols are zero-filled without being read.
  template <int kRows>
  static __device__ __forceinline__ void load_tile_async(std::uint32_t smem, const Element* rows,
                                                         std::int64_t row_stride, int valid_rows,
                                                         int valid_cols) {
    using Layout = SwizzledTile<kRows, kHeadDim>;
    constexpr int kChunks = kRows * Layout::kChunksPerRow;
    static_assert(kChunks % kThreads == 0, "whole 16-byte chunks per thread");
    if constexpr (Tile::kCopyAddressesOnce) {
      // Thread t copies column chunk t % kChunksPerRow of rows t / kChunksPerRow + i kRowsPerCopy; as
      // kRowsPerCopy is a multiple of 8, the chunk's swizzle is the same in every copy, so one column
      // test, one source and one shared address serve all copies, each a constant step from them. (The
      // per-chunk form below took ~8 integer instructions per cp.async at D = 256 in ncu's SASS view.)
      constexpr int kRowsPerCopy = kThreads / Layout::kChunksPerRow;
      static_assert(kThreads % Layout::kChunksPerRow == 0 && kRowsPerCopy % 8 == 0, "copies keep the swizzle phase");
      const int tid = static_cast<int>(threadIdx.x);
      const int row0 = tid / Layout::kChunksPerRow;
      const int col = (tid % Layout::kChunksPerRow) * 8;
      const bool col_valid = col < valid_cols;
      const Element* source = rows + row0 * row_stride + col;
      const std::int64_t copy_stride = kRowsPerCopy * row_stride;
      const std::uint32_t destination = smem + 2 * Layout::offset(row0, col);
#pragma unroll
      for (int i = 0; i < kChunks / kThreads; ++i) {
        const bool valid = col_valid && row0 + i * kRowsPerCopy < valid_rows;
        cp_async_16(destination + i * (kRowsPerCopy * kHeadDim * 2), valid ? source + i * copy_stride : rows, valid);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kChunks / kThreads; ++i) {
        const int chunk = static_cast<int>(threadIdx.x) + i * kThreads;
        const int row = chunk / Layout::kChunksPerRow;
        const int col = (chunk % Layout::kChunksPerRow) * 8;
        const bool valid = row < valid_rows && col < valid_cols;
        const Element* source = valid ? rows + row * row_stride + col : rows;
        cp_async_16(smem + 2 * Layout::offset(row, col), source, valid);
      }
    }
  }

  // ---- Warp-level GEMM from shared memory ------------------------------------------------------------

  // acc (kTilesM*16 x kTilesN*8 at warp rows m0, cols n0) += A * B over k in [0, kSteps*16).
  // A(m, k) is stored at TA(m, k), or at TA(k, m) when kAStoredKMajor; B(k, n) is stored at TB(n, k),
  // or at TB(k, n) when kBStoredKMajor. Zero padding past D is multiplied like data: a run-time bound on
  // k put a branch between k-steps in the SASS, which kept ptxas from overlapping one step's ldmatrix
  // with the previous step's mma (seen in the disassembly of an earlier version).
  template <int kTilesM, int kTilesN, int kSteps, bool kAStoredKMajor, bool kBStoredKMajor, typename TA,
            typename TB>
  static __device__ __forceinline__ void warp_gemm(float (&acc)[kTilesM][kTilesN][4], std::uint32_t smem_a,
                                                   int m0, std::uint32_t smem_b, int n0) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    // Two ldmatrix.x4 address patterns: "rows 0-15, then the next 8 columns" for matrices stored in
    // the order the fragment wants, and "rows 0-7 of both 8-column halves, then rows 8-15" otherwise.
    const int lane_row_straight = lane & 15;
    const int lane_col_straight = (lane >> 4) * 8;
    const int lane_row_crossed = (lane & 7) + (lane >> 4) * 8;
    const int lane_col_crossed = ((lane >> 3) & 1) * 8;
    // Each lane's address at k = 0 and tile 0; every other load is TA/TB::advance of it.
    const std::uint32_t a_lane =
        kAStoredKMajor ? smem_a + 2 * TA::offset(lane_row_crossed, m0 + lane_col_crossed)
                       : smem_a + 2 * TA::offset(m0 + lane_row_straight, lane_col_straight);
    const std::uint32_t b_lane =
        kBStoredKMajor ? smem_b + 2 * TB::offset(lane_row_straight, n0 + lane_col_straight)
                       : smem_b + 2 * TB::offset(n0 + lane_row_crossed, lane_col_crossed);
#pragma unroll
    for (int step = 0; step < kSteps; ++step) {
      const int k0 = step * 16;
      std::uint32_t a[kTilesM][4];
#pragma unroll
      for (int tm = 0; tm < kTilesM; ++tm) {
        if constexpr (kAStoredKMajor) {
          ldmatrix_x4_trans(a[tm], TA::advance(a_lane, k0, tm * 16));
        } else {
          ldmatrix_x4(a[tm], TA::advance(a_lane, tm * 16, k0));
        }
      }
      std::uint32_t b[kTilesN][2];
#pragma unroll
      for (int tn = 0; tn < kTilesN; tn += 2) {
        std::uint32_t r[4];
        if constexpr (kBStoredKMajor) {
          ldmatrix_x4_trans(r, TB::advance(b_lane, k0, tn * 8));
        } else {
          ldmatrix_x4(r, TB::advance(b_lane, tn * 8, k0));
        }
        b[tn][0] = r[0];
        b[tn][1] = r[1];
        b[tn + 1][0] = r[2];
        b[tn + 1][1] = r[3];
      }
#pragma unroll
      for (int tm = 0; tm < kTilesM; ++tm) {
#pragma unroll
        for (int tn = 0; tn < kTilesN; ++tn) mma_16x8x16<Element>(acc[tm][tn], a[tm], b[tn][0], b[tn][1]);
      }
    }
  }

  template <int kTilesM, int kTilesN>
  static __device__ __forceinline__ void clear(float (&acc)[kTilesM][kTilesN][4]) {
#pragma unroll
    for (int tm = 0; tm < kTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kTilesN; ++tn) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[tm][tn][e] = 0.0f;
      }
    }
  }

  // Stores an accumulator (warp rows m0, cols n0, times `factor`) as Element into a swizzled tile at
  // shared address `tile`. sm_90: one stmatrix.x4 per 16 x 16 block, i.e. per accumulator tiles (tm, tn)
  // and (tm, tn + 1): matrices (rows 0-7, tn), (rows 8-15, tn), (rows 0-7, tn + 1), (rows 8-15, tn + 1),
  // a quarter of the store instructions of the st.shared.b32 form below (P and dS take 16-64 of those
  // per thread and step, beside the step's ~150 ldmatrix; backward/README.md, round 4b: D = 64 +1-3%).
  template <typename Layout, int kTilesM, int kTilesN>
  static __device__ __forceinline__ void store_fragment(std::uint32_t tile, const float (&acc)[kTilesM][kTilesN][4],
                                                        int m0, int n0, float factor) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    static_assert(kTilesN % 2 == 0, "whole 16 x 16 blocks");
    const int matrix = lane >> 3;
    const std::uint32_t block_address =
        tile + 2 * Layout::offset(m0 + (matrix & 1) * 8 + (lane & 7), n0 + (matrix >> 1) * 8);
#pragma unroll
    for (int tm = 0; tm < kTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kTilesN; tn += 2) {
        device::backward::stmatrix_x4(Layout::advance(block_address, tm * 16, tn * 8),
                                      Convert::pack(acc[tm][tn][0] * factor, acc[tm][tn][1] * factor),
                                      Convert::pack(acc[tm][tn][2] * factor, acc[tm][tn][3] * factor),
                                      Convert::pack(acc[tm][tn + 1][0] * factor, acc[tm][tn + 1][1] * factor),
                                      Convert::pack(acc[tm][tn + 1][2] * factor, acc[tm][tn + 1][3] * factor));
      }
    }
#else
    const std::uint32_t lane_address = tile + 2 * Layout::offset(m0 + (lane >> 2), n0 + (lane & 3) * 2);
#pragma unroll
    for (int tm = 0; tm < kTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kTilesN; ++tn) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const std::uint32_t packed =
              Convert::pack(acc[tm][tn][2 * half] * factor, acc[tm][tn][2 * half + 1] * factor);
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(Layout::advance(lane_address, tm * 16 + half * 8, tn * 8)),
                       "r"(packed)
                       : "memory");
        }
      }
    }
#endif
  }

  // ---- Element-wise steps between the GEMMs (fragments of S / dP: rows m0 + tm*16 + lane/4 (+8),
  //      cols n0 + tn*8 + 2 (lane%4) (+1)) ---------------------------------------------------------------

  struct RowStats {
    float lse_log2[kSdpTilesM][2];  // per (tm, row half)
    float delta[kSdpTilesM][2];
  };

  struct TileMask {
    int m0, n0;                 // the warp's offsets in the tile
    int rows_valid, cols_valid;
    int diag_lo, diag_hi;       // visible iff diag_lo <= c - r <= diag_hi
    __device__ __forceinline__ bool visible(int tm, int tn, int e) const {
      const int lane = static_cast<int>(threadIdx.x) & 31;
      const int row = m0 + tm * 16 + (lane >> 2) + (e >> 1) * 8;
      const int col = n0 + tn * 8 + (lane & 3) * 2 + (e & 1);
      return row < rows_valid && col < cols_valid && col - row >= diag_lo && col - row <= diag_hi;
    }
  };

  // S -> P = exp2(S * scale * log2(e) - lse * log2(e)), invisible entries 0.
  template <bool kMasked>
  static __device__ __forceinline__ void scores_to_probabilities(float (&acc)[kSdpTilesM][kSdpTilesN][4],
                                                                 const RowStats& stats, const TileMask& mask,
                                                                 float scale_log2) {
#pragma unroll
    for (int tm = 0; tm < kSdpTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kSdpTilesN; ++tn) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float prob = exp2_approx(acc[tm][tn][e] * scale_log2 - stats.lse_log2[tm][e >> 1]);
          acc[tm][tn][e] = (!kMasked || mask.visible(tm, tn, e)) ? prob : 0.0f;
        }
      }
    }
  }

  // dP -> dS = P (dP - delta).
  static __device__ __forceinline__ void probabilities_to_ds(const float (&prob)[kSdpTilesM][kSdpTilesN][4],
                                                             float (&acc_dp)[kSdpTilesM][kSdpTilesN][4],
                                                             const RowStats& stats) {
#pragma unroll
    for (int tm = 0; tm < kSdpTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kSdpTilesN; ++tn) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          acc_dp[tm][tn][e] = prob[tm][tn][e] * (acc_dp[tm][tn][e] - stats.delta[tm][e >> 1]);
        }
      }
    }
  }

  // Softcap c: S -> t = tanh(S * scale / c); s = c t.
  static __device__ __forceinline__ void scores_to_tanh(float (&acc)[kSdpTilesM][kSdpTilesN][4],
                                                        float scale_over_cap) {
#pragma unroll
    for (int tm = 0; tm < kSdpTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kSdpTilesN; ++tn) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[tm][tn][e] = tanhf(acc[tm][tn][e] * scale_over_cap);
      }
    }
  }

  // Softcap: t -> P = exp2(c t log2(e) - lse log2(e)) (invisible entries 0), and
  // dP -> dS = P (dP - delta) (1 - t^2), the derivative of s = c tanh(scale S / c) over scale S.
  template <bool kMasked>
  static __device__ __forceinline__ void softcap_to_probabilities_and_ds(
      float (&acc_t)[kSdpTilesM][kSdpTilesN][4], float (&acc_dp)[kSdpTilesM][kSdpTilesN][4],
      const RowStats& stats, const TileMask& mask, float cap_log2) {
#pragma unroll
    for (int tm = 0; tm < kSdpTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kSdpTilesN; ++tn) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float t = acc_t[tm][tn][e];
          float prob = exp2_approx(t * cap_log2 - stats.lse_log2[tm][e >> 1]);
          if (kMasked && !mask.visible(tm, tn, e)) prob = 0.0f;
          acc_dp[tm][tn][e] = prob * (acc_dp[tm][tn][e] - stats.delta[tm][e >> 1]) * (1.0f - t * t);
          acc_t[tm][tn][e] = prob;
        }
      }
    }
  }

  // ---- Tail split: the parts of a split key tile's dK and dV ------------------------------------------

  // A part (kBlockN x kHeadDim fp32 dK, then dV) is kept in the accumulators' order: value e of
  // accumulator tile (tm, tn) of thread tid at ((tm * kDkvTilesN + tn) * kThreads + tid) * 4 + e, so that
  // each thread reads back its own values and a warp's 16-byte accesses cover 512 contiguous bytes.
  static constexpr int kTailPartFloats = 2 * kBlockN * kHeadDim;
  static __device__ __forceinline__ int tail_offset(int tm, int tn) {
    return ((tm * kDkvTilesN + tn) * kThreads + static_cast<int>(threadIdx.x)) * 4;
  }

  static __device__ __forceinline__ void store_tail_part(float* part, const float (&acc)[kDkvTilesM][kDkvTilesN][4]) {
#pragma unroll
    for (int tm = 0; tm < kDkvTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kDkvTilesN; ++tn) {
        __stcg(reinterpret_cast<float4*>(part + tail_offset(tm, tn)),
               make_float4(acc[tm][tn][0], acc[tm][tn][1], acc[tm][tn][2], acc[tm][tn][3]));
      }
    }
  }

  // acc = the sum of `parts` parts from `first` on (kTailPartFloats apart), in that order, read from L2
  // (ld.global.cg: L1 is not coherent with the other SMs). The loop over the parts runs inside the
  // loop over the accumulator tiles, so that only one tile's sum is live beside the loads.
  static __device__ __forceinline__ void sum_tail_parts(const float* first, int parts,
                                                        float (&acc)[kDkvTilesM][kDkvTilesN][4]) {
#pragma unroll
    for (int tm = 0; tm < kDkvTilesM; ++tm) {
#pragma unroll
      for (int tn = 0; tn < kDkvTilesN; ++tn) {
        const float* at = first + tail_offset(tm, tn);
        float4 sum = __ldcg(reinterpret_cast<const float4*>(at));
#pragma unroll 1
        for (int part = 1; part < parts; ++part) {
          const float4 v = __ldcg(reinterpret_cast<const float4*>(at + static_cast<std::int64_t>(part) * kTailPartFloats));
          sum.x += v.x;
          sum.y += v.y;
          sum.z += v.z;
          sum.w += v.w;
        }
        acc[tm][tn][0] = sum.x;
        acc[tm][tn][1] = sum.y;
        acc[tm][tn][2] = sum.z;
        acc[tm][tn][3] = sum.w;
      }
    }
  }

  // The tail CTA (0-based after tail_first_cta) whose share holds tail step s (steps of the split tiles
  // counted from 0): share j holds [floor(j T / C), floor((j + 1) T / C)), T tail steps, C tail CTAs.
  static __device__ __forceinline__ int tail_share_of_step(const DenseBackwardParams& p, std::int64_t s) {
    const std::int64_t tail_steps = static_cast<std::int64_t>(p.tail_tiles) * p.tail_steps_per_tile;
    return static_cast<int>(((s + 1) * p.tail_ctas - 1) / tail_steps);
  }

  // ---- The kernel body -------------------------------------------------------------------------------

  // One CTA's work: without kTailSplit the key tile blockIdx.x whole; with it, share blockIdx.x of the
  // steps of the split tiles (one or more consecutive ranges, at most one per key tile).
  static __device__ __forceinline__ void run(const DenseBackwardParams& p) {
    if constexpr (!kTailSplit) {
      run_tile(p, blockIdx.x, 0, INT_MAX, -1);
    } else {
      // Tail steps (those of the split tiles, counted from 0) [begin, end): share j holds
      // [floor(j T / C), floor((j + 1) T / C)) of T steps over C CTAs (tail_share_of_step inverts it).
      const int share = static_cast<int>(blockIdx.x);
      const int steps_per_tile = p.tail_steps_per_tile;
      const std::int64_t tail_steps = static_cast<std::int64_t>(p.tail_tiles) * steps_per_tile;
      std::int64_t begin = share * tail_steps / p.tail_ctas;
      const std::int64_t end = (share + 1) * tail_steps / p.tail_ctas;
      while (begin < end) {
        const int tail_tile = static_cast<int>(begin / steps_per_tile);
        const std::int64_t tile_step0 = static_cast<std::int64_t>(tail_tile) * steps_per_tile;
        const int step_begin = static_cast<int>(begin - tile_step0);
        const int step_end = static_cast<int>(min(static_cast<std::int64_t>(steps_per_tile), end - tile_step0));
        __syncthreads();  // the previous range's epilogue is done with shared memory
        run_tile(p, p.tail_first_cta + tail_tile, step_begin, step_end,
                 step_end - step_begin < steps_per_tile ? tail_tile : -1, share);
        begin = tile_step0 + step_end;
      }
    }
  }

  // Steps [step_begin, min(step_end, the tile's steps)) of key tile `tile`. tail_tile >= 0: the steps are
  // tail CTA tail_share's part of split tile tail_tile, whose parts are summed through tail_parts.
  static __device__ __forceinline__ void run_tile(const DenseBackwardParams& p, std::int64_t tile, int step_begin,
                                                  int step_end, int tail_tile, int tail_share = 0) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const std::uint32_t smem = smem_address(smem_raw);
    const int tid = static_cast<int>(threadIdx.x);
    const int lane = tid & 31;
    const int warp = tid >> 5;

    // n_block varies fastest: the key tiles of one (batch, kv head) run side by side and share Q and
    // dO in L2, and a lower n_block is dispatched first (the deterministic mode waits only on lower ones).
    // With tile_group > 0 the (batch, kv head) pairs come in groups of tile_group, inside which n_block
    // varies slowest: the group's pairs still share L2, and a lower n_block of a pair still comes first.
    int n_block;
    int pair;  // batch * heads_kv + kv_head
    if (p.tile_group > 0) {
      const std::int64_t group_tiles = static_cast<std::int64_t>(p.tile_group) * p.num_n_blocks;
      const std::int64_t group = tile / group_tiles;
      const int in_group = static_cast<int>(tile - group * group_tiles);
      const int first_pair = static_cast<int>(group) * p.tile_group;
      const int group_pairs = min(p.tile_group, p.heads_kv * p.batch - first_pair);
      n_block = in_group / group_pairs;
      pair = first_pair + in_group % group_pairs;
    } else {
      n_block = static_cast<int>(tile % p.num_n_blocks);
      pair = static_cast<int>(tile / p.num_n_blocks);
    }
    const int kv_head = pair % p.heads_kv;
    const int batch = pair / p.heads_kv;

    const SequenceView seq(p, batch);
    const int key0 = n_block * kBlockN;
    if (key0 >= seq.len_k) return;  // varlen: past this sequence's keys, nothing to compute or write
    const int keys_here = min(kBlockN, seq.len_k - key0);

    int m_first = 0;
    int m_last = 0;
    seq.template query_tiles_for_key_tile<kBlockM, kBlockN>(n_block, &m_first, &m_last);
    const int m_count = max(0, m_last - m_first + 1);
    const int num_steps = min(m_count * p.group, step_end);  // (query head of the group, query tile) pairs

    const auto* q = static_cast<const Element*>(p.q);
    const auto* k = static_cast<const Element*>(p.k);
    const auto* v = static_cast<const Element*>(p.v);
    const auto* dout = static_cast<const Element*>(p.dout);
    const std::int64_t k_offset = batch * p.k_strides.batch + (seq.k_row0 + key0) * p.k_strides.row +
                                  static_cast<std::int64_t>(kv_head) * p.k_strides.head;
    const std::int64_t v_offset = batch * p.v_strides.batch + (seq.k_row0 + key0) * p.v_strides.row +
                                  static_cast<std::int64_t>(kv_head) * p.v_strides.head;

    // Step s covers query head kv_head * G + s / m_count and query tile m_first + s % m_count.
    auto step_head = [&](int step) { return kv_head * p.group + step / m_count; };
    auto step_m_block = [&](int step) { return m_first + step % m_count; };
    auto load_q = [&](int step, int stage) {
      const int head = step_head(step);
      const int row0 = step_m_block(step) * kBlockM;
      const Element* rows = q + batch * p.q_strides.batch + (seq.q_row0 + row0) * p.q_strides.row +
                            static_cast<std::int64_t>(head) * p.q_strides.head;
      load_tile_async<kBlockM>(smem + kSmemQ + stage * TileQ::kBytes, rows, p.q_strides.row, seq.len_q - row0,
                               p.head_dim);
    };
    // lse and delta of the tile's rows (raw; rows past the sequence read as 0 and are masked).
    auto load_row_stats = [&](int step, int stage) {
      if (tid < kBlockM) {
        const int head = step_head(step);
        const int row = step_m_block(step) * kBlockM + tid;
        const bool valid = row < seq.len_q;
        const float* lse = p.lse + batch * p.lse_strides.batch + static_cast<std::int64_t>(head) * p.lse_strides.head +
                           (seq.q_row0 + row) * p.lse_strides.row;
        const float* delta = p.delta + static_cast<std::int64_t>(head) * p.total_q + seq.delta_row0 + row;
        const int slot = stage * kBlockM + row_stat_slot(tid);
        cp_async_4(smem + kSmemLse + 4 * slot, valid ? lse : p.lse, valid);
        cp_async_4(smem + kSmemDelta + 4 * slot, valid ? delta : p.delta, valid);
      }
    };
    auto load_dout = [&](int step, int stage) {
      const int head = step_head(step);
      const int row0 = step_m_block(step) * kBlockM;
      const Element* rows = dout + batch * p.dout_strides.batch + (seq.q_row0 + row0) * p.dout_strides.row +
                            static_cast<std::int64_t>(head) * p.dout_strides.head;
      load_tile_async<kBlockM>(smem + kSmemDo + stage * TileQ::kBytes, rows, p.dout_strides.row,
                               seq.len_q - row0, p.head_dim_v);
    };

    float acc_dk[kDkvTilesM][kDkvTilesN][4];  // (kBlockN x kHeadDim) / warps, fp32
    float acc_dv[kDkvTilesM][kDkvTilesN][4];
    clear(acc_dk);
    clear(acc_dv);

    if (step_begin < num_steps) {
      load_tile_async<kBlockN>(smem + kSmemK, k + k_offset, p.k_strides.row, keys_here, p.head_dim);
      load_tile_async<kBlockN>(smem + kSmemV, v + v_offset, p.v_strides.row, keys_here, p.head_dim_v);
      load_q(step_begin, 0);
      load_row_stats(step_begin, 0);
      load_dout(step_begin, 0);
    }
    cp_async_commit();

    // Warp coordinates in the three GEMMs.
    const int sdp_m0 = (warp / kSdpWarpsN) * kSdpWarpRows;
    const int sdp_n0 = (warp % kSdpWarpsN) * kSdpWarpCols;
    const int dkv_n0 = (warp / kDkvWarpsD) * kDkvWarpRows;
    const int dkv_d0 = (warp % kDkvWarpsD) * kDkvWarpCols;
    const int dq_m0 = (warp / kDqWarpsD) * kDqWarpRows;
    const int dq_d0 = (warp % kDqWarpsD) * kDqWarpCols;

    const float scale_log2 = p.scale * kLog2e;
    const float scale_over_cap = kSoftcap ? p.scale / p.softcap : 0.0f;
    const float cap_log2 = p.softcap * kLog2e;

    for (int step = step_begin; step < num_steps; ++step) {
      const int head = step_head(step);
      const int m_block = step_m_block(step);
      const int row0 = m_block * kBlockM;
      const int stage = kStages == 2 ? ((step - step_begin) & 1) : 0;

      cp_async_wait<0>();
      __syncthreads();  // this step's Q and dO are in; every warp is done with the previous step
      auto load_next_step = [&] {
        if (step + 1 < num_steps) {
          load_q(step + 1, stage ^ 1);
          load_row_stats(step + 1, stage ^ 1);
          load_dout(step + 1, stage ^ 1);
        }
        cp_async_commit();
      };
      if constexpr (kStages == 2 && !kNextLoadsAfterPdS) load_next_step();
      const std::uint32_t smem_q = smem + kSmemQ + stage * TileQ::kBytes;
      const std::uint32_t smem_dout = smem + kSmemDo + stage * TileQ::kBytes;

      // lse (as log2, with -inf -> +inf so that p = exp2(s - inf) = 0 in rows with no visible key) and
      // delta of this thread's rows, read from shared memory only when needed (registers are scarce).
      const int lane_slot = stage * kBlockM + sdp_m0 + (lane >> 2) * kRowStatsPerLane;
      const float* lane_lse = reinterpret_cast<const float*>(smem_raw + kSmemLse) + lane_slot;
      const float* lane_delta = reinterpret_cast<const float*>(smem_raw + kSmemDelta) + lane_slot;
      RowStats stats;
      auto read_lse = [&] {
        float values[kRowStatsPerLane];
        load_row_stats_of_lane(lane_lse, values);
#pragma unroll
        for (int tm = 0; tm < kSdpTilesM; ++tm) {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const float lse = values[2 * tm + half];
            stats.lse_log2[tm][half] = lse == -INFINITY ? INFINITY : lse * kLog2e;
          }
        }
      };
      auto read_delta = [&] {
        float values[kRowStatsPerLane];
        load_row_stats_of_lane(lane_delta, values);
#pragma unroll
        for (int tm = 0; tm < kSdpTilesM; ++tm) {
#pragma unroll
          for (int half = 0; half < 2; ++half) stats.delta[tm][half] = values[2 * tm + half];
        }
      };
      // In tile coordinates (r, c), (row0 + r, key0 + c) is visible iff r < rows_valid, c < keys_here and
      // the tile band holds c - r.
      const bool masked = !kMaskFree && !seq.template tile_fully_visible<kBlockM, kBlockN>(m_block, n_block);
      auto make_mask = [&] {
        TileMask mask;
        mask.m0 = sdp_m0;
        mask.n0 = sdp_n0;
        mask.rows_valid = seq.len_q - row0;
        mask.cols_valid = keys_here;
        seq.template tile_band<kBlockM, kBlockN>(m_block, n_block, &mask.diag_lo, &mask.diag_hi);
        return mask;
      };

      // S = Q K^T, then P (or tanh with softcap) while the tensor cores run dP = dO V^T, then dS.
      // The softcap and mask variants are separate instantiations of the element loops: a run-time
      // test per element put a branch around every element and serialised the loop.
      float acc_s[kSdpTilesM][kSdpTilesN][4];
      float acc_dp[kSdpTilesM][kSdpTilesN][4];
      clear(acc_s);
      warp_gemm<kSdpTilesM, kSdpTilesN, kHeadDim / 16, false, false, TileQ, TileKV>(acc_s, smem_q, sdp_m0,
                                                                                   smem + kSmemK, sdp_n0);
      // Each variant carries its own copy of the dP GEMM, so that ptxas can interleave the exp2 of P
      // with the dP mma instructions (it does not move instructions across the variants' branches).
      auto gemm_dp = [&] {
        clear(acc_dp);
        warp_gemm<kSdpTilesM, kSdpTilesN, kHeadDim / 16, false, false, TileQ, TileKV>(
            acc_dp, smem_dout, sdp_m0, smem + kSmemV, sdp_n0);
        read_delta();
      };
      if constexpr (!kSoftcap) {
        read_lse();
        if (masked) {
          scores_to_probabilities<true>(acc_s, stats, make_mask(), scale_log2);
          gemm_dp();
        } else {
          scores_to_probabilities<false>(acc_s, stats, TileMask{}, scale_log2);
          gemm_dp();
        }
        probabilities_to_ds(acc_s, acc_dp, stats);
      } else {
        scores_to_tanh(acc_s, scale_over_cap);
        gemm_dp();
        read_lse();
        if (masked) {
          softcap_to_probabilities_and_ds<true>(acc_s, acc_dp, stats, make_mask(), cap_log2);
        } else {
          softcap_to_probabilities_and_ds<false>(acc_s, acc_dp, stats, TileMask{}, cap_log2);
        }
      }
      store_fragment<TileP>(smem + kSmemP, acc_s, sdp_m0, sdp_n0, 1.0f);
      store_fragment<TileP>(smem + kSmemDs, acc_dp, sdp_m0, sdp_n0, 1.0f);
      __syncthreads();  // P and dS are visible to every warp
      if constexpr (kStages == 2 && kNextLoadsAfterPdS) load_next_step();

      // dQ (unscaled) += dS K, added to dq_accum; deterministic mode takes its turn first.
      auto add_dq = [&] {
        std::int32_t* semaphore = nullptr;
        if constexpr (kDeterministic) {
          semaphore = p.dq_semaphore + (static_cast<std::int64_t>(batch) * p.heads_q + head) * p.num_m_blocks + m_block;
          if (tid == 0) {
            // Contributors to this query tile are the key tiles [first, last]; they add in ascending
            // order, so this one waits until the n_block - first tiles before it have added.
            int first = 0;
            int high = n_block;
            while (first < high) {
              const int middle = (first + high) / 2;
              int middle_first = 0;
              int middle_last = 0;
              seq.template query_tiles_for_key_tile<kBlockM, kBlockN>(middle, &middle_first, &middle_last);
              if (middle_last >= m_block) {
                high = middle;
              } else {
                first = middle + 1;
              }
            }
            while (load_acquire(semaphore) != n_block - first) {
            }
          }
          __syncthreads();
        }
        // This (query tile, head)'s block of dq_accum (DqAccumLayout); recomputed per step rather than
        // kept from the start, which cost D = 256 spills.
        const std::int64_t accum_row =
            dq_accum_row0(p.cu_seqlens_q != nullptr, batch, seq.q_row0, p.num_m_blocks, kBlockM) + row0;
        float* dq_block = p.dq_accum + (accum_row * p.heads_q + static_cast<std::int64_t>(head) * kBlockM) * kHeadDim;
#pragma unroll
        for (int pass = 0; pass < Tile::kDqPasses; ++pass) {
          float acc_dq[kDqTilesM][kDqTilesN][4];
          clear(acc_dq);
          const int pass_d0 = pass * kDqPassCols + dq_d0;
          warp_gemm<kDqTilesM, kDqTilesN, kBlockN / 16, false, true, TileP, TileKV>(acc_dq, smem + kSmemDs, dq_m0,
                                                                                    smem + kSmemK, pass_d0);
#pragma unroll
          for (int tm = 0; tm < kDqTilesM; ++tm) {
#pragma unroll
            for (int tn = 0; tn < kDqTilesN; ++tn) {
              // No test for columns >= head_dim (the pad of D below the tier): their values are zero (K's
              // pad columns are zero-filled), their adds stay inside this tile's block, and the
              // postprocess does not read them; likewise rows past the sequence. A test per accumulator
              // tile put each add in its own BSSY / BRA / BSYNC block (ncu, D = 256: 16 per warp and step,
              // 23 branches per warp and step against FlashAttention-2's 3); without it the backward ran
              // +2-3% at D = 64 and 256, D = 128 within 1% (H100 A/B beside flash, backward/README.md,
              // round 10). For D below the tier the pad columns' adds are issued too: (tier - D) / tier
              // more adds.
              float* group = dq_block + DqLayout::group_offset(pass, warp, tm, tn);
              const float* c = acc_dq[tm][tn];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
              static_assert(kDqAccumVectorAdds, "the postprocess reads the 4-wide order");
              red_add_quad(group + lane * 4, c[0], c[1], c[2], c[3]);
#else
              static_assert(!kDqAccumVectorAdds, "the postprocess reads the scalar order");
#pragma unroll
              for (int e = 0; e < 4; ++e) red_add(group + e * 32 + lane, c[e]);
#endif
            }
          }
        }
        if constexpr (kDeterministic) {
          __syncthreads();  // every thread's adds are issued before the turn passes on
          if (tid == 0) {
            __threadfence();
            atomicAdd(semaphore, 1);
          }
        }
      };
      // dK += dS^T Q (the last reader of this stage's Q); dV += P^T dO (the last reader of this stage's dO).
      auto gemm_dk = [&] {
        warp_gemm<kDkvTilesM, kDkvTilesN, kBlockM / 16, true, true, TileP, TileQ>(acc_dk, smem + kSmemDs, dkv_n0,
                                                                                  smem_q, dkv_d0);
      };
      auto gemm_dv = [&] {
        warp_gemm<kDkvTilesM, kDkvTilesN, kBlockM / 16, true, true, TileP, TileQ>(acc_dv, smem + kSmemP, dkv_n0,
                                                                                  smem_dout, dkv_d0);
      };
      // dK, dV, then dQ. Issuing the dQ adds before the dK GEMM (FlashAttention-2's order) measured 0-4%
      // slower on the H100 (backward/README.md, round 3). With one Q/dO buffer the next Q loads from the
      // end of dK on, the next dO from the end of dV on.
      gemm_dk();
      if constexpr (kStages == 1) {
        __syncthreads();
        if (step + 1 < num_steps) {
          load_q(step + 1, 0);
          load_row_stats(step + 1, 0);
        }
        cp_async_commit();
      }
      gemm_dv();
      if constexpr (kStages == 1) {
        __syncthreads();
        if (step + 1 < num_steps) load_dout(step + 1, 0);
        cp_async_commit();
      }
      add_dq();
    }

    // Epilogue: dK (times scale) and dV through shared memory (K and V are no longer read), then
    // 16-byte coalesced stores. Keys no query sees get zeros.
    cp_async_wait<0>();
    __syncthreads();
    if constexpr (kTailSplit) {
      if (tail_tile >= 0) {
        // Store this part, then count its steps; the CTA that completes the tile's count sums the parts
        // in the order of their steps (a fixed order: dk, dv come out the same from run to run) and
        // writes dk, dv. Share j's part of tail tile t is part j + t: along the steps both grow, and
        // every new part moves to the next share or the next tile or both, so j + t is unique.
        auto part_of = [&](int share, int tail_tile_of_part) {
          return p.tail_parts + static_cast<std::int64_t>(share + tail_tile_of_part) * kTailPartFloats;
        };
        float* own = part_of(tail_share, tail_tile);
        store_tail_part(own, acc_dk);
        store_tail_part(own + kBlockN * kHeadDim, acc_dv);
        __threadfence();
        __syncthreads();
        auto* last = reinterpret_cast<volatile int*>(smem_raw + kSmemLse);  // free: no copy is in flight
        if (tid == 0) {
          const int steps = num_steps - step_begin;
          const int done = atomicAdd(p.tail_counters + tail_tile, steps) + steps;
          __threadfence();
          *last = done == p.tail_steps_per_tile;
        }
        __syncthreads();
        if (*last == 0) return;
        __threadfence();
        const std::int64_t tile_step0 = static_cast<std::int64_t>(tail_tile) * p.tail_steps_per_tile;
        const int first_share = tail_share_of_step(p, tile_step0);
        const int parts = tail_share_of_step(p, tile_step0 + p.tail_steps_per_tile - 1) - first_share + 1;
        const float* first = part_of(first_share, tail_tile);
        sum_tail_parts(first, parts, acc_dk);
        sum_tail_parts(first + kBlockN * kHeadDim, parts, acc_dv);
      }
    }
    auto* stage_dk = reinterpret_cast<Element*>(smem_raw + kSmemK);
    auto* stage_dv = reinterpret_cast<Element*>(smem_raw + kSmemV);
    store_fragment<TileKV>(smem + kSmemK, acc_dk, dkv_n0, dkv_d0, p.scale);
    store_fragment<TileKV>(smem + kSmemV, acc_dv, dkv_n0, dkv_d0, 1.0f);
    __syncthreads();
    auto* dk = static_cast<Element*>(p.dk);
    auto* dv = static_cast<Element*>(p.dv);
    const std::int64_t dk_offset = batch * p.dk_strides.batch + (seq.k_row0 + key0) * p.dk_strides.row +
                                   static_cast<std::int64_t>(kv_head) * p.dk_strides.head;
    const std::int64_t dv_offset = batch * p.dv_strides.batch + (seq.k_row0 + key0) * p.dv_strides.row +
                                   static_cast<std::int64_t>(kv_head) * p.dv_strides.head;
    constexpr int kChunks = kBlockN * TileKV::kChunksPerRow;
#pragma unroll
    for (int i = 0; i < kChunks / kThreads; ++i) {
      const int chunk = tid + i * kThreads;
      const int row = chunk / TileKV::kChunksPerRow;
      const int col = (chunk % TileKV::kChunksPerRow) * 8;
      if (row < keys_here) {
        if (col < p.head_dim) {
          *reinterpret_cast<uint4*>(dk + dk_offset + row * p.dk_strides.row + col) =
              *reinterpret_cast<const uint4*>(stage_dk + TileKV::offset(row, col));
        }
        if (col < p.head_dim_v) {
          *reinterpret_cast<uint4*>(dv + dv_offset + row * p.dv_strides.row + col) =
              *reinterpret_cast<const uint4*>(stage_dv + TileKV::offset(row, col));
        }
      }
    }
  }
};

template <typename Kernel>
__global__ void __launch_bounds__(Kernel::kThreads, Kernel::Tile::kMinCtasPerSm) dense_backward_main_kernel(const DenseBackwardParams params) {
  Kernel::run(params);
}

// `ctas` CTAs: every key tile (num_n_blocks x heads_kv x batch), or with a tail split the whole ones
// (tail_first_cta), then in a second launch the tail shares (tail_ctas).
template <typename Kernel>
Status launch_dense_backward_kernel(const DenseBackwardParams& params, std::int64_t ctas, cudaStream_t stream) {
  if (ctas == 0) return Status::ok();
  constexpr auto kernel = &dense_backward_main_kernel<Kernel>;
  cudaError_t error = device::ensure_dynamic_shared_memory<kernel>(Kernel::kSmemBytes);
  if (error != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm80 dense backward: cannot raise the shared-memory limit to ") +
                                        std::to_string(Kernel::kSmemBytes) + " bytes: " + cudaGetErrorString(error)};
  }
  // One-dimensional grid: x reaches 2^31 - 1 CTAs (the host checks), y and z would stop at 65,535.
  kernel<<<static_cast<unsigned>(ctas), Kernel::kThreads, Kernel::kSmemBytes, stream>>>(params);
  error = cudaGetLastError();
  if (error != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm80 dense backward launch: ") + cudaGetErrorString(error)};
  }
  return Status::ok();
}

}  // namespace detail

template <typename Element, typename Tile>
Status launch_dense_backward_main(const DenseBackwardParams& params, cudaStream_t stream) {
  using detail::BackwardKernel;
  using detail::launch_dense_backward_kernel;
  const bool softcap = params.softcap > 0.0f;
  const std::int64_t key_tiles = static_cast<std::int64_t>(params.num_n_blocks) * params.heads_kv * params.batch;
  if (params.deterministic) {
    return softcap ? launch_dense_backward_kernel<BackwardKernel<Element, Tile, true, true, false>>(params, key_tiles, stream)
                   : launch_dense_backward_kernel<BackwardKernel<Element, Tile, true, false, false>>(params, key_tiles, stream);
  }
  if (softcap) {
    return launch_dense_backward_kernel<BackwardKernel<Element, Tile, false, true, false>>(params, key_tiles, stream);
  }
  const bool mask_free = params.cu_seqlens_q == nullptr && params.cu_seqlens_k == nullptr && params.window_left < 0 &&
                         params.window_right < 0 && params.seqlen_q % Tile::kBlockM == 0 &&
                         params.seqlen_k % Tile::kBlockN == 0;
  // With a tail split the whole tiles run first, in the kernel they would run in without one; the tail
  // shares follow in a kernel of their own, so that the split's state costs the whole tiles' step loop no
  // registers (in one kernel ptxas spilled 16-20 values into the D = 64 step loop, against none).
  const std::int64_t whole = params.tail_tiles > 0 ? params.tail_first_cta : key_tiles;
  if (params.tail_tiles > 0 && Tile::kMaskFreeKernel && !mask_free) {
    // The host plans a split only where backward_tail_allowed holds: at tier 64 for whole tiles only.
    return {StatusCode::kInternal, "sm80 dense backward: a tail split was planned for a launch that needs the element mask"};
  }
  const Status status = [&] {
    if constexpr (Tile::kMaskFreeKernel) {
      if (mask_free) return launch_dense_backward_kernel<BackwardKernel<Element, Tile, false, false, true>>(params, whole, stream);
    }
    return launch_dense_backward_kernel<BackwardKernel<Element, Tile, false, false, false>>(params, whole, stream);
  }();
  if (!status || params.tail_tiles == 0) return status;
  return launch_dense_backward_kernel<BackwardKernel<Element, Tile, false, false, Tile::kMaskFreeKernel, true>>(
      params, params.tail_ctas, stream);
}

}  // namespace attnkit::sm80::backward
