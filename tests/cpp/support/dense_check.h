// One dense attention call checked end to end against the float64 reference: fresh random inputs,
// outputs poisoned, guard bands and stride gaps watched, the tolerance rule of quality.md on every
// output, NaN and -inf positions compared. Used by the conformance tests and usable by the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "reference/dense_reference.h"
#include "tests/cases/dense_cases.h"
#include "tests/cpp/support/dense_tensors.h"
#include "tests/cpp/support/tolerance.h"

namespace attnkit::testing {

enum class CheckOutcome : std::uint8_t {
  kPassed,
  kFailed,
  kUnsupported,  // the backend answered kNotImplemented or kNotCompiled; `status` says why
};

struct DenseCheckResult {
  CheckOutcome outcome = CheckOutcome::kPassed;
  Status status;  // what the library returned for the call
  std::vector<ToleranceReport> comparisons;
  std::vector<std::string> problems;  // anything else that failed: canaries, CUDA errors, a wrong status
  std::string report() const;         // the comparisons and problems, one per line
};

struct DenseCheckOptions {
  Backend backend = Backend::kCPU;
  Device device = Device::cpu();
  std::uint64_t seed = 1;
  bool deterministic = false;  // backward only
};

bool is_unsupported(const Status& status);  // kNotImplemented or kNotCompiled

// Whether the library must treat the call as zero-size work and write nothing (numerics.md): zero
// batch or heads, or no query rows (backward: and no key rows either).
bool expects_no_work(const cases::DenseCase& dense_case, bool backward);

// Forward: out and lse against the reference (factor 2); then a second call without lse must give a
// bit-identical out and leave the lse buffer alone.
DenseCheckResult check_dense_forward(const cases::DenseCase& dense_case, const DenseCheckOptions& options);

// Backward from the reference's out (rounded to the dtype) and lse: dq, dk, dv, dsinks against the
// reference (factor 3).
DenseCheckResult check_dense_backward(const cases::DenseCase& dense_case, const DenseCheckOptions& options);

// The building blocks, for tests that need several calls on the same tensors. Each one poisons its
// outputs, sizes and guards the workspace, runs and synchronises; with `check_memory` it then appends
// to `problems` every byte that changed outside what the call may write (nothing at all when it fails
// or has no work). Without it (repeated runs of a large case) only CUDA errors are reported.
Status run_dense_forward(DenseCaseTensors& tensors, Backend backend, bool with_lse, std::vector<std::string>* problems,
                         bool check_memory = true);
Status run_dense_backward(DenseCaseTensors& tensors, Backend backend, bool deterministic,
                          std::vector<std::string>* problems, bool check_memory = true);

// Writes the float64 reference's out (rounded to the dtype) and lse (fp32) into the tensors, as the
// inputs of a backward call, and returns the reference forward.
reference::DenseForwardResult set_backward_inputs_from_reference(DenseCaseTensors& tensors);

}  // namespace attnkit::testing
