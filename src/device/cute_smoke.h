// A minimal CuTe tensor-core GEMM, compiled for every arch of the build: CI compiles it (proving the
// toolchain and the pinned CuTe headers), the GPU test runs it. C = A * B^T, 64 x 64 x 64, bf16 in,
// fp32 out, one CTA of four warps on SM80_16x8x16 MMA atoms (also valid on sm_90).
#pragma once

#include "attnkit/types.h"

namespace attnkit::device {

constexpr int kCuteSmokeSize = 64;

// a: bf16 [64, 64] row-major, b: bf16 [64, 64] row-major (rows are the n index), c: fp32 [64, 64].
// Device pointers; runs on the current device's default stream and waits for it.
Status cute_smoke_gemm(const void* a, const void* b, float* c);

}  // namespace attnkit::device
