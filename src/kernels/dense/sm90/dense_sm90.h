// Host entry points of the Hopper (sm_90a) dense attention kernels (TMA, wgmma, warp specialisation).
// The forward lives in forward/ and is announced to dispatch by ATTNKIT_HAVE_DENSE_SM90_FORWARD (this
// folder's CMakeLists.txt). There is no sm90 backward yet: dispatch answers for it from its table.
#pragma once

#include "host/dense_backend.h"

namespace attnkit::sm90 {

Status dense_supports_forward(const host::DenseProblem& problem, const DenseForwardArgs& args);
std::size_t dense_forward_workspace_bytes(const host::DenseProblem& problem);
Status dense_forward(const host::DenseProblem& problem, const DenseForwardArgs& args);

}  // namespace attnkit::sm90
