// The explicit instantiations of the chunked forward, one per translation unit
// (linear_forward_sm80_<dtype>_kda_v<slice>.cu), declared for the launcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80::linear_detail {

template <typename Element, bool kPerKeyGate, int kValueSlice>
cudaError_t launch_linear_forward_instance(const LinearForwardParams& params, cudaStream_t stream);

#define ATTNKIT_LINEAR_FORWARD_INSTANCE(ELEMENT, PER_KEY, SLICE) \
  template cudaError_t launch_linear_forward_instance<ELEMENT, PER_KEY, SLICE>(const LinearForwardParams&, cudaStream_t)

// KDA at a slice of 32 (its [64][128] fp32 gate block leaves no room for a 64-wide state slice in 227 KB
// of shared memory). GDN runs the chunk-parallel kernels (linear_gdn_chunked_sm80_kernel.cuh).
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__nv_bfloat16, true, 32);
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__half, true, 32);

}  // namespace attnkit::sm80::linear_detail
