// The dense attention case catalogue: one list of named problems that drives the correctness tests of
// every backend and the benchmarks (architecture.md, convention 10).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/types.h"

namespace attnkit::cases {

// How a test lays a case's tensors out in memory. Every backend must accept all of them: the API
// promises free strides except for the last dimension.
enum class DenseLayout : std::uint8_t {
  kContiguous,  // every tensor row-major
  kPackedQkv,   // q, k, v are views of one [B, S, Hq + 2 Hkv, D] tensor (varlen [T, Hq + 2 Hkv, D]);
                // needs Sq = Sk (the same varlen lengths for q and k) and D = Dv
  kPadded,      // every strided tensor, inputs and outputs, has gaps between heads, rows and batches
};

const char* layout_name(DenseLayout layout);

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
  float scale = 0.0f;            // 0: the default 1 / sqrt(D)
  DenseLayout layout = DenseLayout::kContiguous;
  // Varlen when non-empty: per-sequence lengths (same count for q and k; zeros allowed).
  std::vector<std::int32_t> varlen_q;
  std::vector<std::int32_t> varlen_k;

  bool varlen() const { return !varlen_q.empty(); }
  std::int64_t total_q() const;  // query rows: B * Sq, or the sum of varlen_q
  std::int64_t total_k() const;  // key rows: B * Sk, or the sum of varlen_k
  std::int64_t num_sequences() const { return varlen() ? static_cast<std::int64_t>(varlen_q.size()) : batch; }
  std::int64_t max_seqlen_q() const;  // Sq, or the longest varlen_q
  std::int64_t max_seqlen_k() const;
  // FLOPs by the field's convention, forward: 2 * B * H * Sq * Sk * (D + Dv) (= 4 * B * H * Sq * Sk * D
  // when D = Dv), halved when causal; varlen sums over its sequences. Windows are not discounted.
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
// causal and not (S must divide 16384 and D must divide 2048).
std::vector<DenseCase> dense_bench_cases(const std::vector<std::int64_t>& head_dims,
                                         const std::vector<std::int64_t>& seqlens);

}  // namespace attnkit::cases
