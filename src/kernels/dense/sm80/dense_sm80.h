// Host entry points of the portable sm_80+ dense attention kernels (mma.sync, ldmatrix, cp.async).
// Forward lives in forward/, backward in backward/; each part is announced to dispatch by its own
// define (ATTNKIT_HAVE_DENSE_SM80_FORWARD / _BACKWARD) from this folder's CMakeLists.txt.
#pragma once

#include "host/dense_backend.h"

namespace attnkit::sm80 {

Status dense_supports_forward(const host::DenseProblem& problem, const DenseForwardArgs& args);
std::size_t dense_forward_workspace_bytes(const host::DenseProblem& problem);
Status dense_forward(const host::DenseProblem& problem, const DenseForwardArgs& args);

Status dense_supports_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args);
std::size_t dense_backward_workspace_bytes(const host::DenseProblem& problem);
Status dense_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args);

}  // namespace attnkit::sm80
