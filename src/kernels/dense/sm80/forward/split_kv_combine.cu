// Split-KV combine: merges the num_splits partial states (o_s, lse_s) of every (token, head) row, and the
// head's attention sink, into the caller's out and lse with the shared state-merge rule
// (device/state_merge.cuh; semantics.md section 3). The sink is one more state with lse = z and o = 0.
//
// One warp per row: lanes reduce the split LSEs (at most kMaxKvSplits = 128, 4 per lane), then each lane
// owns 4 consecutive output columns per step (16-byte loads of fp32 partials; Dv <= 256 is 2 steps).
// A row is (Dv + 1) * 4 bytes per split: the kernel is bandwidth-bound and small next to the main pass.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include <cute/tensor.hpp>

#include "device/state_merge.cuh"
#include "kernels/dense/sm80/forward/forward_config.cuh"
#include "kernels/dense/sm80/forward/forward_params.h"

namespace attnkit::sm80 {
namespace {

constexpr int kCombineWarps = 4;

__device__ __forceinline__ float warp_allreduce_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}
__device__ __forceinline__ float warp_allreduce_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <class Element>
__global__ void __launch_bounds__(kCombineWarps * 32) split_kv_combine_kernel(const __grid_constant__ ForwardParams p) {
  const int lane = threadIdx.x % 32;
  const std::int64_t rows = p.total_q * p.heads_q;
  const std::int64_t warps_in_grid = std::int64_t{gridDim.x} * kCombineWarps;
  const std::int64_t split_stride_o = p.total_q * p.heads_q * p.head_dim_v;  // one split of o_partial
  const std::int64_t split_stride_lse = std::int64_t{p.heads_q} * p.total_q;  // one split of lse_partial
  for (std::int64_t row = std::int64_t{blockIdx.x} * kCombineWarps + threadIdx.x / 32; row < rows;
       row += warps_in_grid) {
    const std::int64_t token = row / p.heads_q;
    const int head = static_cast<int>(row % p.heads_q);
    const float* lse_row = p.lse_partial + std::int64_t{head} * p.total_q + token;  // [split * split_stride_lse]
    const float sink = p.sinks != nullptr ? p.sinks[head] : -INFINITY;

    float max = sink;
    for (int s = lane; s < p.num_splits; s += 32) max = fmaxf(max, lse_row[s * split_stride_lse]);
    max = warp_allreduce_max(max);
    float sum = 0.0f;
    if (max != -INFINITY) {
      for (int s = lane; s < p.num_splits; s += 32) sum += expf(lse_row[s * split_stride_lse] - max);
      sum = warp_allreduce_sum(sum);
      sum += expf(sink - max);
    }
    const device::StateMerger merger(max, sum);

    // Token -> (batch, row) of the caller's tensors.
    std::int64_t out_offset = 0;
    std::int64_t lse_offset = 0;
    if (p.varlen) {
      out_offset = token * p.out_row_stride + head * p.out_head_stride;
      lse_offset = token * p.lse_row_stride + head * p.lse_head_stride;
    } else {
      const std::int64_t batch = token / p.seqlen_q;
      const std::int64_t q_row = token % p.seqlen_q;
      out_offset = batch * p.out_batch_stride + q_row * p.out_row_stride + head * p.out_head_stride;
      lse_offset = batch * p.lse_batch_stride + q_row * p.lse_row_stride + head * p.lse_head_stride;
    }
    Element* out_row = static_cast<Element*>(p.out) + out_offset;
    const float* o_row = p.o_partial + row * p.head_dim_v;  // [split * split_stride_o + col]
    for (int col = lane * 4; col < p.head_dim_v; col += 32 * 4) {
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int s = 0; s < p.num_splits; ++s) {
        const float weight = merger.weight(lse_row[s * split_stride_lse]);
        if (weight == 0.0f) continue;  // an empty split's o is 0: skip its read
        const float4 o = *reinterpret_cast<const float4*>(o_row + s * split_stride_o + col);
        acc.x += weight * o.x;
        acc.y += weight * o.y;
        acc.z += weight * o.z;
        acc.w += weight * o.w;
      }
      Element values[4] = {Element(acc.x), Element(acc.y), Element(acc.z), Element(acc.w)};
      *reinterpret_cast<uint2*>(out_row + col) = *reinterpret_cast<const uint2*>(values);  // 8-byte store
    }
    if (p.lse != nullptr && lane == 0) p.lse[lse_offset] = merger.lse();
  }
}

}  // namespace

Status launch_split_kv_combine(const ForwardParams& params, DType dtype, void* stream) {
  const std::int64_t rows = params.total_q * params.heads_q;
  // Enough warps to cover the device many times over; the kernel loops over the rest.
  const std::int64_t blocks = std::min<std::int64_t>((rows + kCombineWarps - 1) / kCombineWarps, 1 << 20);
  if (blocks == 0) return Status::ok();
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  const auto grid = static_cast<unsigned>(blocks);
  if (dtype == DType::kBFloat16) {
    split_kv_combine_kernel<cute::bfloat16_t><<<grid, kCombineWarps * 32, 0, cuda_stream>>>(params);
  } else {
    split_kv_combine_kernel<cute::half_t><<<grid, kCombineWarps * 32, 0, cuda_stream>>>(params);
  }
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm80 split-KV combine launch: ") + cudaGetErrorString(error)};
  }
  return Status::ok();
}

}  // namespace attnkit::sm80
