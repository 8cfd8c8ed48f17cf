// Recurrent decode step for GDN and KDA (semantics.md section 5): per (sequence, value head) the fp32
// state S [K, V] is read once, advanced through the step's T tokens in registers, and written once.
// The op moves 2 * K * V * 4 bytes per (sequence, value head) and does ~6 K V flops per token, so it is
// bound by memory bandwidth; the kernels aim at the device copy rate.
//
// One CTA of 4 warps covers 32 value columns ([V, K]; [K, V] past K = 128) or 64 ([K, V], K <= 128) of
// one (sequence, value head). Every thread moves its share of the state as 16-byte vectors (4 consecutive
// floats of a row) with streaming cache hints (ld.global.cs / st.global.cs: the state is touched once per
// step and must not evict q, k, v):
//   [K, V] (kv): 16 (8 past K = 128) lanes span the CTA's columns of a key row, 4 columns each, and the
//                CTA's lane groups interleave the key rows; the sums over i are per thread, then
//                shuffles within the warp, then across the 4 warps through shared memory.
//   [V, K] (vk): each warp owns 8 value columns, 8 lanes per column, lane l holding key rows
//                4 (l % 8) + 32 ch + e; the sums over i are per thread, then 3 shuffles.
// The token's inputs (q, k, v, gate, beta) are fetched into registers before the state loads, so their
// latency overlaps the state's instead of following it. Rows that are not 16-byte aligned (K or V not a
// multiple of 4, odd strides) take the same mapping with 4-byte accesses.
// Per token both sums S'^T k and S'^T q are taken in one pass over the decayed state S', because
// o = S_t^T q = S'^T q + delta (k . q) with delta = beta (v - S'^T k): one pass, one reduction.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_sm80_common.cuh"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {
namespace {

using namespace linear_detail;

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kDecodeColumns = 32;  // value columns per CTA

// The per-token inputs every thread needs, in shared memory: q, k, and KDA's per-channel decays. The
// arrays are 16-byte aligned and zero past K, so that [V, K] reads them as unguarded float4.
struct DecodeToken {
  alignas(16) float q[kLinearDecodeMaxKeyDim];
  alignas(16) float k[kLinearDecodeMaxKeyDim];
  alignas(16) float decay[kLinearDecodeMaxKeyDim];  // exp(g) per key channel (KDA); decay[0] for the head (GDN)
  float beta;
};

// The per-token scalars, resolved by every warp on its own (three warp sums) so that the token costs
// one barrier, not two.
struct DecodeScalars {
  float q_factor;  // scale, times the L2 factor of q when fused
  float k_factor;  // the L2 factor of k when fused, else 1
  float qk;        // (q_factor q) . (k_factor k)
};

// One token's inputs as this thread fetched them (key channels i = threadIdx.x + 128 m), still raw: the
// gate's math and the stores to shared memory wait for publish_token, so that no use of a load stands
// between the token's loads and the state's.
struct TokenFetch {
  float q[2], k[2];
  float g[2], bias[2];  // raw gate and dt_bias per key channel (KDA); g[0], bias[0] of the head (GDN)
  float a_log;
  float beta;  // raw beta (thread kDecodeThreads - 33 only)
};

__device__ TokenFetch fetch_token(const LinearDecodeParams& p, int n, int t, int hv) {
  const LinearCommonParams& c = p.common;
  const int h = hv / c.group;
  const std::int64_t q_offset = n * c.q.batch_stride + t * c.q.token_stride + h * c.q.head_stride;
  const std::int64_t k_offset = n * c.k.batch_stride + t * c.k.token_stride + h * c.k.head_stride;
  const std::int64_t g_offset = n * c.g.batch_stride + t * c.g.token_stride + hv * c.g.head_stride;
  const bool fused_gate = c.gate != LinearGate::kLogDecay;
  TokenFetch f;
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    const int i = threadIdx.x + kDecodeThreads * m;
    const bool channel = threadIdx.x < kDecodeThreads && i < c.key_dim;  // the first 128 threads fetch
    f.q[m] = channel ? load_element(c.q.data, q_offset + i, c.io_element) : 0.0f;
    f.k[m] = channel ? load_element(c.k.data, k_offset + i, c.io_element) : 0.0f;
    // GDN's one gate per head: the last thread fetches it, beside the key loop's first threads.
    const bool gate = c.per_key_gate ? channel : (m == 0 && threadIdx.x == kDecodeThreads - 1);
    const int gate_channel = c.per_key_gate ? i : 0;
    f.g[m] = gate ? load_element(c.g.data, g_offset + gate_channel, c.gate_element) : 0.0f;
    f.bias[m] = (gate && fused_gate && c.dt_bias != nullptr)
                    ? c.dt_bias[c.per_key_gate ? hv * c.key_dim + i : hv]
                    : 0.0f;
  }
  f.a_log = fused_gate ? c.A_log[hv] : 0.0f;
  f.beta = 0.0f;
  if (threadIdx.x == kDecodeThreads - 33) {
    const std::int64_t b_offset = n * c.beta.batch_stride + t * c.beta.token_stride + hv * c.beta.head_stride;
    f.beta = load_element(c.beta.data, b_offset, c.beta_element);
  }
  return f;
}

static_assert(2 * kDecodeThreads == kLinearDecodeMaxKeyDim, "fetch_token covers K with two channels a thread");

// Stores a fetched token into `token` (the caller's barrier publishes it).
__device__ void publish_token(const LinearCommonParams& c, const TokenFetch& f, DecodeToken& token) {
  if (threadIdx.x >= kDecodeThreads) return;  // CTAs of more than 128 threads: the first 128 publish
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    const int i = threadIdx.x + kDecodeThreads * m;  // covers all kLinearDecodeMaxKeyDim channels
    const bool channel = i < c.key_dim;
    token.q[i] = f.q[m];  // fetched as 0 past K
    token.k[i] = f.k[m];
    if (c.per_key_gate) token.decay[i] = channel ? expf(log_decay(c, f.g[m], f.a_log, f.bias[m])) : 0.0f;
  }
  if (threadIdx.x == kDecodeThreads - 1 && !c.per_key_gate) token.decay[0] = expf(log_decay(c, f.g[0], f.a_log, f.bias[0]));
  if (threadIdx.x == kDecodeThreads - 33) token.beta = beta_value(c, f.beta);
}

__device__ DecodeScalars decode_scalars(const LinearCommonParams& c, const DecodeToken& token) {
  float qq = 0.0f, kk = 0.0f, qk = 0.0f;
  for (int i = threadIdx.x & 31; i < c.key_dim; i += 32) {
    qq += token.q[i] * token.q[i];
    kk += token.k[i] * token.k[i];
    qk += token.q[i] * token.k[i];
  }
  qq = warp_sum(qq);
  kk = warp_sum(kk);
  qk = warp_sum(qk);
  const float q_l2 = c.l2norm_qk ? l2norm_factor(qq) : 1.0f;
  const float k_l2 = c.l2norm_qk ? l2norm_factor(kk) : 1.0f;
  DecodeScalars scalars;
  scalars.q_factor = c.scale * q_l2;
  scalars.k_factor = k_l2;
  scalars.qk = qk * scalars.q_factor * k_l2;
  return scalars;
}

__device__ __forceinline__ std::int64_t out_offset(const LinearCommonParams& c, int n, int t, int hv) {
  return n * c.out.batch_stride + t * c.out.token_stride + hv * c.out.head_stride;
}
__device__ __forceinline__ std::int64_t v_offset(const LinearCommonParams& c, int n, int t, int hv) {
  return n * c.v.batch_stride + t * c.v.token_stride + hv * c.v.head_stride;
}

// The state of (n, hv), or null for a padding slot (negative index) or an index outside the pool.
__device__ __forceinline__ float* decode_state(const LinearDecodeParams& p, int n, int hv) {
  const std::int64_t slot = p.state_indices == nullptr ? n : p.state_indices[n * p.state_indices_stride];
  if (slot < 0 || slot >= p.state_pool) return nullptr;
  return p.state.data + slot * p.state.sequence_stride + hv * p.state.head_stride;
}

// Four consecutive state floats of one row, of which the first `valid` exist (none when valid <= 0).
// `vector`: the row pointer is 16-byte aligned and valid is 4 or <= 0.
__device__ __forceinline__ void load_state4(const float* from, bool vector, int valid, float (&x)[4]) {
  if (vector && valid > 0) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(from));
    x[0] = v.x;
    x[1] = v.y;
    x[2] = v.z;
    x[3] = v.w;
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) x[e] = e < valid ? __ldcs(from + e) : 0.0f;
}

__device__ __forceinline__ void store_state4(float* to, bool vector, int valid, const float (&x)[4]) {
  if (vector && valid > 0) {
    __stcs(reinterpret_cast<float4*>(to), make_float4(x[0], x[1], x[2], x[3]));
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if (e < valid) __stcs(to + e, x[e]);
  }
}

__device__ void write_zero_rows(const LinearDecodeParams& p, int n, int hv, int column_begin, int columns) {
  const LinearCommonParams& c = p.common;
  for (int e = threadIdx.x; e < p.tokens * columns; e += blockDim.x) {
    const int t = e / columns;
    const int j = column_begin + e % columns;
    if (j < c.value_dim) store_element(c.out_data, out_offset(c, n, t, hv) + j, c.io_element, 0.0f);
  }
}

// [K, V] layout: a CTA of kWarps warps covers 4 kQuads value columns; thread (group g = threadIdx / kQuads,
// column quad c = threadIdx % kQuads) holds S[g + G r][column_begin + 4 c + e] for r < kRows, e < 4, with
// G = 32 kWarps / kQuads groups, as 16-byte loads. The sums over i are per thread, then shuffles among
// the warp's groups, then across the warps through shared memory.
// K <= 128: kQuads = 16, 4 warps over 64 columns (256-byte row pieces), 64 floats per thread, 4 CTAs/SM:
// 128 KB of state loads in flight per SM. Measured on the H200 (NOTES prediction 11): 85.5-90.9% of
// copy, against 76-81% with 32 columns (128-byte pieces, 32 floats, 6 CTAs/SM) and 76-79% with whole
// 512-byte rows (8 warps over 128 columns, 2 CTAs/SM, 104 bytes of spill at 128 registers).
// K <= 256: kQuads = 8, 4 warps over 32 columns, 64 floats per thread, 3 CTAs/SM.
template <int kRows, int kWarps, int kQuads, int kMinBlocks>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks) decode_kv_kernel(LinearDecodeParams p, bool vector) {
  constexpr int kColumns = 4 * kQuads;
  constexpr int kGroups = 32 * kWarps / kQuads;
  const LinearCommonParams& c = p.common;
  const int slices = (c.value_dim + kColumns - 1) / kColumns;
  const int column_begin = (blockIdx.x % slices) * kColumns;
  const int hv = (blockIdx.x / slices) % c.heads_v;
  const int n = blockIdx.x / (slices * c.heads_v);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int group = threadIdx.x / kQuads;
  const int quad = threadIdx.x % kQuads;
  const int j0 = column_begin + 4 * quad;
  const int columns = c.value_dim - j0;  // of this thread's 4, the first `columns` exist

  TokenFetch fetched = fetch_token(p, n, 0, hv);
  float v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = e < columns ? load_element(c.v.data, v_offset(c, n, 0, hv) + j0 + e, c.io_element) : 0.0f;

  float* state = decode_state(p, n, hv);
  if (state == nullptr) {
    write_zero_rows(p, n, hv, column_begin, kColumns);
    return;
  }
  __shared__ DecodeToken token;
  __shared__ float partial_k[kWarps][kColumns];
  __shared__ float partial_q[kWarps][kColumns];

  float s[kRows][4];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = group + kGroups * r;
    load_state4(state + i * p.state.row_stride + j0, vector, i < c.key_dim ? columns : 0, s[r]);
  }
  for (int t = 0; t < p.tokens; ++t) {
    if (t > 0) {
      fetched = fetch_token(p, n, t, hv);
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] = e < columns ? load_element(c.v.data, v_offset(c, n, t, hv) + j0 + e, c.io_element) : 0.0f;
    }
    publish_token(c, fetched, token);
    __syncthreads();
    const DecodeScalars scalars = decode_scalars(c, token);
    float sum_k[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sum_q[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int i = group + kGroups * r;
      if (i < c.key_dim) {
        const float decay = c.per_key_gate ? token.decay[i] : token.decay[0];
        const float k_i = token.k[i], q_i = token.q[i];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[r][e] *= decay;
          sum_k[e] += k_i * s[r][e];
          sum_q[e] += q_i * s[r][e];
        }
      }
    }
    // The warp's groups of a column quad are lanes quad + kQuads m.
#pragma unroll
    for (int offset = kQuads; offset < 32; offset <<= 1) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sum_k[e] += __shfl_xor_sync(0xffffffffu, sum_k[e], offset);
        sum_q[e] += __shfl_xor_sync(0xffffffffu, sum_q[e], offset);
      }
    }
    if (lane < kQuads) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        partial_k[warp][4 * quad + e] = sum_k[e];
        partial_q[warp][4 * quad + e] = sum_q[e];
      }
    }
    __syncthreads();
    float k_delta[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float total_k = 0.0f, total_q = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        total_k += partial_k[w][4 * quad + e];
        total_q += partial_q[w][4 * quad + e];
      }
      const float delta = token.beta * (v[e] - scalars.k_factor * total_k);
      if (threadIdx.x < kQuads && e < columns) {
        store_element(c.out_data, out_offset(c, n, t, hv) + j0 + e, c.io_element,
                      scalars.q_factor * total_q + delta * scalars.qk);
      }
      k_delta[e] = scalars.k_factor * delta;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int i = group + kGroups * r;
      if (i < c.key_dim) {
        const float k_i = token.k[i];
#pragma unroll
        for (int e = 0; e < 4; ++e) s[r][e] += k_i * k_delta[e];
      }
    }
    if (t + 1 < p.tokens) __syncthreads();  // the next token overwrites `token` and the partial sums
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = group + kGroups * r;
    store_state4(state + i * p.state.row_stride + j0, vector, i < c.key_dim ? columns : 0, s[r]);
  }
}

// [V, K] layout: warp w owns the value rows j = column_begin + 8 w + 4 rr + lane / 8 (rr < 2); the 8 lanes
// of a row hold its key channels i = 4 (lane % 8) + 32 ch + e (e < 4, ch < kChunks), so a warp access is
// 4 rows x 128 contiguous bytes and the sums over i are per thread (4 kChunks terms) then 3 shuffles
// among the row's 8 lanes: 12 shuffles per thread and token, against 80 when a lane held one quad of
// each of the warp's 8 rows and every sum went over all 32 lanes.
template <int kChunks>
__global__ void __launch_bounds__(kDecodeThreads, kChunks <= 4 ? 6 : 3)
    decode_vk_kernel(LinearDecodeParams p, bool vector) {
  constexpr int kRowsPerThread = 2;
  const LinearCommonParams& c = p.common;
  const int slices = (c.value_dim + kDecodeColumns - 1) / kDecodeColumns;
  const int column_begin = (blockIdx.x % slices) * kDecodeColumns;
  const int hv = (blockIdx.x / slices) % c.heads_v;
  const int n = blockIdx.x / (slices * c.heads_v);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int quad = lane & 7;
  const int row_base = column_begin + 8 * warp + (lane >> 3);

  TokenFetch fetched = fetch_token(p, n, 0, hv);
  float v[kRowsPerThread];
#pragma unroll
  for (int rr = 0; rr < kRowsPerThread; ++rr) {
    const int j = row_base + 4 * rr;
    v[rr] = j < c.value_dim ? load_element(c.v.data, v_offset(c, n, 0, hv) + j, c.io_element) : 0.0f;
  }

  float* state = decode_state(p, n, hv);
  if (state == nullptr) {
    write_zero_rows(p, n, hv, column_begin, kDecodeColumns);
    return;
  }
  __shared__ DecodeToken token;

  float s[kRowsPerThread][kChunks][4];
#pragma unroll
  for (int rr = 0; rr < kRowsPerThread; ++rr) {
    const int j = row_base + 4 * rr;
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const int i0 = 4 * quad + 32 * ch;
      load_state4(state + j * p.state.row_stride + i0, vector, j < c.value_dim ? c.key_dim - i0 : 0, s[rr][ch]);
    }
  }
  for (int t = 0; t < p.tokens; ++t) {
    if (t > 0) {
      fetched = fetch_token(p, n, t, hv);
#pragma unroll
      for (int rr = 0; rr < kRowsPerThread; ++rr) {
        const int j = row_base + 4 * rr;
        v[rr] = j < c.value_dim ? load_element(c.v.data, v_offset(c, n, t, hv) + j, c.io_element) : 0.0f;
      }
    }
    publish_token(c, fetched, token);
    __syncthreads();
    const DecodeScalars scalars = decode_scalars(c, token);
    const float head_decay = token.decay[0];
    const std::int64_t out_row = out_offset(c, n, t, hv);
    // Channel quads outer, rows inner: each quad of q, k and decay is read from shared memory once for
    // both rows (holding all kChunks quads would cost 12 kChunks registers and spill).
    // Rows past V hold zeros and still join the shuffles (all 32 lanes); they store nothing.
    float sum_k[kRowsPerThread] = {}, sum_q[kRowsPerThread] = {};
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const int i0 = 4 * quad + 32 * ch;
      const float4 k4 = *reinterpret_cast<const float4*>(&token.k[i0]);
      const float4 q4 = *reinterpret_cast<const float4*>(&token.q[i0]);
      const float4 d4 = c.per_key_gate ? *reinterpret_cast<const float4*>(&token.decay[i0])
                                       : make_float4(head_decay, head_decay, head_decay, head_decay);
      const float k_i[4] = {k4.x, k4.y, k4.z, k4.w};
      const float q_i[4] = {q4.x, q4.y, q4.z, q4.w};
      const float d_i[4] = {d4.x, d4.y, d4.z, d4.w};
#pragma unroll
      for (int rr = 0; rr < kRowsPerThread; ++rr) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[rr][ch][e] *= d_i[e];
          sum_k[rr] += k_i[e] * s[rr][ch][e];
          sum_q[rr] += q_i[e] * s[rr][ch][e];
        }
      }
    }
    float k_delta[kRowsPerThread];
#pragma unroll
    for (int rr = 0; rr < kRowsPerThread; ++rr) {
#pragma unroll
      for (int offset = 4; offset > 0; offset >>= 1) {
        sum_k[rr] += __shfl_xor_sync(0xffffffffu, sum_k[rr], offset);
        sum_q[rr] += __shfl_xor_sync(0xffffffffu, sum_q[rr], offset);
      }
      const int j = row_base + 4 * rr;
      const float delta = token.beta * (v[rr] - scalars.k_factor * sum_k[rr]);
      if (quad == 0 && j < c.value_dim) {
        store_element(c.out_data, out_row + j, c.io_element, scalars.q_factor * sum_q[rr] + delta * scalars.qk);
      }
      k_delta[rr] = scalars.k_factor * delta;
    }
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const float4 k4 = *reinterpret_cast<const float4*>(&token.k[4 * quad + 32 * ch]);
#pragma unroll
      for (int rr = 0; rr < kRowsPerThread; ++rr) {
        s[rr][ch][0] += k4.x * k_delta[rr];
        s[rr][ch][1] += k4.y * k_delta[rr];
        s[rr][ch][2] += k4.z * k_delta[rr];
        s[rr][ch][3] += k4.w * k_delta[rr];
      }
    }
    if (t + 1 < p.tokens) __syncthreads();  // the next token overwrites `token`
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerThread; ++rr) {
    const int j = row_base + 4 * rr;
    if (j >= c.value_dim) continue;
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const int i0 = 4 * quad + 32 * ch;
      store_state4(state + j * p.state.row_stride + i0, vector, c.key_dim - i0, s[rr][ch]);
    }
  }
}

}  // namespace

cudaError_t launch_linear_decode(const LinearDecodeParams& params, cudaStream_t stream) {
  const LinearCommonParams& c = params.common;
  // CTAs in state memory order (slice fastest, then value head, then sequence): the CTAs resident at a
  // time sweep the state as one contiguous stream, as a copy does.
  const auto grid = [&](int columns) {
    const int slices = (c.value_dim + columns - 1) / columns;
    return dim3(static_cast<unsigned>(params.num_sequences) * c.heads_v * slices);
  };
  const bool wide = c.key_dim > 128;  // 64 state floats per thread past K = 128 (both layouts)
  // 16-byte accesses need every row start 16-byte aligned and whole quads along the contiguous dimension.
  const bool aligned = reinterpret_cast<std::uintptr_t>(params.state.data) % 16 == 0 &&
                       params.state.sequence_stride % 4 == 0 && params.state.head_stride % 4 == 0 &&
                       params.state.row_stride % 4 == 0;
  if (c.state_vk) {
    const bool vector = aligned && c.key_dim % 4 == 0;
    if (wide) decode_vk_kernel<8><<<grid(kDecodeColumns), kDecodeThreads, 0, stream>>>(params, vector);
    else decode_vk_kernel<4><<<grid(kDecodeColumns), kDecodeThreads, 0, stream>>>(params, vector);
  } else {
    const bool vector = aligned && c.value_dim % 4 == 0;
    if (wide) decode_kv_kernel<16, 4, 8, 3><<<grid(32), 128, 0, stream>>>(params, vector);
    else decode_kv_kernel<16, 4, 16, 4><<<grid(64), 128, 0, stream>>>(params, vector);
  }
  return cudaGetLastError();
}

}  // namespace attnkit::sm80
