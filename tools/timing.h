// Timing of repeated library calls: CUDA events around each call on the GPU (the GPU's own clock, no
// host launch overhead in the figure), std::chrono::steady_clock on the CPU. The figure reported is the
// median, which one slow outlier (a clock ramp, a page fault) cannot move.
#pragma once

#include <functional>
#include <vector>

#include "attnkit/types.h"

namespace attnkit::cli {

struct Timing {
  double median_ms = 0.0;
  double min_ms = 0.0;
  double max_ms = 0.0;
  int iterations = 0;
};

// Runs call(i) for i = 0 .. warmup + iterations - 1 (the index lets the caller rotate inputs), timing
// only the last `iterations` calls one by one. `call` throws on failure. GPU calls must be issued on
// the default stream of the current device.
Timing time_calls(Device device, int warmup, int iterations, const std::function<void(int)>& call);

double median(std::vector<double> values);

}  // namespace attnkit::cli
