#include "host/backend_selection.h"

#include <string>

#include "host/cuda_runtime.h"

namespace attnkit::host {

Gate device_gate_code(const char* missing_build_option, Backend backend, Device device, int* capability) {
  if (missing_build_option[0] != '\0') return Gate::kNotCompiled;
  if (backend == Backend::kCPU) return device.kind == DeviceKind::kCPU ? Gate::kOpen : Gate::kNotOnCpu;
  if (device.kind != DeviceKind::kCUDA) return Gate::kNotOnCuda;
  *capability = cuda_compute_capability(device.index);
  if (*capability < 0) return Gate::kCapabilityUnknown;
  const int needed = backend == Backend::kSm90 ? 90 : 80;
  if (*capability < needed || (backend == Backend::kSm90 && *capability != 90)) return Gate::kCapabilityTooLow;
  return Gate::kOpen;
}

Status device_gate(const char* missing_build_option, Backend backend, Device device) {
  int capability = -1;
  switch (device_gate_code(missing_build_option, backend, device, &capability)) {
    case Gate::kOpen:
      return Status::ok();
    case Gate::kNotCompiled:
      return {StatusCode::kNotCompiled, std::string("not compiled: needs ") + missing_build_option};
    case Gate::kNotOnCpu:
      return {StatusCode::kNotImplemented, "tensors are on " + device_name(device) + ", not the CPU"};
    case Gate::kNotOnCuda:
      return {StatusCode::kNotImplemented, "tensors are on the CPU, not a CUDA device"};
    case Gate::kCapabilityUnknown: {
      std::string why;
      cuda_compute_capability(device.index, &why);
      return {StatusCode::kCudaError, why};
    }
    case Gate::kCapabilityTooLow:
      return {StatusCode::kNotImplemented, device_name(device) + " has compute capability " +
                                               std::to_string(capability / 10) + "." +
                                               std::to_string(capability % 10) + "; this backend needs " +
                                               (backend == Backend::kSm90 ? "exactly 9.0" : "8.0 or newer")};
  }
  return {StatusCode::kInternal, "dispatch: unknown device gate"};
}

}  // namespace attnkit::host
