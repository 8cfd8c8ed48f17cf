#include "attnkit/build_config.h"
#include "attnkit/version.h"

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
#if defined(__clang__)
  info.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  info.compiler = "gcc " __VERSION__;
#endif
  return info;
}

}  // namespace attnkit
