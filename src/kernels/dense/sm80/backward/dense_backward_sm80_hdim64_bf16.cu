// Explicit instantiation of the sm_80+ dense backward main kernel: bf16, head-dim tier 64.
#include "kernels/dense/sm80/backward/dense_backward_sm80_kernel.cuh"

namespace attnkit::sm80::backward {
template Status launch_dense_backward_main<__nv_bfloat16, BackwardTile<64, 2>>(const DenseBackwardParams& params,
                                                                         cudaStream_t stream);
}  // namespace attnkit::sm80::backward
