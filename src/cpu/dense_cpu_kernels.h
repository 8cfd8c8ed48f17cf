// The CPU dense-attention tile kernels, compiled twice from dense_cpu_tiles.inc: once for AVX2 + FMA +
// F16C (dense_cpu_tiles_avx2.cpp, function-level target attributes, so the rest of the library keeps
// the baseline x86-64 ISA) and once portable (dense_cpu_tiles_portable.cpp). The drivers pick one set
// per call from the CPU's features at run time.
#pragma once

#include "cpu/dense_cpu_context.h"

namespace attnkit::cpu {

enum class CpuIsa { kPortable, kAvx2Fma };

// The kernel set this machine runs: AVX2+FMA+F16C when the CPU (and OS) support it, else portable.
// The environment variable ATTNKIT_CPU_ISA=portable forces the portable set (to test it on AVX2 hosts).
CpuIsa active_cpu_isa();
const char* cpu_isa_name(CpuIsa isa);

struct DenseCpuKernels {
  // Forward of one query tile: writes o (and lse) of its rows.
  void (*forward_query_tile)(const DenseCpuContext&, const QueryTile&, TileScratch&);
  // Backward of one key tile: its dk and dv, summed over every query row (all G heads) that sees it,
  // and its contribution to the dq accumulator of those rows (added in order, see OrderedDq).
  void (*backward_key_tile)(const DenseCpuContext&, const KeyTile&, TileScratch&);
  // Backward delta_i = <dO_i, O_i> of a range of queries (every head), into ctx.delta.
  void (*backward_delta)(const DenseCpuContext&, const QueryRange&);
};

const DenseCpuKernels& dense_cpu_kernels(CpuIsa isa);

#define ATTNKIT_DENSE_CPU_KERNEL_DECLARATIONS                                               \
  void forward_query_tile(const DenseCpuContext&, const QueryTile&, TileScratch&);         \
  void backward_key_tile(const DenseCpuContext&, const KeyTile&, TileScratch&);                \
  void backward_delta(const DenseCpuContext&, const QueryRange&);

namespace portable {
ATTNKIT_DENSE_CPU_KERNEL_DECLARATIONS
}  // namespace portable
namespace avx2 {
ATTNKIT_DENSE_CPU_KERNEL_DECLARATIONS
}  // namespace avx2

#undef ATTNKIT_DENSE_CPU_KERNEL_DECLARATIONS

}  // namespace attnkit::cpu
