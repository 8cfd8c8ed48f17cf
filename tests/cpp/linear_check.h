// One linear-attention call (GDN, KDA) checked end to end against the float64 reference: every tensor of
// a case in guarded buffers (guard bands and stride gaps hold the NaN guard pattern), fresh random inputs,
// outputs poisoned with NaN before the run, the accuracy rule of semantics.md section 6 on every output:
//   max|out - ref| <= factor * max|naive_lowp - ref| + atol   (factor 2 outputs and states, 3 gradients)
//   rms(out - ref) / rms(ref) < 0.005 (outputs, states, dq, dk, dv)  or  < 0.02 (dg, dbeta, dA_log, ddt_bias)
// NaN where the reference is finite fails; so does any byte changed outside what the call may write.
// Used by the CPU and GPU conformance tests (one body) and by the CLI.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "reference/linear_reference.h"
#include "tests/cases/linear_cases.h"
#include "tests/cpp/support/dense_check.h"  // CheckOutcome, is_unsupported
#include "tests/cpp/support/guarded_buffer.h"
#include "tests/cpp/support/tolerance.h"

namespace attnkit::testing {

enum class LinearTensor : int {
  kQ, kK, kV, kG, kBeta, kALog, kDtBias, kOut, kInitialState, kFinalState, kCuSeqlens,
  kDout, kDfinalState, kDq, kDk, kDv, kDg, kDbeta, kDInitialState, kDALog, kDdtBias,
  kState, kStateIndices,
};
constexpr int kLinearTensorCount = 23;
const char* linear_tensor_name(LinearTensor tensor);

enum class LinearCall : std::uint8_t { kForward, kBackward, kDecode };

constexpr double kRmsBoundOutputs = 0.005;    // outputs, states, dq, dk, dv
constexpr double kRmsBoundGateBeta = 0.02;    // dg, dbeta, dA_log, ddt_bias

class LinearCaseTensors {
 public:
  // Allocates and fills every tensor `call` needs for `linear_case` on `device`. Values (each tensor's
  // stream derived from seed, case name and tensor; rounded to the tensor's dtype; never all zero):
  //   q, v, dout, dfinal_state N(0, 1); k N(0, 1), rows scaled to unit norm when the case has no fused l2
  //   norm (the delta rule is stable for beta |k|^2 <= 2); g = -gate_scale U(0.02, 1) as a log decay, or
  //   N(0, 1) raw with A_log = log(gate_scale U(0.2, 1)) and dt_bias N(0, 0.5) when fused; beta U(0.05, 1),
  //   or N(0, 1.5) logits when fused; states N(0, 1); state_indices a random injection into the pool.
  LinearCaseTensors(const cases::LinearCase& linear_case, LinearCall call, Device device, std::uint64_t seed);

  const cases::LinearCase& linear_case() const { return case_; }
  bool has(LinearTensor tensor) const;
  TensorRef device_view(LinearTensor tensor) const;  // undefined when absent
  TensorRef host_view(LinearTensor tensor) const;    // the same strides over the host image
  std::vector<std::int64_t> shape(LinearTensor tensor) const;

  LinearForwardArgs forward_args(Backend backend) const;
  LinearBackwardArgs backward_args(Backend backend) const;
  LinearDecodeArgs decode_args(Backend backend) const;
  // Host views for the reference; for decode, initial_state is the state pool.
  reference::LinearReferenceInputs reference_inputs() const;

  std::vector<double> read_values(LinearTensor tensor) const;  // downloads; row-major logical elements
  void poison(const std::vector<LinearTensor>& outputs);       // quiet NaN into their logical elements
  // After a run: every byte outside the logical elements of `writable` must be unchanged. Returns "" or
  // one line per changed buffer; then the host images take the downloaded contents.
  std::string check_untouched(const std::vector<LinearTensor>& writable);

 private:
  struct Buffer {
    std::unique_ptr<GuardedBuffer> memory;
    std::vector<std::uint8_t> image;
    DType dtype = DType::kFloat32;
    std::vector<std::int64_t> shape, strides;
  };
  const Buffer* buffer(LinearTensor tensor) const { return buffers_[static_cast<int>(tensor)].get(); }
  void create(LinearTensor tensor, DType dtype, const std::vector<std::int64_t>& shape, bool padded);
  std::vector<std::int64_t> element_offsets(const Buffer& b) const;
  void fill(LinearTensor tensor, const std::vector<double>& values);  // rounds, writes, uploads

  cases::LinearCase case_;
  LinearCall call_;
  Device device_;
  std::array<std::unique_ptr<Buffer>, kLinearTensorCount> buffers_;
};

struct RmsReport {
  std::string name;
  double ratio = 0.0;  // rms(out - ref) / rms(ref); 0 when both are 0
  double bound = 0.0;
  bool passed = true;
  std::string text() const;
};

struct LinearCheckResult {
  CheckOutcome outcome = CheckOutcome::kPassed;
  Status status;
  std::vector<ToleranceReport> comparisons;
  std::vector<RmsReport> rms;
  std::vector<std::string> problems;
  std::string report() const;
};

// rms(actual - reference) / rms(reference) over the finite reference elements (NaN in actual: infinity).
RmsReport rms_ratio(const std::string& name, const std::vector<double>& actual, const std::vector<double>& reference,
                    double bound);

// Zero-size work: nothing may be written (the rule of LinearProblem::no_work, restated from the case).
bool linear_expects_no_work(const cases::LinearCase& linear_case, LinearCall call);

// Asks workspace_size() for the chosen backend's scratch and, when it needs some, points the call at a new
// buffer on `device` (kept alive by the returned pointer; null when none is needed or the query fails,
// which the call itself then reports).
std::unique_ptr<GuardedBuffer> attach_linear_workspace(LinearForwardArgs* args, Device device);
std::unique_ptr<GuardedBuffer> attach_linear_workspace(LinearBackwardArgs* args, Device device);
std::unique_ptr<GuardedBuffer> attach_linear_workspace(LinearDecodeArgs* args, Device device);

LinearCheckResult check_linear_forward(const cases::LinearCase& linear_case, Backend backend, Device device,
                                       std::uint64_t seed);
LinearCheckResult check_linear_backward(const cases::LinearCase& linear_case, Backend backend, Device device,
                                        std::uint64_t seed);
LinearCheckResult check_linear_decode(const cases::LinearCase& linear_case, Backend backend, Device device,
                                      std::uint64_t seed);

}  // namespace attnkit::testing
