#include "tests/cpp/support/dense_check.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace attnkit::testing {
namespace {

std::vector<DenseTensor> present(const DenseCaseTensors& tensors, std::initializer_list<DenseTensor> wanted) {
  std::vector<DenseTensor> result;
  for (DenseTensor tensor : wanted) {
    if (tensors.has(tensor)) result.push_back(tensor);
  }
  return result;
}

// A workspace of the size the library asks for, in a guarded buffer.
struct Workspace {
  std::unique_ptr<GuardedBuffer> buffer;
  std::vector<std::uint8_t> image;

  template <typename Args>
  Status prepare(Args* args, Device device) {
    std::size_t bytes = 0;
    if (Status s = workspace_size(*args, &bytes); !s) return s;
    if (bytes == 0) return Status::ok();
    buffer = std::make_unique<GuardedBuffer>(device, bytes);
    image.resize(buffer->image_bytes());
    fill_guard_pattern(image.data(), image.size());
    buffer->write_image(image);
    args->workspace = buffer->payload();
    args->workspace_bytes = bytes;
    return Status::ok();
  }

  // The payload is the backend's to use; only the guards must be intact.
  void check_guards(std::vector<std::string>* problems) const {
    if (!buffer) return;
    const std::vector<std::uint8_t> now = buffer->read_image();
    const std::size_t guard = GuardedBuffer::kGuardBytes;
    const std::size_t right = guard + buffer->payload_bytes();
    const bool left_ok = std::memcmp(now.data(), image.data(), guard) == 0;
    const bool right_ok = std::memcmp(now.data() + right, image.data() + right, guard) == 0;
    if (!left_ok || !right_ok) {
      problems->push_back(std::string("workspace: the ") + (left_ok ? "right" : "left") +
                          " guard band changed: the backend wrote outside the workspace it asked for");
    }
  }
};

template <typename Args, typename Call>
Status run_checked(DenseCaseTensors& tensors, Args args, const std::vector<DenseTensor>& outputs, bool backward,
                   Call call, std::vector<std::string>* problems, bool check_memory) {
  Workspace workspace;
  if (Status s = workspace.prepare(&args, tensors.device()); !s) return s;  // nothing ran
  tensors.poison(outputs);
  const Status status = call(args);
  if (std::string error = synchronize(tensors.device()); !error.empty()) {
    problems->push_back("CUDA error after the call: " + error);
  }
  if (!check_memory) return status;
  const bool may_write = status.is_ok() && !expects_no_work(tensors.dense_case(), backward);
  const std::string changed = tensors.check_untouched(may_write ? outputs : std::vector<DenseTensor>{});
  if (!changed.empty()) {
    problems->push_back((may_write ? std::string("out-of-bounds write: ")
                                   : std::string("a call that must write nothing (") +
                                         (status.is_ok() ? "zero-size work" : "it failed") + ") changed memory: ") +
                        changed);
  }
  workspace.check_guards(problems);
  return status;
}

// `max_abs_score` and `term_magnitude` feed default_atol (tolerance.h).
void compare(DenseCheckResult* result, const DenseCaseTensors& tensors, DenseTensor tensor,
             const std::vector<double>& reference, const std::vector<double>& naive, double factor,
             double max_abs_score, double term_magnitude = 0.0) {
  const std::vector<double> actual = tensors.read_values(tensor);
  const DType stored = tensors.device_view(tensor).dtype;
  result->comparisons.push_back(check_tolerance(dense_tensor_name(tensor), tensors.shape(tensor), actual, reference,
                                                naive, factor,
                                                default_atol(stored, reference, max_abs_score, term_magnitude)));
}

void finish(DenseCheckResult* result) {
  bool passed = result->problems.empty();
  for (const ToleranceReport& r : result->comparisons) passed = passed && r.passed;
  result->outcome = passed ? CheckOutcome::kPassed : CheckOutcome::kFailed;
}

// Common start of both checks: the status of the call decides whether there is anything to compare.
bool status_allows_comparison(DenseCheckResult* result, const char* what) {
  if (is_unsupported(result->status)) {
    result->outcome = CheckOutcome::kUnsupported;
    return false;
  }
  if (!result->status) {
    result->problems.push_back(std::string(what) + " returned " + result->status.to_string());
    finish(result);
    return false;
  }
  return true;
}

}  // namespace

bool is_unsupported(const Status& status) {
  return status.code() == StatusCode::kNotImplemented || status.code() == StatusCode::kNotCompiled;
}

bool expects_no_work(const cases::DenseCase& c, bool backward) {
  return c.num_sequences() == 0 || c.heads_q == 0 || (c.total_q() == 0 && (!backward || c.total_k() == 0));
}

std::string DenseCheckResult::report() const {
  std::string text;
  if (!status) text += "status: " + status.to_string() + "\n";
  for (const ToleranceReport& r : comparisons) text += r.text() + "\n";
  for (const std::string& problem : problems) text += "problem: " + problem + "\n";
  return text;
}

Status run_dense_forward(DenseCaseTensors& tensors, Backend backend, bool with_lse, std::vector<std::string>* problems,
                         bool check_memory) {
  const std::vector<DenseTensor> outputs =
      with_lse ? std::vector<DenseTensor>{DenseTensor::kOut, DenseTensor::kLse} : std::vector<DenseTensor>{DenseTensor::kOut};
  return run_checked(tensors, tensors.forward_args(backend, with_lse), outputs, false,
                     [](const DenseForwardArgs& args) { return forward(args); }, problems, check_memory);
}

Status run_dense_backward(DenseCaseTensors& tensors, Backend backend, bool deterministic,
                          std::vector<std::string>* problems, bool check_memory) {
  const std::vector<DenseTensor> outputs =
      present(tensors, {DenseTensor::kDq, DenseTensor::kDk, DenseTensor::kDv, DenseTensor::kDsinks});
  return run_checked(tensors, tensors.backward_args(backend, deterministic), outputs, true,
                     [](const DenseBackwardArgs& args) { return backward(args); }, problems, check_memory);
}

reference::DenseForwardResult set_backward_inputs_from_reference(DenseCaseTensors& tensors) {
  reference::DenseForwardResult ref = reference::dense_forward_reference(tensors.reference_inputs());
  tensors.write_values(DenseTensor::kOut, ref.out);
  tensors.write_values(DenseTensor::kLse, ref.lse);
  return ref;
}

DenseCheckResult check_dense_forward(const cases::DenseCase& dense_case, const DenseCheckOptions& options) {
  DenseCheckResult result;
  DenseCaseTensors tensors(dense_case, options.device, options.seed);
  result.status = run_dense_forward(tensors, options.backend, /*with_lse=*/true, &result.problems);
  if (!status_allows_comparison(&result, "forward")) return result;
  if (!expects_no_work(dense_case, false)) {
    const reference::DenseReferenceInputs inputs = tensors.reference_inputs();
    const reference::DenseForwardResult ref = reference::dense_forward_reference(inputs);
    const reference::DenseForwardResult naive = reference::dense_forward_naive_lowp(inputs);
    compare(&result, tensors, DenseTensor::kOut, ref.out, naive.out, kOutputFactor, ref.max_abs_score);
    compare(&result, tensors, DenseTensor::kLse, ref.lse, naive.lse, kOutputFactor, ref.max_abs_score);

    const std::vector<double> out_with_lse = tensors.read_values(DenseTensor::kOut);
    const Status again = run_dense_forward(tensors, options.backend, /*with_lse=*/false, &result.problems);
    if (!again) {
      result.problems.push_back("forward without lse returned " + again.to_string());
    } else {
      const std::vector<double> out_without_lse = tensors.read_values(DenseTensor::kOut);
      if (std::memcmp(out_with_lse.data(), out_without_lse.data(), out_with_lse.size() * sizeof(double)) != 0) {
        result.problems.push_back("forward without lse gave a different out than with lse (must be bit-identical)");
      }
    }
  }
  finish(&result);
  return result;
}

DenseCheckResult check_dense_backward(const cases::DenseCase& dense_case, const DenseCheckOptions& options) {
  DenseCheckResult result;
  DenseCaseTensors tensors(dense_case, options.device, options.seed);
  const reference::DenseForwardResult forward_ref = set_backward_inputs_from_reference(tensors);
  result.status = run_dense_backward(tensors, options.backend, options.deterministic, &result.problems);
  if (!status_allows_comparison(&result, "backward")) return result;
  if (!expects_no_work(dense_case, true)) {
    const reference::DenseReferenceInputs inputs = tensors.reference_inputs();
    const TensorRef dout = tensors.host_view(DenseTensor::kDout);
    const reference::DenseBackwardResult ref = reference::dense_backward_reference(inputs, dout);
    const reference::DenseBackwardResult naive =
        reference::dense_backward_naive_lowp(inputs, dout, tensors.host_view(DenseTensor::kOut));
    // dq and dk can cancel far below the terms they sum (a row with one visible key: dq = 0); those
    // terms are as large as the largest gradient, so that sets the accumulation noise of all three.
    const double gradients = std::max({max_abs_finite(ref.dq), max_abs_finite(ref.dk), max_abs_finite(ref.dv)});
    const double scores = forward_ref.max_abs_score;
    compare(&result, tensors, DenseTensor::kDq, ref.dq, naive.dq, kGradientFactor, scores, gradients);
    compare(&result, tensors, DenseTensor::kDk, ref.dk, naive.dk, kGradientFactor, scores, gradients);
    compare(&result, tensors, DenseTensor::kDv, ref.dv, naive.dv, kGradientFactor, scores, gradients);
    if (tensors.has(DenseTensor::kDsinks)) {
      compare(&result, tensors, DenseTensor::kDsinks, ref.dsinks, naive.dsinks, kGradientFactor, scores);
    }
  }
  finish(&result);
  return result;
}

}  // namespace attnkit::testing
