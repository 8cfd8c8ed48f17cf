// The explicit instantiations of the chunked forward, one per translation unit
// (linear_forward_sm80_<dtype>_<variant>_v<slice>.cu), declared for the launcher.
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

// GDN at slices of 32 and 64; KDA at 32 only (its [64][128] fp32 gate block leaves no room for a 64-wide
// state slice in 227 KB of shared memory).
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__nv_bfloat16, false, 32);
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__nv_bfloat16, false, 64);
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__nv_bfloat16, true, 32);
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__half, false, 32);
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__half, false, 64);
extern ATTNKIT_LINEAR_FORWARD_INSTANCE(__half, true, 32);

}  // namespace attnkit::sm80::linear_detail
