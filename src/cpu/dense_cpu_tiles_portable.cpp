// The tile kernels in portable C++ (baseline ISA), for CPUs without AVX2 + FMA + F16C.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "attnkit/numeric.h"
#include "cpu/dense_cpu_kernels.h"
#include "cpu/dense_cpu_schedule.h"

namespace attnkit::cpu::portable {
#include "cpu/simd_portable.inc"
#include "cpu/dense_cpu_tiles.inc"
}  // namespace attnkit::cpu::portable
