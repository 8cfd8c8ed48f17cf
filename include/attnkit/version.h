#pragma once

#include <string>

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

}  // namespace attnkit
