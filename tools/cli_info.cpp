// `attnkit info`: what this build contains and what this machine offers it.
#include <cstdio>
#include <string>
#include <vector>

#include "attnkit/build_config.h"
#include "attnkit/version.h"
#include "cli_args.h"
#include "cli_commands.h"
#include "system_info.h"

namespace attnkit::cli {

const char* info_usage() {
  return "usage: attnkit info\n"
         "Prints the build (version, compiler, CUDA archs, compiled backends), the CUDA devices present (or\n"
         "why there are none), OpenMP threads and the CPU's vector features.\n";
}

int info_command(const std::vector<std::string>& argv) {
  const std::vector<OptionSpec> specs = {{"--help", "", "this help"}};
  const ParsedArgs args(argv, specs);
  if (args.has("--help")) {
    std::printf("%s\noptions:\n%s", info_usage(), format_options(specs).c_str());
    return kExitOk;
  }
  const BuildInfo build = build_info();
  std::printf("attnkit %s (commit %s)\n", build.version.c_str(), build_commit().c_str());
  std::printf("compiler:          %s\n", build.compiler.c_str());
  std::printf("CUDA:              %s\n", build.cuda_enabled ? ("enabled, archs " + build.cuda_archs).c_str()
                                                            : "disabled (ATTNKIT_ENABLE_CUDA=OFF)");
  std::printf("CuTe/CUTLASS:      %s\n", build.cuda_enabled ? ATTNKIT_CUTLASS_VERSION : "not used");
  std::printf("dense attention:   %s\n", ATTNKIT_OP_DENSE ? "on" : "off (ATTNKIT_OP_DENSE=OFF)");
  std::printf("compiled backends: %s\n", build.compiled_backends.c_str());

  std::string why_none;
  const std::vector<CudaDeviceSummary> gpus = cuda_devices(&why_none);
  if (gpus.empty()) {
    std::printf("CUDA devices:      none (%s)\n", why_none.c_str());
  } else {
    std::printf("CUDA devices:      %zu\n", gpus.size());
    for (const CudaDeviceSummary& gpu : gpus) {
      std::printf("  cuda:%d  %s, compute capability %d.%d, %d SMs, %.1f GiB\n", gpu.ordinal, gpu.name.c_str(),
                  gpu.compute_capability / 10, gpu.compute_capability % 10, gpu.sm_count,
                  static_cast<double>(gpu.memory_bytes) / (1024.0 * 1024.0 * 1024.0));
    }
  }
  std::printf("CPU:               %s\n", cpu_model().c_str());
  std::printf("CPU vector ISA:    %s\n", cpu_vector_features().c_str());
  std::printf("OpenMP threads:    %d\n", openmp_threads());
  return kExitOk;
}

}  // namespace attnkit::cli
