#include "cpu/dense_cpu.h"

namespace attnkit::cpu {
Status dense_supports_backward(const host::DenseProblem&, const DenseBackwardArgs&) {
  return {StatusCode::kNotImplemented, "CPU backward: placeholder"};
}
std::size_t dense_backward_workspace_bytes(const host::DenseProblem&) { return 0; }
Status dense_backward(const host::DenseProblem&, const DenseBackwardArgs&) {
  return {StatusCode::kNotImplemented, "CPU backward: placeholder"};
}
}  // namespace attnkit::cpu
