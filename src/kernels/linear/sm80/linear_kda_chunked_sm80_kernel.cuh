// Chunk-parallel forward of KDA (per-key decay, semantics.md section 5) on sm80+ tensor cores (mma.sync
// m16n8k16 on bf16/fp16 operands, fp32 accumulation and state), in the three kernels of the GDN forward
// (linear_gdn_chunked_sm80_kernel.cuh, whose slot map and T_beta product this file reuses). With G the
// inclusive cumulative log decay inside a 64-token chunk, a [K] vector per token, and Gamma = exp(G):
//
//   prep   (grid: every chunk slot x value head) from q, k, g, beta, v of one chunk:
//          A[t][s] = beta_t sum_i k_t[i] k_s[i] exp(G_t[i] - G_s[i])   (s < t)
//          P[t][s] = scale sum_i q_t[i] k_s[i] exp(G_t[i] - G_s[i])    (s <= t)
//          T_beta = (I + A)^-1 diag(beta) (fp32 substitution), and writes w_neg = -T_beta (k Gamma),
//          u = T_beta v (fp32), the update's k exp(G_last - G) (a pair), scale q Gamma, P (a pair) and
//          exp(G_last) [K].
//   state  (grid: sequence x value head x slice of 16 or 32 value columns) walks the chunks in order with
//          its fp32 state slice in accumulator registers: v_new = u + w_neg S,
//          S <- diag(exp(G_last)) S + (k exp(G_last - G))^T v_new; writes S at each chunk's start and v_new.
//   output (grid: every chunk slot x value head x 128 value columns) O = (scale q Gamma) S_chunk + P v_new.
//
// The per-key decays inside A and P are kept finite the way FLA's chunk_kda does it (sub-chunks of 16
// tokens): a diagonal 16 x 16 block is summed on CUDA cores with a running product of per-token decays
// (every factor <= 1, exact for any decay); an off-diagonal block (rows in sub-chunk ib, columns in an
// earlier sub-chunk jb) goes through the tensor cores split at the reference row r = 16 ib:
// exp(G_t - G_s) = exp(G_t - G_r) exp(G_r - G_s) with both factors <= 1 (t >= r > s). Every other
// exponential (Gamma, exp(G_last - G), exp(G_last)) has a non-positive argument by construction.
// tests/python/test_kda_chunk_algebra.py checks this algebra in float64 against the token recurrence.
//
// Precision, as in the fused walk this replaces (tested on the H100, 2026-11-26): T_beta, P, v_new, the
// update's k exp(G_last - G) and the decayed operands of the off-diagonal A and P blocks enter the
// tensor cores as a pair hi + lo of Element values (hi = round(x), lo = round(x - hi), 16 significant
// bits for bf16), each product as two or three MMAs; single bf16 operands there missed the 0.005 bound of
// section 6 for weak decays over long sequences (out rms up to 6.8e-3 at gates x0.01 .. x0.1). The S
// copy, w_neg, k Gamma and q Gamma stay single Element values; the L2 factors of q and k are applied in
// fp32 (the rows are never rewritten in Element).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "device/kernel_attributes.cuh"
#include "kernels/linear/sm80/linear_chunk_output_sm80.cuh"
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_kernel.cuh"
#include "kernels/linear/sm80/linear_kda_plan.h"
#include "kernels/linear/sm80/linear_mma_sm80.cuh"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"

namespace attnkit::sm80::linear_detail {

// Two packed Element values as floats (the low half first).
template <typename Element>
__device__ __forceinline__ float2 unpack_pair(unsigned packed) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&packed));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&packed));
  }
}

template <typename Element>
__device__ __forceinline__ float2 load_pair(const Element* at) {
  return unpack_pair<Element>(*reinterpret_cast<const unsigned*>(at));
}

// ---- prep ----------------------------------------------------------------------------------------------

// 8 warps. Phases: loads (q, k by cp.async; the per-key gates through the fused gate form) -> L2 factors
// and G -> off-diagonal A / P blocks (warps 0-5, one block pair each, in registers) -> diagonal blocks
// (all threads, two sub-chunks at a time) -> the solve (threads 0-63) beside the gated operands (the
// rest) -> w_neg and u (warp w: T_beta rows 16 (w % 4) .., 64 columns (w / 4) ..). P goes to the workspace
// from the registers that hold it. ~102 KB of shared memory: 2 CTAs per SM.
constexpr int kKdaPrepThreads = 256;
constexpr int kKdaValuePiece = 128;

template <typename Element>
struct KdaPrepShared {
  static constexpr int kLdKey = kKeyPad + 8;    // rows 272 bytes apart: ldmatrix rows in distinct banks
  static constexpr int kLdChunk = kChunk + 8;   // 144 bytes
  static constexpr int kLdChunkF = kChunk + 8;  // fp32 A as large as T_beta's pair
  static constexpr int kHalf = kChunk / 2;      // tokens whose decays the diagonal blocks hold at once
  union {
    Element q[kChunk * kLdKey];  // q as it came
    Element v[kChunk * kLdKey];  // then a piece of v
  };
  alignas(128) Element k[kChunk * kLdKey];
  alignas(128) float gate[kChunk * kKeyPad];  // G
  union {
    float decay[kHalf * kKeyPad];  // exp(G_t - G_{t-1}) of half the chunk, for the diagonal blocks
    Element x[kChunk * kLdKey];    // then k Gamma, w_neg's operand
  };
  union {
    float a[kChunk * kLdChunkF];            // A (fp32), until the solve has read it
    Element t_beta[2 * kChunk * kLdChunk];  // then T_beta: hi part [64][kLdChunk], then the lo part
  };
  alignas(16) float beta[kChunk];
  alignas(16) float q_factor[kChunk];  // L2 factors (1 without the fused norm), applied in fp32
  alignas(16) float k_factor[kChunk];
  static_assert(sizeof(float) * kLdChunkF == 2 * sizeof(Element) * kLdChunk, "T_beta's pair lies exactly over A");
  static_assert(kKdaValuePiece == kKeyPad, "a v piece lies exactly over q");
};
static_assert(sizeof(KdaPrepShared<__nv_bfloat16>) == kda_prep_shared_bytes(), "linear_kda_plan.h's size of prep");

template <typename Element>
__global__ void __launch_bounds__(kKdaPrepThreads, 2) linear_kda_prep_kernel(LinearForwardParams params) {
  using Shared = KdaPrepShared<Element>;
  using Convert = ElementConvert<Element>;
  constexpr int kThreads = kKdaPrepThreads;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdChunk = Shared::kLdChunk;
  constexpr int kLdChunkF = Shared::kLdChunkF;
  constexpr int kHalf = Shared::kHalf;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;

  SlotPlace place;
  const std::int64_t slot = blockIdx.x;
  if (!locate_slot(params, slot, &place)) return;
  const int hv = blockIdx.y;
  const int h = hv / c.group;
  const std::int64_t t0 = place.bos + place.chunk * kChunk;
  const int rows = static_cast<int>(place.length - place.chunk * kChunk < kChunk ? place.length - place.chunk * kChunk : kChunk);
  const std::int64_t sh = slot * c.heads_v + hv;

  const Element* q_base = static_cast<const Element*>(c.q.data) + place.batch * c.q.batch_stride + t0 * c.q.token_stride + h * c.q.head_stride;
  const Element* k_base = static_cast<const Element*>(c.k.data) + place.batch * c.k.batch_stride + t0 * c.k.token_stride + h * c.k.head_stride;
  const Element* v_base = static_cast<const Element*>(c.v.data) + place.batch * c.v.batch_stride + t0 * c.v.token_stride + hv * c.v.head_stride;
  load_rows<Element, kKeyPad, kThreads>(sm.q, kLdKey, q_base, c.q.token_stride, rows, 0, c.key_dim, params.vectorized_io);
  load_rows<Element, kKeyPad, kThreads>(sm.k, kLdKey, k_base, c.k.token_stride, rows, 0, c.key_dim, params.vectorized_io);
  cp_async_commit();
  {
    // Gates 8 at a time, all loads of a batch before their stores (the loads stay in flight together).
    // Tokens past the chunk's end and channels past K decay by 0 (G stays flat), so G_last = G_{rows - 1}.
    const std::int64_t g_base = place.batch * c.g.batch_stride + t0 * c.g.token_stride;
    constexpr int kBatch = 8;
    for (int base = 0; base < kChunk * kKeyPad; base += kBatch * kThreads) {
      float raw[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int e = base + tid + u * kThreads;
        const int t = e / kKeyPad;
        const int i = e % kKeyPad;
        raw[u] = (t < rows && i < c.key_dim) ? gate_at(c, g_base + t * c.g.token_stride, hv, i) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) sm.gate[base + tid + u * kThreads] = raw[u];
    }
  }
  if (tid < kChunk) {
    const std::int64_t offset = place.batch * c.beta.batch_stride + (t0 + tid) * c.beta.token_stride + hv * c.beta.head_stride;
    sm.beta[tid] = tid < rows ? beta_value(c, load_element(c.beta.data, offset, c.beta_element)) : 0.0f;
  }
  cp_async_wait_all();
  __syncthreads();
  l2_row_factors<Element, kThreads>(sm.q, kLdKey, c.l2norm_qk, sm.q_factor);
  l2_row_factors<Element, kThreads>(sm.k, kLdKey, c.l2norm_qk, sm.k_factor);
  if (tid < kKeyPad) {
    float running = 0.0f;
#pragma unroll 16
    for (int t = 0; t < kChunk; ++t) {
      running += sm.gate[t * kKeyPad + tid];
      sm.gate[t * kKeyPad + tid] = running;
    }
  }
  __syncthreads();

  const float scale = c.scale;
  Element* p_hi_ws = static_cast<Element*>(ws.p) + sh * kChunk * kChunk;
  Element* p_lo_ws = static_cast<Element*>(ws.p_lo) + sh * kChunk * kChunk;

  // Off-diagonal blocks: warp w < 6 takes the block pair (ib, jb) = (1, 0), (2, 0), (2, 1), (3, 0), (3, 1),
  // (3, 2) of A and P, both from the same right operand k_s exp(G_r - G_s); the left operands k_t and
  // q_t times exp(G_t - G_r) and the right one are built in registers at their fragment positions and
  // split there into hi + lo (three MMAs a product: hi hi, lo hi, hi lo).
  if (warp < 6) {
    const int ib = warp < 1 ? 1 : (warp < 3 ? 2 : 3);
    const int jb = warp - ib * (ib - 1) / 2;
    const int ref = ib * kTile;
    const int ta = ref + g;  // the thread's rows: ta and ta + 8
    float acc_a[2][4] = {};
    float acc_p[2][4] = {};
#pragma unroll 2
    for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
      unsigned ka_hi[4], ka_lo[4], qa_hi[4], qa_lo[4];
#pragma unroll
      for (int part = 0; part < 4; ++part) {  // a0 .. a3: rows ta / ta + 8, columns 2t / 2t + 8
        const int t = ta + (part & 1) * 8;
        const int col = kk * kTile + t2 + (part >> 1) * 8;
        const float2 gt = *reinterpret_cast<const float2*>(&sm.gate[t * kKeyPad + col]);
        const float2 gr = *reinterpret_cast<const float2*>(&sm.gate[ref * kKeyPad + col]);
        const float e0 = __expf(gt.x - gr.x);
        const float e1 = __expf(gt.y - gr.y);
        const float2 kv = load_pair(sm.k + t * kLdKey + col);
        const float2 qv = load_pair(sm.q + t * kLdKey + col);
        split_pair<Element>(kv.x * e0, kv.y * e1, &ka_hi[part], &ka_lo[part]);
        split_pair<Element>(qv.x * e0, qv.y * e1, &qa_hi[part], &qa_lo[part]);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int s = jb * kTile + nt * 8 + g;
        unsigned b_hi[2], b_lo[2];
#pragma unroll
        for (int part = 0; part < 2; ++part) {  // b0, b1: k rows (channels) 2t / 2t + 8, column s
          const int col = kk * kTile + t2 + part * 8;
          const float2 gs = *reinterpret_cast<const float2*>(&sm.gate[s * kKeyPad + col]);
          const float2 gr = *reinterpret_cast<const float2*>(&sm.gate[ref * kKeyPad + col]);
          const float2 kv = load_pair(sm.k + s * kLdKey + col);
          split_pair<Element>(kv.x * __expf(gr.x - gs.x), kv.y * __expf(gr.y - gs.y), &b_hi[part], &b_lo[part]);
        }
        mma_16x8x16<Element>(acc_a[nt], ka_hi, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_a[nt], ka_lo, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_a[nt], ka_hi, b_lo[0], b_lo[1]);
        mma_16x8x16<Element>(acc_p[nt], qa_hi, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_p[nt], qa_lo, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_p[nt], qa_hi, b_lo[0], b_lo[1]);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int s = jb * kTile + nt * 8 + t2;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int t = ta + half * 8;
        const float fa = sm.beta[t] * sm.k_factor[t];
        const float fp = scale * sm.q_factor[t];
        float2 a_val, p_val;
        a_val.x = fa * sm.k_factor[s] * acc_a[nt][half * 2];
        a_val.y = fa * sm.k_factor[s + 1] * acc_a[nt][half * 2 + 1];
        p_val.x = fp * sm.k_factor[s] * acc_p[nt][half * 2];
        p_val.y = fp * sm.k_factor[s + 1] * acc_p[nt][half * 2 + 1];
        *reinterpret_cast<float2*>(&sm.a[t * kLdChunkF + s]) = a_val;
        split_pair<Element>(p_val.x, p_val.y, reinterpret_cast<unsigned*>(p_hi_ws + t * kChunk + s),
                            reinterpret_cast<unsigned*>(p_lo_ws + t * kChunk + s));
      }
    }
  }

  // Diagonal blocks, two at a time (the decays of 32 tokens in shared memory): thread (block, s, part)
  // sums channels i = 8 ii + part of A[t][s] and P[t][s] for the block's 16 rows t with a running product
  // of per-token decays (exp(G_t - G_s) for t > s), then the 8 parts are summed by shuffles.
#pragma unroll 1
  for (int half = 0; half < 2; ++half) {
    for (int e = tid; e < kHalf * kKeyPad; e += kThreads) {
      const int t = half * kHalf + e / kKeyPad;
      const int i = e % kKeyPad;
      sm.decay[e] = t % kTile == 0 ? 1.0f : __expf(sm.gate[t * kKeyPad + i] - sm.gate[(t - 1) * kKeyPad + i]);
    }
    __syncthreads();  // the decays are visible (and, at half 0, the off-diagonal blocks are written)
    const int block = half * 2 + (tid >> 7);
    const int s = (tid >> 3) & (kTile - 1);
    const int part = tid & 7;
    const int row0 = block * kTile;
    const float* decay = sm.decay + (row0 - half * kHalf) * kKeyPad;
    float sum_a[kTile], sum_p[kTile];
#pragma unroll
    for (int t = 0; t < kTile; ++t) sum_a[t] = sum_p[t] = 0.0f;
#pragma unroll 2
    for (int ii = 0; ii < kKeyPad / 8; ++ii) {
      const int i = ii * 8 + part;
      const float ks = Convert::to(sm.k[(row0 + s) * kLdKey + i]);
      float e = 1.0f;
#pragma unroll
      for (int t = 0; t < kTile; ++t) {
        e = t <= s ? 1.0f : e * decay[t * kKeyPad + i];
        const float ke = ks * e;
        sum_a[t] += Convert::to(sm.k[(row0 + t) * kLdKey + i]) * ke;
        sum_p[t] += Convert::to(sm.q[(row0 + t) * kLdKey + i]) * ke;
      }
    }
#pragma unroll
    for (int t = 0; t < kTile; ++t) {
#pragma unroll
      for (int offset = 1; offset < 8; offset <<= 1) {
        sum_a[t] += __shfl_xor_sync(0xffffffffu, sum_a[t], offset);
        sum_p[t] += __shfl_xor_sync(0xffffffffu, sum_p[t], offset);
      }
      if ((t & 7) == part) {
        const int row = row0 + t;
        const int col = row0 + s;
        sm.a[row * kLdChunkF + col] = col < row ? sm.beta[row] * sm.k_factor[row] * sm.k_factor[col] * sum_a[t] : 0.0f;
        const float p_val = col <= row ? scale * sm.q_factor[row] * sm.k_factor[col] * sum_p[t] : 0.0f;
        split_element(p_val, p_hi_ws + row * kChunk + col, p_lo_ws + row * kChunk + col);
      }
    }
    __syncthreads();  // the decays are read: the next half overwrites them (then x lies over them)
  }

  // Solve (threads 0-63, a column of T each) beside the gated operands (threads 64-255): k Gamma to
  // shared memory, the update's k exp(G_last - G) as a pair, scale q Gamma and exp(G_last) to the workspace.
  float x[kChunk];
  if (tid < kChunk) {
    // Column j of T = (I + A)^-1 by forward substitution; A is strictly lower, so rows above j are 0.
    const int j = tid;
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < i; ++s) sum[s & 3] += sm.a[i * kLdChunkF + s] * x[s];
      x[i] = i == j ? 1.0f : -((sum[0] + sum[1]) + (sum[2] + sum[3]));
    }
  } else {
    const int id = tid - kChunk;
    Element* key_hi = static_cast<Element*>(ws.key) + sh * kChunk * kKeyPad;
    Element* key_lo = static_cast<Element*>(ws.key_lo) + sh * kChunk * kKeyPad;
    Element* query = static_cast<Element*>(ws.query) + sh * kChunk * kKeyPad;
    const float* g_last = sm.gate + (kChunk - 1) * kKeyPad;
    // 8 channels per step: 16-byte stores.
    for (int e = id; e < kChunk * kKeyPad / 8; e += kThreads - kChunk) {
      const int t = e / (kKeyPad / 8);
      const int i0 = (e % (kKeyPad / 8)) * 8;
      const float fk = sm.k_factor[t];
      const float fq = scale * sm.q_factor[t];
      alignas(16) Element xs[8], hi[8], lo[8], qs[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const float gt = sm.gate[t * kKeyPad + i0 + u];
        const float gamma = __expf(gt);
        const float kv = Convert::to(sm.k[t * kLdKey + i0 + u]) * fk;
        xs[u] = Convert::from(kv * gamma);
        split_element(kv * __expf(g_last[i0 + u] - gt), &hi[u], &lo[u]);
        qs[u] = Convert::from(fq * gamma * Convert::to(sm.q[t * kLdKey + i0 + u]));
      }
      *reinterpret_cast<uint4*>(sm.x + t * kLdKey + i0) = *reinterpret_cast<const uint4*>(xs);
      *reinterpret_cast<uint4*>(key_hi + t * kKeyPad + i0) = *reinterpret_cast<const uint4*>(hi);
      *reinterpret_cast<uint4*>(key_lo + t * kKeyPad + i0) = *reinterpret_cast<const uint4*>(lo);
      *reinterpret_cast<uint4*>(query + t * kKeyPad + i0) = *reinterpret_cast<const uint4*>(qs);
    }
    if (id < kKeyPad) ws.decay[sh * kKeyPad + id] = __expf(g_last[id]);
  }
  __syncthreads();  // A, q and k are read: their space takes T_beta and the first v piece

  Element* t_beta_lo = sm.t_beta + kChunk * kLdChunk;
  load_rows<Element, kKdaValuePiece, kThreads>(sm.v, kLdKey, v_base, c.v.token_stride, rows, 0, c.value_dim, params.vectorized_io);
  cp_async_commit();
  if (tid < kChunk) {
    const float beta_j = sm.beta[tid];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) split_element(x[i] * beta_j, &sm.t_beta[i * kLdChunk + tid], &t_beta_lo[i * kLdChunk + tid]);
  }
  __syncthreads();

  // The warp's T_beta rows as A fragments (hi and lo) for k-steps 0 .. row_tile.
  const int row_tile = warp & 3;
  const int column0 = (warp >> 2) * 64;
  const int row0 = row_tile * kTile + g;
  unsigned t_hi[4][4], t_lo[4][4];
#pragma unroll
  for (int kk = 0; kk < kChunk / kTile; ++kk) {
    if (kk > row_tile) continue;
    load_a(t_hi[kk], sm.t_beta + row_tile * kTile * kLdChunk + kk * kTile, kLdChunk);
    load_a(t_lo[kk], t_beta_lo + row_tile * kTile * kLdChunk + kk * kTile, kLdChunk);
  }

  // w_neg = -T_beta (k Gamma): the warp's 64 key channels, straight to the workspace as Element.
  {
    Element* w_neg = static_cast<Element*>(ws.w_neg) + sh * kChunk * kKeyPad;
    float acc[8][4] = {};
    t_beta_times_64_columns<Element>(acc, t_hi, t_lo, sm.x + column0, kLdKey, row_tile);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = column0 + j * 8 + t2;
      *reinterpret_cast<unsigned*>(w_neg + row0 * kKeyPad + col) = pack_pair<Element>(-acc[j][0], -acc[j][1]);
      *reinterpret_cast<unsigned*>(w_neg + (row0 + 8) * kKeyPad + col) = pack_pair<Element>(-acc[j][2], -acc[j][3]);
    }
  }

  // u = T_beta v in pieces of 128 value columns (one for V <= 128), fp32 to the workspace.
  float* u_out = ws.u + sh * kChunk * ws.value_pad;
  for (int col0 = 0; col0 < ws.value_pad; col0 += kKdaValuePiece) {
    if (col0 > 0) {
      __syncthreads();  // the previous piece is read
      load_rows<Element, kKdaValuePiece, kThreads>(sm.v, kLdKey, v_base, c.v.token_stride, rows, col0, c.value_dim,
                                                   params.vectorized_io);
      cp_async_commit();
    }
    cp_async_wait_all();
    __syncthreads();
    const int width = ws.value_pad - col0 < kKdaValuePiece ? ws.value_pad - col0 : kKdaValuePiece;
    if (column0 >= width) continue;
    float acc[8][4] = {};
    t_beta_times_64_columns<Element>(acc, t_hi, t_lo, sm.v + column0, kLdKey, row_tile);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = col0 + column0 + j * 8 + t2;
      *reinterpret_cast<float2*>(u_out + static_cast<std::int64_t>(row0) * ws.value_pad + col) = make_float2(acc[j][0], acc[j][1]);
      *reinterpret_cast<float2*>(u_out + static_cast<std::int64_t>(row0 + 8) * ws.value_pad + col) = make_float2(acc[j][2], acc[j][3]);
    }
  }
}

// ---- state ---------------------------------------------------------------------------------------------

// As GDN's state pass (a CTA per (sequence, value head, kSlice columns), warp w keeps S rows 32 (w % 4) ..
// + 31 of columns 16 (w / 4) .. + 15 in accumulators), with the per-key decay: the rows of S decay by
// exp(G_last) of their key, and the update multiplies the pair k exp(G_last - G) by the pair v_new (three
// MMAs). The extra k operand (~141 KB of shared memory with two stages at a slice of 32, ~125 KB at 16)
// leaves one CTA per SM.
template <int kSlice>
constexpr int kda_state_threads() {
  return kSlice / 16 * 128;
}

template <typename Element, int kSlice>
struct KdaStateShared {
  static constexpr int kLdKey = kKeyPad + 8;
  static constexpr int kLdSlice = kSlice + 8;  // rows 48 / 80 bytes apart: ldmatrix rows in distinct banks
  static constexpr int kLdSliceF = kSlice + 4;
  static constexpr int kStages = 2;
  alignas(128) Element w[kStages][kChunk * kLdKey];     // w_neg
  alignas(128) Element k[kStages][kChunk * kLdKey];     // k exp(G_last - G): hi part
  alignas(128) Element k_lo[kStages][kChunk * kLdKey];  // and lo part
  alignas(128) float u[kStages][kChunk * kLdSliceF];
  alignas(128) Element state_lowp[kKeyPad * kLdSlice];  // S at the chunk's start as Element
  alignas(128) Element v_new[kChunk * kLdSlice];        // hi part
  alignas(128) Element v_new_lo[kChunk * kLdSlice];     // and lo part
  alignas(16) float decay[kStages][kKeyPad];            // exp(G_last)
};
static_assert(sizeof(KdaStateShared<__nv_bfloat16, 16>) == kda_state_shared_bytes(16), "linear_kda_plan.h's size");
static_assert(sizeof(KdaStateShared<__half, 32>) == kda_state_shared_bytes(32), "linear_kda_plan.h's size");

template <typename Element, int kSlice>
__global__ void __launch_bounds__(kda_state_threads<kSlice>()) linear_kda_state_kernel(LinearForwardParams params) {
  using Shared = KdaStateShared<Element, kSlice>;
  constexpr int kThreads = kda_state_threads<kSlice>();
  constexpr int kStages = Shared::kStages;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdSlice = Shared::kLdSlice;
  constexpr int kLdSliceF = Shared::kLdSliceF;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row_block = warp & 3;        // S rows 32 row_block .., v_new tokens 16 row_block ..
  const int column0 = (warp >> 2) * 16;  // of the slice

  const int slices = (c.value_dim + kSlice - 1) / kSlice;
  const int n = blockIdx.x / slices;
  const int col0 = (blockIdx.x % slices) * kSlice;
  const int hv = blockIdx.y;
  const std::int64_t length = params.cu_seqlens == nullptr
                                  ? params.seqlen
                                  : params.cu_seqlens[(n + 1) * params.cu_seqlens_stride] - params.cu_seqlens[n * params.cu_seqlens_stride];
  const std::int64_t chunks = (length + kChunk - 1) / kChunk;
  const std::int64_t first_slot = sequence_first_slot(params, n);
  const Element* w_ws = static_cast<const Element*>(ws.w_neg);
  const Element* k_ws = static_cast<const Element*>(ws.key);
  const Element* k_lo_ws = static_cast<const Element*>(ws.key_lo);
  Element* h_ws = static_cast<Element*>(ws.h);

  // Copies chunk `chunk`'s operands into buffer `buf` (none past the last chunk) and commits a group, so
  // that every loop step commits exactly one.
  auto prefetch = [&](std::int64_t chunk, int buf) {
    if (chunk >= chunks) {
      cp_async_commit();
      return;
    }
    const std::int64_t sh = (first_slot + chunk) * c.heads_v + hv;
    const Element* w = w_ws + sh * kChunk * kKeyPad;
    const Element* k = k_ws + sh * kChunk * kKeyPad;
    const Element* k_lo = k_lo_ws + sh * kChunk * kKeyPad;
    for (int e = tid; e < kChunk * (kKeyPad / 8); e += kThreads) {
      const int t = e / (kKeyPad / 8);
      const int i = (e % (kKeyPad / 8)) * 8;
      cp_async_16(&sm.w[buf][t * kLdKey + i], w + t * kKeyPad + i);
      cp_async_16(&sm.k[buf][t * kLdKey + i], k + t * kKeyPad + i);
      cp_async_16(&sm.k_lo[buf][t * kLdKey + i], k_lo + t * kKeyPad + i);
    }
    const float* u = ws.u + sh * kChunk * ws.value_pad + col0;
    for (int e = tid; e < kChunk * (kSlice / 4); e += kThreads) {
      const int t = e / (kSlice / 4);
      const int j = (e % (kSlice / 4)) * 4;
      cp_async_16(&sm.u[buf][t * kLdSliceF + j], u + t * ws.value_pad + j);
    }
    if (tid < kKeyPad / 4) cp_async_16(&sm.decay[buf][tid * 4], ws.decay + sh * kKeyPad + tid * 4);
    cp_async_commit();
  };
  auto state_offset = [&](const LinearStateTensor& s, int i, int j) {
    return n * s.sequence_stride + hv * s.head_stride + (c.state_vk ? j * s.row_stride + i : i * s.row_stride + j);
  };

  // s[mt][nt][e]: S[32 row_block + 16 mt + g + 8 (e / 2)][column0 + 8 nt + t2 + e % 2] (C fragment layout).
  float s[2][2][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = row_block * 32 + mt * kTile + g + (e >> 1) * 8;
        const int j = col0 + column0 + nt * 8 + t2 + (e & 1);
        const bool present = params.initial_state.data != nullptr && i < c.key_dim && j < c.value_dim;
        s[mt][nt][e] = present ? params.initial_state.data[state_offset(params.initial_state, i, j)] : 0.0f;
      }
    }
  }
  // The warp's S as Element: to shared memory (the next v_new's operand) and, for chunk slot `slot` >= 0,
  // to the workspace in 16-byte pieces read back from shared memory.
  auto publish = [&](std::int64_t slot) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        Element* at = sm.state_lowp + (row_block * 32 + mt * kTile + g) * kLdSlice + column0 + nt * 8 + t2;
        *reinterpret_cast<unsigned*>(at) = pack_pair<Element>(s[mt][nt][0], s[mt][nt][1]);
        *reinterpret_cast<unsigned*>(at + 8 * kLdSlice) = pack_pair<Element>(s[mt][nt][2], s[mt][nt][3]);
      }
    }
    if (slot < 0) return;
    __syncwarp();
    Element* h = h_ws + ((slot * c.heads_v + hv) * kKeyPad + row_block * 32) * ws.value_pad + col0 + column0;
#pragma unroll
    for (int e = lane; e < 64; e += 32) {  // 32 rows x 2 pieces of 8 columns
      const int r = e >> 1;
      const int j = (e & 1) * 8;
      *reinterpret_cast<uint4*>(h + r * ws.value_pad + j) =
          *reinterpret_cast<const uint4*>(sm.state_lowp + (row_block * 32 + r) * kLdSlice + column0 + j);
    }
  };

#pragma unroll
  for (int stage = 0; stage < kStages - 1; ++stage) prefetch(stage, stage);
  publish(chunks > 0 ? first_slot : -1);

  int buf = 0;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    cp_async_wait_group<kStages - 2>();  // this chunk's group; the later ones may still be in flight
    __syncthreads();  // its operands and the Element copy of S are visible; the previous chunk's buffer is free
    prefetch(chunk + kStages - 1, buf == 0 ? kStages - 1 : buf - 1);
    const std::int64_t sh = (first_slot + chunk) * c.heads_v + hv;

    // v_new = u + w_neg S, tokens 16 row_block + g (+ 8), in two accumulator sets (even and odd k-steps).
    const int token0 = row_block * kTile + g;
    float v[2][2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int col = column0 + nt * 8 + t2;
      const float2 top = *reinterpret_cast<const float2*>(&sm.u[buf][token0 * kLdSliceF + col]);
      const float2 bottom = *reinterpret_cast<const float2*>(&sm.u[buf][(token0 + 8) * kLdSliceF + col]);
      v[0][nt][0] = top.x;
      v[0][nt][1] = top.y;
      v[0][nt][2] = bottom.x;
      v[0][nt][3] = bottom.y;
#pragma unroll
      for (int e = 0; e < 4; ++e) v[1][nt][e] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
      unsigned a[4], b[4];
      load_a(a, sm.w[buf] + row_block * kTile * kLdKey + kk * kTile, kLdKey);
      load_b_kn(b, sm.state_lowp + kk * kTile * kLdSlice + column0, kLdSlice);
      mma_16x8x16<Element>(v[kk & 1][0], a, b[0], b[1]);
      mma_16x8x16<Element>(v[kk & 1][1], a, b[2], b[3]);
    }
    // v_new as hi + lo to the workspace (the output kernel's operand pair) and to shared memory (the update's).
    Element* v_hi_ws = static_cast<Element*>(ws.v_new);
    Element* v_lo_ws = static_cast<Element*>(ws.v_new_lo);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int col = column0 + nt * 8 + t2;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int token = token0 + half * 8;
        const float x0 = v[0][nt][half * 2] + v[1][nt][half * 2];
        const float x1 = v[0][nt][half * 2 + 1] + v[1][nt][half * 2 + 1];
        const std::int64_t global = (sh * kChunk + token) * ws.value_pad + col0 + col;
        unsigned hi, lo;
        split_pair<Element>(x0, x1, &hi, &lo);
        *reinterpret_cast<unsigned*>(v_hi_ws + global) = hi;
        *reinterpret_cast<unsigned*>(v_lo_ws + global) = lo;
        const int at = token * kLdSlice + col;
        *reinterpret_cast<unsigned*>(sm.v_new + at) = hi;
        *reinterpret_cast<unsigned*>(sm.v_new_lo + at) = lo;
      }
    }
    __syncthreads();

    // S = diag(exp(G_last)) S + (k exp(G_last - G))^T v_new: A = the k pair transposed by ldmatrix.
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const float d0 = sm.decay[buf][row_block * 32 + mt * kTile + g];
      const float d1 = sm.decay[buf][row_block * 32 + mt * kTile + g + 8];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        s[mt][nt][0] *= d0;
        s[mt][nt][1] *= d0;
        s[mt][nt][2] *= d1;
        s[mt][nt][3] *= d1;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kChunk / kTile; ++kk) {
      unsigned b[4], b_lo[4];
      load_b_kn(b, sm.v_new + kk * kTile * kLdSlice + column0, kLdSlice);
      load_b_kn(b_lo, sm.v_new_lo + kk * kTile * kLdSlice + column0, kLdSlice);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        unsigned a[4], a_lo[4];
        load_a_trans(a, sm.k[buf] + kk * kTile * kLdKey + row_block * 32 + mt * kTile, kLdKey);
        load_a_trans(a_lo, sm.k_lo[buf] + kk * kTile * kLdKey + row_block * 32 + mt * kTile, kLdKey);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          mma_16x8x16<Element>(s[mt][nt], a, b[2 * nt], b[2 * nt + 1]);
          mma_16x8x16<Element>(s[mt][nt], a_lo, b[2 * nt], b[2 * nt + 1]);
          mma_16x8x16<Element>(s[mt][nt], a, b_lo[2 * nt], b_lo[2 * nt + 1]);
        }
      }
    }
    publish(chunk + 1 < chunks ? first_slot + chunk + 1 : -1);
    buf = buf + 1 == kStages ? 0 : buf + 1;
  }

  if (params.final_state.data == nullptr) return;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = row_block * 32 + mt * kTile + g + (e >> 1) * 8;
        const int j = col0 + column0 + nt * 8 + t2 + (e & 1);
        if (i < c.key_dim && j < c.value_dim) params.final_state.data[state_offset(params.final_state, i, j)] = s[mt][nt][e];
      }
    }
  }
}

// ---- output --------------------------------------------------------------------------------------------

// One CTA per (chunk slot, value head, 128 value columns), 8 warps: warp w owns rows 16 (w % 4) .. + 15 of
// the chunk and value columns 64 (w / 4) .. + 63 of the CTA's 128. O = (scale q Gamma) S + P v_new with
// P's pair (from the prep) times v_new's pair (hi hi, lo hi, hi lo). ~103 KB of shared memory: 2 CTAs
// (16 warps) per SM. The loads of S and v_new, P v_new and the stores are GDN's
// (linear_chunk_output_sm80.cuh).
template <typename Element>
struct KdaOutputShared {
  static constexpr int kLdKey = kKeyPad + 8;  // rows 272 bytes apart: the 8 rows of an ldmatrix hit distinct banks
  static constexpr int kLdValue = kOutputColumns + 8;
  static constexpr int kLdChunk = kChunk + 8;
  alignas(128) Element q[kChunk * kLdKey];  // scale q Gamma; after the products, O staged for the stores
  alignas(128) Element p[kChunk * kLdChunk];     // hi part
  alignas(128) Element p_lo[kChunk * kLdChunk];  // and lo part
  alignas(128) Element state[kKeyPad * kLdValue];    // S at the chunk's start, this CTA's columns
  alignas(128) Element v_new[kChunk * kLdValue];     // hi part
  alignas(128) Element v_new_lo[kChunk * kLdValue];  // and lo part
};
static_assert(sizeof(KdaOutputShared<__nv_bfloat16>) == kda_output_shared_bytes(), "linear_kda_plan.h's size of output");

template <typename Element>
__global__ void __launch_bounds__(kOutputThreads, 2) linear_kda_output_kernel(LinearForwardParams params) {
  using Shared = KdaOutputShared<Element>;
  constexpr int kThreads = kOutputThreads;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdValue = Shared::kLdValue;
  constexpr int kLdChunk = Shared::kLdChunk;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;

  const int blocks = (ws.value_pad + kOutputColumns - 1) / kOutputColumns;
  const std::int64_t slot = blockIdx.x / blocks;
  const int col0 = static_cast<int>(blockIdx.x % blocks) * kOutputColumns;
  SlotPlace place;
  if (!locate_slot(params, slot, &place)) return;
  const int hv = blockIdx.y;
  const std::int64_t t0 = place.bos + place.chunk * kChunk;
  const int rows = static_cast<int>(place.length - place.chunk * kChunk < kChunk ? place.length - place.chunk * kChunk : kChunk);
  const std::int64_t sh = slot * c.heads_v + hv;

  {
    const Element* q_ws = static_cast<const Element*>(ws.query) + sh * kChunk * kKeyPad;
    for (int e = tid; e < kChunk * (kKeyPad / 8); e += kThreads) {
      const int r = e / (kKeyPad / 8);
      const int j = (e % (kKeyPad / 8)) * 8;
      cp_async_16(&sm.q[r * kLdKey + j], q_ws + r * kKeyPad + j);
    }
    // P's blocks on and below the diagonal (the prep writes no others; the products read no others).
    const Element* p_hi = static_cast<const Element*>(ws.p) + sh * kChunk * kChunk;
    const Element* p_lo = static_cast<const Element*>(ws.p_lo) + sh * kChunk * kChunk;
    for (int e = tid; e < kChunk * (kChunk / 8); e += kThreads) {
      const int r = e / (kChunk / 8);
      const int j = (e % (kChunk / 8)) * 8;
      if (j / kTile > r / kTile) continue;
      cp_async_16(&sm.p[r * kLdChunk + j], p_hi + r * kChunk + j);
      cp_async_16(&sm.p_lo[r * kLdChunk + j], p_lo + r * kChunk + j);
    }
    load_state_and_v_new<Element>(sm.state, sm.v_new, sm.v_new_lo, kLdValue, ws, sh, col0);
    cp_async_commit();
  }
  cp_async_wait_all();
  __syncthreads();

  const int row_tile = warp & 3;
  const int column0 = (warp >> 2) * 64;  // of the CTA's 128
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row0 = row_tile * kTile + g;  // the thread's accumulator rows: row0 and row0 + 8

  // O = (scale q Gamma) S over the 8 k-steps of K, then + P v_new (P is lower triangular: k-steps 0 ..
  // row_tile), P v_new = P_hi v_hi + P_lo v_hi + P_hi v_lo (the lo x lo term is below Element's rounding of O).
  float o[8][4] = {};
  const Element* q_rows = sm.q + row_tile * kTile * kLdKey;
#pragma unroll
  for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
    unsigned a[4];
    load_a(a, q_rows + kk * kTile, kLdKey);
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      unsigned b[4];
      load_b_kn(b, sm.state + kk * kTile * kLdValue + column0 + np * kTile, kLdValue);
      mma_16x8x16<Element>(o[2 * np], a, b[0], b[1]);
      mma_16x8x16<Element>(o[2 * np + 1], a, b[2], b[3]);
    }
  }
#pragma unroll
  for (int kk = 0; kk < kChunk / kTile; ++kk) {
    if (kk > row_tile) continue;
    unsigned p_hi[4], p_lo[4];
    load_a(p_hi, sm.p + row_tile * kTile * kLdChunk + kk * kTile, kLdChunk);
    load_a(p_lo, sm.p_lo + row_tile * kTile * kLdChunk + kk * kTile, kLdChunk);
    add_p_times_v_new<Element>(o, p_hi, p_lo, sm.v_new, sm.v_new_lo, kLdValue, kk, column0);
  }

  Element* o_base = static_cast<Element*>(c.out_data) + place.batch * c.out.batch_stride + t0 * c.out.token_stride + hv * c.out.head_stride;
  store_output<Element>(o, sm.q, kLdKey, o_base, c.out.token_stride, c.value_dim, rows, col0, row0, column0, t2);
}

// ---- launchers -----------------------------------------------------------------------------------------

template <typename Element>
cudaError_t launch_linear_kda_prep(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_kda_prep_kernel<Element>;
  const int bytes = static_cast<int>(sizeof(KdaPrepShared<Element>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>(params.chunk.slots), params.common.heads_v);
  kernel<<<grid, kKdaPrepThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename Element, int kSlice>
cudaError_t launch_linear_kda_state(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_kda_state_kernel<Element, kSlice>;
  const int bytes = static_cast<int>(sizeof(KdaStateShared<Element, kSlice>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const int slices = (params.common.value_dim + kSlice - 1) / kSlice;
  const dim3 grid(static_cast<unsigned>(params.num_sequences) * slices, params.common.heads_v);
  kernel<<<grid, kda_state_threads<kSlice>(), bytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename Element>
cudaError_t launch_linear_kda_output(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_kda_output_kernel<Element>;
  const int bytes = static_cast<int>(sizeof(KdaOutputShared<Element>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const std::int64_t blocks = (params.chunk.value_pad + kOutputColumns - 1) / kOutputColumns;
  const dim3 grid(static_cast<unsigned>(params.chunk.slots * blocks), params.common.heads_v);
  kernel<<<grid, kOutputThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace attnkit::sm80::linear_detail
