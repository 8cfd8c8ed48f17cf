// KDA forward, output kernel, bf16 (see linear_kda_chunked_sm80_kernel.cuh).
#include "kernels/linear/sm80/linear_kda_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_kda_chunked_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {
ATTNKIT_LINEAR_KDA_OUTPUT_INSTANCE(__nv_bfloat16);
}  // namespace attnkit::sm80::linear_detail
