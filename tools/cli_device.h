// Where the tool puts its tensors. An explicit GPU backend needs a CUDA device; `auto` takes the first
// CUDA device when there is one and the CPU otherwise, and says which and why.
#pragma once

#include <string>

#include "attnkit/dense.h"

namespace attnkit::cli {

struct Placement {
  Device device;
  std::string device_label;  // the GPU's name or the CPU model, as the results file names the device
  std::string why;           // one line: why this device
};

// Throws std::runtime_error when the backend asked for cannot have its device (sm80/sm90 without a GPU,
// or a build without CUDA).
Placement place(Backend backend);

// The CPU placement (for `run`, when no GPU backend can run the problem under --backend auto).
Placement cpu_placement(const std::string& why);

}  // namespace attnkit::cli
