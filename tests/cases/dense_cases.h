// The dense attention case catalogue: one list of named problems that drives the correctness tests of
// every backend and the benchmarks (architecture.md, convention 10).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/types.h"

namespace attnkit::cases {

struct DenseCase {
  std::string name;
  std::int64_t batch = 1;        // B; ignored for varlen (the number of lengths given)
  std::int64_t seqlen_q = 1;     // Sq; ignored for varlen
  std::int64_t seqlen_k = 1;     // Sk; ignored for varlen
  std::int64_t heads_q = 1;      // Hq
  std::int64_t heads_kv = 1;     // Hkv
  std::int64_t head_dim = 64;    // D
  std::int64_t head_dim_v = 64;  // Dv
  bool causal = false;
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  float softcap = 0.0f;
  bool sinks = false;
  DType dtype = DType::kBFloat16;
  // Varlen when non-empty: per-sequence lengths (same count for q and k; zeros allowed).
  std::vector<std::int32_t> varlen_q;
  std::vector<std::int32_t> varlen_k;

  bool varlen() const { return !varlen_q.empty(); }
  // FLOPs by the field's convention: 4 * B * H * Sq * Sk * D (halved when causal), forward.
  double forward_flops() const;
  std::string describe() const;  // one line with every field that differs from the defaults
};

// Named adversarial cases: lengths 0 and 1, odd lengths, Sq != Sk both ways, GQA ratios, fully
// masked rows, empty varlen sequences, D not a power of two, (D, Dv) = (192, 128), windows, softcap,
// sinks. Small enough that the float64 reference runs them all in seconds.
std::vector<DenseCase> dense_adversarial_cases(DType dtype);

// A seeded random sweep: `count` cases with sizes up to `max_seqlen`, every feature drawn at random.
std::vector<DenseCase> dense_random_cases(std::uint64_t seed, int count, std::int64_t max_seqlen, DType dtype);

// The benchmark grid of the issues: bf16, B * S = 16384 tokens, H * D = 2048, for each D and S given,
// causal and not.
std::vector<DenseCase> dense_bench_cases(const std::vector<std::int64_t>& head_dims,
                                         const std::vector<std::int64_t>& seqlens);

}  // namespace attnkit::cases
