// The explicit instantiations of the chunk-parallel KDA forward's three kernels, one per translation
// unit (linear_forward_sm80_kda_<stage>_<dtype>[_v<slice>].cu), declared for the launcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80::linear_detail {

template <typename Element>
cudaError_t launch_linear_kda_prep(const LinearForwardParams& params, cudaStream_t stream);
template <typename Element, int kSlice>
cudaError_t launch_linear_kda_state(const LinearForwardParams& params, cudaStream_t stream);
template <typename Element>
cudaError_t launch_linear_kda_output(const LinearForwardParams& params, cudaStream_t stream);

#define ATTNKIT_LINEAR_KDA_PREP_INSTANCE(ELEMENT) \
  template cudaError_t launch_linear_kda_prep<ELEMENT>(const LinearForwardParams&, cudaStream_t)
#define ATTNKIT_LINEAR_KDA_STATE_INSTANCE(ELEMENT, SLICE) \
  template cudaError_t launch_linear_kda_state<ELEMENT, SLICE>(const LinearForwardParams&, cudaStream_t)
#define ATTNKIT_LINEAR_KDA_OUTPUT_INSTANCE(ELEMENT) \
  template cudaError_t launch_linear_kda_output<ELEMENT>(const LinearForwardParams&, cudaStream_t)

extern ATTNKIT_LINEAR_KDA_PREP_INSTANCE(__nv_bfloat16);
extern ATTNKIT_LINEAR_KDA_PREP_INSTANCE(__half);
// The state pass in slices of 16, 32 or 64 value columns (linear_kda_plan.h says which when).
extern ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__nv_bfloat16, 16);
extern ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__half, 16);
extern ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__nv_bfloat16, 32);
extern ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__half, 32);
extern ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__nv_bfloat16, 64);
extern ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__half, 64);
extern ATTNKIT_LINEAR_KDA_OUTPUT_INSTANCE(__nv_bfloat16);
extern ATTNKIT_LINEAR_KDA_OUTPUT_INSTANCE(__half);

}  // namespace attnkit::sm80::linear_detail
