// Host-side queries of the CUDA runtime, callable from builds with or without CUDA.
#pragma once

#include <string>
#include <vector>

namespace attnkit::host {

struct CudaDeviceInfo {
  int ordinal = 0;
  std::string name;
  int major = 0;  // compute capability
  int minor = 0;
  int sm_count = 0;
  long long global_memory_bytes = 0;
  int shared_memory_per_block_optin = 0;
};

// Every visible CUDA device; empty where there is no GPU, no driver, or no CUDA in this build.
// `why_none` says which of those it was.
std::vector<CudaDeviceInfo> cuda_devices(std::string* why_none = nullptr);

// Compute capability of one device as major*10+minor, or -1 with a reason.
int cuda_compute_capability(int ordinal, std::string* why_unknown = nullptr);

// The limits the kernels' launch planning reads on every call. A device's limits never change, so each
// device is asked once and the answer kept (two cudaDeviceGetAttribute calls per call otherwise).
struct CudaDeviceLimits {
  int sm_count = 0;
  int shared_memory_per_block_optin = 0;  // bytes a block may opt in to
};

// false with a reason ("cannot query cuda:N: ...") where the device cannot be asked.
bool cuda_device_limits(int ordinal, CudaDeviceLimits* limits, std::string* why_unknown = nullptr);

}  // namespace attnkit::host
