// Chunked backward of GDN (one log decay per value head and token; semantics.md section 5), the
// structure of FLA's chunk_gated_delta_rule backward: only two passes run sequentially over the chunks of
// a sequence, everything else is chunk-parallel. Arithmetic is fp32 throughout (inputs after the prep
// kernels' fp32 copies), on CUDA cores, so it keeps the exact walk's accuracy on the weak-decay cases; no
// float atomics: every value has one writer and every sum a fixed order.
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
//   chunk_prep  (grid: chunk slots x value heads)   G, Tinv, w, u, and P^T dO
//   state_fwd   (grid: sequences x value slices of 32, value heads; chunks in order)   S0, v_new
//   state_bwd   (same grid, chunks last to first)   dU, dh at each chunk's end, d initial state
//   chunk_grad  (grid: chunk slots x value heads)   dq, dk, dv, dbeta, dg of the chunk's tokens
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_backward_sm80.cuh"
#include "kernels/linear/sm80/linear_sm80_common.cuh"

namespace attnkit::sm80 {
namespace {

using linear_backward_detail::token_offset;
using linear_detail::load_element;
using linear_detail::store_element;
using linear_detail::warp_sum;

constexpr int kC = 64;                           // tokens per chunk
constexpr int kKey = kLinearBackwardMaxKeyDim;   // K padded to 128
constexpr int kSlice = kLinearBackwardColumns;   // value columns of a state-pass CTA (and the V padding)
constexpr int kGradSlice = 16;                   // value columns per step of chunk_grad (shared memory)
constexpr int kLdKey = kKey + 4;                 // row pitches: + 4 floats keeps 16-byte rows and
constexpr int kLdC = kC + 4;                     // spreads the rows of a column over the banks
constexpr int kLdSlice = kSlice + 4;
constexpr int kLdGrad = kGradSlice + 4;
constexpr int kThreadsChunk = 256;
constexpr int kThreadsState = 128;

// out(i, j, sum_m a(i, m) b(m, j)) for i < M, j < N: each thread owns M N / Threads outputs, rows
// ti + 16 r and columns tj + (Threads / 16) c, with tj the fast index (consecutive threads write
// consecutive columns: coalesced when `out` writes global memory). fp32 FMAs in m order.
template <int M, int N, int D, int Threads, typename A, typename B, typename Out>
__device__ __forceinline__ void gemm(A a, B b, Out out) {
  constexpr int kRowThreads = 16, kColThreads = Threads / kRowThreads;
  constexpr int kTm = M / kRowThreads, kTn = N / kColThreads;
  static_assert(M % kRowThreads == 0 && N % kColThreads == 0, "tile does not divide");
  const int ti = threadIdx.x / kColThreads, tj = threadIdx.x % kColThreads;
  float acc[kTm][kTn];
#pragma unroll
  for (int r = 0; r < kTm; ++r) {
#pragma unroll
    for (int c = 0; c < kTn; ++c) acc[r][c] = 0.0f;
  }
#pragma unroll 4
  for (int m = 0; m < D; ++m) {
    float x[kTm], y[kTn];
#pragma unroll
    for (int r = 0; r < kTm; ++r) x[r] = a(ti + kRowThreads * r, m);
#pragma unroll
    for (int c = 0; c < kTn; ++c) y[c] = b(m, tj + kColThreads * c);
#pragma unroll
    for (int r = 0; r < kTm; ++r) {
#pragma unroll
      for (int c = 0; c < kTn; ++c) acc[r][c] = fmaf(x[r], y[c], acc[r][c]);
    }
  }
#pragma unroll
  for (int r = 0; r < kTm; ++r) {
#pragma unroll
    for (int c = 0; c < kTn; ++c) out(ti + kRowThreads * r, tj + kColThreads * c, acc[r][c]);
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

// Rows [0, rows) of the fp32 q/k copies (qn or kn) of q/k head h into smem [64][kLdKey]; zero past rows.
template <int Threads>
__device__ __forceinline__ void load_key_rows(float* dst, const float* src, const LinearBackwardParams& p,
                                              std::int64_t token0, int rows, int h) {
  constexpr int kVec = kKey / 4;
  for (int e = threadIdx.x; e < kC * kVec; e += Threads) {
    const int i = e / kVec, c4 = e % kVec;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i < rows) x = reinterpret_cast<const float4*>(src + ((token0 + i) * p.heads_qk + h) * kKey)[c4];
    reinterpret_cast<float4*>(dst + i * kLdKey)[c4] = x;
  }
}

// ---- chunk_prep ----------------------------------------------------------------------------------------

struct alignas(16) PrepShared {
  float k[kC][kLdKey];
  float q[kC][kLdKey];
  float a[kC][kLdC];     // A, strictly lower
  float t[kC][kLdC];     // Tinv
  float p[kC][kLdC];     // P, lower with the diagonal
  float x[kC][kLdSlice]; // beta v of one value slice
  float y[kC][kLdSlice]; // dout of one value slice
  float g[kC], gam[kC], beta[kC];
};

__global__ void __launch_bounds__(kThreadsChunk) chunk_prep_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  PrepShared& s = *reinterpret_cast<PrepShared*>(smem);
  const std::int64_t slot = blockIdx.x;
  const int j = blockIdx.y, h = j / c.group;
  const SlotPlace place = locate(p, slot);
  if (place.rows == 0) return;
  const std::int64_t ch = chunk_head(p, slot, j);
  const int value_pad = p.slices * kSlice;
  load_key_rows<kThreadsChunk>(&s.k[0][0], p.ws.kn, p, place.token0, place.rows, h);
  load_key_rows<kThreadsChunk>(&s.q[0][0], p.ws.qn, p, place.token0, place.rows, h);
  if (threadIdx.x < kC) {
    const int i = threadIdx.x;
    const std::int64_t pair = (place.token0 + i) * c.heads_v + j;
    s.g[i] = i < place.rows ? p.ws.gate[pair] : 0.0f;
    s.beta[i] = i < place.rows ? p.ws.beta[pair] : 0.0f;
  }
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
                                      s.a[i][jj] = i > jj ? s.beta[i] * expf(s.g[i] - s.g[jj]) * v : 0.0f;
                                    });
  gemm<kC, kC, kKey, kThreadsChunk>([&](int i, int m) { return s.q[i][m]; }, [&](int m, int jj) { return s.k[jj][m]; },
                                    [&](int i, int jj, float v) {
                                      s.p[i][jj] = jj <= i ? c.scale * expf(s.g[i] - s.g[jj]) * v : 0.0f;
                                    });
  __syncthreads();
  // Tinv = (I + A)^-1 by forward substitution, a column per thread: T[i][col] = -sum_{m < i} A[i][m] T[m][col].
  if (threadIdx.x < kC) {
    const int col = threadIdx.x;
    for (int i = 0; i < kC; ++i) {
      float t = i == col ? 1.0f : 0.0f;
      if (i > col) {
        for (int m = col; m < i; ++m) t = fmaf(-s.a[i][m], s.t[m][col], t);
      }
      s.t[i][col] = t;
    }
  }
  __syncthreads();
  float* tinv = p.ws.tinv + ch * kC * kC;
  for (int e = threadIdx.x; e < kC * kC; e += kThreadsChunk) tinv[e] = s.t[e / kC][e % kC];
  float* w = p.ws.w + ch * kC * kKey;
  gemm<kC, kKey, kC, kThreadsChunk>([&](int i, int m) { return s.t[i][m]; },
                                    [&](int m, int e) { return s.beta[m] * s.gam[m] * s.k[m][e]; },
                                    [&](int i, int e, float v) { w[i * kKey + e] = v; });
  float* u = p.ws.vnew + ch * kC * value_pad;
  float* dvl = p.ws.dvnew + ch * kC * value_pad;
  for (int slice = 0; slice < p.slices; ++slice) {
    const int col0 = slice * kSlice;
    __syncthreads();  // the previous slice's GEMMs are done with x and y
    for (int e = threadIdx.x; e < kC * kSlice; e += kThreadsChunk) {
      const int i = e / kSlice, col = e % kSlice, column = col0 + col;
      float v = 0.0f, d = 0.0f;
      if (i < place.rows && column < c.value_dim) {
        const std::int64_t token = place.token0 + i;
        v = load_element(c.v.data,
                         token_offset(p, token, c.v.batch_stride, c.v.token_stride) + j * c.v.head_stride + column,
                         c.io_element);
        d = load_element(p.dout.data,
                         token_offset(p, token, p.dout.batch_stride, p.dout.token_stride) + j * p.dout.head_stride +
                             column,
                         c.io_element);
      }
      s.x[i][col] = s.beta[i] * v;
      s.y[i][col] = d;
    }
    __syncthreads();
    gemm<kC, kSlice, kC, kThreadsChunk>([&](int i, int m) { return s.t[i][m]; }, [&](int m, int jj) { return s.x[m][jj]; },
                                        [&](int i, int jj, float v) { u[i * value_pad + col0 + jj] = v; });
    gemm<kC, kSlice, kC, kThreadsChunk>([&](int i, int m) { return s.p[m][i]; }, [&](int m, int jj) { return s.y[m][jj]; },
                                        [&](int i, int jj, float v) { dvl[i * value_pad + col0 + jj] = v; });
  }
}

// ---- state passes --------------------------------------------------------------------------------------

struct alignas(16) StateShared {
  float s[kKey][kLdSlice];  // S (forward) or dh (reverse) of the CTA's value slice
  float w[kC][kLdKey];
  float k[kC][kLdKey];
  float q[kC][kLdKey];      // reverse only
  float u[kC][kLdSlice];    // u -> v_new (forward) or P^T dO -> dU (reverse)
  float o[kC][kLdSlice];    // dout (reverse)
  float g[kC], d[kC], gam[kC];
};

// Offset of state element (row, column) of sequence n, value head j in a state tensor of either layout.
__device__ __forceinline__ std::int64_t state_offset(const LinearBackwardParams& p, const LinearStateTensor& t, int n,
                                                     int j, int row, int column) {
  const std::int64_t head = n * t.sequence_stride + j * t.head_stride;
  return p.common.state_vk ? head + column * t.row_stride + row : head + row * t.row_stride + column;
}

// Loads one chunk's G (and its exps), w, k (and q, dout for the reverse) of a state-pass CTA.
template <bool kReverse>
__device__ __forceinline__ void load_state_chunk(const LinearBackwardParams& p, StateShared& s, std::int64_t slot,
                                                 std::int64_t token0, int rows, int j, int col0) {
  const LinearCommonParams& c = p.common;
  const int h = j / c.group, value_pad = p.slices * kSlice;
  const std::int64_t ch = chunk_head(p, slot, j);
  __syncthreads();  // the previous chunk is done with everything
  if (threadIdx.x < kC) s.g[threadIdx.x] = p.ws.gc[ch * kC + threadIdx.x];
  load_key_rows<kThreadsState>(&s.k[0][0], p.ws.kn, p, token0, rows, h);
  if (kReverse) load_key_rows<kThreadsState>(&s.q[0][0], p.ws.qn, p, token0, rows, h);
  const float4* w = reinterpret_cast<const float4*>(p.ws.w + ch * kC * kKey);
  for (int e = threadIdx.x; e < kC * kKey / 4; e += kThreadsState) {
    reinterpret_cast<float4*>(&s.w[e / (kKey / 4)][0])[e % (kKey / 4)] = w[e];
  }
  const float* u = (kReverse ? p.ws.dvnew : p.ws.vnew) + ch * kC * value_pad + col0;
  for (int e = threadIdx.x; e < kC * kSlice / 4; e += kThreadsState) {
    const int i = e / (kSlice / 4), c4 = e % (kSlice / 4);
    reinterpret_cast<float4*>(&s.u[i][0])[c4] = reinterpret_cast<const float4*>(u + i * value_pad)[c4];
  }
  if (kReverse) {
    for (int e = threadIdx.x; e < kC * kSlice; e += kThreadsState) {
      const int i = e / kSlice, col = e % kSlice, column = col0 + col;
      float d = 0.0f;
      if (i < rows && column < c.value_dim) {
        d = load_element(p.dout.data,
                         token_offset(p, token0 + i, p.dout.batch_stride, p.dout.token_stride) +
                             j * p.dout.head_stride + column,
                         c.io_element);
      }
      s.o[i][col] = d;
    }
  }
  __syncthreads();
  if (threadIdx.x < kC) {
    s.d[threadIdx.x] = expf(s.g[kC - 1] - s.g[threadIdx.x]);
    s.gam[threadIdx.x] = expf(s.g[threadIdx.x]);
  }
  __syncthreads();
}

// Writes the CTA's [128, 32] slice of S (or dh) to the workspace array at chunk-head `ch`.
__device__ __forceinline__ void store_state(const LinearBackwardParams& p, const StateShared& s, float* base,
                                            std::int64_t ch, int col0) {
  const int value_pad = p.slices * kSlice;
  float* dst = base + ch * kKey * value_pad + col0;
  for (int e = threadIdx.x; e < kKey * kSlice / 4; e += kThreadsState) {
    const int r = e / (kSlice / 4), c4 = e % (kSlice / 4);
    reinterpret_cast<float4*>(dst + r * value_pad)[c4] = reinterpret_cast<const float4*>(&s.s[r][0])[c4];
  }
}

__global__ void __launch_bounds__(kThreadsState) state_fwd_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  StateShared& s = *reinterpret_cast<StateShared*>(smem);
  const int n = blockIdx.x / p.slices, slice = blockIdx.x % p.slices, j = blockIdx.y, col0 = slice * kSlice;
  const int value_pad = p.slices * kSlice;
  const SequencePlace seq = sequence_place(p, n);
  for (int e = threadIdx.x; e < kKey * kSlice; e += kThreadsState) {
    const int r = e / kSlice, col = e % kSlice;
    const bool valid = p.initial_state.data != nullptr && r < c.key_dim && col0 + col < c.value_dim;
    s.s[r][col] = valid ? p.initial_state.data[state_offset(p, p.initial_state, n, j, r, col0 + col)] : 0.0f;
  }
  for (std::int64_t chunk = 0; chunk < seq.chunks; ++chunk) {
    const std::int64_t slot = seq.slot0 + chunk, ch = chunk_head(p, slot, j);
    const std::int64_t token0 = seq.token0 + chunk * kC;
    const int rows = static_cast<int>(seq.length - chunk * kC < kC ? seq.length - chunk * kC : kC);
    load_state_chunk<false>(p, s, slot, token0, rows, j, col0);
    store_state(p, s, p.ws.s0, ch, col0);
    float* vnew = p.ws.vnew + ch * kC * value_pad + col0;
    // v_new = u - w S
    gemm<kC, kSlice, kKey, kThreadsState>([&](int i, int m) { return s.w[i][m]; },
                                          [&](int m, int jj) { return s.s[m][jj]; },
                                          [&](int i, int jj, float v) {
                                            const float x = s.u[i][jj] - v;
                                            s.u[i][jj] = x;
                                            vnew[i * value_pad + jj] = x;
                                          });
    __syncthreads();
    // S = gam_C S + K^T diag(d) v_new
    const float gam_c = s.gam[kC - 1];
    gemm<kKey, kSlice, kC, kThreadsState>([&](int e, int m) { return s.k[m][e]; },
                                          [&](int m, int jj) { return s.d[m] * s.u[m][jj]; },
                                          [&](int e, int jj, float v) { s.s[e][jj] = fmaf(gam_c, s.s[e][jj], v); });
  }
}

__global__ void __launch_bounds__(kThreadsState) state_bwd_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  StateShared& s = *reinterpret_cast<StateShared*>(smem);
  const int n = blockIdx.x / p.slices, slice = blockIdx.x % p.slices, j = blockIdx.y, col0 = slice * kSlice;
  const int value_pad = p.slices * kSlice;
  const SequencePlace seq = sequence_place(p, n);
  for (int e = threadIdx.x; e < kKey * kSlice; e += kThreadsState) {
    const int r = e / kSlice, col = e % kSlice;
    const bool valid = p.dfinal_state.data != nullptr && r < c.key_dim && col0 + col < c.value_dim;
    s.s[r][col] = valid ? p.dfinal_state.data[state_offset(p, p.dfinal_state, n, j, r, col0 + col)] : 0.0f;
  }
  for (std::int64_t chunk = seq.chunks - 1; chunk >= 0; --chunk) {
    const std::int64_t slot = seq.slot0 + chunk, ch = chunk_head(p, slot, j);
    const std::int64_t token0 = seq.token0 + chunk * kC;
    const int rows = static_cast<int>(seq.length - chunk * kC < kC ? seq.length - chunk * kC : kC);
    load_state_chunk<true>(p, s, slot, token0, rows, j, col0);
    store_state(p, s, p.ws.dh, ch, col0);
    float* dvnew = p.ws.dvnew + ch * kC * value_pad + col0;
    // dU = P^T dO + diag(d) K dh
    gemm<kC, kSlice, kKey, kThreadsState>([&](int i, int m) { return s.d[i] * s.k[i][m]; },
                                          [&](int m, int jj) { return s.s[m][jj]; },
                                          [&](int i, int jj, float v) {
                                            const float x = s.u[i][jj] + v;
                                            s.u[i][jj] = x;
                                            dvnew[i * value_pad + jj] = x;
                                          });
    __syncthreads();
    // dh = gam_C dh + scale (Gamma Q)^T dO - w^T dU: one GEMM over the 128 stacked rows [dO; dU].
    const float gam_c = s.gam[kC - 1], scale = c.scale;
    gemm<kKey, kSlice, 2 * kC, kThreadsState>(
        [&](int e, int m) { return m < kC ? scale * s.gam[m] * s.q[m][e] : -s.w[m - kC][e]; },
        [&](int m, int jj) { return m < kC ? s.o[m][jj] : s.u[m - kC][jj]; },
        [&](int e, int jj, float v) { s.s[e][jj] = fmaf(gam_c, s.s[e][jj], v); });
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
  float s0[kKey][kLdGrad];
  float dh[kKey][kLdGrad];
  float u[kC][kLdGrad];
  float du[kC][kLdGrad];
  float o[kC][kLdGrad];   // dout
  float r[kC][kLdGrad];   // v -> R -> X1 = -Gamma dR
  float y[kC][kLdGrad];   // Y = Tinv^T dU
  float ks[kC][kLdGrad];  // K S0 -> X2 = diag(d) U
  float kh[kC][kLdGrad];  // K dh
};
struct alignas(16) GradClosingTiles {
  float q[kC][kLdKey];
  float m[kC][kLdC];  // Q K^T, then K K^T and F
};
static_assert(sizeof(GradClosingTiles) <= sizeof(GradSliceTiles), "closing tiles must fit the slice tiles");

struct alignas(16) GradShared {
  float k[kC][kLdKey];
  float t[kC][kLdC];       // Tinv
  float dou[kC][kLdC];     // dO U^T, then dP'
  float yu[kC][kLdC];      // Y U^T, then E
  float dq[kC][kLdKey];    // dO S0^T
  float dk[kC][kLdKey];    // -Gamma dR S0^T + diag(d) U dh^T
  union {
    GradSliceTiles slice;
    GradClosingTiles closing;
  };
  float g[kC], gam[kC], d[kC], beta[kC];
  float dbeta[kC], dg[kC];  // accumulated per row
  float t3[kC];             // d_j k_j . (dh U_j)
  float red[kThreadsChunk];
};

__global__ void __launch_bounds__(kThreadsChunk) chunk_grad_kernel(const LinearBackwardParams p) {
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
  load_key_rows<kThreadsChunk>(&s.k[0][0], p.ws.kn, p, place.token0, place.rows, h);
  for (int e = tid; e < kC * kC; e += kThreadsChunk) s.t[e / kC][e % kC] = p.ws.tinv[ch * kC * kC + e];
  if (tid < kC) {
    s.g[tid] = p.ws.gc[ch * kC + tid];
    s.beta[tid] = tid < place.rows ? p.ws.beta[(place.token0 + tid) * c.heads_v + j] : 0.0f;
    s.dbeta[tid] = 0.0f;
    s.t3[tid] = 0.0f;
  }
  __syncthreads();
  if (tid < kC) {
    s.gam[tid] = expf(s.g[tid]);
    s.d[tid] = expf(s.g[kC - 1] - s.g[tid]);
  }
  // Row partials (4 threads a row, 4 columns each) and the thread's share of <dh, S0>.
  const int row = tid / 4, quarter = tid % 4;
  float dbeta_part = 0.0f, t4_part = 0.0f, t3_part = 0.0f, dh_s0 = 0.0f;
  const int value_steps = (c.value_dim + kGradSlice - 1) / kGradSlice;
  GradSliceTiles& st = s.slice;
  for (int step = 0; step < value_steps; ++step) {
    const int col0 = step * kGradSlice;
    __syncthreads();  // the previous step's GEMMs are done with the tiles
    const std::int64_t state_at = ch * kKey * value_pad + col0, rows_at = ch * kC * value_pad + col0;
    for (int e = tid; e < kKey * kGradSlice; e += kThreadsChunk) {
      const int r = e / kGradSlice, col = e % kGradSlice;
      st.s0[r][col] = p.ws.s0[state_at + r * value_pad + col];
      st.dh[r][col] = p.ws.dh[state_at + r * value_pad + col];
    }
    for (int e = tid; e < kC * kGradSlice; e += kThreadsChunk) {
      const int i = e / kGradSlice, col = e % kGradSlice, column = col0 + col;
      st.u[i][col] = p.ws.vnew[rows_at + i * value_pad + col];
      st.du[i][col] = p.ws.dvnew[rows_at + i * value_pad + col];
      float v = 0.0f, d = 0.0f;
      if (i < place.rows && column < c.value_dim) {
        const std::int64_t token = place.token0 + i;
        v = load_element(c.v.data,
                         token_offset(p, token, c.v.batch_stride, c.v.token_stride) + j * c.v.head_stride + column,
                         c.io_element);
        d = load_element(p.dout.data,
                         token_offset(p, token, p.dout.batch_stride, p.dout.token_stride) + j * p.dout.head_stride +
                             column,
                         c.io_element);
      }
      st.r[i][col] = v;
      st.o[i][col] = d;
    }
    __syncthreads();
    gemm<kC, kGradSlice, kC, kThreadsChunk>([&](int i, int m) { return s.t[m][i]; },
                                            [&](int m, int jj) { return st.du[m][jj]; },
                                            [&](int i, int jj, float v) { st.y[i][jj] = v; });
    gemm<kC, kGradSlice, kKey, kThreadsChunk>([&](int i, int m) { return s.k[i][m]; },
                                              [&](int m, int jj) { return st.s0[m][jj]; },
                                              [&](int i, int jj, float v) { st.ks[i][jj] = v; });
    gemm<kC, kGradSlice, kKey, kThreadsChunk>([&](int i, int m) { return s.k[i][m]; },
                                              [&](int m, int jj) { return st.dh[m][jj]; },
                                              [&](int i, int jj, float v) { st.kh[i][jj] = v; });
    for (int e = tid; e < kKey * kGradSlice; e += kThreadsChunk) dh_s0 += st.dh[e / kGradSlice][e % kGradSlice] *
                                                                          st.s0[e / kGradSlice][e % kGradSlice];
    __syncthreads();
    {
      // R = V - Gamma K S0; dbeta += Y . R; dv = beta Y; t4 = -gam k . (S0 dR) = (K S0) . X1;
      // t3 = d k . (dh U) = d (K dh) . U.  Then X1 = -gam beta Y into r, X2 = d U into ks.
      const int i = row;
      const float gam = s.gam[i], beta = s.beta[i], d = s.d[i];
      const std::int64_t token = place.token0 + i;
#pragma unroll
      for (int q4 = 0; q4 < kGradSlice / 4; ++q4) {
        const int col = quarter * (kGradSlice / 4) + q4, column = col0 + col;
        const float y = st.y[i][col], ks = st.ks[i][col];
        const float r = st.r[i][col] - gam * ks;
        const float x1 = -gam * beta * y;
        dbeta_part = fmaf(y, r, dbeta_part);
        t4_part = fmaf(ks, x1, t4_part);
        t3_part = fmaf(d * st.kh[i][col], st.u[i][col], t3_part);
        st.r[i][col] = x1;
        st.ks[i][col] = d * st.u[i][col];
        if (i < place.rows && column < c.value_dim) {
          store_element(p.dv.data,
                        token_offset(p, token, p.dv.batch_stride, p.dv.token_stride) + j * p.dv.head_stride + column,
                        c.io_element, beta * y);
        }
      }
    }
    __syncthreads();
    const bool first = step == 0;
    gemm<kC, kC, kGradSlice, kThreadsChunk>([&](int i, int m) { return st.o[i][m]; },
                                            [&](int m, int jj) { return st.u[jj][m]; },
                                            [&](int i, int jj, float v) { s.dou[i][jj] = first ? v : s.dou[i][jj] + v; });
    gemm<kC, kC, kGradSlice, kThreadsChunk>([&](int i, int m) { return st.y[i][m]; },
                                            [&](int m, int jj) { return st.u[jj][m]; },
                                            [&](int i, int jj, float v) { s.yu[i][jj] = first ? v : s.yu[i][jj] + v; });
    gemm<kC, kKey, kGradSlice, kThreadsChunk>([&](int i, int m) { return st.o[i][m]; },
                                              [&](int m, int e) { return st.s0[e][m]; },
                                              [&](int i, int e, float v) { s.dq[i][e] = first ? v : s.dq[i][e] + v; });
    gemm<kC, kKey, 2 * kGradSlice, kThreadsChunk>(
        [&](int i, int m) { return m < kGradSlice ? st.r[i][m] : st.ks[i][m - kGradSlice]; },
        [&](int m, int e) { return m < kGradSlice ? st.s0[e][m] : st.dh[e][m - kGradSlice]; },
        [&](int i, int e, float v) { s.dk[i][e] = first ? v : s.dk[i][e] + v; });
  }
  if (value_steps == 0) {  // V = 0: no value columns, every product over them is zero
    for (int e = tid; e < kC * kLdC; e += kThreadsChunk) {
      (&s.dou[0][0])[e] = 0.0f;
      (&s.yu[0][0])[e] = 0.0f;
    }
    for (int e = tid; e < kC * kLdKey; e += kThreadsChunk) {
      (&s.dq[0][0])[e] = 0.0f;
      (&s.dk[0][0])[e] = 0.0f;
    }
  }
  // Row partials over the 4 threads of a row (adjacent lanes), then <dh, S0> over the block.
  dbeta_part += __shfl_xor_sync(0xffffffffu, dbeta_part, 1);
  dbeta_part += __shfl_xor_sync(0xffffffffu, dbeta_part, 2);
  t4_part += __shfl_xor_sync(0xffffffffu, t4_part, 1);
  t4_part += __shfl_xor_sync(0xffffffffu, t4_part, 2);
  t3_part += __shfl_xor_sync(0xffffffffu, t3_part, 1);
  t3_part += __shfl_xor_sync(0xffffffffu, t3_part, 2);
  dh_s0 = warp_sum(dh_s0);
  __syncthreads();  // the slice tiles are free; q goes over them
  if (quarter == 0) {
    s.dbeta[row] = dbeta_part;
    s.dg[row] = t4_part - t3_part;
    s.t3[row] = t3_part;
  }
  if (tid % 32 == 0) s.red[tid / 32] = dh_s0;
  GradClosingTiles& cl = s.closing;
  load_key_rows<kThreadsChunk>(&cl.q[0][0], p.ws.qn, p, place.token0, place.rows, h);
  __syncthreads();
  gemm<kC, kC, kKey, kThreadsChunk>([&](int i, int m) { return cl.q[i][m]; }, [&](int m, int jj) { return s.k[jj][m]; },
                                    [&](int i, int jj, float v) { cl.m[i][jj] = v; });
  __syncthreads();
  // dP' = scale exp(G_i - G_j) dO_i . U_j (j <= i) into dou; D^o = dP' (q_i . k_j) into m.
  for (int e = tid; e < kC * kC; e += kThreadsChunk) {
    const int i = e / kC, jj = e % kC;
    const float dp = jj <= i ? c.scale * expf(s.g[i] - s.g[jj]) * s.dou[i][jj] : 0.0f;
    s.dou[i][jj] = dp;
    cl.m[i][jj] = dp * cl.m[i][jj];
  }
  __syncthreads();
  if (tid < kC) {  // dG_i += rowsum - colsum of D^o; t2 = q_i . (scale gam_i dO_i S0^T)
    const int i = tid;
    float sum = 0.0f, t2 = 0.0f;
    for (int m = 0; m < kC; ++m) sum += cl.m[i][m] - cl.m[m][i];
    for (int e = 0; e < kKey; ++e) t2 = fmaf(cl.q[i][e], s.dq[i][e], t2);
    s.dg[i] += sum + c.scale * s.gam[i] * t2;
  }
  __syncthreads();
  gemm<kC, kC, kKey, kThreadsChunk>([&](int i, int m) { return s.k[i][m]; }, [&](int m, int jj) { return s.k[jj][m]; },
                                    [&](int i, int jj, float v) { cl.m[i][jj] = v; });
  __syncthreads();
  // dA = -Y U^T (i > j); F = dA exp(G_i - G_j) k_i . k_j into m; E = beta_i dA exp(G_i - G_j) into yu.
  for (int e = tid; e < kC * kC; e += kThreadsChunk) {
    const int i = e / kC, jj = e % kC;
    float f = 0.0f, ee = 0.0f;
    if (i > jj) {
      const float da_decay = -s.yu[i][jj] * expf(s.g[i] - s.g[jj]);
      f = da_decay * cl.m[i][jj];
      ee = s.beta[i] * da_decay;
    }
    cl.m[i][jj] = f;
    s.yu[i][jj] = ee;
  }
  __syncthreads();
  if (tid < kC) {  // dbeta_i += rowsum F; dG_i += beta_i rowsum_i F - sum_r beta_r F[r][i]
    const int i = tid;
    float rows = 0.0f, cols = 0.0f;
    for (int m = 0; m < kC; ++m) {
      rows += cl.m[i][m];
      cols += s.beta[m] * cl.m[m][i];
    }
    s.dbeta[i] += rows;
    s.dg[i] += s.beta[i] * rows - cols;
  }
  // dq = scale Gamma dO S0^T + dP' K;  dk = (that accumulation) + dP'^T Q + E K + E^T K.
  float* dq = p.ws.dq + (place.token0 * c.heads_v + j) * kKey;
  float* dk = p.ws.dk + (place.token0 * c.heads_v + j) * kKey;
  const std::int64_t row_stride = static_cast<std::int64_t>(c.heads_v) * kKey;
  gemm<kC, kKey, kC, kThreadsChunk>([&](int i, int m) { return s.dou[i][m]; }, [&](int m, int e) { return s.k[m][e]; },
                                    [&](int i, int e, float v) {
                                      if (i < place.rows) dq[i * row_stride + e] = fmaf(c.scale * s.gam[i], s.dq[i][e], v);
                                    });
  gemm<kC, kKey, 3 * kC, kThreadsChunk>(
      [&](int i, int m) { return m < kC ? s.dou[m][i] : (m < 2 * kC ? s.yu[i][m - kC] : s.yu[m - 2 * kC][i]); },
      [&](int m, int e) { return m < kC ? cl.q[m][e] : s.k[m < 2 * kC ? m - kC : m - 2 * kC][e]; },
      [&](int i, int e, float v) {
        if (i < place.rows) dk[i * row_stride + e] = s.dk[i][e] + v;
      });
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

template <typename Kernel>
cudaError_t launch(Kernel kernel, dim3 grid, int threads, std::size_t smem, const LinearBackwardParams& p,
                   cudaStream_t stream) {
  if (grid.x == 0 || grid.y == 0) return cudaSuccess;
  if (const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem));
      e != cudaSuccess) {
    return e;
  }
  kernel<<<grid, threads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gdn_backward_chunked(const LinearBackwardParams& p, cudaStream_t stream) {
  const unsigned int heads = static_cast<unsigned int>(p.common.heads_v);
  const dim3 chunks(static_cast<unsigned int>(p.ws.slots), heads);
  const dim3 sequences(static_cast<unsigned int>(p.num_sequences * p.slices), heads);
  if (cudaError_t e = launch(chunk_prep_kernel, chunks, kThreadsChunk, sizeof(PrepShared), p, stream); e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = launch(state_fwd_kernel, sequences, kThreadsState, sizeof(StateShared), p, stream);
      e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = launch(state_bwd_kernel, sequences, kThreadsState, sizeof(StateShared), p, stream);
      e != cudaSuccess) {
    return e;
  }
  return launch(chunk_grad_kernel, chunks, kThreadsChunk, sizeof(GradShared), p, stream);
}

}  // namespace attnkit::sm80
