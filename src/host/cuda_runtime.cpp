#include "host/cuda_runtime.h"

#include "attnkit/build_config.h"

#if ATTNKIT_ENABLE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace attnkit::host {

std::vector<CudaDeviceInfo> cuda_devices(std::string* why_none) {
  std::vector<CudaDeviceInfo> devices;
#if ATTNKIT_ENABLE_CUDA
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    if (why_none) *why_none = std::string("no usable CUDA device: ") + cudaGetErrorString(error);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return devices;
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) continue;
    devices.push_back({ordinal, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                       static_cast<long long>(prop.totalGlobalMem), static_cast<int>(prop.sharedMemPerBlockOptin)});
  }
  if (devices.empty() && why_none) *why_none = "the CUDA runtime reports no device";
#else
  if (why_none) *why_none = "this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF)";
#endif
  return devices;
}

int cuda_compute_capability(int ordinal, std::string* why_unknown) {
#if ATTNKIT_ENABLE_CUDA
  int major = 0;
  int minor = 0;
  cudaError_t error = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal);
  if (error != cudaSuccess) {
    if (why_unknown) *why_unknown = std::string("cannot query cuda:") + std::to_string(ordinal) + ": " +
                                    cudaGetErrorString(error);
    cudaGetLastError();
    return -1;
  }
  return major * 10 + minor;
#else
  if (why_unknown) *why_unknown = "this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF)";
  return -1;
#endif
}

}  // namespace attnkit::host
