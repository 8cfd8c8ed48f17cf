// The small kernels around the main sm_80+ dense backward kernel:
//   preprocess:  delta[h, token] = sum_d dO[token, h, d] * O[token, h, d]   (fp32)
//   sinks:       dsinks[h] = -sum_token exp(sink_h - lse[h, token]) * delta[h, token]
//   postprocess: dq[token, h, d] = scale * dq_accum, rounded to the element type; dq_accum is in the
//                main kernel's accumulator order (DqAccumLayout), read back here
// Memory-bound, one pass each; 16-byte loads and stores (the host checks the alignment).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/dense/sm80/backward/dense_backward_sm80_config.h"
#include "kernels/dense/sm80/backward/dense_backward_sm80_kernel.cuh"
#include "kernels/dense/sm80/backward/dense_backward_sm80_params.h"

namespace attnkit::sm80::backward {
namespace {

constexpr int kThreads = 256;

// Eight fp16 or bf16 values (one 16-byte chunk) to fp32.
__device__ __forceinline__ void chunk_to_float(const uint4& chunk, bool fp16, float (&out)[8]) {
  const auto* words = reinterpret_cast<const std::uint32_t*>(&chunk);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    std::uint32_t word = words[i];
    if (fp16) {
      const float2 pair = __half22float2(*reinterpret_cast<const __half2*>(&word));
      out[2 * i] = pair.x;
      out[2 * i + 1] = pair.y;
    } else {
      const float2 pair = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&word));
      out[2 * i] = pair.x;
      out[2 * i + 1] = pair.y;
    }
  }
}

// Element offset of (token, head) in a [B, S, H, *] or [T, H, *] tensor: BSHD tokens are b * S + i.
__device__ __forceinline__ std::int64_t token_offset(const TensorStrides& strides, bool varlen, int seqlen,
                                                     std::int64_t token, int head) {
  const std::int64_t b = varlen ? 0 : token / seqlen;
  const std::int64_t i = varlen ? token : token % seqlen;
  return b * strides.batch + i * strides.row + static_cast<std::int64_t>(head) * strides.head;
}

// A group of `lanes_per_row` lanes (a power of two covering Dv / 8 chunks) reduces one (token, head) row.
__global__ void __launch_bounds__(kThreads) dense_backward_preprocess_kernel(const DenseBackwardParams p,
                                                                             int lanes_per_row) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int rows_per_warp = 32 / lanes_per_row;
  const int chunk = lane % lanes_per_row;
  const std::int64_t rows = static_cast<std::int64_t>(p.total_q) * p.heads_q;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (kThreads / 32);
  const std::int64_t warp = static_cast<std::int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const auto* out = static_cast<const std::uint8_t*>(p.out);
  const auto* dout = static_cast<const std::uint8_t*>(p.dout);
  // Every lane of a warp runs the same trip count (the shuffles need all 32).
  for (std::int64_t base = warp * rows_per_warp; base < rows; base += warps * rows_per_warp) {
    const std::int64_t row = base + lane / lanes_per_row;
    float sum = 0.0f;
    if (row < rows && chunk * 8 < p.head_dim_v) {
      const std::int64_t token = row / p.heads_q;
      const int head = static_cast<int>(row % p.heads_q);
      const std::int64_t out_at = token_offset(p.out_strides, varlen, p.seqlen_q, token, head) + chunk * 8;
      const std::int64_t dout_at = token_offset(p.dout_strides, varlen, p.seqlen_q, token, head) + chunk * 8;
      float o[8];
      float d[8];
      chunk_to_float(*reinterpret_cast<const uint4*>(out + 2 * out_at), p.fp16, o);
      chunk_to_float(*reinterpret_cast<const uint4*>(dout + 2 * dout_at), p.fp16, d);
#pragma unroll
      for (int i = 0; i < 8; ++i) sum += o[i] * d[i];
    }
    for (int offset = lanes_per_row / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (row < rows && chunk == 0) {
      const std::int64_t token = row / p.heads_q;
      const int head = static_cast<int>(row % p.heads_q);
      p.delta[static_cast<std::int64_t>(head) * p.total_q + token] = sum;
    }
  }
}

// One CTA per query head; a fixed split over threads and a fixed tree make the sum deterministic.
__global__ void __launch_bounds__(kThreads) dense_backward_sinks_kernel(const DenseBackwardParams p) {
  __shared__ float partial[kThreads];
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int head = static_cast<int>(blockIdx.x);
  const float sink = p.sinks[head * p.sinks_stride];
  float sum = 0.0f;
  for (std::int64_t token = threadIdx.x; token < p.total_q; token += kThreads) {
    const std::int64_t b = varlen ? 0 : token / p.seqlen_q;
    const std::int64_t i = varlen ? token : token % p.seqlen_q;
    const float lse = p.lse[b * p.lse_strides.batch + static_cast<std::int64_t>(head) * p.lse_strides.head +
                            i * p.lse_strides.row];
    // lse = -inf only when nothing (not even the sink) is in the row: such a row has no sink gradient.
    if (lse != -INFINITY) sum += expf(sink - lse) * p.delta[static_cast<std::int64_t>(head) * p.total_q + token];
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) p.dsinks[head * p.dsinks_stride] = -partial[0];
}

__device__ __forceinline__ std::uint16_t to_element_bits(float x, bool fp16) {
  if (fp16) return __half_as_ushort(__float2half_rn(x));
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

// One CTA per (query tile, query head, sequence), looping when there are more than the grid: the
// tile's block of dq_accum is read in order (16-byte loads), scaled, rounded and put at its (row,
// column) in shared memory, then written out as 16-byte row chunks.
template <typename Tile>
__global__ void __launch_bounds__(kThreads) dense_backward_postprocess_kernel(const DenseBackwardParams p) {
  using Layout = DqAccumLayout<Tile>;
  constexpr int kBlockM = Layout::kBlockM;
  constexpr int kHeadDim = Layout::kHeadDim;
  // 16 bytes of padding per row: the 8 rows that one warp's writes touch fall in 8 different bank groups.
  constexpr int kPitch = kHeadDim + 8;
  constexpr int kChunksPerRow = kHeadDim / 8;
  __shared__ __align__(16) std::uint16_t tile[kBlockM * kPitch];
  const bool varlen = p.cu_seqlens_q != nullptr;
  const std::int64_t blocks = static_cast<std::int64_t>(p.batch) * p.heads_q * p.num_m_blocks;
  auto* dq = static_cast<std::uint8_t*>(p.dq);
  for (std::int64_t linear = blockIdx.x; linear < blocks; linear += gridDim.x) {
    const int m_block = static_cast<int>(linear % p.num_m_blocks);
    const int head = static_cast<int>((linear / p.num_m_blocks) % p.heads_q);
    const int batch = static_cast<int>(linear / p.num_m_blocks / p.heads_q);
    const detail::SequenceView seq(p, batch);
    const int row0 = m_block * kBlockM;
    if (row0 >= seq.len_q) continue;  // the same for the whole CTA
    const float* block =
        p.dq_accum +
        ((dq_accum_row0(varlen, batch, seq.q_row0, p.num_m_blocks, kBlockM) + row0) * p.heads_q + static_cast<std::int64_t>(head) * kBlockM) *
            kHeadDim;
    __syncthreads();  // the previous block's rows are out of shared memory
    for (int quad = static_cast<int>(threadIdx.x); quad < Layout::kBlockValues / 4; quad += kThreads) {
      const float4 four = reinterpret_cast<const float4*>(block)[quad];
      const float values[4] = {four.x, four.y, four.z, four.w};
      // Group (pass, warp, tm, tn) of 128 values, i.e. 32 quads.
      int group = quad / 32;
      const int tn = group % Layout::kTilesN;
      group /= Layout::kTilesN;
      const int tm = group % Layout::kTilesM;
      group /= Layout::kTilesM;
      const int warp = group % Layout::kWarps;
      const int pass = group / Layout::kWarps;
      const int row_base = (warp / Layout::kWarpsD) * Layout::kWarpRows + tm * 16;
      const int col_base = pass * Layout::kPassCols + (warp % Layout::kWarpsD) * Layout::kWarpCols + tn * 8;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int slot = (quad % 32) * 4 + j;
        const int lane = kDqAccumVectorAdds ? slot / 4 : slot % 32;
        const int e = kDqAccumVectorAdds ? slot % 4 : slot / 32;
        const int row = row_base + (lane >> 2) + (e >> 1) * 8;
        const int col = col_base + (lane & 3) * 2 + (e & 1);
        tile[row * kPitch + col] = to_element_bits(values[j] * p.scale, p.fp16);
      }
    }
    __syncthreads();
    const int rows_here = min(kBlockM, seq.len_q - row0);
    for (int chunk = static_cast<int>(threadIdx.x); chunk < kBlockM * kChunksPerRow; chunk += kThreads) {
      const int row = chunk / kChunksPerRow;
      const int col = (chunk % kChunksPerRow) * 8;
      if (row < rows_here && col < p.head_dim) {
        const std::int64_t at = batch * p.dq_strides.batch + static_cast<std::int64_t>(seq.q_row0 + row0 + row) * p.dq_strides.row +
                                static_cast<std::int64_t>(head) * p.dq_strides.head + col;
        *reinterpret_cast<uint4*>(dq + 2 * at) = *reinterpret_cast<const uint4*>(tile + row * kPitch + col);
      }
    }
  }
}

Status launch_status(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return Status::ok();
  return {StatusCode::kCudaError, std::string("sm80 dense backward ") + what + " launch: " + cudaGetErrorString(error)};
}

// Enough CTAs to fill any current GPU several times over; the kernels loop over the rest.
unsigned grid_for(std::int64_t work_items, int items_per_cta) {
  const std::int64_t ctas = (work_items + items_per_cta - 1) / items_per_cta;
  return static_cast<unsigned>(std::clamp<std::int64_t>(ctas, 1, 65536));
}

}  // namespace

Status launch_dense_backward_preprocess(const DenseBackwardParams& params, cudaStream_t stream) {
  const std::int64_t rows = static_cast<std::int64_t>(params.total_q) * params.heads_q;
  if (rows == 0) return Status::ok();
  int lanes_per_row = 1;
  while (lanes_per_row * 8 < params.head_dim_v) lanes_per_row *= 2;
  const int rows_per_cta = (kThreads / 32) * (32 / lanes_per_row);
  dense_backward_preprocess_kernel<<<grid_for(rows, rows_per_cta), kThreads, 0, stream>>>(params, lanes_per_row);
  return launch_status("preprocess");
}

Status launch_dense_backward_sinks(const DenseBackwardParams& params, cudaStream_t stream) {
  if (params.heads_q == 0) return Status::ok();
  // Hq <= 2^31 - 1 CTAs along x (the host checks Hq fits in int).
  dense_backward_sinks_kernel<<<static_cast<unsigned>(params.heads_q), kThreads, 0, stream>>>(params);
  return launch_status("sinks");
}

Status launch_dense_backward_postprocess(const DenseBackwardParams& params, int tier, cudaStream_t stream) {
  const std::int64_t blocks = static_cast<std::int64_t>(params.batch) * params.heads_q * params.num_m_blocks;
  if (blocks == 0) return Status::ok();
  const unsigned grid = grid_for(blocks, 1);
  switch (tier) {
    case 64: dense_backward_postprocess_kernel<BackwardTile<64, 2>><<<grid, kThreads, 0, stream>>>(params); break;
    case 128: dense_backward_postprocess_kernel<BackwardTile<128, 2>><<<grid, kThreads, 0, stream>>>(params); break;
    default: dense_backward_postprocess_kernel<BackwardTile<256, 2>><<<grid, kThreads, 0, stream>>>(params); break;
  }
  return launch_status("postprocess");
}

}  // namespace attnkit::sm80::backward
