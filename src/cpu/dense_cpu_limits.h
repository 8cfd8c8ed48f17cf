// What the CPU dense backend checks beyond make_dense_problem(): shared by forward and backward.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "host/dense_problem.h"

namespace attnkit::cpu {

// The per-row visibility mask compares key indices as int32 (8 per AVX2 compare).
inline Status check_cpu_limits(const host::DenseProblem& problem) {
  constexpr std::int64_t kMaxLength = std::numeric_limits<std::int32_t>::max() - 1;
  if (problem.seqlen_q > kMaxLength || problem.seqlen_k > kMaxLength) {
    return {StatusCode::kNotImplemented,
            "CPU backend: sequence lengths above " + std::to_string(kMaxLength) + " are not supported (got Sq = " +
                std::to_string(problem.seqlen_q) + ", Sk = " + std::to_string(problem.seqlen_k) + ")"};
  }
  return Status::ok();
}

}  // namespace attnkit::cpu
