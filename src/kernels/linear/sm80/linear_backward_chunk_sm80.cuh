// Device pieces shared by the chunked backward kernels of GDN (linear_backward_chunked_sm80.cu) and KDA
// (linear_backward_kda_chunked_sm80.cu): the constants of the chunk layout, the fp32 CUDA-core and
// bf16-pair tensor-core products, where a chunk slot's and a sequence's tokens are, the tile loads, the
// unit-lower-triangular inverse, and the two sequential state passes (templated on the gate form: KDA's
// per-key decay scales rows of S and dh by gam_C per key and takes diag(d) K from chunk_prep). Both
// chunked backwards run between the prep and finish kernels of linear_backward_sm80.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "device/kernel_attributes.cuh"
#include "host/cuda_runtime.h"
#include "kernels/linear/sm80/linear_backward_plan.h"
#include "kernels/linear/sm80/linear_backward_sm80.cuh"
#include "kernels/linear/sm80/linear_mma_sm80.cuh"
#include "kernels/linear/sm80/linear_sm80_common.cuh"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"  // cp.async helpers

namespace attnkit::sm80::linear_chunk_bwd {

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

// Tinv = (I + A)^-1 by forward substitution, a column per thread with the column in registers:
// T[i][col] = -sum_{m < i} A[i][m] T[m][col]. Fully unrolled, so A's row i comes as float4 broadcasts
// (every thread reads the same m) and four partial sums break the FMA chain; entries above the
// diagonal of A are zero and T[m][col] is zero for m < col, so no thread needs a bound of its own.
// (H200, (4, 8192, 32, 32), under ncu: chunk_prep 15.8 ms with the column in shared memory and
// run-time bounds, 12.5 ms so.) Called by every thread of the CTA (threads >= 64 do nothing); the caller
// syncs before and after.
__device__ __forceinline__ void invert_unit_lower(const float (*a)[kLdC], float (*t_out)[kLdC]) {
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
        const float4 a4 = *reinterpret_cast<const float4*>(&a[i][m]);
        acc[0] = fmaf(a4.x, t[m], acc[0]);
        acc[1] = fmaf(a4.y, t[m + 1], acc[1]);
        acc[2] = fmaf(a4.z, t[m + 2], acc[2]);
        acc[3] = fmaf(a4.w, t[m + 3], acc[3]);
      }
      const float x = -((acc[0] + acc[1]) + (acc[2] + acc[3]));
      t[i] = i < col ? 0.0f : (i == col ? 1.0f : x);
    }
#pragma unroll
    for (int i = 0; i < kC; ++i) t_out[i][col] = t[i];
  }
}

// ---- state passes --------------------------------------------------------------------------------------

// One chunk's inputs of a state-pass CTA: G (and its exps), w, k and the [64, 32] slice of u (forward) or
// P^T dO (reverse; both become v_new / dU in place). GDN (kKda false): k the chunk's keys, g its 64 G
// values, d and gam their exps. KDA: k holds diag(d) K with per-key d (chunk_prep's kd, so the passes
// scale nothing by rows), g the chunk's last row of G per key (log2 units), turned into gam_C per key;
// d and gam are not used.
template <bool kKda>
struct alignas(16) StateChunk {
  float w[kC][kLdKey];
  float k[kC][kLdKey];
  float u[kC][kLdSlice];
  float g[kKda ? kKey : kC], d[kC], gam[kC];
};

// S (forward) or dh (reverse) of the CTA's value slice, and the chunk buffers. kPipelined: two buffers,
// chunk c + 1's loads in flight while chunk c computes (~170 KB, 1 CTA/SM); used where the grid has no
// more CTAs than the device has SMs, so no CTA loses a co-resident one by it (the long single sequences:
// 32 CTAs walk 1024 chunks each at (1, 65536, 2, 8), and there each chunk step waited for its ~72 KB of
// loads, a round trip to HBM, with nothing else on the SM). Otherwise one buffer (~94 KB, 2 CTAs/SM),
// whose co-resident CTA overlaps the loads. (H100, backward in the same run: 26.28 -> 25.11 ms at
// (1, 32768, 16, 32), 128 CTAs; 20.91 -> 20.23 ms at (1, 65536, 2, 8).)
template <bool kKda, bool kPipelined>
struct alignas(16) StateShared {
  float s[kKey][kLdSlice];
  StateChunk<kKda> chunk[kPipelined ? 2 : 1];
};
static_assert(sizeof(StateShared<false, false>) == gdn_backward_state_shared_bytes(false), "linear_backward_plan.h's size");
static_assert(sizeof(StateShared<false, true>) == gdn_backward_state_shared_bytes(true), "linear_backward_plan.h's size");
static_assert(sizeof(StateShared<true, false>) == kda_backward_state_shared_bytes(false), "linear_backward_plan.h's size");
static_assert(sizeof(StateShared<true, true>) == kda_backward_state_shared_bytes(true), "linear_backward_plan.h's size");

// Offset of state element (row, column) of sequence n, value head j in a state tensor of either layout.
__device__ __forceinline__ std::int64_t state_offset(const LinearBackwardParams& p, const LinearStateTensor& t, int n,
                                         int j, int row, int column) {
  const std::int64_t head = n * t.sequence_stride + j * t.head_stride;
  return p.common.state_vk ? head + column * t.row_stride + row : head + row * t.row_stride + column;
}

// Issues (cp.async, one commit group) the loads of chunk `chunk` of the CTA's sequence into `b`.
template <bool kKda>
__device__ __forceinline__ void issue_state_chunk(const LinearBackwardParams& p, StateChunk<kKda>& b, const SequencePlace& seq,
                                                  std::int64_t chunk, int j, int col0, bool reverse) {
  const int h = j / p.common.group, value_pad = p.slices * kSlice;
  const std::int64_t ch = chunk_head(p, seq.slot0 + chunk, j), token0 = seq.token0 + chunk * kC;
  const int rows = static_cast<int>(seq.length - chunk * kC < kC ? seq.length - chunk * kC : kC);
  if constexpr (kKda) {
    if (threadIdx.x < kKey / 4) {
      cp_async_16(&b.g[threadIdx.x * 4], p.ws.gc + (ch * kC + kC - 1) * kKey + threadIdx.x * 4);
    }
    copy_rows_async<kC, kKey, kThreadsState>(&b.k[0][0], kLdKey, p.ws.kd + ch * kC * kKey, kKey, kC);
  } else {
    if (threadIdx.x < kC / 4) cp_async_16(&b.g[threadIdx.x * 4], p.ws.gc + ch * kC + threadIdx.x * 4);
    load_key_rows<kThreadsState>(&b.k[0][0], p.ws.kn, p, token0, rows, h);
  }
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
template <bool kKda, bool kPipelined>
__device__ __forceinline__ StateChunk<kKda>& begin_state_chunk(const LinearBackwardParams& p, StateShared<kKda, kPipelined>& s,
                                                         const SequencePlace& seq, std::int64_t step,
                                                         std::int64_t chunk, std::int64_t next, int j, int col0,
                                                         bool reverse) {
  __syncthreads();  // the previous chunk is done with everything
  StateChunk<kKda>& b = s.chunk[kPipelined ? step % 2 : 0];
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
  if constexpr (kKda) {
    if (threadIdx.x < kKey) b.g[threadIdx.x] = exp2f(b.g[threadIdx.x]);
  } else if (threadIdx.x < kC) {
    b.d[threadIdx.x] = expf(b.g[kC - 1] - b.g[threadIdx.x]);
    b.gam[threadIdx.x] = expf(b.g[threadIdx.x]);
  }
  __syncthreads();
  return b;
}

// Writes the CTA's [128, 32] slice of S (or dh) to the workspace array at chunk-head `ch`.
template <bool kKda, bool kPipelined>
__device__ __forceinline__ void store_state(const LinearBackwardParams& p, const StateShared<kKda, kPipelined>& s,
                                            float* base, std::int64_t ch, int col0) {
  const int value_pad = p.slices * kSlice;
  float* dst = base + ch * kKey * value_pad + col0;
  for (int e = threadIdx.x; e < kKey * kSlice / 4; e += kThreadsState) {
    const int r = e / (kSlice / 4), c4 = e % (kSlice / 4);
    reinterpret_cast<float4*>(dst + r * value_pad)[c4] = reinterpret_cast<const float4*>(&s.s[r][0])[c4];
  }
}

template <bool kKda, bool kPipelined>
__global__ void __launch_bounds__(kThreadsState) state_fwd_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  StateShared<kKda, kPipelined>& s = *reinterpret_cast<StateShared<kKda, kPipelined>*>(smem);
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
    StateChunk<kKda>& b = begin_state_chunk(p, s, seq, chunk, chunk, chunk + 1 < seq.chunks ? chunk + 1 : -1, j, col0, false);
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
    // S = gam_C S + K^T diag(d) v_new (KDA: diag(gam_C) S + (diag(d) K)^T v_new, d and gam_C per key)
    if constexpr (kKda) {
      gemm_tc<kKey, kSlice, kC>([&](int e, int m) { return b.k[m][e]; }, [&](int m, int jj) { return b.u[m][jj]; },
                                [&](int e, int jj, float v) { s.s[e][jj] = fmaf(b.g[e], s.s[e][jj], v); });
    } else {
      const float gam_c = b.gam[kC - 1];
      gemm_tc<kKey, kSlice, kC>([&](int e, int m) { return b.k[m][e]; },
                                [&](int m, int jj) { return b.d[m] * b.u[m][jj]; },
                                [&](int e, int jj, float v) { s.s[e][jj] = fmaf(gam_c, s.s[e][jj], v); });
    }
  }
}

template <bool kKda, bool kPipelined>
__global__ void __launch_bounds__(kThreadsState) state_bwd_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  StateShared<kKda, kPipelined>& s = *reinterpret_cast<StateShared<kKda, kPipelined>*>(smem);
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
    StateChunk<kKda>& b = begin_state_chunk(p, s, seq, seq.chunks - 1 - chunk, chunk, chunk > 0 ? chunk - 1 : -1, j, col0,
                                      true);
    store_state(p, s, p.ws.dh, ch, col0);
    float* dvnew = p.ws.dvnew + ch * kC * value_pad + col0;
    // dU = P^T dO + diag(d) K dh (KDA: k is diag(d) K already)
    gemm_tc<kC, kSlice, kKey>([&](int i, int m) { return kKda ? b.k[i][m] : b.d[i] * b.k[i][m]; },
                              [&](int m, int jj) { return s.s[m][jj]; },
                              [&](int i, int jj, float v) {
                                const float x = b.u[i][jj] + v;
                                b.u[i][jj] = x;
                                dvnew[i * value_pad + jj] = x;
                              });
    __syncthreads();
    // dh = gam_C dh + scale (Gamma Q)^T dO - w^T dU (KDA: diag(gam_C) dh, per key)
    const float gam_c = b.gam[kC - 1];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = threadIdx.x + u * kThreadsState;
      const float gam = kKda ? b.g[e / kSlice] : gam_c;
      s.s[e / kSlice][e % kSlice] = fmaf(gam, s.s[e / kSlice][e % kSlice], qdo[u]);
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

// The two state passes, double-buffering their chunk loads where every CTA gets an SM of its own and the
// two buffers fit (StateShared, linear_backward_plan.h).
template <bool kKda>
cudaError_t launch_state_passes(const LinearBackwardParams& p, cudaStream_t stream) {
  const dim3 sequences(static_cast<unsigned int>(p.num_sequences * p.slices),
                       static_cast<unsigned int>(p.common.heads_v));
  int device = 0;
  host::CudaDeviceLimits limits;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (!host::cuda_device_limits(device, &limits)) return cudaErrorInvalidDevice;
  const bool pipelined = backward_state_pipelined(kKda, static_cast<std::int64_t>(sequences.x) * sequences.y,
                                                  limits.sm_count, limits.shared_memory_per_block_optin);
  using Single = StateShared<kKda, false>;
  using Double = StateShared<kKda, true>;
  if (cudaError_t e = pipelined ? launch<state_fwd_kernel<kKda, true>>(sequences, kThreadsState, sizeof(Double), p, stream)
                                : launch<state_fwd_kernel<kKda, false>>(sequences, kThreadsState, sizeof(Single), p, stream);
      e != cudaSuccess) {
    return e;
  }
  return pipelined ? launch<state_bwd_kernel<kKda, true>>(sequences, kThreadsState, sizeof(Double), p, stream)
                   : launch<state_bwd_kernel<kKda, false>>(sequences, kThreadsState, sizeof(Single), p, stream);
}

}  // namespace attnkit::sm80::linear_chunk_bwd
