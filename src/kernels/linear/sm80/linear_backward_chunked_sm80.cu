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
// The state passes, the products (gemm, gemm_tc), the tile loads and the solve live in
// linear_backward_chunk_sm80.cuh, shared with KDA's chunked backward (linear_backward_kda_chunked_sm80.cu).
//   chunk_grad  (grid: chunk slots x value heads, 16 warps)   dq, dk, dv, dbeta, dg of the chunk's tokens
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_backward_chunk_sm80.cuh"
#include "kernels/linear/sm80/linear_backward_plan.h"

namespace attnkit::sm80 {
namespace {

using namespace linear_chunk_bwd;

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
  invert_unit_lower(s.a, s.t);
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


}  // namespace

cudaError_t launch_gdn_backward_chunked(const LinearBackwardParams& p, cudaStream_t stream) {
  const dim3 chunks(static_cast<unsigned int>(p.ws.slots), static_cast<unsigned int>(p.common.heads_v));
  if (cudaError_t e = launch<chunk_prep_kernel>(chunks, kThreadsChunk, sizeof(PrepShared), p, stream); e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = launch_state_passes<false>(p, stream); e != cudaSuccess) return e;
  return launch<chunk_grad_kernel>(chunks, kThreadsGrad, sizeof(GradShared), p, stream);
}

}  // namespace attnkit::sm80
