#include <cstdlib>
#include <cstring>

#include "cpu/dense_cpu.h"
#include "cpu/dense_cpu_kernels.h"

namespace attnkit::cpu {
namespace {

bool cpu_has_avx2_fma_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  // libgcc's probe also checks that the OS saves the YMM registers (XGETBV), not only CPUID.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

}  // namespace

CpuIsa active_cpu_isa() {
  static const bool has_avx2 = cpu_has_avx2_fma_f16c();
  const char* forced = std::getenv("ATTNKIT_CPU_ISA");
  if (forced != nullptr && std::strcmp(forced, "portable") == 0) return CpuIsa::kPortable;
  return has_avx2 ? CpuIsa::kAvx2Fma : CpuIsa::kPortable;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx2Fma: return "avx2-fma-f16c";
    case CpuIsa::kPortable: return "portable";
  }
  return "unknown";
}

const DenseCpuKernels& dense_cpu_kernels(CpuIsa isa) {
  static const DenseCpuKernels portable_set{portable::forward_query_tile, portable::backward_key_tile,
                                            portable::backward_delta};
  static const DenseCpuKernels avx2_set{avx2::forward_query_tile, avx2::backward_key_tile, avx2::backward_delta};
  return isa == CpuIsa::kAvx2Fma ? avx2_set : portable_set;
}

const char* dense_cpu_isa_name() { return cpu_isa_name(active_cpu_isa()); }

}  // namespace attnkit::cpu
