// Chunked forward of GDN and KDA on sm80+ tensor cores (WMMA bf16/fp16, fp32 accumulation), the whole
// chunk pipeline fused in one kernel so that no intermediate leaves the SM.
//
// A CTA (8 warps) owns one (sequence, value head, slice of kValueSlice value columns) and walks its
// sequence in chunks of C = 64 tokens with the state slice S [128, kValueSlice] in shared memory (fp32).
// Value columns evolve independently, so the slices of a head run in parallel and stay exact; they
// repeat the slice-independent work (K K^T, the solve, w), which is why the slice is 64 where the grid
// is large enough and 32 only for few-head long sequences.
//
// Per chunk, with G the inclusive cumulative log decay inside the chunk (a scalar per token for GDN, a
// [K] vector for KDA) and Gamma = exp(G), for t, s in the chunk:
//   A[t][s] = beta_t sum_i k_t[i] k_s[i] exp(G_t[i] - G_s[i])   (s < t)
//   P[t][s] = scale sum_i q_t[i] k_s[i] exp(G_t[i] - G_s[i])    (s <= t)
//   T_beta  = (I + A)^-1 diag(beta)                              (unit lower-triangular solve, fp32)
//   w       = T_beta (K . Gamma),   delta = T_beta V - w S       (the WY/UT form of the delta rule)
//   O       = (scale Q . Gamma) S + P delta
//   S      <- diag(Gamma_last) S + (K . exp(G_last - G))^T delta
// Every exp above has a non-positive argument, except in the KDA A and P products, where the decay of a
// channel is not one scalar per row: there the diagonal 16 x 16 blocks are summed on CUDA cores with a
// running product of per-token decays (exact for any decay), and each off-diagonal block pair (t in a
// later block than s's block b) goes through tensor cores split at the reference row r = 16 (b + 1):
// exp(G_t - G_s) = exp(G_t - G_r) exp(G_r - G_s), both factors <= 1.
//
// Precision: T_beta, P, delta, k exp(G_last - G) and the decayed operands of the off-diagonal A and P
// blocks enter the tensor cores as a pair hi + lo of Element values (hi = round(x), lo = round(x - hi)),
// each product as two or three MMAs (the lo x lo term is dropped). With single bf16 operands, weak
// decays over long sequences missed the 0.005 bound of semantics.md section 6 on the H100 (out rms
// 5.1e-3 .. 6.8e-3 at gates x0.01 .. x0.1, T ~ 1000); T_beta, P, delta and the state update's k are the
// largest points in bench/linear/gdn_rounding_study.py (GDN 5.7e-3 -> 2.8e-3). Split at those four
// alone, KDA's worst case measured 5.0e-3 (H100, 2026-11-26): the rounded off-diagonal operands of A
// feed the solve, as T_beta does.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

#include "device/kernel_attributes.cuh"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"

namespace attnkit::sm80::linear_detail {

constexpr int kForwardThreads = 256;
constexpr int kForwardWarps = kForwardThreads / 32;

// Shared memory of one CTA. Leading dimensions carry 16 bytes (Element) or 16 bytes (fp32) of padding so
// that the rows of a 16 x 16 tile fall in different banks.
template <typename Element, bool kPerKeyGate, int kValueSlice>
struct ForwardShared {
  static constexpr int kLdKey = kKeyPad + 8;          // Element [64][128]
  static constexpr int kLdChunk = kChunk + 8;         // Element [64][64]
  static constexpr int kLdValue = kValueSlice + 8;    // Element [.][kValueSlice]
  static constexpr int kLdChunkF = kChunk + 4;        // fp32 [64][64]
  static constexpr int kLdValueF = kValueSlice + 4;   // fp32 [128][kValueSlice]

  alignas(128) Element q[kChunk * kLdKey];      // q (L2-normalised), then scale q Gamma
  alignas(128) Element k[kChunk * kLdKey];      // k (L2-normalised), then k exp(G_last - G)
  // x and w are adjacent: KDA first lays its fp32 per-token decays exp(g) [64][128] over both.
  alignas(128) Element x[kChunk * kLdKey];      // KDA off-diagonal operands, then k Gamma
  alignas(128) Element w[kChunk * kLdKey];      // KDA off-diagonal operands, then -w
  alignas(128) Element v[kChunk * kLdValue];    // the chunk's v slice
  // t_beta .. p_lo are adjacent (sizes multiples of 128 bytes): the off-diagonal A / P blocks of KDA lay
  // their operands' lo parts over all four before T_beta and P exist.
  alignas(128) Element t_beta[kChunk * kLdChunk];     // hi part
  alignas(128) Element t_beta_lo[kChunk * kLdChunk];  // lo part
  alignas(128) Element p[kChunk * kLdChunk];          // hi part
  alignas(128) Element p_lo[kChunk * kLdChunk];       // lo part
  alignas(128) Element delta[kChunk * kLdValue];      // hi part; the lo part lies over `a` after the solve
  alignas(128) Element state_lowp[kKeyPad * kLdValue];  // S at the chunk start, for the tensor cores
  alignas(128) float a[kChunk * kLdChunkF];     // A, fp32 (the solve reads it)
  alignas(128) float p_raw[kChunk * kLdChunkF]; // P before its mask and conversion, then k exp(G_last - G)'s lo part
  alignas(128) float state[kKeyPad * kLdValueF];  // S, fp32: the running state of the slice
  alignas(128) float stage[kForwardWarps][kTile * kTile];  // per-warp fp32 -> Element staging
  alignas(128) float gate[kPerKeyGate ? kChunk * kKeyPad : kChunk];  // G, inclusive cumulative log decay
  alignas(16) float beta[kChunk];
  alignas(16) float q_factor[kChunk];  // L2 factors of the q and k rows (1 without the fused norm)
  alignas(16) float k_factor[kChunk];

  static_assert(kChunk * kLdValue * sizeof(Element) <= sizeof(a), "delta's lo part fits over A");
  static_assert(sizeof(t_beta) % 128 == 0 && (kTile + 2 * (kChunk - kTile)) * kLdKey * sizeof(Element) <= 4 * sizeof(t_beta),
                "the off-diagonal lo parts fit over t_beta .. p_lo");
  static_assert(kChunk * kLdKey * sizeof(Element) <= sizeof(p_raw), "k exp(G_last - G)'s lo part fits over P's raw sums");
};

template <typename Element, bool kPerKeyGate, int kValueSlice>
__global__ void __launch_bounds__(kForwardThreads, 1) linear_forward_kernel(LinearForwardParams params) {
  using Shared = ForwardShared<Element, kPerKeyGate, kValueSlice>;
  using Convert = ElementConvert<Element>;
  namespace wmma = nvcuda::wmma;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdChunk = Shared::kLdChunk;
  constexpr int kLdValue = Shared::kLdValue;
  constexpr int kLdChunkF = Shared::kLdChunkF;
  constexpr int kLdValueF = Shared::kLdValueF;
  constexpr int kValueTiles = kValueSlice / kTile;
  constexpr int kChunkTiles = kChunk / kTile;  // 4
  constexpr int kKeyTiles = kKeyPad / kTile;   // 8

  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  Element* delta_lo = reinterpret_cast<Element*>(sm.a);
  Element* k_lo = reinterpret_cast<Element*>(sm.p_raw);
  const LinearCommonParams& c = params.common;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  float* stage = sm.stage[warp];

  const int slices = (c.value_dim + kValueSlice - 1) / kValueSlice;
  const int n = blockIdx.x / slices;
  const int col0 = (blockIdx.x % slices) * kValueSlice;
  const int hv = blockIdx.y;
  const int h = hv / c.group;
  const bool varlen = params.cu_seqlens != nullptr;
  const std::int64_t batch = varlen ? 0 : n;
  const std::int64_t bos = varlen ? params.cu_seqlens[n * params.cu_seqlens_stride] : 0;
  const std::int64_t length = varlen ? params.cu_seqlens[(n + 1) * params.cu_seqlens_stride] - bos : params.seqlen;

  const Element* q_base = static_cast<const Element*>(c.q.data) + batch * c.q.batch_stride + bos * c.q.token_stride + h * c.q.head_stride;
  const Element* k_base = static_cast<const Element*>(c.k.data) + batch * c.k.batch_stride + bos * c.k.token_stride + h * c.k.head_stride;
  const Element* v_base = static_cast<const Element*>(c.v.data) + batch * c.v.batch_stride + bos * c.v.token_stride + hv * c.v.head_stride;
  Element* o_base = static_cast<Element*>(c.out_data) + batch * c.out.batch_stride + bos * c.out.token_stride + hv * c.out.head_stride;
  const std::int64_t g_base = batch * c.g.batch_stride + bos * c.g.token_stride;
  const std::int64_t b_base = batch * c.beta.batch_stride + bos * c.beta.token_stride + hv * c.beta.head_stride;

  // S[i][j] of this slice lives at state[i][j - col0]; the [V, K] layout swaps the element's indices.
  auto state_offset = [&](const LinearStateTensor& s, int i, int j) {
    return n * s.sequence_stride + hv * s.head_stride + (c.state_vk ? j * s.row_stride + i : i * s.row_stride + j);
  };
  for (int e = tid; e < kKeyPad * kValueSlice; e += kForwardThreads) {
    const int i = e / kValueSlice;
    const int j = col0 + e % kValueSlice;
    float value = 0.0f;
    if (params.initial_state.data != nullptr && i < c.key_dim && j < c.value_dim) {
      value = params.initial_state.data[state_offset(params.initial_state, i, j)];
    }
    sm.state[i * kLdValueF + e % kValueSlice] = value;
  }
  __syncthreads();

  const std::int64_t chunks = (length + kChunk - 1) / kChunk;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    const std::int64_t t0 = chunk * kChunk;
    const int rows = static_cast<int>(length - t0 < kChunk ? length - t0 : kChunk);

    // ---- Load: q, k, v slice, gates, beta; the state's low-precision copy ----------------------------
    load_rows<Element, kKeyPad, kForwardThreads>(sm.q, kLdKey, q_base + t0 * c.q.token_stride, c.q.token_stride, rows, 0, c.key_dim, params.vectorized_io);
    load_rows<Element, kKeyPad, kForwardThreads>(sm.k, kLdKey, k_base + t0 * c.k.token_stride, c.k.token_stride, rows, 0, c.key_dim, params.vectorized_io);
    load_rows<Element, kValueSlice, kForwardThreads>(sm.v, kLdValue, v_base + t0 * c.v.token_stride, c.v.token_stride, rows, col0, c.value_dim, params.vectorized_io);
    cp_async_commit();
    for (int e = tid; e < kKeyPad * kValueSlice; e += kForwardThreads) {
      const int i = e / kValueSlice;
      const int jj = e % kValueSlice;
      sm.state_lowp[i * kLdValue + jj] = Convert::from(sm.state[i * kLdValueF + jj]);
    }
    if constexpr (kPerKeyGate) {
      // A thread's gate loads go out 8 at a time before their stores (as in load_rows); all 32 at once
      // spilled 248 bytes in this 255-register kernel, 8 spill 24 (sm_90a, bf16).
      float* decay = reinterpret_cast<float*>(sm.x);  // [64][128] over x and w
      constexpr int kBatch = 8;
      for (int base = 0; base < kChunk * kKeyPad; base += kBatch * kForwardThreads) {
        float g[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int e = base + tid + u * kForwardThreads;
          const int t = e / kKeyPad;
          const int i = e % kKeyPad;
          g[u] = (t < rows && i < c.key_dim) ? gate_at(c, g_base + (t0 + t) * c.g.token_stride, hv, i) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int e = base + tid + u * kForwardThreads;
          sm.gate[e] = g[u];
          decay[e] = __expf(g[u]);
        }
      }
    } else {
      if (tid < kChunk) sm.gate[tid] = tid < rows ? gate_at(c, g_base + (t0 + tid) * c.g.token_stride, hv, 0) : 0.0f;
    }
    if (tid >= kForwardThreads - kChunk) {
      const int t = tid - (kForwardThreads - kChunk);
      sm.beta[t] = t < rows ? beta_value(c, load_element(c.beta.data, b_base + (t0 + t) * c.beta.token_stride, c.beta_element)) : 0.0f;
    }
    cp_async_wait_all();
    __syncthreads();

    // ---- L2 factors and the cumulative log decay G ---------------------------------------------------
    // The q and k rows stay the exact inputs; their L2 factors are applied in fp32 where q and k enter A,
    // P and the gated operands. Normalising the rows in place rounded every element to Element again,
    // which set KDA's worst weak-decay cases (out rms 4.5e-3 of the 0.005 bound on the H100;
    // bench/linear/kda_rounding_study.py: 4.4e-3 with rounded rows, 3.2e-3 with exact ones).
    l2_row_factors<Element, kForwardThreads>(sm.q, kLdKey, c.l2norm_qk, sm.q_factor);
    l2_row_factors<Element, kForwardThreads>(sm.k, kLdKey, c.l2norm_qk, sm.k_factor);
    if constexpr (kPerKeyGate) {
      if (tid < kKeyPad) {
        float running = 0.0f;
#pragma unroll 16
        for (int t = 0; t < kChunk; ++t) {
          running += sm.gate[t * kKeyPad + tid];
          sm.gate[t * kKeyPad + tid] = running;
        }
      }
    } else {
      if (warp == 0) {
        float lo = sm.gate[lane];
        float hi = sm.gate[lane + 32];
#pragma unroll
        for (int offset = 1; offset < 32; offset <<= 1) {
          const float lo_up = __shfl_up_sync(0xffffffffu, lo, offset);
          const float hi_up = __shfl_up_sync(0xffffffffu, hi, offset);
          if (lane >= offset) {
            lo += lo_up;
            hi += hi_up;
          }
        }
        hi += __shfl_sync(0xffffffffu, lo, 31);
        sm.gate[lane] = lo;
        sm.gate[lane + 32] = hi;
      }
    }
    __syncthreads();

    // ---- A and P (raw sums; L2 factors, masks, beta and scale are applied below) ---------------------
    if constexpr (kPerKeyGate) {
      // Diagonal blocks on CUDA cores: thread (block, s, quarter) sums channels i = 4 ii + quarter.
      const float* decay = reinterpret_cast<const float*>(sm.x);
      const int block = tid >> 6;
      const int s = (tid >> 2) & 15;
      const int quarter = tid & 3;
      const int row0 = block * kTile;
      float sum_a[kTile], sum_p[kTile];
#pragma unroll
      for (int t = 0; t < kTile; ++t) sum_a[t] = sum_p[t] = 0.0f;
      for (int ii = 0; ii < kKeyPad / 4; ++ii) {
        const int i = ii * 4 + quarter;
        const float ks = Convert::to(sm.k[(row0 + s) * kLdKey + i]);
        float e = 1.0f;  // exp(G_t[i] - G_s[i]) for t >= s, by a running product of per-token decays
#pragma unroll
        for (int t = 0; t < kTile; ++t) {
          e = t <= s ? 1.0f : e * decay[(row0 + t) * kKeyPad + i];
          const float ke = ks * e;
          sum_a[t] += Convert::to(sm.k[(row0 + t) * kLdKey + i]) * ke;
          sum_p[t] += Convert::to(sm.q[(row0 + t) * kLdKey + i]) * ke;
        }
      }
#pragma unroll
      for (int t = 0; t < kTile; ++t) {
        sum_a[t] += __shfl_xor_sync(0xffffffffu, sum_a[t], 1);
        sum_a[t] += __shfl_xor_sync(0xffffffffu, sum_a[t], 2);
        sum_p[t] += __shfl_xor_sync(0xffffffffu, sum_p[t], 1);
        sum_p[t] += __shfl_xor_sync(0xffffffffu, sum_p[t], 2);
        if ((t & 3) == quarter) {
          sm.a[(row0 + t) * kLdChunkF + row0 + s] = sum_a[t];
          sm.p_raw[(row0 + t) * kLdChunkF + row0 + s] = sum_p[t];
        }
      }
      __syncthreads();
      // Off-diagonal blocks, one column block b at a time, split at the reference row r = 16 (b + 1).
      for (int b = 0; b < kChunkTiles - 1; ++b) {
        const int ref = kTile * (b + 1);
        const int left_rows = kChunk - ref;
        // hi parts: right [16][128] k_s exp(G_r - G_s), s in block b; left_q [left_rows][128]
        // q_t exp(G_t - G_r), t >= r; left_k the same with k. lo parts at the same offsets from `lo`.
        Element* right = sm.x;
        Element* left_q = sm.x + kTile * kLdKey;
        Element* left_k = sm.w;
        Element* right_lo = sm.t_beta;
        Element* left_q_lo = right_lo + kTile * kLdKey;
        Element* left_k_lo = right_lo + kChunk * kLdKey;
        for (int e = tid; e < (kTile + left_rows) * kKeyPad; e += kForwardThreads) {
          const int r = e / kKeyPad;
          const int i = e % kKeyPad;
          const float g_ref = sm.gate[ref * kKeyPad + i];
          if (r < kTile) {
            const int s = b * kTile + r;
            split_element(Convert::to(sm.k[s * kLdKey + i]) * __expf(g_ref - sm.gate[s * kKeyPad + i]), &right[r * kLdKey + i],
                          &right_lo[r * kLdKey + i]);
          } else {
            const int t = ref + r - kTile;
            const float f = __expf(sm.gate[t * kKeyPad + i] - g_ref);
            const int at = (r - kTile) * kLdKey + i;
            split_element(Convert::to(sm.q[t * kLdKey + i]) * f, &left_q[at], &left_q_lo[at]);
            split_element(Convert::to(sm.k[t * kLdKey + i]) * f, &left_k[at], &left_k_lo[at]);
          }
        }
        __syncthreads();
        const int jobs = 2 * (left_rows / kTile);
        for (int job = warp; job < jobs; job += kForwardWarps) {
          const int row_tile = job >> 1;
          const bool is_p = job & 1;
          FragC acc;
          wmma::fill_fragment(acc, 0.0f);
          const int row = row_tile * kTile * kLdKey;
          mma_abt_split<Element, kKeyPad>(acc, (is_p ? left_q : left_k) + row, (is_p ? left_q_lo : left_k_lo) + row, right,
                                          right_lo, kLdKey);
          float* dst = (is_p ? sm.p_raw : sm.a) + (ref + row_tile * kTile) * kLdChunkF + b * kTile;
          wmma::store_matrix_sync(dst, acc, kLdChunkF, wmma::mem_row_major);
        }
        __syncthreads();
      }
    } else {
      // GDN: the 10 lower tiles of K K^T and of Q K^T (20 jobs, up to 3 per warp, k-steps interleaved);
      // the scalar decays are applied below.
      constexpr int kJobs = 20;
      constexpr int kPerWarp = (kJobs + kForwardWarps - 1) / kForwardWarps;
      FragC acc[kPerWarp];
      const Element* left[kPerWarp];
      const Element* right[kPerWarp];
      float* dst[kPerWarp];
#pragma unroll
      for (int u = 0; u < kPerWarp; ++u) {
        const int job = warp + u * kForwardWarps;
        const bool is_p = job >= kJobs / 2;
        const int lower = is_p ? job - kJobs / 2 : job;
        int row_tile = 0;
        while ((row_tile + 1) * (row_tile + 2) / 2 <= lower) ++row_tile;
        const int col_tile = lower - row_tile * (row_tile + 1) / 2;
        left[u] = (is_p ? sm.q : sm.k) + row_tile * kTile * kLdKey;
        right[u] = sm.k + col_tile * kTile * kLdKey;
        dst[u] = (is_p ? sm.p_raw : sm.a) + row_tile * kTile * kLdChunkF + col_tile * kTile;
        wmma::fill_fragment(acc[u], 0.0f);
      }
#pragma unroll
      for (int d = 0; d < kKeyPad; d += kTile) {
#pragma unroll
        for (int u = 0; u < kPerWarp; ++u) {
          if (warp + u * kForwardWarps < kJobs) {  // uniform across the warp
            FragA<Element> fa;
            FragBT<Element> fb;
            wmma::load_matrix_sync(fa, left[u] + d, kLdKey);
            wmma::load_matrix_sync(fb, right[u] + d, kLdKey);
            wmma::mma_sync(acc[u], fa, fb, acc[u]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kPerWarp; ++u) {
        if (warp + u * kForwardWarps < kJobs) wmma::store_matrix_sync(dst[u], acc[u], kLdChunkF, wmma::mem_row_major);
      }
      __syncthreads();
    }
    // L2 factors, masks, decays (GDN), beta and scale; P to its Element pair.
    for (int e = tid; e < kChunk * kChunk; e += kForwardThreads) {
      const int t = e / kChunk;
      const int s = e % kChunk;
      float decay = 1.0f;
      if constexpr (!kPerKeyGate) decay = s <= t ? __expf(sm.gate[t] - sm.gate[s]) : 0.0f;
      const float a = sm.a[t * kLdChunkF + s] * sm.k_factor[t] * sm.k_factor[s];
      const float pr = sm.p_raw[t * kLdChunkF + s] * sm.q_factor[t] * sm.k_factor[s];
      sm.a[t * kLdChunkF + s] = s < t ? sm.beta[t] * decay * a : 0.0f;
      split_element(s <= t ? c.scale * decay * pr : 0.0f, &sm.p[t * kLdChunk + s], &sm.p_lo[t * kLdChunk + s]);
    }
    __syncthreads();

    // ---- Solve (warps 0-1) beside the gated operands (warps 2-7) -------------------------------------
    const float g_last_scalar = kPerKeyGate ? 0.0f : sm.gate[kChunk - 1];
    if (tid < kChunk) {
      // Column j of T = (I + A)^-1 by forward substitution; A is strictly lower, so rows above j are 0.
      // Four partial sums per row: the row's critical path is one FMA and two adds after x[i - 1], not a
      // chain of i dependent FMAs (2016 in all, ~8k cycles at 4 cycles each).
      const int j = tid;
      float x[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int s = 0; s < i; ++s) sum[s & 3] += sm.a[i * kLdChunkF + s] * x[s];
        x[i] = i == j ? 1.0f : -((sum[0] + sum[1]) + (sum[2] + sum[3]));
      }
      const float beta_j = sm.beta[j];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) split_element(x[i] * beta_j, &sm.t_beta[i * kLdChunk + j], &sm.t_beta_lo[i * kLdChunk + j]);
    } else {
      for (int e = tid - kChunk; e < kChunk * kKeyPad; e += kForwardThreads - kChunk) {
        const int t = e / kKeyPad;
        const int i = e % kKeyPad;
        const float g = kPerKeyGate ? sm.gate[t * kKeyPad + i] : sm.gate[t];
        const float g_last = kPerKeyGate ? sm.gate[(kChunk - 1) * kKeyPad + i] : g_last_scalar;
        const float kv = Convert::to(sm.k[t * kLdKey + i]) * sm.k_factor[t];
        const float gamma = __expf(g);
        sm.x[t * kLdKey + i] = Convert::from(kv * gamma);
        split_element(kv * __expf(g_last - g), &sm.k[t * kLdKey + i], &k_lo[t * kLdKey + i]);
        sm.q[t * kLdKey + i] = Convert::from(c.scale * sm.q_factor[t] * gamma * Convert::to(sm.q[t * kLdKey + i]));
      }
      for (int e = tid - kChunk; e < kKeyPad * kValueSlice; e += kForwardThreads - kChunk) {
        const int i = e / kValueSlice;
        const float g_last = kPerKeyGate ? sm.gate[(kChunk - 1) * kKeyPad + i] : g_last_scalar;
        sm.state[i * kLdValueF + e % kValueSlice] *= __expf(g_last);
      }
    }
    __syncthreads();

    // ---- -w = -T_beta (k Gamma): 32 tiles, 4 per warp, their k-steps interleaved for ILP -------------
    {
      constexpr int kPerWarp = kChunkTiles * kKeyTiles / kForwardWarps;
      FragC acc[kPerWarp];
#pragma unroll
      for (int u = 0; u < kPerWarp; ++u) wmma::fill_fragment(acc[u], 0.0f);
#pragma unroll
      for (int d = 0; d < kChunk; d += kTile) {
#pragma unroll
        for (int u = 0; u < kPerWarp; ++u) {
          const int job = warp + u * kForwardWarps;
          FragA<Element> fa;
          FragB<Element> fb;
          wmma::load_matrix_sync(fa, sm.t_beta + (job / kKeyTiles) * kTile * kLdChunk + d, kLdChunk);
          wmma::load_matrix_sync(fb, sm.x + d * kLdKey + (job % kKeyTiles) * kTile, kLdKey);
          wmma::mma_sync(acc[u], fa, fb, acc[u]);
          wmma::load_matrix_sync(fa, sm.t_beta_lo + (job / kKeyTiles) * kTile * kLdChunk + d, kLdChunk);
          wmma::mma_sync(acc[u], fa, fb, acc[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kPerWarp; ++u) {
        const int job = warp + u * kForwardWarps;
        store_tile_lowp(acc[u], stage, sm.w + (job / kKeyTiles) * kTile * kLdKey + (job % kKeyTiles) * kTile, kLdKey, -1.0f);
      }
    }
    __syncthreads();

    // ---- delta = T_beta V - w S; O starts as (scale q Gamma) S (k-steps of a warp's tiles interleaved) -
    constexpr int kOutTiles = kChunkTiles * kValueTiles;
    static_assert(kOutTiles % kForwardWarps == 0, "the output tiles split evenly over the warps");
    constexpr int kOutPerWarp = kOutTiles / kForwardWarps;
    FragC out_acc[kOutPerWarp];
    {
      FragC delta_acc[kOutPerWarp];
#pragma unroll
      for (int u = 0; u < kOutPerWarp; ++u) {
        wmma::fill_fragment(delta_acc[u], 0.0f);
        wmma::fill_fragment(out_acc[u], 0.0f);
      }
#pragma unroll
      for (int d = 0; d < kChunk; d += kTile) {
#pragma unroll
        for (int u = 0; u < kOutPerWarp; ++u) {
          const int job = warp + u * kForwardWarps;
          FragA<Element> fa;
          FragB<Element> fb;
          wmma::load_matrix_sync(fa, sm.t_beta + (job / kValueTiles) * kTile * kLdChunk + d, kLdChunk);
          wmma::load_matrix_sync(fb, sm.v + d * kLdValue + (job % kValueTiles) * kTile, kLdValue);
          wmma::mma_sync(delta_acc[u], fa, fb, delta_acc[u]);
          wmma::load_matrix_sync(fa, sm.t_beta_lo + (job / kValueTiles) * kTile * kLdChunk + d, kLdChunk);
          wmma::mma_sync(delta_acc[u], fa, fb, delta_acc[u]);
        }
      }
#pragma unroll
      for (int d = 0; d < kKeyPad; d += kTile) {
#pragma unroll
        for (int u = 0; u < kOutPerWarp; ++u) {
          const int job = warp + u * kForwardWarps;
          const int row_tile = job / kValueTiles;
          FragA<Element> fw, fq;
          FragB<Element> fs;
          wmma::load_matrix_sync(fs, sm.state_lowp + d * kLdValue + (job % kValueTiles) * kTile, kLdValue);
          wmma::load_matrix_sync(fw, sm.w + row_tile * kTile * kLdKey + d, kLdKey);
          wmma::load_matrix_sync(fq, sm.q + row_tile * kTile * kLdKey + d, kLdKey);
          wmma::mma_sync(delta_acc[u], fw, fs, delta_acc[u]);
          wmma::mma_sync(out_acc[u], fq, fs, out_acc[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kOutPerWarp; ++u) {
        const int job = warp + u * kForwardWarps;
        const int at = (job / kValueTiles) * kTile * kLdValue + (job % kValueTiles) * kTile;
        store_tile_split(delta_acc[u], stage, sm.delta + at, delta_lo + at, kLdValue);
      }
    }
    __syncthreads();

    // ---- O += P delta (written out); S = diag(Gamma_last) S + (k exp(G_last - G))^T delta ------------
#pragma unroll
    for (int d = 0; d < kChunk; d += kTile) {
#pragma unroll
      for (int u = 0; u < kOutPerWarp; ++u) {
        const int job = warp + u * kForwardWarps;
        FragA<Element> fa;
        FragB<Element> fb;
        FragA<Element> fa_lo;
        FragB<Element> fb_lo;
        wmma::load_matrix_sync(fa, sm.p + (job / kValueTiles) * kTile * kLdChunk + d, kLdChunk);
        wmma::load_matrix_sync(fa_lo, sm.p_lo + (job / kValueTiles) * kTile * kLdChunk + d, kLdChunk);
        wmma::load_matrix_sync(fb, sm.delta + d * kLdValue + (job % kValueTiles) * kTile, kLdValue);
        wmma::load_matrix_sync(fb_lo, delta_lo + d * kLdValue + (job % kValueTiles) * kTile, kLdValue);
        wmma::mma_sync(out_acc[u], fa, fb, out_acc[u]);
        wmma::mma_sync(out_acc[u], fa_lo, fb, out_acc[u]);
        wmma::mma_sync(out_acc[u], fa, fb_lo, out_acc[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kOutPerWarp; ++u) {
      const int job = warp + u * kForwardWarps;
      const int row_tile = job / kValueTiles;
      const int col_tile = job % kValueTiles;
      wmma::store_matrix_sync(stage, out_acc[u], kTile, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < kTile * kTile; e += 32) {
        const int t = row_tile * kTile + e / kTile;
        const int j = col0 + col_tile * kTile + e % kTile;
        if (t < rows && j < c.value_dim) o_base[(t0 + t) * c.out.token_stride + j] = Convert::from(stage[e]);
      }
      __syncwarp();
    }
    {
      constexpr int kStateTiles = kKeyTiles * kValueTiles;
      static_assert(kStateTiles % kForwardWarps == 0, "the state tiles split evenly over the warps");
      constexpr int kPerWarp = kStateTiles / kForwardWarps;
      FragC acc[kPerWarp];
#pragma unroll
      for (int u = 0; u < kPerWarp; ++u) {
        const int job = warp + u * kForwardWarps;
        wmma::load_matrix_sync(acc[u], sm.state + (job / kValueTiles) * kTile * kLdValueF + (job % kValueTiles) * kTile,
                               kLdValueF, wmma::mem_row_major);
      }
#pragma unroll
      for (int d = 0; d < kChunk; d += kTile) {
#pragma unroll
        for (int u = 0; u < kPerWarp; ++u) {
          const int job = warp + u * kForwardWarps;
          FragAT<Element> fa, fa_lo;
          FragB<Element> fb, fb_lo;
          // (k_decayed)^T as a column-major [128][64] matrix: element (i, s) at s * ld + i.
          wmma::load_matrix_sync(fa, sm.k + d * kLdKey + (job / kValueTiles) * kTile, kLdKey);
          wmma::load_matrix_sync(fa_lo, k_lo + d * kLdKey + (job / kValueTiles) * kTile, kLdKey);
          wmma::load_matrix_sync(fb, sm.delta + d * kLdValue + (job % kValueTiles) * kTile, kLdValue);
          wmma::load_matrix_sync(fb_lo, delta_lo + d * kLdValue + (job % kValueTiles) * kTile, kLdValue);
          wmma::mma_sync(acc[u], fa, fb, acc[u]);
          wmma::mma_sync(acc[u], fa_lo, fb, acc[u]);
          wmma::mma_sync(acc[u], fa, fb_lo, acc[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kPerWarp; ++u) {
        const int job = warp + u * kForwardWarps;
        wmma::store_matrix_sync(sm.state + (job / kValueTiles) * kTile * kLdValueF + (job % kValueTiles) * kTile, acc[u],
                                kLdValueF, wmma::mem_row_major);
      }
    }
    __syncthreads();
  }

  if (params.final_state.data == nullptr) return;
  for (int e = tid; e < kKeyPad * kValueSlice; e += kForwardThreads) {
    const int i = e / kValueSlice;
    const int j = col0 + e % kValueSlice;
    if (i < c.key_dim && j < c.value_dim) {
      params.final_state.data[state_offset(params.final_state, i, j)] = sm.state[i * kLdValueF + e % kValueSlice];
    }
  }
}

template <typename Element, bool kPerKeyGate, int kValueSlice>
cudaError_t launch_linear_forward_instance(const LinearForwardParams& params, cudaStream_t stream) {
  using Shared = ForwardShared<Element, kPerKeyGate, kValueSlice>;
  static_assert(sizeof(Shared) <= 227 * 1024, "the shared memory fits one CTA of an sm_80 / sm_90 SM");
  constexpr auto kernel = &linear_forward_kernel<Element, kPerKeyGate, kValueSlice>;
  const int bytes = static_cast<int>(sizeof(Shared));
  cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes);
  if (status != cudaSuccess) return status;
  const int slices = (params.common.value_dim + kValueSlice - 1) / kValueSlice;
  const dim3 grid(static_cast<unsigned>(params.num_sequences) * slices, params.common.heads_v);
  kernel<<<grid, kForwardThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace attnkit::sm80::linear_detail
