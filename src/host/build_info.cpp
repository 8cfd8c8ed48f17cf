#include "attnkit/build_config.h"
#include "attnkit/version.h"
#include "host/cuda_runtime.h"

namespace attnkit {

BuildInfo build_info() {
  BuildInfo info;
  info.version = ATTNKIT_VERSION;
  info.cuda_enabled = ATTNKIT_ENABLE_CUDA != 0;
  info.cuda_archs = ATTNKIT_ENABLE_CUDA ? ATTNKIT_CUDA_ARCHS : "";
  info.compiled_backends = "cpu";
#if ATTNKIT_HAVE_DENSE_SM80_FORWARD
  info.compiled_backends += " sm80-forward";
#endif
#if ATTNKIT_HAVE_DENSE_SM80_BACKWARD
  info.compiled_backends += " sm80-backward";
#endif
#if ATTNKIT_HAVE_DENSE_SM90_FORWARD
  info.compiled_backends += " sm90-forward";
#endif
#if defined(__clang__)
  info.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  info.compiler = "gcc " __VERSION__;
#endif
  return info;
}

std::vector<CudaDeviceSummary> cuda_devices(std::string* why_none) {
  std::vector<CudaDeviceSummary> summaries;
  for (const host::CudaDeviceInfo& device : host::cuda_devices(why_none)) {
    summaries.push_back({device.ordinal, device.name, device.major * 10 + device.minor, device.sm_count,
                         device.global_memory_bytes});
  }
  return summaries;
}

}  // namespace attnkit
