#include "cpu/dense_cpu.h"

namespace attnkit::cpu {
Status dense_supports_forward(const host::DenseProblem&, const DenseForwardArgs&) {
  return {StatusCode::kNotImplemented, "CPU forward: placeholder"};
}
std::size_t dense_forward_workspace_bytes(const host::DenseProblem&) { return 0; }
Status dense_forward(const host::DenseProblem&, const DenseForwardArgs&) {
  return {StatusCode::kNotImplemented, "CPU forward: placeholder"};
}
}  // namespace attnkit::cpu
