// Chunk-parallel forward of KDA (per-key decay, semantics.md section 5) on sm80+ tensor cores (mma.sync
// m16n8k16 on bf16/fp16 operands, fp32 accumulation and state), in the three kernels of the GDN forward
// (linear_gdn_chunked_sm80_kernel.cuh, whose slot map and T_beta product this file reuses). With G the
// inclusive cumulative log decay inside a 64-token chunk, a [K] vector per token, and Gamma = exp(G):
//
//   prep   (grid: every chunk slot x value head) from q, k, g, beta, v of one chunk:
//          A[t][s] = beta_t sum_i k_t[i] k_s[i] exp(G_t[i] - G_s[i])   (s < t)
//          P[t][s] = scale sum_i q_t[i] k_s[i] exp(G_t[i] - G_s[i])    (s <= t)
//          T_beta = (I + A)^-1 diag(beta) (fp32, by 16 x 16 blocks), and writes w_neg = -T_beta (k Gamma),
//          u = T_beta v (fp32), the update's k exp(G_last - G) (a pair), scale q Gamma, P (a pair) and
//          exp(G_last) [K].
//   state  (grid: sequence x value head x slice of 16, 32 or 64 value columns) walks the chunks in order with
//          its fp32 state slice in accumulator registers: v_new = u + w_neg S,
//          S <- diag(exp(G_last)) S + (k exp(G_last - G))^T v_new; writes S at each chunk's start and v_new.
//   output (grid: every chunk slot x value head x 128 value columns) O = (scale q Gamma) S_chunk + P v_new.
//
// The per-key decays inside A and P are kept finite by splitting each block of rows t after its columns
// s at a reference row r between them: exp(G_t - G_s) = exp(G_t - G_r) exp(G_r - G_s) with both factors
// <= 1 (t >= r > s), so such a block goes through the tensor cores for any decay. That covers the six
// off-diagonal 16 x 16 blocks (r = 16 ib, as FLA's chunk_kda splits at its sub-chunks of 16 tokens) and
// the lower-left 8 x 8 quarter of each diagonal 16 x 16 block (r = its ninth row) and the lower-left 4 x 4
// quarter of each diagonal 8 x 8 block (r = its fifth row); the sixteen diagonal 4 x 4 blocks that remain
// (10 of the 2080 entries of P on and below the diagonal each) are summed on CUDA cores with
// exp(G_t - G_s) per channel and entry. Every other exponential (Gamma, exp(G_last - G),
// exp(G_last)) has a non-positive argument by construction.
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
#include "kernels/linear/sm80/linear_chunk_state_sm80.cuh"
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

// Whole-sector stores of mma C fragments: a quad's lanes hold a row's columns t2, t2 + 1 of two n-tiles
// (`tile0`: columns 0 .. 7 of 16, `tile1`: 8 .. 15) as packed Element pairs; two shuffles give lane t
// columns 4 t .. 4 t + 3, so the quad stores the row's 32 bytes as four 8-byte pieces, whole 32-byte
// sectors. As 4-byte pieces (two n-tiles, two half sectors) such stores cost twice their bytes in L2
// traffic: GDN's state pass, which regroups its v_new the same way, lost 16% with them (H100,
// 2026-11-26 s13 run 9). Lane s offers n-tile s & 1 to the first shuffle and the other to the second;
// lanes 2 and 3 of a quad receive their pieces' words in the opposite order.
__device__ __forceinline__ uint2 quad_columns(unsigned tile0, unsigned tile1) {
  const int quad = threadIdx.x & 3;
  const int from = (threadIdx.x & 28) | ((quad & 1) << 1) | (quad >> 1);  // lane t's first source in the quad
  const bool odd = (quad & 1) != 0;  // selects, not indexing: the words stay in registers
  const unsigned a = __shfl_sync(0xffffffffu, odd ? tile1 : tile0, from);
  const unsigned b = __shfl_sync(0xffffffffu, odd ? tile0 : tile1, from ^ 1);
  return quad >= 2 ? make_uint2(b, a) : make_uint2(a, b);
}

// exp(x) for the prep's arguments, all <= 0, as a multiply and one MUFU.EX2 in its flushing form (__expf
// adds a range test and two predicated multiplies per call to return denormals): results below 2^-126
// (x < -87.3) become 0, an absolute change below 1.2e-38 times the operand it scales.
__device__ __forceinline__ float exp_nonpositive(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * 1.4426950408889634f));
  return y;
}

// ---- prep ----------------------------------------------------------------------------------------------

// 8 warps. Phases: loads (q, k and fp32 gates by cp.async; other gate types by plain loads; the fused gate
// form applied after) -> L2 factors and G -> the block products of A and P: warps 0-5 one off-diagonal
// 16 x 16 block pair each, warps 6-7 the lower-left 8 x 8 quarters of the diagonal 16 x 16 blocks (all on
// mma.sync, in registers), then every warp one diagonal 8 x 8 block: its lower-left 4 x 4 quarter on
// mma.sync, its two diagonal 4 x 4 blocks on CUDA cores -> the inverses of the
// diagonal 16 x 16 blocks of I + A (threads 0-63) beside the gated operands (the rest) -> the rest of the
// solve by block rows (all threads) -> w_neg and u (warp w: T_beta rows 16 (w % 4) .., 64 columns
// (w / 4) ..). P goes to the workspace from the registers that hold it. ~104 KB of shared memory: 2 CTAs
// per SM.
constexpr int kKdaPrepThreads = 256;
constexpr int kKdaValuePiece = 128;

template <typename Element>
struct KdaPrepShared {
  static constexpr int kLdKey = kKeyPad + 8;    // rows 272 bytes apart: ldmatrix rows in distinct banks
  static constexpr int kLdGate = kKeyPad + 8;   // rows 544 bytes (8 banks) apart: see the block products
  static constexpr int kLdChunk = kChunk + 8;   // 144 bytes
  static constexpr int kLdChunkF = kChunk + 8;  // fp32 A as large as T_beta's pair
  union {
    Element q[kChunk * kLdKey];  // q as it came
    Element v[kChunk * kLdKey];  // then a piece of v
  };
  alignas(128) Element k[kChunk * kLdKey];
  alignas(128) float gate[kChunk * kLdGate];  // the gates as loaded, then G
  alignas(128) Element x[kChunk * kLdKey];    // k Gamma, w_neg's operand
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

// One 16-channel step of a decayed product split at a reference token ref (t >= ref >= s, so every exp
// factor is <= 1): rows g and g + 8 of the left operand are q_t exp(G_t - G_ref) and k_t exp(G_t - G_ref),
// column g of the right operand k_s exp(G_ref - G_s), over channels col0, col0 + 1 (a0, a1, b0) and col0 + 8,
// col0 + 9 (a2, a3, b1); bf16 / fp16 hi + lo pairs, three MMAs (hi hi, lo hi, hi lo) into acc. The
// off-diagonal 16 x 16 blocks and the diagonal blocks' 4 x 4 quarters both take their products this way.
template <typename Element>
__device__ __forceinline__ void decayed_product_step(const KdaPrepShared<Element>& sm, int t, int ref, int s, int col0,
                                                     float (&acc)[4]) {
  constexpr int kLdKey = KdaPrepShared<Element>::kLdKey;
  constexpr int kLdGate = KdaPrepShared<Element>::kLdGate;
  unsigned a_hi[4], a_lo[4], b_hi[2], b_lo[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int col = col0 + half * 8;
    const float2 gt = *reinterpret_cast<const float2*>(&sm.gate[t * kLdGate + col]);
    const float2 gr = *reinterpret_cast<const float2*>(&sm.gate[ref * kLdGate + col]);
    const float2 gs = *reinterpret_cast<const float2*>(&sm.gate[s * kLdGate + col]);
    const float e0 = exp_nonpositive(gt.x - gr.x);
    const float e1 = exp_nonpositive(gt.y - gr.y);
    const float2 qv = load_pair(sm.q + t * kLdKey + col);
    const float2 kv = load_pair(sm.k + t * kLdKey + col);
    const float2 ks = load_pair(sm.k + s * kLdKey + col);
    split_pair<Element>(qv.x * e0, qv.y * e1, &a_hi[half * 2], &a_lo[half * 2]);
    split_pair<Element>(kv.x * e0, kv.y * e1, &a_hi[half * 2 + 1], &a_lo[half * 2 + 1]);
    split_pair<Element>(ks.x * exp_nonpositive(gr.x - gs.x), ks.y * exp_nonpositive(gr.y - gs.y), &b_hi[half], &b_lo[half]);
  }
  mma_16x8x16<Element>(acc, a_hi, b_hi[0], b_hi[1]);
  mma_16x8x16<Element>(acc, a_lo, b_hi[0], b_hi[1]);
  mma_16x8x16<Element>(acc, a_hi, b_lo[0], b_lo[1]);
}

template <typename Element>
__global__ void __launch_bounds__(kKdaPrepThreads, 2) linear_kda_prep_kernel(LinearForwardParams params) {
  using Shared = KdaPrepShared<Element>;
  using Convert = ElementConvert<Element>;
  constexpr int kThreads = kKdaPrepThreads;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdChunk = Shared::kLdChunk;
  constexpr int kLdChunkF = Shared::kLdChunkF;
  constexpr int kLdGate = Shared::kLdGate;
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
  // Gates in pieces of 4 channels (piece p: token p / 32, channels 4 (p % 32) ..): fp32 pieces from 16-byte
  // aligned rows by cp.async, in flight with q and k (the batches of 8 plain loads they replace were four
  // round trips); other gate types or alignments by plain loads. Tokens past the chunk's end and channels
  // past K decay by 0 (G stays flat), so G_last = G_{rows - 1}.
  constexpr int kGatePieces = kChunk * kKeyPad / 4;
  {
    const std::int64_t g_base = place.batch * c.g.batch_stride + t0 * c.g.token_stride + hv * c.g.head_stride;
    const bool async = c.gate_element == LinearElement::kFloat32 && c.key_dim % 4 == 0;
#pragma unroll 1
    for (int p = tid; p < kGatePieces; p += kThreads) {
      const int t = p / (kKeyPad / 4);
      const int i = (p % (kKeyPad / 4)) * 4;
      float* d = sm.gate + t * kLdGate + i;
      const bool present = t < rows && i < c.key_dim;
      const std::int64_t offset = g_base + t * c.g.token_stride + i;
      const float* src = static_cast<const float*>(c.g.data) + offset;  // read only where the gates are fp32
      if (async && (!present || reinterpret_cast<std::uintptr_t>(src) % 16 == 0)) {
        device::backward::cp_async_16(device::backward::smem_address(d), present ? src : c.g.data, present);
      } else {
        float raw[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) raw[u] = present && i + u < c.key_dim ? load_element(c.g.data, offset + u, c.gate_element) : 0.0f;
#pragma unroll
        for (int u = 0; u < 4; ++u) d[u] = raw[u];
      }
    }
    cp_async_commit();
  }
  if (tid < kChunk) {
    const std::int64_t offset = place.batch * c.beta.batch_stride + (t0 + tid) * c.beta.token_stride + hv * c.beta.head_stride;
    sm.beta[tid] = tid < rows ? beta_value(c, load_element(c.beta.data, offset, c.beta_element)) : 0.0f;
  }
  cp_async_wait_all();
  if (c.gate != LinearGate::kLogDecay) {
    // The fused gate form on this thread's own pieces (its cp.async copies are visible to it after the
    // wait), rolled: one copy of the form's code.
    const float a_log = c.A_log[hv];
#pragma unroll 1
    for (int p = tid; p < kGatePieces; p += kThreads) {
      const int t = p / (kKeyPad / 4);
      const int i = (p % (kKeyPad / 4)) * 4;
      if (t >= rows) continue;
#pragma unroll 1
      for (int u = 0; u < 4 && i + u < c.key_dim; ++u) {
        float* d = sm.gate + t * kLdGate + i + u;
        const float bias = c.dt_bias == nullptr ? 0.0f : c.dt_bias[hv * c.key_dim + i + u];
        *d = log_decay(c, *d, a_log, bias);
      }
    }
  }
  __syncthreads();
  l2_row_factors<Element, kThreads>(sm.q, kLdKey, c.l2norm_qk, sm.q_factor);
  l2_row_factors<Element, kThreads>(sm.k, kLdKey, c.l2norm_qk, sm.k_factor);
  if (tid < kKeyPad) {
    float running = 0.0f;
#pragma unroll 16
    for (int t = 0; t < kChunk; ++t) {
      running += sm.gate[t * kLdGate + tid];
      sm.gate[t * kLdGate + tid] = running;
    }
  }
  __syncthreads();

  const float scale = c.scale;
  Element* p_hi_ws = static_cast<Element*>(ws.p) + sh * kChunk * kChunk;
  Element* p_lo_ws = static_cast<Element*>(ws.p_lo) + sh * kChunk * kChunk;

  // The block products of A and P. Each product of tokens t >= s carries exp(G_t - G_s) per channel; a
  // block whose rows all come after its columns goes through the tensor cores split at a reference row r
  // between them (s < r <= t), exp(G_t - G_s) = exp(G_t - G_r) exp(G_r - G_s) with both factors <= 1, the
  // operands built in registers at their fragment positions and split there into hi + lo (three MMAs a
  // product: hi hi, lo hi, hi lo). Gate rows are 8 banks apart, so the 8-byte gate loads of 8 rows x 4
  // lanes are conflict-free per half-warp (rows 512 bytes apart were 8-way conflicts).
  if (warp < 6) {
    // Off-diagonal 16 x 16 blocks: warp w takes the pair (ib, jb) = (1, 0), (2, 0), (2, 1), (3, 0), (3, 1),
    // (3, 2) of A and P, r = 16 ib, both from the same right operand k_s exp(G_r - G_s).
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
        const float2 gt = *reinterpret_cast<const float2*>(&sm.gate[t * kLdGate + col]);
        const float2 gr = *reinterpret_cast<const float2*>(&sm.gate[ref * kLdGate + col]);
        const float e0 = exp_nonpositive(gt.x - gr.x);
        const float e1 = exp_nonpositive(gt.y - gr.y);
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
          const float2 gs = *reinterpret_cast<const float2*>(&sm.gate[s * kLdGate + col]);
          const float2 gr = *reinterpret_cast<const float2*>(&sm.gate[ref * kLdGate + col]);
          const float2 kv = load_pair(sm.k + s * kLdKey + col);
          split_pair<Element>(kv.x * exp_nonpositive(gr.x - gs.x), kv.y * exp_nonpositive(gr.y - gs.y), &b_hi[part], &b_lo[part]);
        }
        mma_16x8x16<Element>(acc_a[nt], ka_hi, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_a[nt], ka_lo, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_a[nt], ka_hi, b_lo[0], b_lo[1]);
        mma_16x8x16<Element>(acc_p[nt], qa_hi, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_p[nt], qa_lo, b_hi[0], b_hi[1]);
        mma_16x8x16<Element>(acc_p[nt], qa_hi, b_lo[0], b_lo[1]);
      }
    }
    // A to shared memory; P's pair to the workspace, a row's 16 columns per quad in whole sectors.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int t = ta + half * 8;
      const float fa = sm.beta[t] * sm.k_factor[t];
      const float fp = scale * sm.q_factor[t];
      unsigned p_hi[2], p_lo[2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int s = jb * kTile + nt * 8 + t2;
        const float k0 = sm.k_factor[s];
        const float k1 = sm.k_factor[s + 1];
        *reinterpret_cast<float2*>(&sm.a[t * kLdChunkF + s]) = make_float2(fa * k0 * acc_a[nt][half * 2], fa * k1 * acc_a[nt][half * 2 + 1]);
        split_pair<Element>(fp * k0 * acc_p[nt][half * 2], fp * k1 * acc_p[nt][half * 2 + 1], &p_hi[nt], &p_lo[nt]);
      }
      const std::int64_t at = t * kChunk + jb * kTile + 4 * (lane & 3);
      __stcg(reinterpret_cast<uint2*>(p_hi_ws + at), quad_columns(p_hi[0], p_hi[1]));
      __stcg(reinterpret_cast<uint2*>(p_lo_ws + at), quad_columns(p_lo[0], p_lo[1]));
    }
  } else {
    // The lower-left 8 x 8 quarter of diagonal block b (rows 16 b + 8 .., columns 16 b ..; warps 6 and 7
    // take two blocks each), r = 16 b + 8. One product gives P's and A's quarter together: rows 0-7 of the
    // left operand are q_t exp(G_t - G_r) and rows 8-15 k_t exp(G_t - G_r) of the same 8 tokens, against
    // the right operand k_s exp(G_r - G_s). P's upper-right quarter is written as zero (A's is never read).
#pragma unroll 1
    for (int job = 0; job < 2; ++job) {
      const int b = (warp - 6) * 2 + job;
      const int ref = b * kTile + 8;
      const int t = ref + g;          // the thread's token in both halves of the left operand
      const int s = b * kTile + g;    // the thread's column of the right operand
      float acc[4] = {};
#pragma unroll 2
      for (int kk = 0; kk < kKeyPad / kTile; ++kk) decayed_product_step(sm, t, ref, s, kk * kTile + t2, acc);
      const int col = b * kTile + t2;  // acc: P[t][col, col + 1], then A[t][col, col + 1]
      const float fp = scale * sm.q_factor[t];
      const float fa = sm.beta[t] * sm.k_factor[t];
      const float k0 = sm.k_factor[col];
      const float k1 = sm.k_factor[col + 1];
      *reinterpret_cast<float2*>(&sm.a[t * kLdChunkF + col]) = make_float2(fa * k0 * acc[2], fa * k1 * acc[3]);
      split_pair<Element>(fp * k0 * acc[0], fp * k1 * acc[1], reinterpret_cast<unsigned*>(p_hi_ws + t * kChunk + col),
                          reinterpret_cast<unsigned*>(p_lo_ws + t * kChunk + col));
      const std::int64_t upper = (b * kTile + g) * kChunk + col + 8;
      *reinterpret_cast<unsigned*>(p_hi_ws + upper) = 0u;
      *reinterpret_cast<unsigned*>(p_lo_ws + upper) = 0u;
    }
  }

  // Diagonal 8 x 8 blocks, warp w: tokens 8 w .. 8 w + 7. Their lower-left 4 x 4 quarter (rows 4-7,
  // columns 0-3) goes through mma.sync split at the block's fifth row r = 8 w + 4 like the blocks above,
  // two channel groups per product so that no row or column of it is idle: rows 0-3 of the left operand
  // are q_t exp(G_t - G_r) of the quarter's 4 tokens over channels c .. c + 15, rows 4-7 the same over
  // c + 32 .., rows 8-15 the same for k_t; columns 0-3 of the right operand are k_s exp(G_r - G_s) over
  // channels c .., columns 4-7 over c + 32 ... The products whose row and column channels agree (rows 0-3
  // x columns 0-3 and 4-7 x 4-7: P; 8-11 x 0-3 and 12-15 x 4-7: A) are summed by one shuffle, the others
  // discarded. Thread (g, t2) builds rows g and g + 8 (q_t and k_t of one token and channel: one exp for
  // both) and column g over the same channels: 8 exps per step of 32 channels, 4 steps of three MMAs
  // (hi hi, lo hi, hi lo), against 16 per lane for the quarter's 16 entries on CUDA cores.
  {
    const int base = warp * 8;
    const int ref = base + 4;
    const int t = ref + (g & 3);  // token of rows g and g + 8
    const int s = base + (g & 3);  // token of column g
    float acc[4] = {};
#pragma unroll 2
    for (int step = 0; step < kKeyPad / 32; ++step) {
      // Channel groups c .. c + 15 and c + 32 .. (step 0: 0 and 32, 1: 16 and 48, 2: 64 and 96, 3: 80 and
      // 112): the q / k pair loads of a warp's 4 rows (68 words apart) and two groups then fall in 32
      // distinct banks.
      const int c = (step & 1) * 16 + (step >> 1) * 64 + (g >> 2) * 32;
      decayed_product_step(sm, t, ref, s, c + t2, acc);
    }
    // Lane (g, quad) with g < 4, quad < 2 holds the first channel group's P[t][s'], s' = base + t2, + 1
    // (rows g) and A (rows g + 8); lane (g + 4, quad + 2) = lane ^ 18 the second group's of the same entries.
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], 18);
    if (g < 4 && t2 < 4) {
      const int col = base + t2;
      const float fp = scale * sm.q_factor[t];
      const float fa = sm.beta[t] * sm.k_factor[t];
      const float k0 = sm.k_factor[col];
      const float k1 = sm.k_factor[col + 1];
      *reinterpret_cast<float2*>(&sm.a[t * kLdChunkF + col]) = make_float2(fa * k0 * acc[2], fa * k1 * acc[3]);
      split_pair<Element>(fp * k0 * acc[0], fp * k1 * acc[1], reinterpret_cast<unsigned*>(p_hi_ws + t * kChunk + col),
                          reinterpret_cast<unsigned*>(p_lo_ws + t * kChunk + col));
    }
  }

  // The two diagonal 4 x 4 blocks of each 8 x 8 block (20 entries on and below their diagonals) on CUDA
  // cores with exp(G_t - G_s) per channel and entry (no factor of it above 1). Lane (c, part) = (lane % 4,
  // lane / 4): sub-block c / 2 (tokens 8 w + 4 (c / 2) ..), columns c % 2 and 3 - c % 2 of it (4 - c % 2
  // and c % 2 + 1 entries: 5), 16 channels in pairs: pair word p % 4 + 8 (p / 4) + 4 (m % 2) + 16 (m / 2)
  // at step m, so that the k / q pair loads of a warp's rows (68 words apart) and 8 parts fall in 32
  // distinct banks (the 8-byte gate loads of the two sub-blocks' lanes in a half-warp are 2-way
  // conflicts: their rows are 4 x 136 floats apart). The 8 parts are then summed by shuffles.
  {
    const int c4 = lane & 3;
    const int part = lane >> 2;
    const int sub = warp * 8 + (c4 >> 1) * 4;
    const int s1 = sub + (c4 & 1);
    const int s2 = sub + 3 - (c4 & 1);
    const int first_entries = 4 - (c4 & 1);
    float sum_a[5], sum_p[5];
#pragma unroll
    for (int j = 0; j < 5; ++j) sum_a[j] = sum_p[j] = 0.0f;
#pragma unroll 1
    for (int m = 0; m < kKeyPad / 16; ++m) {
      const int ch = 2 * ((part & 3) + 8 * (part >> 2) + 4 * (m & 1) + 16 * (m >> 1));
      const float2 g1 = *reinterpret_cast<const float2*>(&sm.gate[s1 * kLdGate + ch]);
      const float2 g2 = *reinterpret_cast<const float2*>(&sm.gate[s2 * kLdGate + ch]);
      const float2 k1 = load_pair(sm.k + s1 * kLdKey + ch);
      const float2 k2 = load_pair(sm.k + s2 * kLdKey + ch);
#pragma unroll
      for (int j = 0; j < 5; ++j) {
        const bool first = j < first_entries;  // column s1 (rows s1 + j), then column s2 (rows sub + j - 1)
        const int t = first ? s1 + j : sub + j - 1;
        const float2 gs = first ? g1 : g2;
        const float2 ks = first ? k1 : k2;
        const float2 gt = *reinterpret_cast<const float2*>(&sm.gate[t * kLdGate + ch]);
        const float2 kt = load_pair(sm.k + t * kLdKey + ch);
        const float2 qt = load_pair(sm.q + t * kLdKey + ch);
        const float ke0 = ks.x * exp_nonpositive(gt.x - gs.x);
        const float ke1 = ks.y * exp_nonpositive(gt.y - gs.y);
        sum_a[j] += kt.x * ke0 + kt.y * ke1;
        sum_p[j] += qt.x * ke0 + qt.y * ke1;
      }
    }
#pragma unroll
    for (int j = 0; j < 5; ++j) {
#pragma unroll
      for (int offset = 4; offset < 32; offset <<= 1) {
        sum_a[j] += __shfl_xor_sync(0xffffffffu, sum_a[j], offset);
        sum_p[j] += __shfl_xor_sync(0xffffffffu, sum_p[j], offset);
      }
    }
#pragma unroll
    for (int j = 0; j < 5; ++j) {
      if (part == j) {
        const bool first = j < first_entries;
        const int t = first ? s1 + j : sub + j - 1;
        const int s = first ? s1 : s2;
        if (s < t) sm.a[t * kLdChunkF + s] = sm.beta[t] * sm.k_factor[t] * sm.k_factor[s] * sum_a[j];
        split_element(scale * sm.q_factor[t] * sm.k_factor[s] * sum_p[j], p_hi_ws + t * kChunk + s, p_lo_ws + t * kChunk + s);
      }
    }
    // P above the 8 x 8 block's diagonal is zero: lane l covers row l / 4, columns 2 (l % 4), 2 (l % 4) + 1.
    const int base = warp * 8;
    const int zero_row = base + (lane >> 2);
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int col = base + 2 * c4 + e;
      if (col > zero_row) {
        p_hi_ws[zero_row * kChunk + col] = Convert::from(0.0f);
        p_lo_ws[zero_row * kChunk + col] = Convert::from(0.0f);
      }
    }
  }
  __syncthreads();  // A is complete (and q, k, G are read only from here on)

  // The solve T = (I + A)^-1 by 16 x 16 blocks, in fp32 on CUDA cores (the substitution of whole columns
  // it replaces ran 2016 FMAs per column on 2 warps, ~3x the gated operands' work on the other 6, from
  // 50 KB of fully unrolled code): threads 0-63 invert the four diagonal blocks, a column each by forward substitution (A is
  // strictly lower, so rows above the column are 0), beside the gated operands (threads 64-255): k Gamma
  // to shared memory, the update's k exp(G_last - G) as a pair, scale q Gamma and exp(G_last) to the
  // workspace. Then all threads, block row by block row: T_ij = -T_ii sum_{k=j}^{i-1} A_ik T_kj (i > j),
  // T in the gate space (G, q and k are dead by then).
  constexpr int kLdT = kChunk + 4;  // T's rows 68 floats apart: a half-warp reads 16 columns of a row
  static_assert(kChunk * kLdT + 3 * kTile * kTile <= kChunk * kLdGate, "T and the M blocks fit the gate space");
  float x[kTile];
  if (tid < kChunk) {
    const int r0 = (tid / kTile) * kTile;
    const int j = tid % kTile;
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
      float sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < i; ++s) sum[s & 1] += sm.a[(r0 + i) * kLdChunkF + r0 + s] * x[s];
      x[i] = i == j ? 1.0f : -(sum[0] + sum[1]);
    }
  } else {
    const int id = tid - kChunk;
    Element* key_hi = static_cast<Element*>(ws.key) + sh * kChunk * kKeyPad;
    Element* key_lo = static_cast<Element*>(ws.key_lo) + sh * kChunk * kKeyPad;
    Element* query = static_cast<Element*>(ws.query) + sh * kChunk * kKeyPad;
    const float* g_last = sm.gate + (kChunk - 1) * kLdGate;
    // 8 channels per step: 16-byte loads of k and q, 16-byte stores. The 8 threads of a 16-byte shared
    // load phase read one row's 32-byte gate pieces; thread e starts with the half 4 h (h = bit 2 of e) so
    // that each of the two loads covers 8 distinct 16-byte bank groups (the halves in order were 2-way
    // conflicts, pieces 32 bytes apart; element-wise k / q loads compiled to conflicting 8-byte loads: ncu,
    // 2026-11-26 s13, 12.6 M excess shared wavefronts in this phase).
    for (int e = id; e < kChunk * kKeyPad / 8; e += kThreads - kChunk) {
      const int t = e / (kKeyPad / 8);
      const int i0 = (e % (kKeyPad / 8)) * 8;
      const float fk = sm.k_factor[t];
      const float fq = scale * sm.q_factor[t];
      const bool h = (e & 4) != 0;
      float gt[8], gl[8];
      {
        const float4 first = *reinterpret_cast<const float4*>(&sm.gate[t * kLdGate + i0 + (h ? 4 : 0)]);
        const float4 second = *reinterpret_cast<const float4*>(&sm.gate[t * kLdGate + i0 + (h ? 0 : 4)]);
        const float4 last_first = *reinterpret_cast<const float4*>(&g_last[i0 + (h ? 4 : 0)]);
        const float4 last_second = *reinterpret_cast<const float4*>(&g_last[i0 + (h ? 0 : 4)]);
        const float4 lo4 = h ? second : first;
        const float4 hi4 = h ? first : second;
        const float4 last_lo4 = h ? last_second : last_first;
        const float4 last_hi4 = h ? last_first : last_second;
        gt[0] = lo4.x, gt[1] = lo4.y, gt[2] = lo4.z, gt[3] = lo4.w, gt[4] = hi4.x, gt[5] = hi4.y, gt[6] = hi4.z, gt[7] = hi4.w;
        gl[0] = last_lo4.x, gl[1] = last_lo4.y, gl[2] = last_lo4.z, gl[3] = last_lo4.w;
        gl[4] = last_hi4.x, gl[5] = last_hi4.y, gl[6] = last_hi4.z, gl[7] = last_hi4.w;
      }
      const uint4 k8 = *reinterpret_cast<const uint4*>(sm.k + t * kLdKey + i0);
      const uint4 q8 = *reinterpret_cast<const uint4*>(sm.q + t * kLdKey + i0);
      const unsigned k_words[4] = {k8.x, k8.y, k8.z, k8.w};
      const unsigned q_words[4] = {q8.x, q8.y, q8.z, q8.w};
      alignas(16) Element xs[8], hi[8], lo[8], qs[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const float2 kp = unpack_pair<Element>(k_words[u / 2]);
        const float2 qp = unpack_pair<Element>(q_words[u / 2]);
        const float gamma = exp_nonpositive(gt[u]);
        const float kv = (u % 2 == 0 ? kp.x : kp.y) * fk;
        xs[u] = Convert::from(kv * gamma);
        split_element(kv * exp_nonpositive(gl[u] - gt[u]), &hi[u], &lo[u]);
        qs[u] = Convert::from(fq * gamma * (u % 2 == 0 ? qp.x : qp.y));
      }
      *reinterpret_cast<uint4*>(sm.x + t * kLdKey + i0) = *reinterpret_cast<const uint4*>(xs);
      __stcg(reinterpret_cast<uint4*>(key_hi + t * kKeyPad + i0), *reinterpret_cast<const uint4*>(hi));
      __stcg(reinterpret_cast<uint4*>(key_lo + t * kKeyPad + i0), *reinterpret_cast<const uint4*>(lo));
      __stcg(reinterpret_cast<uint4*>(query + t * kKeyPad + i0), *reinterpret_cast<const uint4*>(qs));
    }
    if (id < kKeyPad) ws.decay[sh * kKeyPad + id] = exp_nonpositive(g_last[id]);
  }
  __syncthreads();  // G, q and k are read: their space takes T and the first v piece

  load_rows<Element, kKdaValuePiece, kThreads>(sm.v, kLdKey, v_base, c.v.token_stride, rows, 0, c.value_dim, params.vectorized_io);
  cp_async_commit();
  float* t_mat = sm.gate;
  float* m_mat = sm.gate + kChunk * kLdT;  // M_ij = sum_k A_ik T_kj of a block row, [j][16][16]
  if (tid < kChunk) {
    const int r0 = (tid / kTile) * kTile;
#pragma unroll
    for (int i = 0; i < kTile; ++i) t_mat[(r0 + i) * kLdT + tid] = x[i];
  }
  __syncthreads();
  {
    const int r = tid / kTile;  // thread (r, cc) of every 16 x 16 block
    const int cc = tid % kTile;
#pragma unroll 1
    for (int bi = 1; bi < kChunk / kTile; ++bi) {
      const float* a_row = sm.a + (bi * kTile + r) * kLdChunkF;
#pragma unroll 1
      for (int bj = 0; bj < bi; ++bj) {
        float sum[2] = {0.0f, 0.0f};
#pragma unroll 1
        for (int bk = bj; bk < bi; ++bk) {
#pragma unroll
          for (int m = 0; m < kTile; ++m) sum[m & 1] += a_row[bk * kTile + m] * t_mat[(bk * kTile + m) * kLdT + bj * kTile + cc];
        }
        m_mat[(bj * kTile + r) * kTile + cc] = sum[0] + sum[1];
      }
      __syncthreads();
      const float* t_row = t_mat + (bi * kTile + r) * kLdT + bi * kTile;  // T_ii's row r (zero past r)
#pragma unroll 1
      for (int bj = 0; bj < bi; ++bj) {
        float sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int m = 0; m < kTile; ++m) sum[m & 1] += t_row[m] * m_mat[(bj * kTile + m) * kTile + cc];
        t_mat[(bi * kTile + r) * kLdT + bj * kTile + cc] = -(sum[0] + sum[1]);
      }
      __syncthreads();
    }
  }
  // T_beta = T diag(beta) as its pair over A (read for the last time above): the blocks on and below the
  // diagonal, which are all that the products read.
  Element* t_beta_lo = sm.t_beta + kChunk * kLdChunk;
  for (int e = tid; e < kChunk * kChunk; e += kThreads) {
    const int i = e / kChunk;
    const int j = e % kChunk;
    if (j / kTile > i / kTile) continue;
    split_element(t_mat[i * kLdT + j] * sm.beta[j], &sm.t_beta[i * kLdChunk + j], &t_beta_lo[i * kLdChunk + j]);
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

  // w_neg = -T_beta (k Gamma): the warp's 64 key channels, straight to the workspace as Element in whole
  // sectors (16 columns of a row per quad).
  {
    Element* w_neg = static_cast<Element*>(ws.w_neg) + sh * kChunk * kKeyPad;
    float acc[8][4] = {};
    t_beta_times_64_columns<Element>(acc, t_hi, t_lo, sm.x + column0, kLdKey, row_tile);
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint2 piece = quad_columns(pack_pair<Element>(-acc[j][2 * half], -acc[j][2 * half + 1]),
                                         pack_pair<Element>(-acc[j + 1][2 * half], -acc[j + 1][2 * half + 1]));
        __stcg(reinterpret_cast<uint2*>(w_neg + (row0 + 8 * half) * kKeyPad + column0 + j * 8 + 4 * (lane & 3)), piece);
      }
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
      __stcg(reinterpret_cast<float2*>(u_out + static_cast<std::int64_t>(row0) * ws.value_pad + col), make_float2(acc[j][0], acc[j][1]));
      __stcg(reinterpret_cast<float2*>(u_out + static_cast<std::int64_t>(row0 + 8) * ws.value_pad + col), make_float2(acc[j][2], acc[j][3]));
    }
  }
}

// ---- state ---------------------------------------------------------------------------------------------

// As GDN's state pass (a CTA per (sequence, value head, kSlice columns), warp w keeps S rows 32 (w % 4) ..
// + 31 of columns 16 (w / 4) .. + 15 in accumulators), with the per-key decay: the rows of S decay by
// exp(G_last) of their key, and the update multiplies the pair k exp(G_last - G) by the pair v_new (three
// MMAs). The extra k operand (~125 / ~141 / ~173 KB of shared memory with two stages at slices of 16 /
// 32 / 64; linear_kda_plan.h) leaves one CTA per SM: 4, 8 or 16 warps.
template <int kSlice>
constexpr int kda_state_threads() {
  return kSlice / 16 * 128;
}

template <typename Element, int kSlice>
struct KdaStateShared {
  static constexpr int kLdKey = kKeyPad + 8;
  static constexpr int kLdSlice = kSlice + 8;  // rows 48 / 80 / 144 bytes apart: ldmatrix rows in distinct banks
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
static_assert(sizeof(KdaStateShared<__nv_bfloat16, 64>) == kda_state_shared_bytes(64), "linear_kda_plan.h's size");

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

  const StateSlicePlace place = locate_state_slice<kSlice>(params);
  const int n = place.n;
  const int col0 = place.col0;
  const int hv = place.hv;
  const std::int64_t chunks = place.chunks;
  const std::int64_t first_slot = sequence_first_slot(params, n);
  const Element* w_ws = static_cast<const Element*>(ws.w_neg);
  const Element* k_ws = static_cast<const Element*>(ws.key);
  const Element* k_lo_ws = static_cast<const Element*>(ws.key_lo);

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
  float s[2][2][4];
  load_initial_state(s, params, n, hv, row_block, col0 + column0, g, t2);

#pragma unroll
  for (int stage = 0; stage < kStages - 1; ++stage) prefetch(stage, stage);
  publish_state<Element, kLdSlice>(s, sm.state_lowp, params, chunks > 0 ? first_slot : -1, hv, row_block, column0, col0, g, t2);

  int buf = 0;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    cp_async_wait_group<kStages - 2>();  // this chunk's group; the later ones may still be in flight
    __syncthreads();  // its operands and the Element copy of S are visible; the previous chunk's buffer is free
    prefetch(chunk + kStages - 1, buf == 0 ? kStages - 1 : buf - 1);
    const std::int64_t sh = (first_slot + chunk) * c.heads_v + hv;

    // v_new = u + w_neg S, tokens 16 row_block + g (+ 8), in two accumulator sets (even and odd k-steps).
    const int token0 = row_block * kTile + g;
    float v[2][2][4];
    u_plus_w_neg_state<Element, kLdKey, kLdSlice, kLdSliceF>(v, sm.u[buf], sm.w[buf], sm.state_lowp, row_block, column0, g, t2);
    // v_new as hi + lo to shared memory (the update's operand pair) and to the workspace (the output
    // kernel's) in whole 32-byte sectors (quad_columns), as GDN's pass stores it.
    Element* v_hi_ws = static_cast<Element*>(ws.v_new);
    Element* v_lo_ws = static_cast<Element*>(ws.v_new_lo);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int token = token0 + half * 8;
      unsigned hi[2], lo[2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int col = column0 + nt * 8 + t2;
        const float x0 = v[0][nt][half * 2] + v[1][nt][half * 2];
        const float x1 = v[0][nt][half * 2 + 1] + v[1][nt][half * 2 + 1];
        split_pair<Element>(x0, x1, &hi[nt], &lo[nt]);
        const int at = token * kLdSlice + col;
        *reinterpret_cast<unsigned*>(sm.v_new + at) = hi[nt];
        *reinterpret_cast<unsigned*>(sm.v_new_lo + at) = lo[nt];
      }
      const std::int64_t global = (sh * kChunk + token) * ws.value_pad + col0 + column0 + 4 * (lane & 3);
      *reinterpret_cast<uint2*>(v_hi_ws + global) = quad_columns(hi[0], hi[1]);
      *reinterpret_cast<uint2*>(v_lo_ws + global) = quad_columns(lo[0], lo[1]);
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
    publish_state<Element, kLdSlice>(s, sm.state_lowp, params, chunk + 1 < chunks ? first_slot + chunk + 1 : -1, hv, row_block,
                                      column0, col0, g, t2);
    buf = buf + 1 == kStages ? 0 : buf + 1;
  }

  store_final_state(s, params, n, hv, row_block, col0 + column0, g, t2);
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
