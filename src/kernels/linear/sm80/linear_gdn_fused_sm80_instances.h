// The explicit instantiations of the GDN forward's fused state / output kernel, one per translation unit
// (linear_forward_sm80_gdn_fused_<dtype>_v<slice>.cu), declared for the launcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80::linear_detail {

template <typename Element, int kSlice>
cudaError_t launch_linear_gdn_fused(const LinearForwardParams& params, cudaStream_t stream);

#define ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(ELEMENT, SLICE) \
  template cudaError_t launch_linear_gdn_fused<ELEMENT, SLICE>(const LinearForwardParams&, cudaStream_t)

// Slices of 16, 32 or 64 value columns, as the state pass (linear_gdn_plan.h).
extern ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(__nv_bfloat16, 16);
extern ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(__half, 16);
extern ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(__nv_bfloat16, 32);
extern ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(__half, 32);
extern ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(__nv_bfloat16, 64);
extern ATTNKIT_LINEAR_GDN_FUSED_INSTANCE(__half, 64);

}  // namespace attnkit::sm80::linear_detail
