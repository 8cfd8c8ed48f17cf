// The seam between dispatch and the backends: each backend answers "can you run this problem?" with
// ok or a reason, and runs it. Backends are listed once, in dense_dispatch.cpp, in order of preference.
#pragma once

#include <cstddef>

#include "attnkit/dense.h"
#include "host/dense_problem.h"

namespace attnkit::host {

struct DenseBackendOps {
  Backend backend;
  // Empty when compiled; otherwise the build option that switched it off.
  const char* missing_build_option;
  Status (*supports_forward)(const DenseProblem&, const DenseForwardArgs&);
  Status (*supports_backward)(const DenseProblem&, const DenseBackwardArgs&);
  std::size_t (*forward_workspace_bytes)(const DenseProblem&);
  std::size_t (*backward_workspace_bytes)(const DenseProblem&);
  Status (*run_forward)(const DenseProblem&, const DenseForwardArgs&);
  Status (*run_backward)(const DenseProblem&, const DenseBackwardArgs&);
  // The forward needs its workspace zeroed and every launch leaves it zero again (the sm90 forward: its
  // last tile draw puts the tile counter back to 0), so memory that only such calls use stays zero.
  bool forward_keeps_workspace_zeroed;
};

}  // namespace attnkit::host
