// Chunk-parallel GDN forward, state kernel, fp16, value slice 64 (see linear_gdn_chunked_sm80_kernel.cuh).
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {
ATTNKIT_LINEAR_GDN_STATE_INSTANCE(__half, 64);
}  // namespace attnkit::sm80::linear_detail
