// CPU backend for dense attention: the same tiled online-softmax algorithm as the GPU kernels,
// multi-threaded with OpenMP over (batch, head, query tile). Runs everywhere; the default without a GPU.
#pragma once

#include "host/dense_backend.h"

namespace attnkit::cpu {

Status dense_supports_forward(const host::DenseProblem& problem, const DenseForwardArgs& args);
Status dense_supports_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args);
std::size_t dense_forward_workspace_bytes(const host::DenseProblem& problem);
std::size_t dense_backward_workspace_bytes(const host::DenseProblem& problem);
Status dense_forward(const host::DenseProblem& problem, const DenseForwardArgs& args);
Status dense_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args);

// The instruction set the CPU kernels run with on this machine: "avx2-fma-f16c" or "portable" (no
// AVX2/FMA/F16C, or forced with the environment variable ATTNKIT_CPU_ISA=portable).
const char* dense_cpu_isa_name();

}  // namespace attnkit::cpu
