// Launchers of the sm80 linear-attention kernels (CUDA-facing; host glue is linear_sm80.cu).
#pragma once

#include <cuda_runtime.h>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80 {

// Decode keeps the per-token q, k and decays in shared memory and the state in registers
// (64 floats per thread at K = 256): K up to 256, any V.
constexpr int kLinearDecodeMaxKeyDim = 256;

// The chunked forward pads K to 128 (tensor-core tiles of 16) and keeps one chunk's q, k and the chunk's
// gated operands in shared memory: K up to 128, any V (KDA in slices of 32 columns; GDN's state pass in
// slices of 16 or 32, its output in blocks of 128).
constexpr int kLinearForwardMaxKeyDim = 128;
constexpr int kLinearChunk = 64;

cudaError_t launch_linear_decode(const LinearDecodeParams& params, cudaStream_t stream);

// The chunked forward: KDA runs the fused chunk walk (one CTA per sequence, value head and 32 value
// columns); GDN the three chunk-parallel kernels, whose intermediates live in the workspace
// (params.chunk, sized by linear_gdn_workspace_bytes). sm_count (the device's SMs) picks the GDN state
// pass's slice width.
cudaError_t launch_linear_forward(const LinearForwardParams& params, int sm_count, cudaStream_t stream);

}  // namespace attnkit::sm80
