// Chunked backward of GDN (one log decay per value head and token; semantics.md section 5), the
// structure of FLA's chunk_gated_delta_rule backward: only two passes run sequentially over the chunks of
// a sequence, everything else is chunk-parallel. Values are fp32 throughout (inputs after the prep
// kernels' fp32 copies); the products of chunk_grad, of the two state passes and chunk_prep's
// (Gamma Q)^T dO, w and u run on tensor cores with each fp32 operand as a bf16 hi + lo pair (~16 of its
// 24 bits, see mma_tc); chunk_prep's K K^T, Q K^T and P^T dO stay fp32 on CUDA cores (with P^T dO on
// bf16 pairs, dbeta of Sm80_gdn_fp16_T1 was off by 1.3e-5 relative against an fp32-output bound of
// 2.2e-6; NOTES.md "GPU backward"). No float atomics: every value has one writer
// and every sum a fixed order, so the gradients are the same bits run to run (LinearBackwardRepeat).
//
// One chunk of C = 64 tokens (rows i, j), its start state S0 [K, V], G_i the inclusive cumulative log
// decay, gam_i = exp(G_i), d_i = exp(G_C - G_i) (G_C: the last row's G; rows past a sequence's end are
// zero with no decay, so G_C is the last token's), A[i][j] = beta_i exp(G_i - G_j) k_i . k_j (i > j),
// Tinv = (I + A)^-1, P[i][j] = scale exp(G_i - G_j) q_i . k_j (j <= i):
//   residual R = V - Gamma K S0,  v_new U = Tinv (beta R) = u - w S0  (u = Tinv (beta V), w = Tinv (beta Gamma K))
//   O = scale Gamma Q S0 + P U,    S_next = gam_C S0 + K^T diag(d) U
// Reverse, with dh = dL/dS_next and dU = dL/dU:
//   dU = P^T dO + diag(d) K dh,    Y = Tinv^T dU,  dR = beta Y (= dv),  dbeta_i = Y_i . R_i + ...
//   dS0 = gam_C dh + scale (Gamma Q)^T dO - w^T dU   (w^T dU = (Gamma K)^T dR)
//   dA = -Y U^T (i > j) -> dbeta, dk and dG through A;  dP = dO U^T (masked) -> dq, dk, dG
//   dq = scale Gamma dO S0^T + dP' K,  dk = dP'^T Q + E K + E^T K - Gamma dR S0^T + diag(d) U dh^T
// (dP' = dP scale exp(G_i - G_j), E = dA beta_i exp(G_i - G_j)), and dG_i collects every term's
// d/dG_i; dg_t = sum over i >= t in the chunk of dG_i (G resets at each chunk).
//
// Kernels, in launch order (between the prep and finish kernels of linear_backward_sm80.cu):
//   chunk_prep  (grid: chunk slots x value heads)   G, Tinv, w, u, P^T dO, scale (Gamma Q)^T dO, P, B
//   state_fwd   (grid: sequences x value slices of 32, value heads; chunks in order)   S0, v_new
//   state_bwd   (same grid, chunks last to first)   dU, dh at each chunk's end, d initial state
//   chunk_grad  (grid: chunk slots x value heads, 16 warps)   dq, dk, dv, dbeta, dg of the chunk's tokens
#include <cuda_runtime.h>

#include <cstdint>

#include "device/kernel_attributes.cuh"
#include "host/cuda_runtime.h"
#include "kernels/linear/sm80/linear_backward_plan.h"
#include "kernels/linear/sm80/linear_backward_sm80.cuh"
#include "kernels/linear/sm80/linear_mma_sm80.cuh"
#include "kernels/linear/sm80/linear_sm80_common.cuh"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"

namespace attnkit::sm80 {
namespace {

using linear_backward_detail::token_offset;
using linear_detail::cp_async_16;
using linear_detail::cp_async_commit;
using linear_detail::cp_async_wait_all;
using linear_detail::cp_async_wait_group;
using linear_detail::load_element;
using linear_detail::store_element;
using linear_detail::warp_sum;

constexpr int kC = 64;                           // tokens per chunk
constexpr int kKey = kLinearBackwardMaxKeyDim;   // K padded to 128
constexpr int kSlice = kLinearBackwardColumns;   // value columns of a state-pass CTA (and the V padding)
constexpr int kGradSlice = 32;                   // value columns per step of chunk_grad
constexpr int kLdKey = kKey + 4;                 // row pitches: + 4 floats keeps 16-byte rows and
constexpr int kLdC = kC + 4;                     // spreads the rows of a column over the banks
constexpr int kLdSlice = kSlice + 4;
constexpr int kLdGrad = kGradSlice + 4;
constexpr int kThreadsChunk = 256;
constexpr int kThreadsState = 256;

// An M x N fp32 tile spread over `Threads` threads: each owns M N / Threads elements, rows
// row(r) = ti + 16 r and columns col(c) = tj + (Threads / 16) c, with tj the fast index (consecutive
// threads own consecutive columns: coalesced when written to global memory).
template <int M, int N, int Threads>
struct Fragment {
  static constexpr int kRowThreads = 16, kColThreads = Threads / kRowThreads;
  static constexpr int kTm = M / kRowThreads, kTn = N / kColThreads;
  static_assert(M % kRowThreads == 0 && N % kColThreads == 0, "tile does not divide");
  float v[kTm][kTn];
  __device__ __forceinline__ static int row(int r) { return static_cast<int>(threadIdx.x) / kColThreads + kRowThreads * r; }
  __device__ __forceinline__ static int col(int c) { return static_cast<int>(threadIdx.x) % kColThreads + kColThreads * c; }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int r = 0; r < kTm; ++r) {
#pragma unroll
      for (int c = 0; c < kTn; ++c) v[r][c] = 0.0f;
    }
  }
};

// f += a b over depth D: f(i, j) += sum_m a(i, m) b(m, j), fp32 FMAs in m order.
template <int D, int M, int N, int Threads, typename A, typename B>
__device__ __forceinline__ void mma(Fragment<M, N, Threads>& f, A a, B b) {
  using F = Fragment<M, N, Threads>;
#pragma unroll 4
  for (int m = 0; m < D; ++m) {
    float x[F::kTm], y[F::kTn];
#pragma unroll
    for (int r = 0; r < F::kTm; ++r) x[r] = a(F::row(r), m);
#pragma unroll
    for (int c = 0; c < F::kTn; ++c) y[c] = b(m, F::col(c));
#pragma unroll
    for (int r = 0; r < F::kTm; ++r) {
#pragma unroll
      for (int c = 0; c < F::kTn; ++c) f.v[r][c] = fmaf(x[r], y[c], f.v[r][c]);
    }
  }
}

// out(i, j, sum_m a(i, m) b(m, j)) for i < M, j < N (each element once, by the thread that owns it).
template <int M, int N, int D, int Threads, typename A, typename B, typename Out>
__device__ __forceinline__ void gemm(A a, B b, Out out) {
  using F = Fragment<M, N, Threads>;
  F f;
  f.zero();
  mma<D>(f, a, b);
#pragma unroll
  for (int r = 0; r < F::kTm; ++r) {
#pragma unroll
    for (int c = 0; c < F::kTn; ++c) out(F::row(r), F::col(c), f.v[r][c]);
  }
}

// Tensor-core products of chunk_grad and the state passes (mma.sync m16n8k16, bf16 operands, fp32
// accumulation). Every operand is an fp32 value (workspace intermediates, or the fp32 copies of fp16/bf16
// inputs, which L2 normalisation and fp16 make inexact in bf16), so each is split into a bf16 pair
// hi = round(x), lo = round(x - hi) and a product takes three MMAs, lo hi + hi lo + hi hi (lo lo, ~2^-16
// of the product, is dropped): ~16 bits of each operand, as the forward's output kernel. An M x N result
// with M = 16 kRowTiles rows over the 8 warps of a CTA: warp w owns row tile w % kRowTiles and the kTiles
// n-tiles of 8 columns of column group w / kRowTiles (so a warp's A fragment serves all its n-tiles).
// Fragment layout as linear_mma_sm80.cuh: element e of n-tile t is row g + 8 (e / 2) and column
// 2 (lane % 4) + e % 2 of the tile (g = lane / 4). The operands come from shared memory as scalar fp32
// loads (2-way bank conflicts at most for the row pitches used, 36, 68 and 132 floats) and are split in
// registers at each use; a warp's 3 kTiles MMAs per k-step of 16 replace 16 x 8 kTiles x 16 / 32 = 64
// kTiles fp32 FMAs per lane. A tile always spans 8 warps: chunk_grad's 16 warps run two products at once,
// warps w and w + 8 taking the same place in each (warp index mod 8).
constexpr int kTcWarps = kThreadsChunk / 32;
static_assert(kThreadsState == kThreadsChunk, "the tensor-core tiles assume one CTA size for all kernels");

template <int M, int N>
struct MmaTile {
  static constexpr int kRowTiles = M / 16, kGroups = kTcWarps / kRowTiles, kTiles = N / (8 * kGroups);
  static_assert(M % 16 == 0 && kTcWarps % kRowTiles == 0 && N % (8 * kGroups) == 0, "tile does not divide");
  float c[kTiles][4];
  __device__ __forceinline__ static int row(int e) {
    const int warp = static_cast<int>(threadIdx.x) / 32 % kTcWarps, lane = static_cast<int>(threadIdx.x) % 32;
    return 16 * (warp % kRowTiles) + lane / 4 + 8 * (e / 2);
  }
  __device__ __forceinline__ static int col(int t, int e) {
    const int warp = static_cast<int>(threadIdx.x) / 32 % kTcWarps, lane = static_cast<int>(threadIdx.x) % 32;
    return (warp / kRowTiles) * (N / kGroups) + 8 * t + 2 * (lane % 4) + e % 2;
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) c[t][e] = 0.0f;
    }
  }
};

// f += a b over depth D (a multiple of 16) on tensor cores; a(i, m) and b(m, n) read fp32 values.
template <int D, int M, int N, typename A, typename B>
__device__ __forceinline__ void mma_tc(MmaTile<M, N>& f, A a, B b) {
  using T = MmaTile<M, N>;
  using linear_detail::mma_16x8x16;
  using linear_detail::split_pair;
  static_assert(D % 16 == 0, "depth must be a multiple of 16");
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t2 = 2 * (lane % 4);
  const int r0 = T::row(0) - g, n0 = T::col(0, 0) - t2;
#pragma unroll 2
  for (int k0 = 0; k0 < D; k0 += 16) {
    unsigned ahi[4], alo[4];
    split_pair<__nv_bfloat16>(a(r0 + g, k0 + t2), a(r0 + g, k0 + t2 + 1), &ahi[0], &alo[0]);
    split_pair<__nv_bfloat16>(a(r0 + g + 8, k0 + t2), a(r0 + g + 8, k0 + t2 + 1), &ahi[1], &alo[1]);
    split_pair<__nv_bfloat16>(a(r0 + g, k0 + t2 + 8), a(r0 + g, k0 + t2 + 9), &ahi[2], &alo[2]);
    split_pair<__nv_bfloat16>(a(r0 + g + 8, k0 + t2 + 8), a(r0 + g + 8, k0 + t2 + 9), &ahi[3], &alo[3]);
#pragma unroll
    for (int t = 0; t < T::kTiles; ++t) {
      const int n = n0 + 8 * t + g;
      unsigned bhi[2], blo[2];
      split_pair<__nv_bfloat16>(b(k0 + t2, n), b(k0 + t2 + 1, n), &bhi[0], &blo[0]);
      split_pair<__nv_bfloat16>(b(k0 + t2 + 8, n), b(k0 + t2 + 9, n), &bhi[1], &blo[1]);
      mma_16x8x16<__nv_bfloat16>(f.c[t], alo, bhi[0], bhi[1]);
      mma_16x8x16<__nv_bfloat16>(f.c[t], ahi, blo[0], blo[1]);
      mma_16x8x16<__nv_bfloat16>(f.c[t], ahi, bhi[0], bhi[1]);
    }
  }
}

// out(i, j, sum_m a(i, m) b(m, j)) for i < M, j < N on tensor cores (each element once, by its owner).
template <int M, int N, int D, typename A, typename B, typename Out>
__device__ __forceinline__ void gemm_tc(A a, B b, Out out) {
  using T = MmaTile<M, N>;
  T f;
  f.zero();
  mma_tc<D>(f, a, b);
#pragma unroll
  for (int t = 0; t < T::kTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) out(T::row(e), T::col(t, e), f.c[t][e]);
  }
}

// Where a chunk slot's tokens are: flat token row of its first token and how many are valid (0: a varlen
// slot that holds no chunk). Slots as the forward's (LinearChunkWorkspace).
struct SlotPlace {
  std::int64_t token0 = 0;
  int rows = 0;
};

__device__ __forceinline__ std::int64_t first_slot(const LinearBackwardParams& p, int n) {
  if (p.cu_seqlens == nullptr) return n * ((p.seqlen + kC - 1) / kC);
  return static_cast<std::int64_t>(p.cu_seqlens[n * p.cu_seqlens_stride]) / kC + n;
}

__device__ __forceinline__ SlotPlace locate(const LinearBackwardParams& p, std::int64_t slot) {
  SlotPlace place;
  std::int64_t begin, length, chunk;
  if (p.cu_seqlens == nullptr) {
    const std::int64_t per = (p.seqlen + kC - 1) / kC;
    begin = (slot / per) * p.seqlen;
    length = p.seqlen;
    chunk = slot % per;
  } else {
    int lo = 0, hi = p.num_sequences - 1;  // the last sequence whose first slot is <= slot
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (first_slot(p, mid) <= slot) lo = mid; else hi = mid - 1;
    }
    begin = p.cu_seqlens[lo * p.cu_seqlens_stride];
    length = p.cu_seqlens[(lo + 1) * p.cu_seqlens_stride] - begin;
    chunk = slot - first_slot(p, lo);
  }
  place.token0 = begin + chunk * kC;
  const std::int64_t left = length - chunk * kC;
  place.rows = left <= 0 ? 0 : static_cast<int>(left < kC ? left : kC);
  return place;
}

// The sequence of a state-pass CTA: its first slot, first token and chunk count.
struct SequencePlace {
  std::int64_t slot0 = 0, token0 = 0, length = 0, chunks = 0;
};

__device__ __forceinline__ SequencePlace sequence_place(const LinearBackwardParams& p, int n) {
  SequencePlace s;
  s.slot0 = first_slot(p, n);
  s.length = p.seqlen;
  if (p.cu_seqlens != nullptr) {
    s.token0 = p.cu_seqlens[n * p.cu_seqlens_stride];
    s.length = p.cu_seqlens[(n + 1) * p.cu_seqlens_stride] - s.token0;
  } else {
    s.token0 = n * p.seqlen;
  }
  s.chunks = (s.length + kC - 1) / kC;
  return s;
}

__device__ __forceinline__ std::int64_t chunk_head(const LinearBackwardParams& p, std::int64_t slot, int j) {
  return slot * p.common.heads_v + j;
}

// Tile loads. A plain global load followed by its shared-memory store waits for the load before the
// next one (the compiler cannot move a load past a store through a generic pointer), so a thread's 16-32
// loads of a tile would run one after another; cp.async (fp32 workspace arrays) and loads gathered in
// registers before any store (bf16/fp16 inputs) keep all of a thread's loads in flight at once.
// The cp.async copies are waited for with cp_async_wait_all() before the caller's next barrier.

// Rows [0, rows) x `Cols` fp32 columns of a row-major global array (row pitch `src_ld`) into smem (pitch
// `ld`); zero past `rows`. 16-byte aligned rows.
template <int Rows, int Cols, int Threads>
__device__ __forceinline__ void copy_rows_async(float* dst, int ld, const float* src, std::int64_t src_ld, int rows) {
  constexpr int kVec = Cols / 4;
  for (int e = threadIdx.x; e < Rows * kVec; e += Threads) {
    const int i = e / kVec, c4 = (e % kVec) * 4;
    if (i < rows) {
      cp_async_16(dst + i * ld + c4, src + i * src_ld + c4);
    } else {
      *reinterpret_cast<float4*>(dst + i * ld + c4) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  }
}

// Rows [0, rows) of the fp32 q/k copies (qn or kn) of q/k head h into smem [64][kLdKey]; zero past rows.
template <int Threads>
__device__ __forceinline__ void load_key_rows(float* dst, const float* src, const LinearBackwardParams& p,
                                              std::int64_t token0, int rows, int h) {
  copy_rows_async<kC, kKey, Threads>(dst, kLdKey, src + (token0 * p.heads_qk + h) * kKey,
                                     static_cast<std::int64_t>(p.heads_qk) * kKey, rows);
}

// `Cols` value columns from col0 of the chunk's rows [0, rows) of a token tensor (v or dout; io dtype) of
// value head j, as fp32 times `factor[i]` (null: 1) into smem (pitch ld); zero past rows and past V. The
// chunk's tokens lie in one sequence, so row i is at row 0's offset + i token strides.
template <int Cols, int Threads>
__device__ __forceinline__ void load_token_tile(float* dst, int ld, const LinearBackwardParams& p,
                                                const LinearTokenTensor& x, std::int64_t token0, int rows, int j,
                                                int col0, const float* factor) {
  constexpr int kPer = kC * Cols / Threads;
  const std::int64_t base = token_offset(p, token0, x.batch_stride, x.token_stride) + j * x.head_stride + col0;
  float value[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = threadIdx.x + u * Threads, i = e / Cols, col = e % Cols;
    value[u] = i < rows && col0 + col < p.common.value_dim
                   ? load_element(x.data, base + i * x.token_stride + col, p.common.io_element)
                   : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = threadIdx.x + u * Threads, i = e / Cols, col = e % Cols;
    dst[i * ld + col] = factor == nullptr ? value[u] : factor[i] * value[u];
  }
}

// ---- chunk_prep ----------------------------------------------------------------------------------------

// chunk_prep's tiles, laid out for 2 CTAs/SM (110 KB, 124 registers; at 139 KB, one tile each, one CTA/SM
// left 8 warps per SM to hide the latency of its serial phases: 30% of the SM's issue rate under ncu).
// The kernel runs in four phases: (1) A and P from K K^T and Q K^T; (2) per value slice, P^T dO and
// scale (Gamma Q)^T dO; (3) the solve for Tinv and w; (4) per value slice, u = Tinv (beta v). q is dead
// after phase 2, so Tinv takes its bytes; P is dead after phase 2, so beta v (phase 4) takes its bytes;
// dout (phase 2) has its own. Every value is the same sum in the same order as with separate tiles.
// (H100, (4, 8192, 32, 32), ncu: 11.92 -> 7.93 ms. Rejected in the same run: one value step of 128
// columns with K K^T and Q K^T sharing their loads, 49% fewer shared-memory loads by the loop counts
// but 254 registers, 12.83 ms.) (Gamma Q)^T dO, w and u on gemm_tc: 7.93 -> 6.99 ms (H100, ncu, the
// 2026-11-26 s13 runs; at (1, 65536, 2, 8) 3.96 -> 3.21 ms, LSU pipe 53% -> 35% of peak).
struct alignas(16) PrepShared {
  float k[kC][kLdKey];
  union {
    float q[kC][kLdKey];   // phases 1-2
    float t[kC][kLdC];     // Tinv, phases 3-4
  };
  float a[kC][kLdC];       // A, strictly lower (phases 1-3)
  union {
    float p[kC][kLdC];     // P, lower with the diagonal (phases 1-2)
    float x[kC][kLdSlice]; // beta v of one value slice (phase 4)
  };
  float y[kC][kLdSlice];   // dout of one value slice (phase 2)
  float g[kC], gam[kC], beta[kC];
};
static_assert(sizeof(PrepShared) <= 113 * 1024, "chunk_prep must fit 2 CTAs per SM");
static_assert(sizeof(PrepShared) == gdn_backward_prep_shared_bytes(), "linear_backward_plan.h's size of chunk_prep");

__global__ void __launch_bounds__(kThreadsChunk, 2) chunk_prep_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  PrepShared& s = *reinterpret_cast<PrepShared*>(smem);
  const std::int64_t slot = blockIdx.x;
  const int j = blockIdx.y, h = j / c.group;
  const SlotPlace place = locate(p, slot);
  if (place.rows == 0) return;
  const std::int64_t ch = chunk_head(p, slot, j);
  const int value_pad = p.slices * kSlice;
  float* pmat = p.ws.pmat + ch * kC * kC;
  float* bmat = p.ws.bmat + ch * kC * kC;
  load_key_rows<kThreadsChunk>(&s.k[0][0], p.ws.kn, p, place.token0, place.rows, h);
  load_key_rows<kThreadsChunk>(&s.q[0][0], p.ws.qn, p, place.token0, place.rows, h);
  if (threadIdx.x < kC) {
    const int i = threadIdx.x;
    const std::int64_t pair = (place.token0 + i) * c.heads_v + j;
    s.g[i] = i < place.rows ? p.ws.gate[pair] : 0.0f;
    s.beta[i] = i < place.rows ? p.ws.beta[pair] : 0.0f;
  }
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  if (threadIdx.x == 0) {  // G in token order, the same fp32 sums as the CPU backend
    float sum = 0.0f;
    for (int i = 0; i < kC; ++i) {
      sum += s.g[i];
      s.g[i] = sum;
    }
  }
  __syncthreads();
  if (threadIdx.x < kC) {
    s.gam[threadIdx.x] = expf(s.g[threadIdx.x]);
    p.ws.gc[ch * kC + threadIdx.x] = s.g[threadIdx.x];
  }
  gemm<kC, kC, kKey, kThreadsChunk>([&](int i, int m) { return s.k[i][m]; }, [&](int m, int jj) { return s.k[jj][m]; },
                                    [&](int i, int jj, float v) {
                                      const float b = i > jj ? expf(s.g[i] - s.g[jj]) * v : 0.0f;
                                      s.a[i][jj] = s.beta[i] * b;
                                      bmat[i * kC + jj] = b;
                                    });
  gemm<kC, kC, kKey, kThreadsChunk>([&](int i, int m) { return s.q[i][m]; }, [&](int m, int jj) { return s.k[jj][m]; },
                                    [&](int i, int jj, float v) {
                                      const float pv = jj <= i ? c.scale * expf(s.g[i] - s.g[jj]) * v : 0.0f;
                                      s.p[i][jj] = pv;
                                      pmat[i * kC + jj] = pv;
                                    });
  float* u = p.ws.vnew + ch * kC * value_pad;
  float* dvl = p.ws.pdo + ch * kC * value_pad;
  float* qdo = p.ws.dh + ch * kKey * value_pad;  // scale (Gamma Q)^T dO until state_bwd puts dh there
  for (int slice = 0; slice < p.slices; ++slice) {  // phase 2
    const int col0 = slice * kSlice;
    __syncthreads();  // P is complete; the previous slice's GEMMs are done with y
    load_token_tile<kSlice, kThreadsChunk>(&s.y[0][0], kLdSlice, p, p.dout, place.token0, place.rows, j, col0, nullptr);
    __syncthreads();
    gemm<kC, kSlice, kC, kThreadsChunk>([&](int i, int m) { return s.p[m][i]; }, [&](int m, int jj) { return s.y[m][jj]; },
                                        [&](int i, int jj, float v) { dvl[i * value_pad + col0 + jj] = v; });
    gemm_tc<kKey, kSlice, kC>([&](int e, int m) { return c.scale * s.gam[m] * s.q[m][e]; },
                                          [&](int m, int jj) { return s.y[m][jj]; },
                                          [&](int e, int jj, float v) { qdo[e * value_pad + col0 + jj] = v; });
  }
  __syncthreads();  // A is complete, and q is no longer read (Tinv goes over it)
  // Tinv = (I + A)^-1 by forward substitution, a column per thread with the column in registers:
  // T[i][col] = -sum_{m < i} A[i][m] T[m][col]. Fully unrolled, so A's row i comes as float4 broadcasts
  // (every thread reads the same m) and four partial sums break the FMA chain; entries above the
  // diagonal of A are zero and T[m][col] is zero for m < col, so no thread needs a bound of its own.
  // (H200, (4, 8192, 32, 32), under ncu: chunk_prep 15.8 ms with the column in shared memory and
  // run-time bounds, 12.5 ms so.)
  if (threadIdx.x < kC) {
    const int col = threadIdx.x;
    float t[kC];
#pragma unroll
    for (int i = 0; i < kC; ++i) t[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < kC; ++i) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int m = 0; m < i; m += 4) {
        const float4 a4 = *reinterpret_cast<const float4*>(&s.a[i][m]);
        acc[0] = fmaf(a4.x, t[m], acc[0]);
        acc[1] = fmaf(a4.y, t[m + 1], acc[1]);
        acc[2] = fmaf(a4.z, t[m + 2], acc[2]);
        acc[3] = fmaf(a4.w, t[m + 3], acc[3]);
      }
      const float x = -((acc[0] + acc[1]) + (acc[2] + acc[3]));
      t[i] = i < col ? 0.0f : (i == col ? 1.0f : x);
    }
#pragma unroll
    for (int i = 0; i < kC; ++i) s.t[i][col] = t[i];
  }
  __syncthreads();
  float* tinv = p.ws.tinv + ch * kC * kC;
  for (int e = threadIdx.x; e < kC * kC; e += kThreadsChunk) tinv[e] = s.t[e / kC][e % kC];
  float* w = p.ws.w + ch * kC * kKey;
  gemm_tc<kC, kKey, kC>([&](int i, int m) { return s.t[i][m]; },
                                    [&](int m, int e) { return s.beta[m] * s.gam[m] * s.k[m][e]; },
                                    [&](int i, int e, float v) { w[i * kKey + e] = v; });
  for (int slice = 0; slice < p.slices; ++slice) {  // phase 4; beta v goes over P
    const int col0 = slice * kSlice;
    __syncthreads();  // the previous slice's GEMM is done with x (the first: w is done with Tinv's writes)
    load_token_tile<kSlice, kThreadsChunk>(&s.x[0][0], kLdSlice, p, c.v, place.token0, place.rows, j, col0, s.beta);
    __syncthreads();
    gemm_tc<kC, kSlice, kC>([&](int i, int m) { return s.t[i][m]; }, [&](int m, int jj) { return s.x[m][jj]; },
                                        [&](int i, int jj, float v) { u[i * value_pad + col0 + jj] = v; });
  }
}

// ---- state passes --------------------------------------------------------------------------------------

// One chunk's inputs of a state-pass CTA: G (and its exps), w, k and the [64, 32] slice of u (forward) or
// P^T dO (reverse; both become v_new / dU in place).
struct alignas(16) StateChunk {
  float w[kC][kLdKey];
  float k[kC][kLdKey];
  float u[kC][kLdSlice];
  float g[kC], d[kC], gam[kC];
};

// S (forward) or dh (reverse) of the CTA's value slice, and the chunk buffers. kPipelined: two buffers,
// chunk c + 1's loads in flight while chunk c computes (~170 KB, 1 CTA/SM); used where the grid has no
// more CTAs than the device has SMs, so no CTA loses a co-resident one by it (the long single sequences:
// 32 CTAs walk 1024 chunks each at (1, 65536, 2, 8), and there each chunk step waited for its ~72 KB of
// loads, a round trip to HBM, with nothing else on the SM). Otherwise one buffer (~94 KB, 2 CTAs/SM),
// whose co-resident CTA overlaps the loads. (H100, backward in the same run: 26.28 -> 25.11 ms at
// (1, 32768, 16, 32), 128 CTAs; 20.91 -> 20.23 ms at (1, 65536, 2, 8).)
template <bool kPipelined>
struct alignas(16) StateShared {
  float s[kKey][kLdSlice];
  StateChunk chunk[kPipelined ? 2 : 1];
};
static_assert(sizeof(StateShared<false>) == gdn_backward_state_shared_bytes(false), "linear_backward_plan.h's size");
static_assert(sizeof(StateShared<true>) == gdn_backward_state_shared_bytes(true), "linear_backward_plan.h's size");

// Offset of state element (row, column) of sequence n, value head j in a state tensor of either layout.
__device__ __forceinline__ std::int64_t state_offset(const LinearBackwardParams& p, const LinearStateTensor& t, int n,
                                         int j, int row, int column) {
  const std::int64_t head = n * t.sequence_stride + j * t.head_stride;
  return p.common.state_vk ? head + column * t.row_stride + row : head + row * t.row_stride + column;
}

// Issues (cp.async, one commit group) the loads of chunk `chunk` of the CTA's sequence into `b`.
__device__ __forceinline__ void issue_state_chunk(const LinearBackwardParams& p, StateChunk& b, const SequencePlace& seq,
                                                  std::int64_t chunk, int j, int col0, bool reverse) {
  const int h = j / p.common.group, value_pad = p.slices * kSlice;
  const std::int64_t ch = chunk_head(p, seq.slot0 + chunk, j), token0 = seq.token0 + chunk * kC;
  const int rows = static_cast<int>(seq.length - chunk * kC < kC ? seq.length - chunk * kC : kC);
  if (threadIdx.x < kC / 4) cp_async_16(&b.g[threadIdx.x * 4], p.ws.gc + ch * kC + threadIdx.x * 4);
  load_key_rows<kThreadsState>(&b.k[0][0], p.ws.kn, p, token0, rows, h);
  copy_rows_async<kC, kKey, kThreadsState>(&b.w[0][0], kLdKey, p.ws.w + ch * kC * kKey, kKey, kC);
  copy_rows_async<kC, kSlice, kThreadsState>(&b.u[0][0], kLdSlice,
                                             (reverse ? p.ws.pdo : p.ws.vnew) + ch * kC * value_pad + col0,
                                             value_pad, kC);
  cp_async_commit();
}

// The start of chunk step `step` (chunk index `chunk`) of a state pass: issues the loads of the next chunk
// of the walk (`next`, -1: none) when pipelined, or of this one otherwise, waits for this chunk's loads
// and computes its exps. Returns this chunk's buffer. Every thread is done with the previous step's
// buffers and S when it returns (a barrier comes before anything is overwritten).
template <bool kPipelined>
__device__ __forceinline__ StateChunk& begin_state_chunk(const LinearBackwardParams& p, StateShared<kPipelined>& s,
                                                         const SequencePlace& seq, std::int64_t step,
                                                         std::int64_t chunk, std::int64_t next, int j, int col0,
                                                         bool reverse) {
  __syncthreads();  // the previous chunk is done with everything
  StateChunk& b = s.chunk[kPipelined ? step % 2 : 0];
  if constexpr (kPipelined) {
    if (next >= 0) {
      issue_state_chunk(p, s.chunk[(step + 1) % 2], seq, next, j, col0, reverse);
      cp_async_wait_group<1>();  // this chunk's group (issued a step earlier); the next one stays in flight
    } else {
      cp_async_wait_all();
    }
  } else {
    issue_state_chunk(p, b, seq, chunk, j, col0, reverse);
    cp_async_wait_all();
  }
  __syncthreads();
  if (threadIdx.x < kC) {
    b.d[threadIdx.x] = expf(b.g[kC - 1] - b.g[threadIdx.x]);
    b.gam[threadIdx.x] = expf(b.g[threadIdx.x]);
  }
  __syncthreads();
  return b;
}

// Writes the CTA's [128, 32] slice of S (or dh) to the workspace array at chunk-head `ch`.
template <bool kPipelined>
__device__ __forceinline__ void store_state(const LinearBackwardParams& p, const StateShared<kPipelined>& s,
                                            float* base, std::int64_t ch, int col0) {
  const int value_pad = p.slices * kSlice;
  float* dst = base + ch * kKey * value_pad + col0;
  for (int e = threadIdx.x; e < kKey * kSlice / 4; e += kThreadsState) {
    const int r = e / (kSlice / 4), c4 = e % (kSlice / 4);
    reinterpret_cast<float4*>(dst + r * value_pad)[c4] = reinterpret_cast<const float4*>(&s.s[r][0])[c4];
  }
}

template <bool kPipelined>
__global__ void __launch_bounds__(kThreadsState) state_fwd_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  StateShared<kPipelined>& s = *reinterpret_cast<StateShared<kPipelined>*>(smem);
  const int n = blockIdx.x / p.slices, slice = blockIdx.x % p.slices, j = blockIdx.y, col0 = slice * kSlice;
  const int value_pad = p.slices * kSlice;
  const SequencePlace seq = sequence_place(p, n);
  if (kPipelined && seq.chunks > 0) issue_state_chunk(p, s.chunk[0], seq, 0, j, col0, false);
  for (int e = threadIdx.x; e < kKey * kSlice; e += kThreadsState) {
    const int r = e / kSlice, col = e % kSlice;
    const bool valid = p.initial_state.data != nullptr && r < c.key_dim && col0 + col < c.value_dim;
    s.s[r][col] = valid ? p.initial_state.data[state_offset(p, p.initial_state, n, j, r, col0 + col)] : 0.0f;
  }
  for (std::int64_t chunk = 0; chunk < seq.chunks; ++chunk) {
    const std::int64_t ch = chunk_head(p, seq.slot0 + chunk, j);
    StateChunk& b = begin_state_chunk(p, s, seq, chunk, chunk, chunk + 1 < seq.chunks ? chunk + 1 : -1, j, col0, false);
    store_state(p, s, p.ws.s0, ch, col0);
    float* vnew = p.ws.vnew + ch * kC * value_pad + col0;
    // v_new = u - w S
    gemm_tc<kC, kSlice, kKey>([&](int i, int m) { return b.w[i][m]; },
                              [&](int m, int jj) { return s.s[m][jj]; },
                              [&](int i, int jj, float v) {
                                const float x = b.u[i][jj] - v;
                                b.u[i][jj] = x;
                                vnew[i * value_pad + jj] = x;
                              });
    __syncthreads();
    // S = gam_C S + K^T diag(d) v_new
    const float gam_c = b.gam[kC - 1];
    gemm_tc<kKey, kSlice, kC>([&](int e, int m) { return b.k[m][e]; },
                              [&](int m, int jj) { return b.d[m] * b.u[m][jj]; },
                              [&](int e, int jj, float v) { s.s[e][jj] = fmaf(gam_c, s.s[e][jj], v); });
  }
}

template <bool kPipelined>
__global__ void __launch_bounds__(kThreadsState) state_bwd_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  StateShared<kPipelined>& s = *reinterpret_cast<StateShared<kPipelined>*>(smem);
  const int n = blockIdx.x / p.slices, slice = blockIdx.x % p.slices, j = blockIdx.y, col0 = slice * kSlice;
  const int value_pad = p.slices * kSlice;
  const SequencePlace seq = sequence_place(p, n);
  if (kPipelined && seq.chunks > 0) issue_state_chunk(p, s.chunk[0], seq, seq.chunks - 1, j, col0, true);
  for (int e = threadIdx.x; e < kKey * kSlice; e += kThreadsState) {
    const int r = e / kSlice, col = e % kSlice;
    const bool valid = p.dfinal_state.data != nullptr && r < c.key_dim && col0 + col < c.value_dim;
    s.s[r][col] = valid ? p.dfinal_state.data[state_offset(p, p.dfinal_state, n, j, r, col0 + col)] : 0.0f;
  }
  for (std::int64_t chunk = seq.chunks - 1; chunk >= 0; --chunk) {
    const std::int64_t ch = chunk_head(p, seq.slot0 + chunk, j);
    // The slot's dh holds scale (Gamma Q)^T dO (chunk_prep) until dh replaces it here: read it first, its
    // loads in flight while this chunk's tiles arrive (read after the tiles' wait, they were a second
    // exposed round trip per chunk: 3.77 -> 2.69 ms at (4, 8192, 32, 32) on the H100, ncu).
    float* dh = p.ws.dh + ch * kKey * value_pad + col0;
    constexpr int kPer = kKey * kSlice / kThreadsState;
    float qdo[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = threadIdx.x + u * kThreadsState;
      qdo[u] = dh[(e / kSlice) * value_pad + e % kSlice];
    }
    // Its barriers also order every thread's read of the slot's (Gamma Q)^T dO before dh overwrites it.
    StateChunk& b = begin_state_chunk(p, s, seq, seq.chunks - 1 - chunk, chunk, chunk > 0 ? chunk - 1 : -1, j, col0,
                                      true);
    store_state(p, s, p.ws.dh, ch, col0);
    float* dvnew = p.ws.dvnew + ch * kC * value_pad + col0;
    // dU = P^T dO + diag(d) K dh
    gemm_tc<kC, kSlice, kKey>([&](int i, int m) { return b.d[i] * b.k[i][m]; },
                              [&](int m, int jj) { return s.s[m][jj]; },
                              [&](int i, int jj, float v) {
                                const float x = b.u[i][jj] + v;
                                b.u[i][jj] = x;
                                dvnew[i * value_pad + jj] = x;
                              });
    __syncthreads();
    // dh = gam_C dh + scale (Gamma Q)^T dO - w^T dU
    const float gam_c = b.gam[kC - 1];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = threadIdx.x + u * kThreadsState;
      s.s[e / kSlice][e % kSlice] = fmaf(gam_c, s.s[e / kSlice][e % kSlice], qdo[u]);
    }
    __syncthreads();
    gemm_tc<kKey, kSlice, kC>([&](int e, int m) { return b.w[m][e]; },
                              [&](int m, int jj) { return b.u[m][jj]; },
                              [&](int e, int jj, float v) { s.s[e][jj] -= v; });
  }
  if (p.d_initial_state.data != nullptr) {
    __syncthreads();
    for (int e = threadIdx.x; e < kKey * kSlice; e += kThreadsState) {
      const int r = e / kSlice, col = e % kSlice;
      if (r < c.key_dim && col0 + col < c.value_dim) {
        p.d_initial_state.data[state_offset(p, p.d_initial_state, n, j, r, col0 + col)] = s.s[r][col];
      }
    }
  }
}

// ---- chunk_grad ----------------------------------------------------------------------------------------

// The per-slice tiles, and in the closing phase q and a [64, 64] scratch in the same bytes.
struct alignas(16) GradSliceTiles {
  float s0[2][kKey][kLdGrad];  // two buffers: the next value step's S0 and dh arrive while this one computes
  float dh[2][kKey][kLdGrad];
  float u[kC][kLdGrad];
  float du[kC][kLdGrad];
  float o[kC][kLdGrad];   // dout
  float r[kC][kLdGrad];   // v -> R -> X1 = -Gamma dR
  float y[kC][kLdGrad];   // Y = Tinv^T dU
  float ks[kC][kLdGrad];  // K S0 -> X2 = diag(d) U
  float pdo[kC][kLdGrad]; // P^T dO
};
struct alignas(16) GradClosingTiles {
  float q[kC][kLdKey];
  float pm[kC][kLdC];  // P (chunk_prep), then D^o
  float bm[kC][kLdC];  // B (chunk_prep), then F
};
static_assert(sizeof(GradClosingTiles) <= sizeof(GradSliceTiles), "closing tiles must fit the slice tiles");

struct alignas(16) GradShared {
  float k[kC][kLdKey];
  float t[kC][kLdC];       // Tinv
  float dou[kC][kLdC];     // dO U^T, then dP'
  float yu[kC][kLdC];      // Y U^T, then E
  union {
    GradSliceTiles slice;
    GradClosingTiles closing;
  };
  float g[kC], gam[kC], d[kC], beta[kC];
  float dbeta[kC], dg[kC];  // accumulated per row
  float t3[kC];             // d_j k_j . (dh U_j)
  float t2[2][kC];          // q_i . (dO S0^T)_i over each column half of dO S0^T
  float red[kThreadsChunk];
};
static_assert(sizeof(GradShared) == gdn_backward_grad_shared_bytes(), "linear_backward_plan.h's size of chunk_grad");

// chunk_grad runs 16 warps (one CTA per SM, by its 222 KB of shared memory) as two halves of 8 that take
// the independent products of a phase side by side, each on the 8-warp tiles of MmaTile: per value step
// Y = Tinv^T dU (lower) beside K S0 (upper), then dO U^T, Y U^T and the dq accumulation (lower) beside
// the row pass and the two dk accumulations (upper), 32 MMA k-step tiles per warp on each side. Each
// element is the same sum in the same order as with one set of 8 warps doing all of them in turn, so the
// gradients are the same bits as 8 warps gave (the bench's hash); a thread holds one 64 x 128
// accumulator (dq in the lower half, dk in the upper) instead of both. H100, ncu at (1, 65536, 2, 8):
// 8 warps (211 registers) 6.79 ms, 27% of the issue slots used, 7.5 cycles per issued instruction per
// warp (long scoreboard 2.3, wait 1.5); 16 warps (128 registers, ~50 bytes of spill) 6.29 ms, 12.2
// cycles (barrier 0.4 -> 2.3: uneven halves); backward 24.89 -> 23.96 ms at (4, 8192, 32, 32) (s13 call
// 1). The row pass on the upper half beside the lower half's products (it was on the lower half alone,
// between two barriers): backward 1.02-1.03x on the four issue shapes (s13 call 3, with the S0 / dh
// prefetch moved after the wait).
constexpr int kThreadsGrad = 2 * kThreadsChunk;

// A barrier of chunk_grad's upper half (warps 8-15) alone (barrier 1; __syncthreads is barrier 0).
__device__ __forceinline__ void sync_upper_half() { asm volatile("bar.sync 1, %0;\n" ::"n"(kThreadsChunk) : "memory"); }

__global__ void __launch_bounds__(kThreadsGrad) chunk_grad_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  GradShared& s = *reinterpret_cast<GradShared*>(smem);
  const std::int64_t slot = blockIdx.x;
  const int j = blockIdx.y, h = j / c.group;
  const SlotPlace place = locate(p, slot);
  if (place.rows == 0) return;
  const std::int64_t ch = chunk_head(p, slot, j);
  const int value_pad = p.slices * kSlice;
  const int tid = threadIdx.x;
  const bool lower = tid < kThreadsChunk;  // warps 0-7 (dq side), else warps 8-15 (dk side)
  GradSliceTiles& st = s.slice;
  const int value_steps = (c.value_dim + kGradSlice - 1) / kGradSlice;
  // S0 and dh of value step `step` into buffer step % 2 (one commit group).
  const auto issue_state_tiles = [&](int step) {
    const std::int64_t state_at = ch * kKey * value_pad + step * kGradSlice;
    copy_rows_async<kKey, kGradSlice, kThreadsGrad>(&st.s0[step % 2][0][0], kLdGrad, p.ws.s0 + state_at, value_pad, kKey);
    copy_rows_async<kKey, kGradSlice, kThreadsGrad>(&st.dh[step % 2][0][0], kLdGrad, p.ws.dh + state_at, value_pad, kKey);
    cp_async_commit();
  };
  load_key_rows<kThreadsGrad>(&s.k[0][0], p.ws.kn, p, place.token0, place.rows, h);
  copy_rows_async<kC, kC, kThreadsGrad>(&s.t[0][0], kLdC, p.ws.tinv + ch * kC * kC, kC, kC);
  cp_async_commit();
  if (value_steps > 0) issue_state_tiles(0);
  if (tid < kC) {
    s.g[tid] = p.ws.gc[ch * kC + tid];
    s.beta[tid] = tid < place.rows ? p.ws.beta[(place.token0 + tid) * c.heads_v + j] : 0.0f;
    s.dbeta[tid] = 0.0f;
    s.t3[tid] = 0.0f;
  }
  if (value_steps > 0) cp_async_wait_group<1>(); else cp_async_wait_all();  // k and Tinv (step 0's S0, dh in flight)
  __syncthreads();
  if (tid < kC) {
    s.gam[tid] = expf(s.g[tid]);
    s.d[tid] = expf(s.g[kC - 1] - s.g[tid]);
  }
  // Row partials (the upper half: 4 threads a row, kGradSlice / 4 columns each) and the thread's share of
  // <dh, S0> (lower half).
  const int half_tid = tid % kThreadsChunk, row = half_tid / 4, quarter = tid % 4;
  float dbeta_part = 0.0f, t4_part = 0.0f, t3_part = 0.0f, dh_s0 = 0.0f;
  // Lower: dO S0^T; upper: -Gamma dR S0^T + diag(d) U dh^T; accumulated over the value steps in registers.
  using KeyTile = MmaTile<kC, kKey>;
  KeyTile acc;
  acc.zero();
  for (int step = 0; step < value_steps; ++step) {
    const int col0 = step * kGradSlice;
    __syncthreads();  // the previous step's GEMMs are done with the tiles
    const std::int64_t rows_at = ch * kC * value_pad + col0;
    const auto& s0 = st.s0[step % 2];
    const auto& dh = st.dh[step % 2];
    copy_rows_async<kC, kGradSlice, kThreadsGrad>(&st.u[0][0], kLdGrad, p.ws.vnew + rows_at, value_pad, kC);
    copy_rows_async<kC, kGradSlice, kThreadsGrad>(&st.du[0][0], kLdGrad, p.ws.dvnew + rows_at, value_pad, kC);
    copy_rows_async<kC, kGradSlice, kThreadsGrad>(&st.pdo[0][0], kLdGrad, p.ws.pdo + rows_at, value_pad, kC);
    cp_async_commit();
    load_token_tile<kGradSlice, kThreadsGrad>(&st.r[0][0], kLdGrad, p, c.v, place.token0, place.rows, j, col0, nullptr);
    load_token_tile<kGradSlice, kThreadsGrad>(&st.o[0][0], kLdGrad, p, p.dout, place.token0, place.rows, j, col0,
                                              nullptr);
    cp_async_wait_all();  // this step's tiles, and its S0 and dh (issued during the previous step)
    __syncthreads();
    // The next step's S0 and dh into the other buffer (every thread is past the previous step, its last
    // reader), in flight during this step's products. Neither place has paid on the H100: issued with the
    // step's other tiles, 0.4-1.1% slower than one buffer (s13 call 1); issued here, 0.3-1.6% slower than
    // that (call 3). One buffer with the row pass moved was not measured (NOTES.md, "GPU backward").
    if (step + 1 < value_steps) issue_state_tiles(step + 1);
    if (lower) {
      gemm_tc<kC, kGradSlice, kC>([&](int i, int m) { return s.t[m][i]; }, [&](int m, int jj) { return st.du[m][jj]; },
                                  [&](int i, int jj, float v) { st.y[i][jj] = v; });
      for (int e = tid; e < kKey * kGradSlice; e += kThreadsChunk) dh_s0 += dh[e / kGradSlice][e % kGradSlice] *
                                                                            s0[e / kGradSlice][e % kGradSlice];
    } else {
      gemm_tc<kC, kGradSlice, kKey>([&](int i, int m) { return s.k[i][m]; }, [&](int m, int jj) { return s0[m][jj]; },
                                    [&](int i, int jj, float v) { st.ks[i][jj] = v; });
    }
    __syncthreads();
    // Lower: dO U^T, Y U^T and the dq accumulation (none reads what the row pass writes); upper: the row
    // pass, then the dk accumulations over its X1 and X2 after a barrier of the upper half alone.
    if (lower) {
      const bool first = step == 0;
      gemm_tc<kC, kC, kGradSlice>([&](int i, int m) { return st.o[i][m]; }, [&](int m, int jj) { return st.u[jj][m]; },
                                  [&](int i, int jj, float v) { s.dou[i][jj] = first ? v : s.dou[i][jj] + v; });
      gemm_tc<kC, kC, kGradSlice>([&](int i, int m) { return st.y[i][m]; }, [&](int m, int jj) { return st.u[jj][m]; },
                                  [&](int i, int jj, float v) { s.yu[i][jj] = first ? v : s.yu[i][jj] + v; });
      mma_tc<kGradSlice>(acc, [&](int i, int m) { return st.o[i][m]; }, [&](int m, int e) { return s0[e][m]; });
    } else {
      // R = V - Gamma K S0; dbeta += Y . R; dv = beta Y; t4 = -gam k . (S0 dR) = (K S0) . X1;
      // t3 = d k . (dh U) = (dU - P^T dO) . U.  Then X1 = -gam beta Y into r, X2 = d U into ks.
      const float gam = s.gam[row], beta = s.beta[row], d = s.d[row];
      const std::int64_t token = place.token0 + row;
#pragma unroll
      for (int q4 = 0; q4 < kGradSlice / 4; ++q4) {
        const int col = quarter * (kGradSlice / 4) + q4, column = col0 + col;
        const float y = st.y[row][col], ks = st.ks[row][col];
        const float r = st.r[row][col] - gam * ks;
        const float x1 = -gam * beta * y;
        dbeta_part = fmaf(y, r, dbeta_part);
        t4_part = fmaf(ks, x1, t4_part);
        t3_part = fmaf(st.du[row][col] - st.pdo[row][col], st.u[row][col], t3_part);  // dU - P^T dO = diag(d) K dh
        st.r[row][col] = x1;
        st.ks[row][col] = d * st.u[row][col];
        if (row < place.rows && column < c.value_dim) {
          store_element(p.dv.data,
                        token_offset(p, token, p.dv.batch_stride, p.dv.token_stride) + j * p.dv.head_stride + column,
                        c.io_element, beta * y);
        }
      }
      sync_upper_half();
      mma_tc<kGradSlice>(acc, [&](int i, int m) { return st.r[i][m]; }, [&](int m, int e) { return s0[e][m]; });
      mma_tc<kGradSlice>(acc, [&](int i, int m) { return st.ks[i][m]; }, [&](int m, int e) { return dh[e][m]; });
    }
  }
  if (value_steps == 0) {  // V = 0: no value columns, every product over them is zero
    for (int e = tid; e < kC * kLdC; e += kThreadsGrad) {
      (&s.dou[0][0])[e] = 0.0f;
      (&s.yu[0][0])[e] = 0.0f;
    }
  }
  // Row partials over the 4 threads of a row (adjacent lanes), then <dh, S0> over the lower half's warps.
  dbeta_part += __shfl_xor_sync(0xffffffffu, dbeta_part, 1);
  dbeta_part += __shfl_xor_sync(0xffffffffu, dbeta_part, 2);
  t4_part += __shfl_xor_sync(0xffffffffu, t4_part, 1);
  t4_part += __shfl_xor_sync(0xffffffffu, t4_part, 2);
  t3_part += __shfl_xor_sync(0xffffffffu, t3_part, 1);
  t3_part += __shfl_xor_sync(0xffffffffu, t3_part, 2);
  dh_s0 = warp_sum(dh_s0);
  __syncthreads();  // the slice tiles are free; q goes over them
  if (!lower && quarter == 0) {
    s.dbeta[row] = dbeta_part;
    s.dg[row] = t4_part - t3_part;
    s.t3[row] = t3_part;
  }
  if (lower && tid % 32 == 0) s.red[tid / 32] = dh_s0;
  GradClosingTiles& cl = s.closing;
  load_key_rows<kThreadsGrad>(&cl.q[0][0], p.ws.qn, p, place.token0, place.rows, h);
  copy_rows_async<kC, kC, kThreadsGrad>(&cl.pm[0][0], kLdC, p.ws.pmat + ch * kC * kC, kC, kC);
  copy_rows_async<kC, kC, kThreadsGrad>(&cl.bm[0][0], kLdC, p.ws.bmat + ch * kC * kC, kC, kC);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  // t2 = q_i . (dO S0^T)_i (lower half): the thread's columns of rows g and g + 8, then over the 4 lanes of
  // a row (lane % 4), one partial per column half (the warps w and w + 4 of a row tile).
  if (lower) {
    float part[2] = {0.0f, 0.0f};
#pragma unroll
    for (int t = 0; t < KeyTile::kTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) part[e / 2] = fmaf(cl.q[KeyTile::row(e)][KeyTile::col(t, e)], acc.c[t][e], part[e / 2]);
    }
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      part[h2] += __shfl_xor_sync(0xffffffffu, part[h2], 1);
      part[h2] += __shfl_xor_sync(0xffffffffu, part[h2], 2);
      if (tid % 4 == 0) s.t2[(tid / 32) / KeyTile::kRowTiles][KeyTile::row(2 * h2)] = part[h2];
    }
  }
  __syncthreads();
  // dP' = scale exp(G_i - G_j) dO_i . U_j (j <= i) into dou; D^o = (dO_i . U_j) P_ij into pm.
  for (int e = tid; e < kC * kC; e += kThreadsGrad) {
    const int i = e / kC, jj = e % kC;
    const float dou = s.dou[i][jj];
    s.dou[i][jj] = jj <= i ? c.scale * expf(s.g[i] - s.g[jj]) * dou : 0.0f;
    cl.pm[i][jj] = dou * cl.pm[i][jj];
  }
  __syncthreads();
  if (tid < kC) {  // dG_i += rowsum - colsum of D^o; t2 = q_i . (scale gam_i dO_i S0^T)
    const int i = tid;
    float sum = 0.0f;
    for (int m = 0; m < kC; ++m) sum += cl.pm[i][m] - cl.pm[m][i];
    s.dg[i] += sum + c.scale * s.gam[i] * (s.t2[0][i] + s.t2[1][i]);
  }
  // dA = -Y U^T (i > j); F = dA B into bm; E = beta_i dA exp(G_i - G_j) into yu (the loop above and
  // the row sums read neither).
  for (int e = tid; e < kC * kC; e += kThreadsGrad) {
    const int i = e / kC, jj = e % kC;
    float f = 0.0f, ee = 0.0f;
    if (i > jj) {
      const float da = -s.yu[i][jj];
      f = da * cl.bm[i][jj];
      ee = s.beta[i] * da * expf(s.g[i] - s.g[jj]);
    }
    cl.bm[i][jj] = f;
    s.yu[i][jj] = ee;
  }
  __syncthreads();
  if (tid < kC) {  // dbeta_i += rowsum F; dG_i += beta_i rowsum_i F - sum_r beta_r F[r][i]
    const int i = tid;
    float rows = 0.0f, cols = 0.0f;
    for (int m = 0; m < kC; ++m) {
      rows += cl.bm[i][m];
      cols += s.beta[m] * cl.bm[m][i];
    }
    s.dbeta[i] += rows;
    s.dg[i] += s.beta[i] * rows - cols;
  }
  // Lower: dq = scale Gamma dO S0^T + dP' K (the accumulator scaled by scale gam_i in place first);
  // upper: dk = (its accumulation) + dP'^T Q + E K + E^T K.
  if (lower) {
#pragma unroll
    for (int t = 0; t < KeyTile::kTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc.c[t][e] *= c.scale * s.gam[KeyTile::row(e)];
    }
    mma_tc<kC>(acc, [&](int i, int m) { return s.dou[i][m]; }, [&](int m, int e) { return s.k[m][e]; });
  } else {
    mma_tc<kC>(acc, [&](int i, int m) { return s.dou[m][i]; }, [&](int m, int e) { return cl.q[m][e]; });
    mma_tc<kC>(acc, [&](int i, int m) { return s.yu[i][m]; }, [&](int m, int e) { return s.k[m][e]; });
    mma_tc<kC>(acc, [&](int i, int m) { return s.yu[m][i]; }, [&](int m, int e) { return s.k[m][e]; });
  }
  float* out = (lower ? p.ws.dq : p.ws.dk) + (place.token0 * c.heads_v + j) * kKey;
  const std::int64_t row_stride = static_cast<std::int64_t>(c.heads_v) * kKey;
#pragma unroll
  for (int t = 0; t < KeyTile::kTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int i = KeyTile::row(e), col = KeyTile::col(t, e);
      if (i < place.rows) {
        *reinterpret_cast<float2*>(out + i * row_stride + col) = make_float2(acc.c[t][e], acc.c[t][e + 1]);
      }
    }
  }
  __syncthreads();
  if (tid == 0) {  // the state's dependence on G_C (the last valid row), then dg = reverse cumulative sum
    float dh_s0_total = 0.0f, t3_total = 0.0f;
    for (int w = 0; w < kThreadsChunk / 32; ++w) dh_s0_total += s.red[w];
    for (int i = 0; i < kC; ++i) t3_total += s.t3[i];
    s.dg[place.rows - 1] += s.gam[kC - 1] * dh_s0_total + t3_total;
    float sum = 0.0f;
    for (int i = place.rows - 1; i >= 0; --i) {
      sum += s.dg[i];
      s.dg[i] = sum;
    }
  }
  __syncthreads();
  if (tid < place.rows) {
    const std::int64_t pair = (place.token0 + tid) * c.heads_v + j;
    p.ws.dg[pair] = s.dg[tid];
    p.ws.dbeta[pair] = s.dbeta[tid];
  }
}

// The shared-memory limit is raised once per kernel and device (device::ensure_dynamic_shared_memory).
template <auto kKernel>
cudaError_t launch(dim3 grid, int threads, std::size_t smem, const LinearBackwardParams& p, cudaStream_t stream) {
  if (grid.x == 0 || grid.y == 0) return cudaSuccess;
  if (const cudaError_t e = device::ensure_dynamic_shared_memory<kKernel>(static_cast<int>(smem)); e != cudaSuccess) {
    return e;
  }
  kKernel<<<grid, threads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gdn_backward_chunked(const LinearBackwardParams& p, cudaStream_t stream) {
  const unsigned int heads = static_cast<unsigned int>(p.common.heads_v);
  const dim3 chunks(static_cast<unsigned int>(p.ws.slots), heads);
  const dim3 sequences(static_cast<unsigned int>(p.num_sequences * p.slices), heads);
  if (cudaError_t e = launch<chunk_prep_kernel>(chunks, kThreadsChunk, sizeof(PrepShared), p, stream); e != cudaSuccess) {
    return e;
  }
  // The state passes double-buffer their chunk loads where every CTA gets an SM of its own and the two
  // buffers fit (StateShared, linear_backward_plan.h).
  int device = 0;
  host::CudaDeviceLimits limits;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (!host::cuda_device_limits(device, &limits)) return cudaErrorInvalidDevice;
  const bool pipelined = gdn_backward_state_pipelined(static_cast<std::int64_t>(sequences.x) * sequences.y,
                                                      limits.sm_count, limits.shared_memory_per_block_optin);
  if (cudaError_t e = pipelined ? launch<state_fwd_kernel<true>>(sequences, kThreadsState, sizeof(StateShared<true>), p, stream)
                                : launch<state_fwd_kernel<false>>(sequences, kThreadsState, sizeof(StateShared<false>), p, stream);
      e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = pipelined ? launch<state_bwd_kernel<true>>(sequences, kThreadsState, sizeof(StateShared<true>), p, stream)
                                : launch<state_bwd_kernel<false>>(sequences, kThreadsState, sizeof(StateShared<false>), p, stream);
      e != cudaSuccess) {
    return e;
  }
  return launch<chunk_grad_kernel>(chunks, kThreadsGrad, sizeof(GradShared), p, stream);
}

}  // namespace attnkit::sm80
