// `attnkit run --op gdn|kda`: one linear-attention problem (Gated DeltaNet or KDA) on the best backend
// present, checked against the float64 recurrence with the accuracy rule of semantics.md section 6
// (tests/cpp/linear_check.h, the same check as the conformance tests) and timed.
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "cli_args.h"
#include "cli_commands.h"
#include "cli_device.h"
#include "cli_problem.h"
#include "tests/cases/linear_cases.h"
#include "tests/cpp/linear_check.h"
#include "timing.h"

namespace attnkit::cli {
namespace {

std::vector<OptionSpec> linear_run_options() {
  return {
      {"--op", "OP", "gdn (Gated DeltaNet) or kda (Kimi Delta Attention); dense is the other `run`"},
      {"--b", "N", "batch size (default 2)"},
      {"--t", "N", "tokens per sequence (default 1024)"},
      {"--varlen", "L,L,..", "varlen: the sequences' lengths (B = 1; overrides --b and --t)"},
      {"--h", "N", "q/k heads (default 4)"},
      {"--hv", "N", "value heads, a multiple of --h (default 8)"},
      {"--k", "N", "head dim of q/k (default 128)"},
      {"--v", "N", "head dim of v (default 128)"},
      {"--dtype", "T", "bf16 (default) or fp16"},
      {"--no-l2norm", "", "no fused q/k L2 norm (the default fuses it)"},
      {"--gate", "G", "softplus (default: -exp(A_log) softplus(g + dt_bias)) | lb-sigmoid | log-decay"},
      {"--lower-bound", "X", "lb of --gate lb-sigmoid, -5 <= lb < 0 (default -5)"},
      {"--beta", "B", "sigmoid (default) | 2sigmoid (negative eigenvalues) | value"},
      {"--decay", "X", "decay strength: gates (or exp(A_log)) scaled by X (default 1)"},
      {"--h0", "", "an initial state (default none)"},
      {"--state-layout", "L", "kv (default: [N, HV, K, V]) or vk"},
      {"--backward", "", "also run, check and time the backward"},
      {"--no-check", "", "skip the float64 check (for shapes too large for it)"},
      {"--issue-shapes", "", "time the four shapes of issue 6 instead (bf16, K = V = 128, fused options; not checked)"},
      backend_option(),
      {"--seed", "N", "seed of the random inputs (default: drawn, and printed)"},
      {"--warmup", "N", "untimed runs first (default 10 on a GPU, 1 on the CPU)"},
      {"--iters", "N", "timed runs; the median is reported (default 50 on a GPU, 3 on the CPU)"},
      {"--help", "", "this help"},
  };
}

cases::LinearCase linear_case_from_args(const ParsedArgs& args) {
  constexpr std::int64_t kBig = std::numeric_limits<std::int32_t>::max();
  cases::LinearCase c;
  const std::string op = args.get_choice("--op", "gdn", {"gdn", "kda"});
  c.variant = op == "kda" ? LinearVariant::kKimiDelta : LinearVariant::kGatedDeltaNet;
  c.batch = args.get_int("--b", 2, 0, kBig);
  c.seqlen = args.get_int("--t", 1024, 0, kBig);
  c.heads_qk = args.get_int("--h", 4, 0, kBig);
  c.heads_v = args.get_int("--hv", 8, 0, kBig);
  c.key_dim = args.get_int("--k", 128, 1, kBig);
  c.value_dim = args.get_int("--v", 128, 1, kBig);
  c.dtype = parse_dtype(args.get_choice("--dtype", "bf16", {"bf16", "fp16"}));
  c.l2norm_qk = !args.has("--no-l2norm");
  const std::string gate = args.get_choice("--gate", "softplus", {"softplus", "lb-sigmoid", "log-decay"});
  c.gate_form = gate == "softplus"     ? LinearGateForm::kSoftplus
                : gate == "lb-sigmoid" ? LinearGateForm::kLowerBoundSigmoid
                                       : LinearGateForm::kLogDecay;
  c.gate_lower_bound = static_cast<float>(args.get_double("--lower-bound", -5.0, -5.0, -1e-6));
  const std::string beta = args.get_choice("--beta", "sigmoid", {"sigmoid", "2sigmoid", "value"});
  c.beta_form = beta == "sigmoid"    ? LinearBetaForm::kSigmoid
                : beta == "2sigmoid" ? LinearBetaForm::kTwoSigmoid
                                     : LinearBetaForm::kValue;
  c.gate_scale = args.get_double("--decay", 1.0, 1e-6, 1e6);
  c.initial_state = args.has("--h0");
  c.dfinal_state = false;
  c.state_layout = args.get_choice("--state-layout", "kv", {"kv", "vk"}) == "vk" ? LinearStateLayout::kVK
                                                                                  : LinearStateLayout::kKV;
  if (args.has("--varlen")) {
    std::stringstream list(args.get_string("--varlen", ""));
    std::string item;
    while (std::getline(list, item, ',')) {
      try {
        std::size_t used = 0;
        const long length = std::stol(item, &used);
        if (used != item.size() || length < 0 || length > kBig) throw std::invalid_argument(item);
        c.varlen.push_back(static_cast<std::int32_t>(length));
      } catch (const std::exception&) {
        throw UsageError("--varlen: '" + item + "' is not a length (a comma-separated list of integers >= 0)");
      }
    }
    if (c.varlen.empty()) throw UsageError("--varlen: give at least one length");
  }
  c.name = op + "_cli";
  return c;
}

// Prints a check's report and returns whether it passed.
bool report_check(const char* what, const testing::LinearCheckResult& result) {
  std::printf("check %s against the float64 recurrence:\n%s", what, result.report().c_str());
  if (result.outcome == testing::CheckOutcome::kUnsupported) {
    std::printf("%s: unsupported: %s\n", what, result.status.to_string().c_str());
  }
  return result.outcome == testing::CheckOutcome::kPassed;
}

// Forward (and with --backward, backward) of the issue-6 benchmark grid on one backend: the median of
// --iters runs each, printed as a table. Not checked: the float64 recurrence of these shapes takes minutes.
int time_issue_shapes(const ParsedArgs& args, Backend requested) {
  const LinearVariant variant =
      args.get_choice("--op", "gdn", {"gdn", "kda"}) == "kda" ? LinearVariant::kKimiDelta : LinearVariant::kGatedDeltaNet;
  const Placement placement = place(requested);
  const bool on_gpu = placement.device.kind == DeviceKind::kCUDA;
  const int warmup = static_cast<int>(args.get_int("--warmup", on_gpu ? 10 : 0, 0, 1000000));
  const int iterations = static_cast<int>(args.get_int("--iters", on_gpu ? 50 : 1, 1, 1000000));
  const bool with_backward = args.has("--backward");
  std::printf("device: %s (%s)\n%-28s %12s %12s\n", device_name(placement.device).c_str(), placement.why.c_str(),
              "case", "forward ms", with_backward ? "backward ms" : "");
  for (const cases::LinearCase& c : cases::linear_bench_cases(variant)) {
    double forward_ms = 0.0, backward_ms = 0.0;
    {
      testing::LinearCaseTensors tensors(c, testing::LinearCall::kForward, placement.device, 1);
      LinearForwardArgs call = tensors.forward_args(requested);
      const auto workspace = testing::attach_linear_workspace(&call, placement.device);
      forward_ms = time_calls(placement.device, warmup, iterations, [&](int) {
                     if (Status status = forward(call); !status) throw std::runtime_error("forward: " + status.to_string());
                   }).median_ms;
    }
    if (with_backward) {
      testing::LinearCaseTensors tensors(c, testing::LinearCall::kBackward, placement.device, 1);
      LinearBackwardArgs call = tensors.backward_args(requested);
      const auto workspace = testing::attach_linear_workspace(&call, placement.device);
      backward_ms = time_calls(placement.device, warmup, iterations, [&](int) {
                      if (Status status = backward(call); !status) throw std::runtime_error("backward: " + status.to_string());
                    }).median_ms;
    }
    std::printf("%-28s %12.3f %12s\n", c.name.c_str(), forward_ms,
                with_backward ? std::to_string(backward_ms).c_str() : "");
    std::fflush(stdout);
  }
  return kExitOk;
}

}  // namespace

const char* run_linear_usage() {
  return "usage: attnkit run --op gdn|kda [options]\n"
         "Runs one linear-attention forward (and with --backward its backward) on the best backend present\n"
         "(default B=2, T=1024, H=4, HV=8, K=V=128, bf16, fused L2 norm, softplus gate and sigmoid beta),\n"
         "checks it against the float64 recurrence with the rule of semantics.md section 6\n"
         "(max|out - ref| <= 2 * max|naive_lowp - ref| + atol and rms(out - ref) / rms(ref) < 0.005), and times\n"
         "it. Exit code 1 when the check fails.\n";
}

int run_linear_command(const std::vector<std::string>& argv) {
  const std::vector<OptionSpec> specs = linear_run_options();
  const ParsedArgs args(argv, specs);
  if (args.has("--help")) {
    std::printf("%s\noptions:\n%s", run_linear_usage(), format_options(specs).c_str());
    return kExitOk;
  }
  const Backend requested = backend_from_args(args);
  if (args.has("--issue-shapes")) return time_issue_shapes(args, requested);
  const cases::LinearCase c = linear_case_from_args(args);
  const std::uint64_t seed =
      static_cast<std::uint64_t>(args.get_int("--seed", static_cast<std::int64_t>(std::random_device{}() & 0x7fffffff),
                                              0, std::numeric_limits<std::int64_t>::max()));
  const bool with_backward = args.has("--backward");
  std::printf("attnkit run: %s, seed %llu\n", c.describe().c_str(), static_cast<unsigned long long>(seed));

  Placement placement = place(requested);
  auto tensors = std::make_unique<testing::LinearCaseTensors>(c, testing::LinearCall::kForward, placement.device, seed);
  LinearForwardArgs call = tensors->forward_args(requested);
  Explanation explanation = explain(call);
  if (!explanation.validation) {
    std::fprintf(stderr, "attnkit run: %s\n", explanation.to_string().c_str());
    return explanation.validation.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  if (explanation.chosen == Backend::kAuto && requested == Backend::kAuto &&
      placement.device.kind == DeviceKind::kCUDA) {
    std::printf("device: %s, but no GPU backend can run this problem:\n  %s\n", placement.why.c_str(),
                explanation.to_string().c_str());
    placement = cpu_placement("no GPU backend can run it");
    tensors = std::make_unique<testing::LinearCaseTensors>(c, testing::LinearCall::kForward, placement.device, seed);
    call = tensors->forward_args(requested);
    explanation = explain(call);
  }
  std::printf("device: %s (%s)\n", device_name(placement.device).c_str(), placement.why.c_str());
  std::printf("dispatch: %s\n", explanation.to_string().c_str());
  if (explanation.chosen == Backend::kAuto) {
    std::fprintf(stderr, "attnkit run: no backend can run this problem here\n");
    return kExitFailure;
  }
  const Backend backend = explanation.chosen;

  bool passed = true;
  if (!args.has("--no-check")) {
    passed = report_check("forward", testing::check_linear_forward(c, backend, placement.device, seed)) && passed;
    if (with_backward) {
      passed = report_check("backward", testing::check_linear_backward(c, backend, placement.device, seed)) && passed;
    }
  }

  const bool on_gpu = placement.device.kind == DeviceKind::kCUDA;
  const int warmup = static_cast<int>(args.get_int("--warmup", on_gpu ? 10 : 1, 0, 1000000));
  const int iterations = static_cast<int>(args.get_int("--iters", on_gpu ? 50 : 3, 1, 1000000));
  call.options.backend = backend;
  const auto forward_workspace = testing::attach_linear_workspace(&call, placement.device);
  const Timing timing = time_calls(placement.device, warmup, iterations, [&](int) {
    if (Status status = forward(call); !status) throw std::runtime_error("forward: " + status.to_string());
  });
  const double flops = c.forward_flops();
  std::printf("forward: median %.4f ms over %d runs after %d warm-up (%s; min %.4f, max %.4f); %.2f GFLOP/s "
              "(%.4g GFLOP: 2 tokens HV (2 K V + 64 (K + V)))\n",
              timing.median_ms, timing.iterations, warmup, on_gpu ? "CUDA events" : "steady_clock", timing.min_ms,
              timing.max_ms, timing.median_ms > 0 ? flops / (timing.median_ms * 1e6) : 0.0, flops * 1e-9);
  if (with_backward) {
    tensors.reset();  // the forward's buffers go before the backward's are made
    testing::LinearCaseTensors backward_tensors(c, testing::LinearCall::kBackward, placement.device, seed);
    LinearBackwardArgs backward_call = backward_tensors.backward_args(backend);
    const auto backward_workspace = testing::attach_linear_workspace(&backward_call, placement.device);
    const Timing backward_timing = time_calls(placement.device, warmup, iterations, [&](int) {
      if (Status status = backward(backward_call); !status) throw std::runtime_error("backward: " + status.to_string());
    });
    std::printf("backward: median %.4f ms over %d runs (min %.4f, max %.4f)\n", backward_timing.median_ms,
                backward_timing.iterations, backward_timing.min_ms, backward_timing.max_ms);
  }
  std::printf("result: %s\n", args.has("--no-check") ? "not checked (--no-check)" : passed ? "PASS" : "FAIL");
  return passed ? kExitOk : kExitFailure;
}

}  // namespace attnkit::cli
