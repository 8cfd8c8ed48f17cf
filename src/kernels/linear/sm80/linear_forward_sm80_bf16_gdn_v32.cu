// Chunked forward, bf16 gdn, value slice 32 (see linear_forward_sm80_kernel.cuh).
#include "kernels/linear/sm80/linear_forward_sm80_instances.h"
#include "kernels/linear/sm80/linear_forward_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {
ATTNKIT_LINEAR_FORWARD_INSTANCE(__nv_bfloat16, false, 32);
}  // namespace attnkit::sm80::linear_detail
