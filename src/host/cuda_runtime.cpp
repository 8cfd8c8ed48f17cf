#include "host/cuda_runtime.h"

#include <array>
#include <atomic>

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
  // Dispatch asks on every call; a device's capability never changes, so a successful answer is kept
  // (0 = not asked yet) instead of two cudaDeviceGetAttribute calls per GPU backend per call.
  static std::array<std::atomic<int>, 64> known{};
  const bool cacheable = ordinal >= 0 && ordinal < static_cast<int>(known.size());
  if (cacheable) {
    const int cached = known[static_cast<std::size_t>(ordinal)].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
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
  const int capability = major * 10 + minor;
  if (cacheable) known[static_cast<std::size_t>(ordinal)].store(capability, std::memory_order_relaxed);
  return capability;
#else
  if (why_unknown) *why_unknown = "this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF)";
  return -1;
#endif
}

bool cuda_device_limits(int ordinal, CudaDeviceLimits* limits, std::string* why_unknown) {
#if ATTNKIT_ENABLE_CUDA
  // sm_count (0 = not asked yet) is published last, with release order, so a reader that sees it also
  // sees the shared-memory limit stored before it.
  static std::array<std::atomic<int>, 64> known_sm_count{};
  static std::array<std::atomic<int>, 64> known_shared_memory{};
  const bool cacheable = ordinal >= 0 && ordinal < static_cast<int>(known_sm_count.size());
  if (cacheable) {
    const auto slot = static_cast<std::size_t>(ordinal);
    const int sm_count = known_sm_count[slot].load(std::memory_order_acquire);
    if (sm_count > 0) {
      *limits = {sm_count, known_shared_memory[slot].load(std::memory_order_relaxed)};
      return true;
    }
  }
  CudaDeviceLimits asked;
  cudaError_t error = cudaDeviceGetAttribute(&asked.sm_count, cudaDevAttrMultiProcessorCount, ordinal);
  if (error == cudaSuccess) {
    error = cudaDeviceGetAttribute(&asked.shared_memory_per_block_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                   ordinal);
  }
  if (error != cudaSuccess) {
    if (why_unknown) *why_unknown = std::string("cannot query cuda:") + std::to_string(ordinal) + ": " +
                                    cudaGetErrorString(error);
    cudaGetLastError();
    return false;
  }
  if (cacheable) {
    const auto slot = static_cast<std::size_t>(ordinal);
    known_shared_memory[slot].store(asked.shared_memory_per_block_optin, std::memory_order_relaxed);
    known_sm_count[slot].store(asked.sm_count, std::memory_order_release);
  }
  *limits = asked;
  return true;
#else
  (void)ordinal;
  (void)limits;
  if (why_unknown) *why_unknown = "this build has no CUDA (ATTNKIT_ENABLE_CUDA=OFF)";
  return false;
#endif
}

}  // namespace attnkit::host
