// Device helpers shared by the sm80 linear-attention kernels: typed loads of run-time element types, the
// fused gate and beta forms of semantics.md section 5, and warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80::linear_detail {

__device__ __forceinline__ float load_element(const void* base, std::int64_t offset, LinearElement element) {
  switch (element) {
    case LinearElement::kFloat32: return static_cast<const float*>(base)[offset];
    case LinearElement::kFloat16: return __half2float(static_cast<const __half*>(base)[offset]);
    case LinearElement::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[offset]);
  }
  return 0.0f;
}

__device__ __forceinline__ void store_element(void* base, std::int64_t offset, LinearElement element, float x) {
  switch (element) {
    case LinearElement::kFloat32: static_cast<float*>(base)[offset] = x; break;
    case LinearElement::kFloat16: static_cast<__half*>(base)[offset] = __float2half_rn(x); break;
    case LinearElement::kBFloat16: static_cast<__nv_bfloat16*>(base)[offset] = __float2bfloat16_rn(x); break;
  }
}

// softplus with the usual linear tail above 20 (exp(20) = 4.9e8: log1p adds less than 2e-9 there).
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

// The log decay of one gate element: `raw` is g as passed, `dt_bias` the matching bias (0 when absent).
__device__ __forceinline__ float log_decay(const LinearCommonParams& p, float raw, float A_log, float dt_bias) {
  switch (p.gate) {
    case LinearGate::kLogDecay: return raw;
    case LinearGate::kSoftplus: return -expf(A_log) * softplus(raw + dt_bias);
    case LinearGate::kLowerBoundSigmoid: return p.gate_lower_bound * sigmoid(expf(A_log) * (raw + dt_bias));
  }
  return raw;
}

__device__ __forceinline__ float beta_value(const LinearCommonParams& p, float raw) {
  switch (p.beta_form) {
    case LinearBeta::kValue: return raw;
    case LinearBeta::kSigmoid: return sigmoid(raw);
    case LinearBeta::kTwoSigmoid: return 2.0f * sigmoid(raw);
  }
  return raw;
}

// Gate of value head `hv`, token offset `token_offset` (batch and token strides applied), key channel
// `i` (ignored for GDN's one gate per head).
__device__ __forceinline__ float gate_at(const LinearCommonParams& p, std::int64_t token_offset, int hv, int i) {
  const std::int64_t offset = token_offset + hv * p.g.head_stride + (p.per_key_gate ? i : 0);
  const float raw = load_element(p.g.data, offset, p.gate_element);
  if (p.gate == LinearGate::kLogDecay) return raw;
  const float bias = p.dt_bias == nullptr ? 0.0f : p.dt_bias[p.per_key_gate ? hv * p.key_dim + i : hv];
  return log_decay(p, raw, p.A_log[hv], bias);
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// q/k L2 normalisation factor of semantics.md: x * rsqrt(sum x^2 + 1e-6).
__device__ __forceinline__ float l2norm_factor(float sum_squares) { return rsqrtf(sum_squares + 1e-6f); }

}  // namespace attnkit::sm80::linear_detail
