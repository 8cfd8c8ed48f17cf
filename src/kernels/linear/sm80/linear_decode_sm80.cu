// Recurrent decode step for GDN and KDA (semantics.md section 5): per (sequence, value head) the fp32
// state S [K, V] is read once, advanced through the step's T tokens in registers, and written once.
// The op moves 2 * K * V * 4 bytes per (sequence, value head) and does ~6 K V flops per token, so it is
// bound by memory bandwidth; the kernels aim at the device copy rate.
//
// One CTA of 4 warps covers 32 value columns of one (sequence, value head). The state layout decides
// which index runs along the lanes so that each warp load is one contiguous 128-byte row segment:
//   [K, V] (kv): lane = value column j, warps interleave the key rows i (i = warp + 4 r); the sums over i
//                are per thread, then across the 4 warps through shared memory.
//   [V, K] (vk): each warp owns 8 value columns, lane = key row i (i = lane + 32 c); the sums over i are
//                warp shuffles.
// Per token both sums S'^T k and S'^T q are taken in one pass over the decayed state S', because
// o = S_t^T q = S'^T q + delta (k . q) with delta = beta (v - S'^T k): one pass, one reduction.
#include <cuda_runtime.h>

#include "kernels/linear/sm80/linear_sm80_common.cuh"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {
namespace {

using namespace linear_detail;

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kDecodeColumns = 32;  // value columns per CTA

// The per-token inputs every thread needs, in shared memory: q, k, and KDA's per-channel decays.
struct DecodeToken {
  float q[kLinearDecodeMaxKeyDim];
  float k[kLinearDecodeMaxKeyDim];
  float decay[kLinearDecodeMaxKeyDim];  // exp(g) per key channel (KDA); decay[0] for the head (GDN)
  float beta;
};

// The per-token scalars, resolved by every warp on its own (three warp sums) so that the token costs
// one barrier, not two.
struct DecodeScalars {
  float q_factor;  // scale, times the L2 factor of q when fused
  float k_factor;  // the L2 factor of k when fused, else 1
  float qk;        // (q_factor q) . (k_factor k)
};

// Loads token t of sequence n into `token` (all threads; one barrier).
__device__ void load_decode_token(const LinearDecodeParams& p, int n, int t, int hv, DecodeToken& token) {
  const LinearCommonParams& c = p.common;
  const int h = hv / c.group;
  const std::int64_t q_offset = n * c.q.batch_stride + t * c.q.token_stride + h * c.q.head_stride;
  const std::int64_t k_offset = n * c.k.batch_stride + t * c.k.token_stride + h * c.k.head_stride;
  const std::int64_t g_offset = n * c.g.batch_stride + t * c.g.token_stride;
  for (int i = threadIdx.x; i < c.key_dim; i += kDecodeThreads) {
    token.q[i] = load_element(c.q.data, q_offset + i, c.io_element);
    token.k[i] = load_element(c.k.data, k_offset + i, c.io_element);
    if (c.per_key_gate) token.decay[i] = expf(gate_at(c, g_offset, hv, i));
  }
  // Two other threads than the K loop's first ones fetch the head's scalars, in parallel with it.
  if (threadIdx.x == kDecodeThreads - 1 && !c.per_key_gate) token.decay[0] = expf(gate_at(c, g_offset, hv, 0));
  if (threadIdx.x == kDecodeThreads - 33) {
    const std::int64_t b_offset = n * c.beta.batch_stride + t * c.beta.token_stride + hv * c.beta.head_stride;
    token.beta = beta_value(c, load_element(c.beta.data, b_offset, c.beta_element));
  }
  __syncthreads();
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

__device__ void write_zero_rows(const LinearDecodeParams& p, int n, int hv, int column_begin) {
  const LinearCommonParams& c = p.common;
  for (int e = threadIdx.x; e < p.tokens * kDecodeColumns; e += kDecodeThreads) {
    const int t = e / kDecodeColumns;
    const int j = column_begin + e % kDecodeColumns;
    if (j < c.value_dim) store_element(c.out_data, out_offset(c, n, t, hv) + j, c.io_element, 0.0f);
  }
}

// [K, V] layout: thread (warp, lane) holds S[warp + 4 r][column_begin + lane] for r < kRows.
// Registers bound the CTAs per SM, and the CTAs in flight per SM bound the bytes in flight: at K <= 128,
// 85 registers give 6 CTAs (24 warps, 96 KB of state loads) per SM; 64 registers (8 CTAs) spill
// ~130 bytes per thread (ptxas, sm_90), 117 (the unbounded count) leave 4 CTAs.
template <int kRows>
__global__ void __launch_bounds__(kDecodeThreads, kRows <= 32 ? 6 : 3) decode_kv_kernel(LinearDecodeParams p) {
  const LinearCommonParams& c = p.common;
  const int slices = (c.value_dim + kDecodeColumns - 1) / kDecodeColumns;
  const int n = blockIdx.x / slices;
  const int column_begin = (blockIdx.x % slices) * kDecodeColumns;
  const int hv = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int j = column_begin + lane;
  const bool column = j < c.value_dim;

  float* state = decode_state(p, n, hv);
  if (state == nullptr) {
    write_zero_rows(p, n, hv, column_begin);
    return;
  }
  __shared__ DecodeToken token;
  __shared__ float partial_k[kDecodeWarps][32];
  __shared__ float partial_q[kDecodeWarps][32];

  float s[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = warp + kDecodeWarps * r;
    s[r] = (i < c.key_dim && column) ? state[i * p.state.row_stride + j] : 0.0f;
  }
  for (int t = 0; t < p.tokens; ++t) {
    const float v = column ? load_element(c.v.data, v_offset(c, n, t, hv) + j, c.io_element) : 0.0f;
    load_decode_token(p, n, t, hv, token);
    const DecodeScalars scalars = decode_scalars(c, token);
    float sum_k = 0.0f, sum_q = 0.0f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int i = warp + kDecodeWarps * r;
      if (i < c.key_dim) {
        s[r] *= c.per_key_gate ? token.decay[i] : token.decay[0];
        sum_k += token.k[i] * s[r];
        sum_q += token.q[i] * s[r];
      }
    }
    partial_k[warp][lane] = sum_k;
    partial_q[warp][lane] = sum_q;
    __syncthreads();
    sum_k = 0.0f;
    sum_q = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      sum_k += partial_k[w][lane];
      sum_q += partial_q[w][lane];
    }
    const float delta = token.beta * (v - scalars.k_factor * sum_k);
    if (warp == 0 && column) {
      store_element(c.out_data, out_offset(c, n, t, hv) + j, c.io_element,
                    scalars.q_factor * sum_q + delta * scalars.qk);
    }
    const float k_delta = scalars.k_factor * delta;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int i = warp + kDecodeWarps * r;
      if (i < c.key_dim) s[r] += token.k[i] * k_delta;
    }
    if (t + 1 < p.tokens) __syncthreads();  // the next token overwrites `token` and the partial sums
  }
  if (!column) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = warp + kDecodeWarps * r;
    if (i < c.key_dim) state[i * p.state.row_stride + j] = s[r];
  }
}

// [V, K] layout: warp w holds rows j = column_begin + 8 w + jj of S^T, lane holding i = lane + 32 c.
template <int kChunks>
__global__ void __launch_bounds__(kDecodeThreads, kChunks <= 4 ? 6 : 3) decode_vk_kernel(LinearDecodeParams p) {
  constexpr int kColumnsPerWarp = kDecodeColumns / kDecodeWarps;
  const LinearCommonParams& c = p.common;
  const int slices = (c.value_dim + kDecodeColumns - 1) / kDecodeColumns;
  const int n = blockIdx.x / slices;
  const int column_begin = (blockIdx.x % slices) * kDecodeColumns;
  const int hv = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warp_column = column_begin + warp * kColumnsPerWarp;

  float* state = decode_state(p, n, hv);
  if (state == nullptr) {
    write_zero_rows(p, n, hv, column_begin);
    return;
  }
  __shared__ DecodeToken token;

  float s[kColumnsPerWarp][kChunks];
#pragma unroll
  for (int jj = 0; jj < kColumnsPerWarp; ++jj) {
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const int i = lane + 32 * ch;
      const int j = warp_column + jj;
      s[jj][ch] = (i < c.key_dim && j < c.value_dim) ? state[j * p.state.row_stride + i] : 0.0f;
    }
  }
  for (int t = 0; t < p.tokens; ++t) {
    const std::int64_t v_row = v_offset(c, n, t, hv);
    float v_mine = 0.0f;  // lane jj holds v of column warp_column + jj
    if (lane < kColumnsPerWarp && warp_column + lane < c.value_dim) v_mine = load_element(c.v.data, v_row + warp_column + lane, c.io_element);
    load_decode_token(p, n, t, hv, token);
    const DecodeScalars scalars = decode_scalars(c, token);
    float k_i[kChunks], q_i[kChunks], decay_i[kChunks];
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const int i = lane + 32 * ch;
      const bool row = i < c.key_dim;
      k_i[ch] = row ? token.k[i] : 0.0f;
      q_i[ch] = row ? token.q[i] : 0.0f;
      decay_i[ch] = row ? (c.per_key_gate ? token.decay[i] : token.decay[0]) : 0.0f;
    }
    const std::int64_t out_row = out_offset(c, n, t, hv);
#pragma unroll
    for (int jj = 0; jj < kColumnsPerWarp; ++jj) {
      const int j = warp_column + jj;
      if (j >= c.value_dim) break;  // uniform across the warp
      float sum_k = 0.0f, sum_q = 0.0f;
#pragma unroll
      for (int ch = 0; ch < kChunks; ++ch) {
        s[jj][ch] *= decay_i[ch];
        sum_k += k_i[ch] * s[jj][ch];
        sum_q += q_i[ch] * s[jj][ch];
      }
      sum_k = warp_sum(sum_k);
      sum_q = warp_sum(sum_q);
      const float v = __shfl_sync(0xffffffffu, v_mine, jj);
      const float delta = token.beta * (v - scalars.k_factor * sum_k);
      if (lane == jj) store_element(c.out_data, out_row + j, c.io_element, scalars.q_factor * sum_q + delta * scalars.qk);
      const float k_delta = scalars.k_factor * delta;
#pragma unroll
      for (int ch = 0; ch < kChunks; ++ch) s[jj][ch] += k_i[ch] * k_delta;
    }
    if (t + 1 < p.tokens) __syncthreads();  // the next token overwrites `token`
  }
#pragma unroll
  for (int jj = 0; jj < kColumnsPerWarp; ++jj) {
    const int j = warp_column + jj;
    if (j >= c.value_dim) break;
#pragma unroll
    for (int ch = 0; ch < kChunks; ++ch) {
      const int i = lane + 32 * ch;
      if (i < c.key_dim) state[j * p.state.row_stride + i] = s[jj][ch];
    }
  }
}

}  // namespace

cudaError_t launch_linear_decode(const LinearDecodeParams& params, cudaStream_t stream) {
  const int slices = (params.common.value_dim + kDecodeColumns - 1) / kDecodeColumns;
  const dim3 grid(static_cast<unsigned>(params.num_sequences) * slices, params.common.heads_v);
  const bool wide = params.common.key_dim > 128;  // 64 (kv) / 8 (vk) state floats per thread past K = 128
  if (params.common.state_vk) {
    if (wide) decode_vk_kernel<8><<<grid, kDecodeThreads, 0, stream>>>(params);
    else decode_vk_kernel<4><<<grid, kDecodeThreads, 0, stream>>>(params);
  } else {
    if (wide) decode_kv_kernel<64><<<grid, kDecodeThreads, 0, stream>>>(params);
    else decode_kv_kernel<32><<<grid, kDecodeThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

}  // namespace attnkit::sm80
