// The seam between linear-attention dispatch and its backends: each backend answers "can you run this
// problem?" with ok or a reason, says how much workspace it needs, and runs it. Backends are listed once,
// in linear_dispatch.cpp, in order of preference (sm90, sm80, cpu).
//
// A GPU backend plugs in by compiling its sources into attnkit and announcing each op it provides with a
// compile definition, set by its CMakeLists.txt (as src/kernels/dense/sm80/CMakeLists.txt does):
//   ATTNKIT_HAVE_LINEAR_SM90_FORWARD, ..._BACKWARD, ..._DECODE   -> src/kernels/linear/sm90/linear_sm90.h
//   ATTNKIT_HAVE_LINEAR_SM80_FORWARD, ..._BACKWARD, ..._DECODE   -> src/kernels/linear/sm80/linear_sm80.h
// Each header declares, in namespace attnkit::sm90 (or attnkit::sm80), the functions of the ops it
// announces, with the signatures of the fields below:
//   linear_supports_forward, linear_forward_workspace_bytes, linear_forward
//   linear_supports_backward, linear_backward_workspace_bytes, linear_backward
//   linear_supports_decode, linear_decode_workspace_bytes, linear_decode
// Dispatch has already validated the arguments (make_linear_problem), checked the device and its compute
// capability, skipped zero-size work and checked the workspace when a run function is called.
#pragma once

#include <cstddef>

#include "attnkit/linear.h"
#include "host/linear_problem.h"

namespace attnkit::host {

struct LinearBackendOps {
  Backend backend;
  // Empty when compiled; otherwise what the build needs for this backend to exist.
  const char* missing_build_option;
  Status (*supports_forward)(const LinearProblem&, const LinearForwardArgs&);
  Status (*supports_backward)(const LinearProblem&, const LinearBackwardArgs&);
  Status (*supports_decode)(const LinearProblem&, const LinearDecodeArgs&);
  std::size_t (*forward_workspace_bytes)(const LinearProblem&);
  std::size_t (*backward_workspace_bytes)(const LinearProblem&);
  std::size_t (*decode_workspace_bytes)(const LinearProblem&);
  Status (*run_forward)(const LinearProblem&, const LinearForwardArgs&);
  Status (*run_backward)(const LinearProblem&, const LinearBackwardArgs&);
  Status (*run_decode)(const LinearProblem&, const LinearDecodeArgs&);
};

}  // namespace attnkit::host
