// Explicit instantiation of the sm_80+ dense backward main kernel: fp16, head-dim tier 256,
// Q/dO double-buffered (H100: 227 KiB of shared memory per block).
#include "kernels/dense/sm80/backward/dense_backward_sm80_kernel.cuh"

namespace attnkit::sm80::backward {
template Status launch_dense_backward_main<__half, BackwardTile<256, 2>>(const DenseBackwardParams& params,
                                                                         cudaStream_t stream);
}  // namespace attnkit::sm80::backward
