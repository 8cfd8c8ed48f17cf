// KDA forward, state kernel, fp16, slices of 64 value columns (see linear_kda_chunked_sm80_kernel.cuh).
#include "kernels/linear/sm80/linear_kda_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_kda_chunked_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {
ATTNKIT_LINEAR_KDA_STATE_INSTANCE(__half, 64);
}  // namespace attnkit::sm80::linear_detail
