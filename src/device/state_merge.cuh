// Merging partial attention states (semantics.md section 3): the one primitive that split-KV, cascade
// attention, block-sparse and context parallelism combine partial results with.
//
// A state (o, lse) is attention over a subset of the keys. Merging a and b:
//   m = max(lse_a, lse_b),  w_a = exp(lse_a - m),  w_b = exp(lse_b - m)
//   o = (w_a o_a + w_b o_b) / (w_a + w_b),  lse = m + log(w_a + w_b)
// Empty-state rule (written here, where it is enforced): a state over no visible key has lse = -inf
// and o = 0. Merging it with anything changes nothing; merging two of them gives o = 0, lse = -inf
// (m = -inf would otherwise make every weight exp(-inf + inf) = NaN).
// The N-way merge below is the pairwise rule applied N - 1 times, written in one pass.
#pragma once

#include <cmath>

namespace attnkit::device {

// Weights of each input in the merged o, and the merged lse.
struct MergeWeights {
  float weight_a;
  float weight_b;
  float lse;
};

__host__ __device__ __forceinline__ MergeWeights merge_two_states(float lse_a, float lse_b) {
  const float m = fmaxf(lse_a, lse_b);
  if (m == -INFINITY) return {0.0f, 0.0f, -INFINITY};
  const float w_a = expf(lse_a - m);
  const float w_b = expf(lse_b - m);
  const float sum = w_a + w_b;
  return {w_a / sum, w_b / sum, m + logf(sum)};
}

// N-way merge in two passes over the lse values: observe() every lse, then weight(lse_i) is the factor
// of o_i in the merged o, and lse() the merged lse. All inputs empty: every weight 0, lse -inf.
class StateMerger {
 public:
  __host__ __device__ void observe_max(float lse) { max_ = fmaxf(max_, lse); }
  // Call after every observe_max(), once per input.
  __host__ __device__ void observe_sum(float lse) {
    if (max_ != -INFINITY) sum_ += expf(lse - max_);
  }
  // Lets a caller that reduced partial maxima / sums itself (across threads, say) install them.
  __host__ __device__ void set(float max, float sum) {
    max_ = max;
    sum_ = sum;
  }
  __host__ __device__ float max() const { return max_; }
  __host__ __device__ float sum() const { return sum_; }
  __host__ __device__ float weight(float lse) const {
    return max_ == -INFINITY ? 0.0f : expf(lse - max_) / sum_;
  }
  __host__ __device__ float lse() const { return max_ == -INFINITY ? -INFINITY : max_ + logf(sum_); }

 private:
  float max_ = -INFINITY;
  float sum_ = 0.0f;
};

}  // namespace attnkit::device
