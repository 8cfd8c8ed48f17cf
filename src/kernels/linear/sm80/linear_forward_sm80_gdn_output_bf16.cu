// Chunk-parallel GDN forward, output kernel, bf16 (see linear_gdn_chunked_sm80_kernel.cuh).
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {
ATTNKIT_LINEAR_GDN_OUTPUT_INSTANCE(__nv_bfloat16);
}  // namespace attnkit::sm80::linear_detail
