// CPU backend of linear attention (GDN, KDA): the chunked algorithm of the GPU kernels (chunk size 64,
// WY/UT transform) in fp32, multi-threaded with OpenMP over (sequence, head). Runs everywhere; the
// reference the GPU backends are compared with in the tests is the float64 recurrence in reference/.
#pragma once

#include "host/linear_backend.h"

namespace attnkit::cpu {

Status linear_supports_forward(const host::LinearProblem& problem, const LinearForwardArgs& args);
Status linear_supports_backward(const host::LinearProblem& problem, const LinearBackwardArgs& args);
Status linear_supports_decode(const host::LinearProblem& problem, const LinearDecodeArgs& args);
std::size_t linear_forward_workspace_bytes(const host::LinearProblem& problem);
std::size_t linear_backward_workspace_bytes(const host::LinearProblem& problem);
std::size_t linear_decode_workspace_bytes(const host::LinearProblem& problem);
Status linear_forward(const host::LinearProblem& problem, const LinearForwardArgs& args);
Status linear_backward(const host::LinearProblem& problem, const LinearBackwardArgs& args);
Status linear_decode(const host::LinearProblem& problem, const LinearDecodeArgs& args);

}  // namespace attnkit::cpu
