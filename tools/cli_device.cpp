#include "cli_device.h"

#include <stdexcept>
#include <vector>

#include "attnkit/version.h"
#include "system_info.h"

namespace attnkit::cli {

Placement cpu_placement(const std::string& why) { return {Device::cpu(), cpu_model(), why}; }

Placement place(Backend backend) {
  if (backend == Backend::kCPU) return cpu_placement("--backend cpu");
  std::string why_none;
  const std::vector<CudaDeviceSummary> gpus = cuda_devices(&why_none);
  if (gpus.empty()) {
    if (backend == Backend::kAuto) return cpu_placement("no GPU: " + why_none);
    throw std::runtime_error(std::string("--backend ") + backend_name(backend) + " needs a CUDA device: " + why_none);
  }
  const CudaDeviceSummary& gpu = gpus.front();
  return {Device::cuda(gpu.ordinal), gpu.name,
          "CUDA device " + std::to_string(gpu.ordinal) + " (" + gpu.name + ", compute capability " +
              std::to_string(gpu.compute_capability / 10) + "." + std::to_string(gpu.compute_capability % 10) + ")"};
}

}  // namespace attnkit::cli
