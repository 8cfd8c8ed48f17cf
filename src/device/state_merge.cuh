// Merging partial attention states (semantics.md section 3): the one primitive that split-KV, cascade
// attention, block-sparse and context parallelism combine partial results with.
//
// A state (o, lse) is attention over a subset of the keys. Merging a and b:
//   m = max(lse_a, lse_b),  w_a = exp(lse_a - m),  w_b = exp(lse_b - m)
//   o = (w_a o_a + w_b o_b) / (w_a + w_b),  lse = m + log(w_a + w_b)
// Empty-state rule (written here, where it is enforced): a state over no visible key has lse = -inf
// and o = 0. Merging it with anything changes nothing; merging two of them gives o = 0, lse = -inf
// (m = -inf would otherwise make every weight exp(-inf + inf) = NaN).
#pragma once

#include <cmath>

namespace attnkit::device {

// The N-way merge: the pairwise rule applied N - 1 times, written in one pass. The caller reduces the
// maximum M of all lse_i and the sum S = sum_i exp(lse_i - M) (over threads, say) and installs them;
// then o = sum_i weight(lse_i) o_i and lse = lse(). All inputs empty (M = -inf): every weight 0 and
// lse -inf, so o = 0.
class StateMerger {
 public:
  __host__ __device__ StateMerger(float max_lse, float sum_of_weights) : max_(max_lse), sum_(sum_of_weights) {}
  __host__ __device__ float weight(float lse) const { return max_ == -INFINITY ? 0.0f : expf(lse - max_) / sum_; }
  __host__ __device__ float lse() const { return max_ == -INFINITY ? -INFINITY : max_ + logf(sum_); }

 private:
  float max_;  // M
  float sum_;  // S >= 1 when M is finite (the input that reaches M contributes exp(0))
};

}  // namespace attnkit::device
