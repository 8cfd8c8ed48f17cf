#pragma once

#include <string>
#include <vector>

namespace attnkit {

// What this build contains: version, compiled backends, CUDA archs, head dims, dtypes.
struct BuildInfo {
  std::string version;
  bool cuda_enabled;
  std::string cuda_archs;  // e.g. "90a;80", empty without CUDA
  std::string compiled_backends;  // e.g. "cpu sm80"
  std::string compiler;
};

BuildInfo build_info();

// A CUDA device visible to this process, as `attnkit info` and the benchmarks name it.
struct CudaDeviceSummary {
  int ordinal = 0;
  std::string name;            // e.g. "NVIDIA H100 80GB HBM3"
  int compute_capability = 0;  // major * 10 + minor, e.g. 90
  int sm_count = 0;
  long long memory_bytes = 0;
};

// Every visible CUDA device; empty where there is none, and then `why_none` says why (no CUDA in this
// build, no driver, no device).
std::vector<CudaDeviceSummary> cuda_devices(std::string* why_none = nullptr);

}  // namespace attnkit
