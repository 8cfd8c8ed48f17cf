// Chunked backward of KDA (a log decay per value head, token and key channel; semantics.md section 5):
// the GDN backward's split (linear_backward_chunked_sm80.cu: chunk_prep, the two state passes of
// linear_backward_chunk_sm80.cuh, chunk_grad) with per-key decays. Values are fp32 throughout; no float
// atomics (every value has one writer and every sum a fixed order), so the gradients are the same bits run
// to run.
//
// One chunk of C = 64 tokens (rows i, j), its start state S0 [K, V], G_i [K] the inclusive cumulative log
// decay per key, gam_i = exp(G_i), d_i = exp(G_C - G_i) (G_C: the last row's G; rows past a sequence's end
// have no decay), all per key and <= 1. With x_i (.) y_j the key-wise decayed product
// sum_e x_ie y_je exp(G_ie - G_je) (j <= i, so every exp factor is <= 1):
//   B[i][j] = k_i (.) k_j (i > j), A = diag(beta) B, Tinv = (I + A)^-1, P[i][j] = scale q_i (.) k_j (j <= i),
//   Kg = Gamma .* K (rows gam_i .* k_i), Kd = D .* K, R = V - Kg S0, U = v_new = Tinv (beta R) = u - w S0
//   (u = Tinv (beta V), w = Tinv (beta Kg)),  O = scale (Gamma .* Q) S0 + P U,
//   S_next = diag(gam_C) S0 + Kd^T U.
// Reverse, with dh = dL/dS_next and dU = dL/dU:
//   dU = P^T dO + Kd dh,  Y = Tinv^T dU,  dv = beta Y,  dbeta_i = Y_i . R_i + sum_j dA_ij B_ij,
//   dS0 = diag(gam_C) dh + scale (Gamma .* Q)^T dO - Kg^T (beta Y)            (the reverse state pass)
//   M = scale dO U^T (j <= i), dA = -Y U^T (i > j), E = diag(beta) dA (M's diagonal terms cancel in
//   dG and are added to dq and dk only):
//   dq_i = scale gam_i .* (dO S0^T)_i + sum_j M_ij k_j .* exp(G_i - G_j)
//   dk_i = gam_i .* (-beta Y S0^T)_i + d_i .* (U dh^T)_i + sum_j E_ij k_j .* exp(G_i - G_j)
//          + sum_r (M_ri q_r + E_ri k_r) .* exp(G_r - G_i)
//   dG_i = q_i .* dq_i + k_i .* (the first and third terms of dk_i - the second and fourth)
//   dG_C += sum_j k_j .* d_j .* (U dh^T)_j + gam_C .* diag(dh S0^T);  dg_t = sum over i >= t of dG_i.
// (Checked against float64 central differences of the token recurrence by a NumPy model of this algebra:
// T = 11, chunks of 4, K = 5, V = 3, every gradient within 1.4e-9.) chunk_prep's decayed products (B, P:
// fp32 for dbeta, as GDN's K K^T and Q K^T) run on CUDA cores with an exp per (i, j, key), the exp of
// G_i - G_j (<= 0, clamped so for masked pairs) taken at each use; chunk_grad's closing takes the blocks
// off the diagonal on tensor cores through a reference row per 16-row block (see there) and keeps the
// diagonal blocks on CUDA cores; the plain products on gemm_tc as in GDN's kernels.
//
// Kernels, in launch order (between the prep and finish kernels of linear_backward_sm80.cu):
//   chunk_prep  (grid: chunk slots x value heads)  G, B, Tinv, w, u, Kd, P^T dO, scale (Gamma .* Q)^T dO
//   state_fwd, state_bwd (linear_backward_chunk_sm80.cuh, KDA form)  S0, v_new; dU, dh, d initial state
//   chunk_grad  (grid: chunk slots x value heads, 8 warps)  dq, dk, dv, dbeta, dg of the chunk's tokens
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_backward_chunk_sm80.cuh"
#include "kernels/linear/sm80/linear_backward_plan.h"

namespace attnkit::sm80 {
namespace {

using namespace linear_chunk_bwd;

constexpr float kLog2e = 1.4426950408889634f;  // G is kept in log2 units: exp(G_i - G_j) = exp2(G2_i - G2_j)

// exp(G_i - G_j) for j <= i from log2 units; masked pairs (j > i) may give a positive difference, which
// the clamp turns into a finite factor that the caller's zero weight removes.
__device__ __forceinline__ float decay(float g2_i, float g2_j) { return exp2f(fminf(g2_i - g2_j, 0.0f)); }

// One n-tile (8 columns from n) of two products over depth [m0, m1) (warp-uniform, a multiple of 16), the
// warp's 16 rows from r0: c1 += a1 b1, c2 += a2 b2 with bp(m, n) = {b1, b2} (SharedB: b2 = b1, split
// once), bf16 pairs and three MMAs a product and k-step as mma_tc; fragment layout as MmaTile's.
template <bool SharedB, typename A1, typename A2, typename Bp>
__device__ __forceinline__ void block_products(float (&c1)[4], float (&c2)[4], int r0, int n, int m0, int m1, A1 a1,
                                               A2 a2, Bp bp) {
  using linear_detail::mma_16x8x16;
  using linear_detail::split_pair;
  using E = __nv_bfloat16;
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t2 = 2 * (lane % 4);
  for (int k0 = m0; k0 < m1; k0 += 16) {
    unsigned hi1[4], lo1[4], hi2[4], lo2[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int i = r0 + g + 8 * (q % 2), m = k0 + t2 + 8 * (q / 2);
      split_pair<E>(a1(i, m), a1(i, m + 1), &hi1[q], &lo1[q]);
      split_pair<E>(a2(i, m), a2(i, m + 1), &hi2[q], &lo2[q]);
    }
    const float2 x0 = bp(k0 + t2, n), x1 = bp(k0 + t2 + 1, n), x2 = bp(k0 + t2 + 8, n), x3 = bp(k0 + t2 + 9, n);
    unsigned bhi[2], blo[2];
    split_pair<E>(x0.x, x1.x, &bhi[0], &blo[0]);
    split_pair<E>(x2.x, x3.x, &bhi[1], &blo[1]);
    mma_16x8x16<E>(c1, lo1, bhi[0], bhi[1]);
    mma_16x8x16<E>(c1, hi1, blo[0], blo[1]);
    mma_16x8x16<E>(c1, hi1, bhi[0], bhi[1]);
    if constexpr (!SharedB) {
      split_pair<E>(x0.y, x1.y, &bhi[0], &blo[0]);
      split_pair<E>(x2.y, x3.y, &bhi[1], &blo[1]);
    }
    mma_16x8x16<E>(c2, lo2, bhi[0], bhi[1]);
    mma_16x8x16<E>(c2, hi2, blo[0], blo[1]);
    mma_16x8x16<E>(c2, hi2, bhi[0], bhi[1]);
  }
}

// ---- chunk_prep ----------------------------------------------------------------------------------------

// k (then beta Gamma .* k for w), q (then scale Gamma .* q, then Tinv), G of one half of the keys (log2
// units; A goes over it once both halves are done), P (then a slice of beta v), a slice of dout, beta:
// 111,872 bytes, two CTAs per SM (2 x (111,872 + 1,024 reserved) <= 233,472 bytes of an H100 SM). With G
// whole it took 145,664 bytes and one CTA per SM: chunk_prep 12.97 ms at (4, 8192, 32, 32) (ncu, H100)
// for ~4.2 GB of stores, its phases (exp-bound products, the inversion's serial steps, GEMMs) not
// overlapped by a second CTA.
constexpr int kHalfKey = kKey / 2;  // keys per G tile
struct alignas(16) KdaPrepShared {
  float k[kC][kLdKey];
  union {
    float q[kC][kLdKey];
    float t[kC][kLdC];
  };
  union {
    float g[kC][kHalfKey + 4];
    float a[kC][kLdC];
  };
  union {
    float p[kC][kLdC];
    float x[kC][kLdSlice];
  };
  float y[kC][kLdSlice];
  float beta[kC];
};
static_assert(kHalfKey + 4 == kLdC, "the G tile and A share a pitch");
static_assert(sizeof(KdaPrepShared) == kda_backward_prep_shared_bytes(), "linear_backward_plan.h's size of chunk_prep");

__global__ void __launch_bounds__(kThreadsChunk, 2) kda_chunk_prep_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  KdaPrepShared& s = *reinterpret_cast<KdaPrepShared*>(smem);
  const std::int64_t slot = blockIdx.x;
  const int j = blockIdx.y, h = j / c.group;
  const SlotPlace place = locate(p, slot);
  if (place.rows == 0) return;
  const std::int64_t ch = chunk_head(p, slot, j);
  const int value_pad = p.slices * kSlice;
  const int tid = threadIdx.x;
  load_key_rows<kThreadsChunk>(&s.k[0][0], p.ws.kn, p, place.token0, place.rows, h);
  load_key_rows<kThreadsChunk>(&s.q[0][0], p.ws.qn, p, place.token0, place.rows, h);
  if (tid < kC) s.beta[tid] = tid < place.rows ? p.ws.beta[(place.token0 + tid) * c.heads_v + j] : 0.0f;
  cp_async_commit();
  const float* gate = p.ws.gate + (place.token0 * c.heads_v + j) * kKey;
  float* gc = p.ws.gc + ch * kC * kKey;
  float* kd = p.ws.kd + ch * kC * kKey;
  // B = k_i (.) k_j (i > j) and P = scale q_i (.) k_j (j <= i) over the keys, fp32 on CUDA cores (GDN's
  // K K^T and Q K^T stay fp32 for dbeta's sake; NOTES.md "GPU backward"), one exp per (i, j, key) shared
  // by both, the keys in order through two halves of G. The thread's rows lie in row blocks 0-3 of 16 and
  // its columns in column blocks 0-3, so the blocks above the diagonal are skipped at compile time.
  using F = Fragment<kC, kC, kThreadsChunk>;
  float fb[F::kTm][F::kTn], fp[F::kTm][F::kTn];
#pragma unroll
  for (int r = 0; r < F::kTm; ++r) {
#pragma unroll
    for (int cc = 0; cc < F::kTn; ++cc) fb[r][cc] = fp[r][cc] = 0.0f;
  }
  for (int half = 0; half < 2; ++half) {
    const int e0 = half * kHalfKey;
    if (half > 0) __syncthreads();  // the first half's scaling is done with its G
    copy_rows_async<kC, kHalfKey, kThreadsChunk>(&s.g[0][0], kHalfKey + 4, gate + e0,
                                                 static_cast<std::int64_t>(c.heads_v) * kKey, place.rows);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    if (tid < kHalfKey) {  // G per key in token order (fp32 sums, as the CPU backend), then to log2 units
      float sum = 0.0f;
      for (int i = 0; i < kC; ++i) {
        sum += s.g[i][tid];
        const float g2 = sum * kLog2e;
        s.g[i][tid] = g2;
        gc[i * kKey + e0 + tid] = g2;
      }
    }
    __syncthreads();
#pragma unroll 2
    for (int e = 0; e < kHalfKey; ++e) {
      float ki[F::kTm], qi[F::kTm], gi[F::kTm], kj[F::kTn], gj[F::kTn];
#pragma unroll
      for (int r = 0; r < F::kTm; ++r) {
        ki[r] = s.k[F::row(r)][e0 + e];
        qi[r] = s.q[F::row(r)][e0 + e];
        gi[r] = s.g[F::row(r)][e];
      }
#pragma unroll
      for (int cc = 0; cc < F::kTn; ++cc) {
        kj[cc] = s.k[F::col(cc)][e0 + e];
        gj[cc] = s.g[F::col(cc)][e];
      }
#pragma unroll
      for (int r = 0; r < F::kTm; ++r) {
#pragma unroll
        for (int cc = 0; cc <= r; ++cc) {
          const float kx = kj[cc] * decay(gi[r], gj[cc]);
          fb[r][cc] = fmaf(ki[r], kx, fb[r][cc]);
          fp[r][cc] = fmaf(qi[r], kx, fp[r][cc]);
        }
      }
    }
    __syncthreads();  // the half's k and q are read raw no more
    // Kd = d .* k to the workspace (the state passes' k), then q -> scale Gamma .* q and k -> beta Gamma .* k
    // in place (each element by one thread).
    for (int e = tid; e < kC * kHalfKey; e += kThreadsChunk) {
      const int i = e / kHalfKey, col = e % kHalfKey;
      const float g2 = s.g[i][col], gam = exp2f(g2), k = s.k[i][e0 + col];
      kd[i * kKey + e0 + col] = k * exp2f(s.g[kC - 1][col] - g2);
      s.q[i][e0 + col] *= c.scale * gam;
      s.k[i][e0 + col] = s.beta[i] * gam * k;
    }
  }
  __syncthreads();  // G is read no more: A goes over it
  float* bmat = p.ws.bmat + ch * kC * kC;
#pragma unroll
  for (int r = 0; r < F::kTm; ++r) {
#pragma unroll
    for (int cc = 0; cc < F::kTn; ++cc) {
      const int i = F::row(r), jj = F::col(cc);
      const float b = cc <= r && i > jj ? fb[r][cc] : 0.0f;
      s.a[i][jj] = s.beta[i] * b;
      bmat[i * kC + jj] = b;
      s.p[i][jj] = cc <= r && jj <= i ? c.scale * fp[r][cc] : 0.0f;
    }
  }
  float* u = p.ws.vnew + ch * kC * value_pad;
  float* dvl = p.ws.pdo + ch * kC * value_pad;
  float* qdo = p.ws.dh + ch * kKey * value_pad;  // scale (Gamma .* Q)^T dO until state_bwd puts dh there
  for (int slice = 0; slice < p.slices; ++slice) {
    const int col0 = slice * kSlice;
    __syncthreads();  // the scaled q is complete; the previous slice's GEMMs are done with y
    load_token_tile<kSlice, kThreadsChunk>(&s.y[0][0], kLdSlice, p, p.dout, place.token0, place.rows, j, col0, nullptr);
    __syncthreads();
    gemm<kC, kSlice, kC, kThreadsChunk>([&](int i, int m) { return s.p[m][i]; }, [&](int m, int jj) { return s.y[m][jj]; },
                                        [&](int i, int jj, float v) { dvl[i * value_pad + col0 + jj] = v; });
    gemm_tc<kKey, kSlice, kC>([&](int e, int m) { return s.q[m][e]; }, [&](int m, int jj) { return s.y[m][jj]; },
                              [&](int e, int jj, float v) { qdo[e * value_pad + col0 + jj] = v; });
  }
  __syncthreads();  // A is complete, and q is no longer read (Tinv goes over it)
  invert_unit_lower(s.a, s.t);
  __syncthreads();
  float* tinv = p.ws.tinv + ch * kC * kC;
  for (int e = tid; e < kC * kC; e += kThreadsChunk) tinv[e] = s.t[e / kC][e % kC];
  float* w = p.ws.w + ch * kC * kKey;
  gemm_tc<kC, kKey, kC>([&](int i, int m) { return s.t[i][m]; }, [&](int m, int e) { return s.k[m][e]; },
                        [&](int i, int e, float v) { w[i * kKey + e] = v; });
  for (int slice = 0; slice < p.slices; ++slice) {  // beta v goes over P
    const int col0 = slice * kSlice;
    __syncthreads();
    load_token_tile<kSlice, kThreadsChunk>(&s.x[0][0], kLdSlice, p, c.v, place.token0, place.rows, j, col0, s.beta);
    __syncthreads();
    gemm_tc<kC, kSlice, kC>([&](int i, int m) { return s.t[i][m]; }, [&](int m, int jj) { return s.x[m][jj]; },
                            [&](int i, int jj, float v) { u[i * value_pad + col0 + jj] = v; });
  }
}

// ---- chunk_grad ----------------------------------------------------------------------------------------

struct alignas(16) KdaGradSliceTiles {
  float s0[kKey][kLdGrad];
  float dh[kKey][kLdGrad];
  float u[kC][kLdGrad];
  float du[kC][kLdGrad];
  float o[kC][kLdGrad];   // dout
  float r[kC][kLdGrad];   // v -> X1 = -beta Y
  float y[kC][kLdGrad];   // Y = Tinv^T dU
  float ks[kC][kLdGrad];  // Kg S0
};
struct alignas(16) KdaGradClosingTiles {
  float q[kC][kLdKey];  // q, then dG
  float bm[kC][kLdC];   // B (chunk_prep)
  float mdiag[kC];      // M's diagonal (its terms cancel in dG: added to dq and dk only)
};
static_assert(sizeof(KdaGradClosingTiles) <= sizeof(KdaGradSliceTiles), "closing tiles must fit the slice tiles");

struct alignas(16) KdaGradShared {
  float k[kC][kLdKey];
  float g[kC][kLdKey];   // G, log2 units
  float t[kC][kLdC];     // Tinv
  float dou[kC][kLdC];   // dO U^T, then M
  float yu[kC][kLdC];    // Y U^T, then E
  union {
    KdaGradSliceTiles slice;
    KdaGradClosingTiles closing;
  };
  float beta[kC], dbeta[kC];
  float dhs0[2][kKey];   // diag(dh S0^T) over each half of a value step's columns
  float colsum[4][kKey]; // sum over each row tile of k d .* (U dh^T)
};
static_assert(sizeof(KdaGradShared) == kda_backward_grad_shared_bytes(), "linear_backward_plan.h's size of chunk_grad");

// 8 warps, one CTA per SM (215,552 bytes of shared memory). Per value step of 32 columns: Y = Tinv^T dU
// and Kg S0, the row pass (R, dbeta, dv, X1 = -beta Y), dO U^T and Y U^T, and three 64 x 128
// accumulations in registers: dO S0^T (dq), X1 S0^T and U dh^T (dk). Then the closing: the accumulators
// scaled by gam, d per key, the decayed products with M and E, dG, its reverse cumulative sum.
__global__ void __launch_bounds__(kThreadsChunk) kda_chunk_grad_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  extern __shared__ __align__(16) unsigned char smem[];
  KdaGradShared& s = *reinterpret_cast<KdaGradShared*>(smem);
  const std::int64_t slot = blockIdx.x;
  const int j = blockIdx.y, h = j / c.group;
  const SlotPlace place = locate(p, slot);
  if (place.rows == 0) return;
  const std::int64_t ch = chunk_head(p, slot, j);
  const int value_pad = p.slices * kSlice;
  const int tid = threadIdx.x;
  KdaGradSliceTiles& st = s.slice;
  const int value_steps = (c.value_dim + kGradSlice - 1) / kGradSlice;
  load_key_rows<kThreadsChunk>(&s.k[0][0], p.ws.kn, p, place.token0, place.rows, h);
  copy_rows_async<kC, kKey, kThreadsChunk>(&s.g[0][0], kLdKey, p.ws.gc + ch * kC * kKey, kKey, kC);
  copy_rows_async<kC, kC, kThreadsChunk>(&s.t[0][0], kLdC, p.ws.tinv + ch * kC * kC, kC, kC);
  cp_async_commit();
  if (tid < kC) s.beta[tid] = tid < place.rows ? p.ws.beta[(place.token0 + tid) * c.heads_v + j] : 0.0f;
  const int row = tid / 4, quarter = tid % 4;  // the row pass: 4 threads a row, 8 columns each
  const int key = tid % kKey, key_half = tid / kKey;  // diag(dh S0^T): a key and half of the step's columns
  float dbeta_part = 0.0f, dhs0_part = 0.0f;
  using KeyTile = MmaTile<kC, kKey>;
  KeyTile accq, acc1, acc2;  // dO S0^T, X1 S0^T, U dh^T
  accq.zero();
  acc1.zero();
  acc2.zero();
  for (int step = 0; step < value_steps; ++step) {
    const int col0 = step * kGradSlice;
    __syncthreads();  // the previous step's products are done with the tiles
    const std::int64_t rows_at = ch * kC * value_pad + col0, state_at = ch * kKey * value_pad + col0;
    copy_rows_async<kKey, kGradSlice, kThreadsChunk>(&st.s0[0][0], kLdGrad, p.ws.s0 + state_at, value_pad, kKey);
    copy_rows_async<kKey, kGradSlice, kThreadsChunk>(&st.dh[0][0], kLdGrad, p.ws.dh + state_at, value_pad, kKey);
    copy_rows_async<kC, kGradSlice, kThreadsChunk>(&st.u[0][0], kLdGrad, p.ws.vnew + rows_at, value_pad, kC);
    copy_rows_async<kC, kGradSlice, kThreadsChunk>(&st.du[0][0], kLdGrad, p.ws.dvnew + rows_at, value_pad, kC);
    cp_async_commit();
    load_token_tile<kGradSlice, kThreadsChunk>(&st.r[0][0], kLdGrad, p, c.v, place.token0, place.rows, j, col0, nullptr);
    load_token_tile<kGradSlice, kThreadsChunk>(&st.o[0][0], kLdGrad, p, p.dout, place.token0, place.rows, j, col0,
                                               nullptr);
    cp_async_wait_all();
    __syncthreads();
    gemm_tc<kC, kGradSlice, kC>([&](int i, int m) { return s.t[m][i]; }, [&](int m, int jj) { return st.du[m][jj]; },
                                [&](int i, int jj, float v) { st.y[i][jj] = v; });
    gemm_tc<kC, kGradSlice, kKey>([&](int i, int m) { return s.k[i][m] * exp2f(s.g[i][m]); },
                                  [&](int m, int jj) { return st.s0[m][jj]; },
                                  [&](int i, int jj, float v) { st.ks[i][jj] = v; });
#pragma unroll
    for (int cc = 0; cc < kGradSlice / 2; ++cc) {
      const int col = key_half * (kGradSlice / 2) + cc;
      dhs0_part = fmaf(st.dh[key][col], st.s0[key][col], dhs0_part);
    }
    __syncthreads();
    {  // R = V - Kg S0; dbeta += Y . R; dv = beta Y; X1 = -beta Y into r
      const float beta = s.beta[row];
      const std::int64_t token = place.token0 + row;
#pragma unroll
      for (int q8 = 0; q8 < kGradSlice / 4; ++q8) {
        const int col = quarter * (kGradSlice / 4) + q8, column = col0 + col;
        const float y = st.y[row][col];
        dbeta_part = fmaf(y, st.r[row][col] - st.ks[row][col], dbeta_part);
        st.r[row][col] = -beta * y;
        if (row < place.rows && column < c.value_dim) {
          store_element(p.dv.data,
                        token_offset(p, token, p.dv.batch_stride, p.dv.token_stride) + j * p.dv.head_stride + column,
                        c.io_element, beta * y);
        }
      }
    }
    const bool first = step == 0;
    gemm_tc<kC, kC, kGradSlice>([&](int i, int m) { return st.o[i][m]; }, [&](int m, int jj) { return st.u[jj][m]; },
                                [&](int i, int jj, float v) { s.dou[i][jj] = first ? v : s.dou[i][jj] + v; });
    gemm_tc<kC, kC, kGradSlice>([&](int i, int m) { return st.y[i][m]; }, [&](int m, int jj) { return st.u[jj][m]; },
                                [&](int i, int jj, float v) { s.yu[i][jj] = first ? v : s.yu[i][jj] + v; });
    mma_tc<kGradSlice>(accq, [&](int i, int m) { return st.o[i][m]; }, [&](int m, int e) { return st.s0[e][m]; });
    mma_tc<kGradSlice>(acc2, [&](int i, int m) { return st.u[i][m]; }, [&](int m, int e) { return st.dh[e][m]; });
    __syncthreads();  // X1 is complete
    mma_tc<kGradSlice>(acc1, [&](int i, int m) { return st.r[i][m]; }, [&](int m, int e) { return st.s0[e][m]; });
  }
  if (value_steps == 0) {  // V = 0: no value columns, every product over them is zero
    for (int e = tid; e < kC * kLdC; e += kThreadsChunk) {
      (&s.dou[0][0])[e] = 0.0f;
      (&s.yu[0][0])[e] = 0.0f;
    }
  }
  dbeta_part += __shfl_xor_sync(0xffffffffu, dbeta_part, 1);
  dbeta_part += __shfl_xor_sync(0xffffffffu, dbeta_part, 2);
  __syncthreads();  // the slice tiles are free; the closing's go over them
  if (quarter == 0) s.dbeta[row] = dbeta_part;
  s.dhs0[key_half][key] = dhs0_part;
  KdaGradClosingTiles& cl = s.closing;
  load_key_rows<kThreadsChunk>(&cl.q[0][0], p.ws.qn, p, place.token0, place.rows, h);
  copy_rows_async<kC, kC, kThreadsChunk>(&cl.bm[0][0], kLdC, p.ws.bmat + ch * kC * kC, kC, kC);
  cp_async_commit();
  // M = scale dO U^T (j < i) into dou and its diagonal into mdiag, E = -beta_i Y U^T (i > j) into yu;
  // dbeta_i += sum_j dA_ij B_ij (after the wait). M's diagonal reaches dq_i as M_ii k_i and dk_i as
  // M_ii q_i, and dG_i as q_i .* M_ii k_i - k_i .* M_ii q_i = 0: kept out of dG, whose rounding would
  // otherwise leave ~1e-7 where the reference is exactly 0 (T = 1 without an initial state: the
  // relative rms check of Sm80_kda_*_T1 failed with 5.4e-8 against 0 on the H100, s14 call 1).
  for (int e = tid; e < kC * kC; e += kThreadsChunk) {
    const int i = e / kC, jj = e % kC;
    if (jj == i) cl.mdiag[i] = c.scale * s.dou[i][i];
    s.dou[i][jj] = jj < i ? c.scale * s.dou[i][jj] : 0.0f;
    s.yu[i][jj] = i > jj ? -s.yu[i][jj] : 0.0f;  // dA for now
  }
  cp_async_wait_all();
  __syncthreads();
  if (tid < kC) {
    float sum = 0.0f;
    for (int m = 0; m < kC; ++m) sum = fmaf(s.yu[tid][m], cl.bm[tid][m], sum);
    s.dbeta[tid] += sum;
  }
  __syncthreads();
  for (int e = tid; e < kC * kC; e += kThreadsChunk) s.yu[e / kC][e % kC] *= s.beta[e / kC];
  // The accumulators scaled per element: dq part = scale gam .* dO S0^T, gam .* X1 S0^T, d .* U dh^T; the
  // column sums of k d .* (U dh^T) over the thread's rows, then over the 8 lanes of a column (lane / 4).
  const int lane = tid % 32, warp = tid / 32, row_tile = warp % KeyTile::kRowTiles;
  const int r0 = KeyTile::row(0);
#pragma unroll
  for (int t = 0; t < KeyTile::kTiles; ++t) {
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const int col = KeyTile::col(t, e2);
      const float gc = s.g[kC - 1][col];
      float part = 0.0f;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int i = r0 + 8 * rr, e = 2 * rr + e2;
        const float g2 = s.g[i][col], gam = exp2f(g2);
        accq.c[t][e] *= c.scale * gam;
        acc1.c[t][e] *= gam;
        acc2.c[t][e] *= exp2f(gc - g2);
        part = fmaf(s.k[i][col], acc2.c[t][e], part);
      }
      part += __shfl_xor_sync(0xffffffffu, part, 4);
      part += __shfl_xor_sync(0xffffffffu, part, 8);
      part += __shfl_xor_sync(0xffffffffu, part, 16);
      if (lane < 4) s.colsum[row_tile][col] = part;
    }
  }
  __syncthreads();  // E is complete
  // The decayed products in 16-row blocks (the KDA forward prep's split): G falls along the chunk, so for
  // i >= r > j, exp(G_i - G_j) = exp(G_i - G_r) exp(G_r - G_j) with both factors <= 1, and an off-diagonal
  // block becomes a plain product of operands scaled by exp(G_r - G) on tensor cores (bf16 pairs, as
  // mma_tc), its result scaled by the other factor per element; the diagonal 16 x 16 blocks stay exact on
  // CUDA cores. Row products (warp's row block I, reference r = 16 I, columns j < r off the diagonal):
  // accq += sum_j M_ij k_j .* exp(G_i - G_j), acc1 += sum_j E_ij k_j .* exp(G_i - G_j). Column products
  // (rows j of block I, reference r = 16 (I + 1), rows i >= r off the diagonal):
  // acc2 += sum_i (M_ij q_i + E_ij k_i) .* exp(G_i - G_j). Row block I takes I blocks of 16 in the first and
  // 3 - I in the second, so every warp does three; per chunk and head ~49 K exp2 off the diagonal and
  // ~262 K on it, where all ~655 K were on CUDA cores (7cbfd62).
  const int lane_g = lane / 4, n_base = KeyTile::col(0, 0) - 2 * (lane % 4);
  const int first_row = 16 * row_tile, last = first_row + 15;
  if (row_tile > 0) {
    const int ref = first_row;
#pragma unroll
    for (int t = 0; t < KeyTile::kTiles; ++t) {
      float pq[4] = {0.0f, 0.0f, 0.0f, 0.0f}, p1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      block_products<true>(
          pq, p1, first_row, n_base + 8 * t + lane_g, 0, ref, [&](int i, int m) { return s.dou[i][m]; },
          [&](int i, int m) { return s.yu[i][m]; },
          [&](int m, int n) {
            const float x = s.k[m][n] * decay(s.g[ref][n], s.g[m][n]);
            return make_float2(x, x);
          });
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = KeyTile::col(t, e);
        const float f = decay(s.g[KeyTile::row(e)][col], s.g[ref][col]);
        accq.c[t][e] = fmaf(f, pq[e], accq.c[t][e]);
        acc1.c[t][e] = fmaf(f, p1[e], acc1.c[t][e]);
      }
    }
  }
  if (row_tile < KeyTile::kRowTiles - 1) {
    const int ref = first_row + 16;
#pragma unroll
    for (int t = 0; t < KeyTile::kTiles; ++t) {
      float pm[4] = {0.0f, 0.0f, 0.0f, 0.0f}, pe[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      block_products<false>(
          pm, pe, first_row, n_base + 8 * t + lane_g, ref, kC, [&](int jj, int i) { return s.dou[i][jj]; },
          [&](int jj, int i) { return s.yu[i][jj]; },
          [&](int i, int n) {
            const float f = decay(s.g[i][n], s.g[ref][n]);
            return make_float2(cl.q[i][n] * f, s.k[i][n] * f);
          });
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = KeyTile::col(t, e);
        acc2.c[t][e] = fmaf(decay(s.g[ref][col], s.g[KeyTile::row(e)][col]), pm[e] + pe[e], acc2.c[t][e]);
      }
    }
  }
  // The diagonal blocks, j <= i in the warp's row block: accq, acc1 (rows) and acc2 (columns), an exp2 per
  // (i, j, key) shared by the q and k sides; the pairs above the diagonal have zero weights.
#pragma unroll
  for (int t = 0; t < KeyTile::kTiles; ++t) {
    const int col = KeyTile::col(t, 0);
    float gi[2][2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      gi[rr][0] = s.g[r0 + 8 * rr][col];
      gi[rr][1] = s.g[r0 + 8 * rr][col + 1];
    }
    for (int jj = first_row; jj <= last; ++jj) {
      const float2 kj = *reinterpret_cast<const float2*>(&s.k[jj][col]);
      const float2 gj = *reinterpret_cast<const float2*>(&s.g[jj][col]);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float m = s.dou[r0 + 8 * rr][jj], ee = s.yu[r0 + 8 * rr][jj];
        const float k0 = kj.x * decay(gi[rr][0], gj.x), k1 = kj.y * decay(gi[rr][1], gj.y);
        accq.c[t][2 * rr] = fmaf(m, k0, accq.c[t][2 * rr]);
        accq.c[t][2 * rr + 1] = fmaf(m, k1, accq.c[t][2 * rr + 1]);
        acc1.c[t][2 * rr] = fmaf(ee, k0, acc1.c[t][2 * rr]);
        acc1.c[t][2 * rr + 1] = fmaf(ee, k1, acc1.c[t][2 * rr + 1]);
      }
    }
    for (int i = first_row; i <= last; ++i) {
      const float2 qi = *reinterpret_cast<const float2*>(&cl.q[i][col]);
      const float2 ki = *reinterpret_cast<const float2*>(&s.k[i][col]);
      const float2 g2 = *reinterpret_cast<const float2*>(&s.g[i][col]);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float m = s.dou[i][r0 + 8 * rr], ee = s.yu[i][r0 + 8 * rr];
        acc2.c[t][2 * rr] = fmaf(fmaf(m, qi.x, ee * ki.x), decay(g2.x, gi[rr][0]), acc2.c[t][2 * rr]);
        acc2.c[t][2 * rr + 1] = fmaf(fmaf(m, qi.y, ee * ki.y), decay(g2.y, gi[rr][1]), acc2.c[t][2 * rr + 1]);
      }
    }
  }
  // dq = accq + M_ii k_i, dk = acc1 + acc2 + M_ii q_i (one fp32 share each, summed over grouped heads by
  // finish_qk); dG = q .* accq + k .* (acc1 - acc2) over q's tile once every thread is done reading q.
  const std::int64_t row_stride = static_cast<std::int64_t>(c.heads_v) * kKey;
  float* dq_out = p.ws.dq + (place.token0 * c.heads_v + j) * kKey;
  float* dk_out = p.ws.dk + (place.token0 * c.heads_v + j) * kKey;
  float dg_value[KeyTile::kTiles][4];
#pragma unroll
  for (int t = 0; t < KeyTile::kTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int i = KeyTile::row(e), col = KeyTile::col(t, e);
      const float m = cl.mdiag[i];
      const float dq0 = fmaf(m, s.k[i][col], accq.c[t][e]), dq1 = fmaf(m, s.k[i][col + 1], accq.c[t][e + 1]);
      const float dk0 = fmaf(m, cl.q[i][col], acc1.c[t][e] + acc2.c[t][e]);
      const float dk1 = fmaf(m, cl.q[i][col + 1], acc1.c[t][e + 1] + acc2.c[t][e + 1]);
      dg_value[t][e] = cl.q[i][col] * accq.c[t][e] + s.k[i][col] * (acc1.c[t][e] - acc2.c[t][e]);
      dg_value[t][e + 1] = cl.q[i][col + 1] * accq.c[t][e + 1] + s.k[i][col + 1] * (acc1.c[t][e + 1] - acc2.c[t][e + 1]);
      if (i < place.rows) {
        *reinterpret_cast<float2*>(dq_out + i * row_stride + col) = make_float2(dq0, dq1);
        *reinterpret_cast<float2*>(dk_out + i * row_stride + col) = make_float2(dk0, dk1);
      }
    }
  }
  __syncthreads();  // every thread is done reading q
#pragma unroll
  for (int t = 0; t < KeyTile::kTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) cl.q[KeyTile::row(e)][KeyTile::col(t, e)] = dg_value[t][e];
  }
  __syncthreads();
  if (tid < kKey) {  // G_C's terms on the last valid row, then dg = the reverse cumulative sum per key
    float (*dg)[kLdKey] = cl.q;
    const float gam_c = exp2f(s.g[kC - 1][tid]);
    const float total = ((s.colsum[0][tid] + s.colsum[1][tid]) + (s.colsum[2][tid] + s.colsum[3][tid])) +
                        gam_c * (s.dhs0[0][tid] + s.dhs0[1][tid]);
    dg[place.rows - 1][tid] += total;
    float sum = 0.0f;
    float* out = p.ws.dg + (place.token0 * c.heads_v + j) * kKey + tid;
    for (int i = place.rows - 1; i >= 0; --i) {
      sum += dg[i][tid];
      out[i * row_stride] = sum;
    }
  }
  if (tid < place.rows) p.ws.dbeta[(place.token0 + tid) * c.heads_v + j] = s.dbeta[tid];
}

}  // namespace

cudaError_t launch_kda_backward_chunked(const LinearBackwardParams& p, cudaStream_t stream) {
  const dim3 chunks(static_cast<unsigned int>(p.ws.slots), static_cast<unsigned int>(p.common.heads_v));
  if (cudaError_t e = launch<kda_chunk_prep_kernel>(chunks, kThreadsChunk, sizeof(KdaPrepShared), p, stream);
      e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = launch_state_passes<true>(p, stream); e != cudaSuccess) return e;
  return launch<kda_chunk_grad_kernel>(chunks, kThreadsChunk, sizeof(KdaGradShared), p, stream);
}

}  // namespace attnkit::sm80
