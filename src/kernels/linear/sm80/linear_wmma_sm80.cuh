// Building blocks of the sm80 linear-attention forward kernels: element conversion, the hi + lo split,
// cp.async, and the chunk row loads with the optional L2 normalisation. (The WMMA fragment types and
// staging-tile stores went with the fused KDA chunk walk; every kernel now keeps mma.sync fragments,
// linear_mma_sm80.cuh.)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_sm80_common.cuh"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80::linear_detail {

template <typename Element>
struct ElementConvert;
template <>
struct ElementConvert<__nv_bfloat16> {
  __device__ static __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
  __device__ static float to(__nv_bfloat16 x) { return __bfloat162float(x); }
};
template <>
struct ElementConvert<__half> {
  __device__ static __half from(float x) { return __float2half_rn(x); }
  __device__ static float to(__half x) { return __half2float(x); }
};

constexpr int kChunk = kLinearChunk;              // 64 tokens
constexpr int kKeyPad = kLinearForwardMaxKeyDim;  // K padded with zeros to 128
constexpr int kTile = 16;                         // MMA tiles of 16 rows / k-steps

// ---- cp.async ------------------------------------------------------------------------------------------

__device__ __forceinline__ void cp_async_16(void* smem, const void* global) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
// Waits until at most `kPending` of this thread's most recent groups are in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait_group() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory"); }

// The pair hi + lo of Element values that carries x with about twice Element's significant bits (16 for
// bf16): a product with it costs two MMAs instead of one.
template <typename Element>
__device__ __forceinline__ void split_element(float x, Element* hi, Element* lo) {
  *hi = ElementConvert<Element>::from(x);
  *lo = ElementConvert<Element>::from(x - ElementConvert<Element>::to(*hi));
}

// Loads `rows` rows of a token-major tensor into Element smem [kChunk][ld], columns [col0, col0 + width)
// of `cols` valid ones, zero elsewhere. `vectorized` (cols and strides multiples of 8): 16-byte cp.async
// copies, which the caller commits and waits for before its next barrier; all of a thread's copies are
// in flight at once (plain 16-byte loads went one at a time: each waited for the shared-memory store
// before it, which the compiler cannot move past a load through a generic pointer). Otherwise
// element-wise plain loads.
template <typename Element, int kWidth, int kThreads>
__device__ __forceinline__ void load_rows(Element* dst, int ld, const Element* src, std::int64_t token_stride,
                                          int rows, int col0, int cols, bool vectorized) {
  constexpr int kVectors = kWidth / 8;
  for (int e = threadIdx.x; e < kChunk * kVectors; e += kThreads) {
    const int t = e / kVectors;
    const int cb = (e % kVectors) * 8;
    Element* d = dst + t * ld + cb;
    const int col = col0 + cb;
    if (t < rows && col < cols) {
      const Element* s = src + t * token_stride + col;
      if (vectorized) {
        cp_async_16(d, s);
      } else {
#pragma unroll
        for (int u = 0; u < 8; ++u) d[u] = col + u < cols ? s[u] : ElementConvert<Element>::from(0.0f);
      }
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
}

// The L2 factor of each of the 64 rows (128 columns) of a chunk (a warp per row, 4 columns per lane), or
// 1 where `normalise` is false; the rows stay as they are.
template <typename Element, int kThreads>
__device__ void l2_row_factors(const Element* rows, int ld, bool normalise, float* factors) {
  const int lane = threadIdx.x & 31;
  for (int r = threadIdx.x >> 5; r < kChunk; r += kThreads / 32) {
    float sum = 0.0f;
    if (normalise) {
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float x = ElementConvert<Element>::to(rows[r * ld + lane * 4 + u]);
        sum += x * x;
      }
    }
    const float factor = normalise ? l2norm_factor(warp_sum(sum)) : 1.0f;
    if (lane == 0) factors[r] = factor;
  }
}

// Rescales each of the 64 rows (128 columns) of a chunk by its L2 factor (a warp per row, 4 columns per lane).
template <typename Element, int kThreads>
__device__ void l2_normalise_rows(Element* rows, int ld) {
  const int lane = threadIdx.x & 31;
  for (int r = threadIdx.x >> 5; r < kChunk; r += kThreads / 32) {
    Element* row = rows + r * ld;
    float x[4];
    float sum = 0.0f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      x[u] = ElementConvert<Element>::to(row[lane * 4 + u]);
      sum += x[u] * x[u];
    }
    const float factor = l2norm_factor(warp_sum(sum));
#pragma unroll
    for (int u = 0; u < 4; ++u) row[lane * 4 + u] = ElementConvert<Element>::from(x[u] * factor);
  }
}

}  // namespace attnkit::sm80::linear_detail
