// KDA forward, prep kernel, fp16 (see linear_kda_chunked_sm80_kernel.cuh).
#include "kernels/linear/sm80/linear_kda_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_kda_chunked_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {
ATTNKIT_LINEAR_KDA_PREP_INSTANCE(__half);
}  // namespace attnkit::sm80::linear_detail
