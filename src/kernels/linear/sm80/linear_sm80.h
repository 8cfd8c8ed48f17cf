// Host entry points of the portable sm_80+ linear-attention kernels (GDN, KDA): the chunked forward
// (WMMA tensor cores) and the recurrent decode step. Announced to dispatch by
// ATTNKIT_HAVE_LINEAR_SM80_FORWARD / _BACKWARD / _DECODE from src/kernels/linear/CMakeLists.txt.
#pragma once

#include <cstddef>

#include "host/linear_backend.h"

namespace attnkit::sm80 {

Status linear_supports_forward(const host::LinearProblem& problem, const LinearForwardArgs& args);
std::size_t linear_forward_workspace_bytes(const host::LinearProblem& problem);
Status linear_forward(const host::LinearProblem& problem, const LinearForwardArgs& args);

Status linear_supports_backward(const host::LinearProblem& problem, const LinearBackwardArgs& args);
std::size_t linear_backward_workspace_bytes(const host::LinearProblem& problem);
Status linear_backward(const host::LinearProblem& problem, const LinearBackwardArgs& args);

Status linear_supports_decode(const host::LinearProblem& problem, const LinearDecodeArgs& args);
std::size_t linear_decode_workspace_bytes(const host::LinearProblem& problem);
Status linear_decode(const host::LinearProblem& problem, const LinearDecodeArgs& args);

}  // namespace attnkit::sm80
