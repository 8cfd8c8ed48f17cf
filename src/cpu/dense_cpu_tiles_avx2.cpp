// The tile kernels compiled for AVX2 + FMA + F16C. Only the functions defined inside the target region
// below are compiled for that ISA (as a function-level `target` attribute would); the rest of the
// library stays baseline x86-64. Selected at run time by active_cpu_isa() (dense_cpu_isa.cpp).
#include <immintrin.h>

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

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace attnkit::cpu::avx2 {
#include "cpu/simd_avx2.inc"
#include "cpu/dense_cpu_tiles.inc"
}  // namespace attnkit::cpu::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
