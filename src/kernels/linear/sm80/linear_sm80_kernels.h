// Launchers of the sm80 linear-attention kernels (CUDA-facing; host glue is linear_sm80.cu).
#pragma once

#include <cuda_runtime.h>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80 {

// Decode keeps the per-token q, k and decays in shared memory and the state in registers
// (64 floats per thread at K = 256): K up to 256, any V.
constexpr int kLinearDecodeMaxKeyDim = 256;

// The chunked forward pads K to 128 (tensor-core tiles of 16) and keeps one chunk's q, k and the chunk's
// gated operands in shared memory: K up to 128, any V (the state passes in slices of 16 or 32 columns,
// the outputs in blocks of 128).
constexpr int kLinearForwardMaxKeyDim = 128;
constexpr int kLinearChunk = 64;

cudaError_t launch_linear_decode(const LinearDecodeParams& params, cudaStream_t stream);

// The chunked forward: GDN and KDA each run three chunk-parallel kernels (prep, the sequential state
// pass, output), whose intermediates live in the workspace (params.chunk, sized by
// linear_forward_workspace_bytes). sm_count (the device's SMs) and, for KDA, the shared memory a block
// may opt in to pick the state pass's slice width (linear_gdn_plan.h, linear_kda_plan.h).
cudaError_t launch_linear_forward(const LinearForwardParams& params, int sm_count, std::int64_t shared_memory_per_block_optin,
                                  cudaStream_t stream);

}  // namespace attnkit::sm80
