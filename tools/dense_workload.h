// One dense attention case made concrete: random host inputs, the tensors on a device (contiguous BSHD),
// and the API arguments that point at them. Shared by `attnkit run` and `attnkit bench`.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/dense.h"
#include "buffers.h"
#include "tests/cases/dense_cases.h"

namespace attnkit::cli {

// Element counts of a BSHD case's tensors.
struct DenseSizes {
  std::int64_t q = 0;      // B * Sq * Hq * D
  std::int64_t k = 0;      // B * Sk * Hkv * D
  std::int64_t v = 0;      // B * Sk * Hkv * Dv
  std::int64_t out = 0;    // B * Sq * Hq * Dv
  std::int64_t lse = 0;    // B * Hq * Sq
  std::int64_t sinks = 0;  // Hq when the case has sinks, else 0
};

// Throws UsageError for a case the tool cannot lay out (varlen, or a dtype other than bf16/fp16).
DenseSizes dense_sizes(const cases::DenseCase& c);

// Random inputs, in the case's dtype as raw 16-bit words: q, k, v, dout ~ N(0, 1) rounded to the dtype;
// sinks (fp32) ~ N(0, 1). The same seed gives the same values whatever the thread count.
struct HostInputs {
  std::vector<std::uint16_t> q, k, v, dout;  // dout only when asked for
  std::vector<float> sinks;
};
HostInputs make_host_inputs(const cases::DenseCase& c, std::uint64_t seed, bool with_dout);

// Options of the case (causal, window, softcap) with the requested backend.
DenseOptions case_options(const cases::DenseCase& c, Backend backend);

// The tensors of one call on one device. Backward buffers exist only when `backward` was asked for.
struct DenseTensors {
  Device device;
  Buffer q, k, v, sinks;  // inputs
  Buffer out, lse;        // forward outputs (backward inputs)
  Buffer dout, dq, dk, dv, dsinks;
  Buffer forward_workspace, backward_workspace;
};

// Allocates every tensor and copies the inputs in (q, k, v, sinks, and dout when `backward`).
DenseTensors make_device_tensors(const cases::DenseCase& c, const HostInputs& inputs, Device device, bool backward);

DenseForwardArgs forward_args(const cases::DenseCase& c, const DenseTensors& t, Backend backend);
DenseBackwardArgs backward_args(const cases::DenseCase& c, const DenseTensors& t, Backend backend);

// Allocates the workspace a call needs (after workspace_size); returns the status of that query.
Status prepare_forward_workspace(DenseForwardArgs* args, DenseTensors* t);
Status prepare_backward_workspace(DenseBackwardArgs* args, DenseTensors* t);

}  // namespace attnkit::cli
