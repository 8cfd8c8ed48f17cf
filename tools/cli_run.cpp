// `attnkit run`: one dense forward problem on the best backend present, checked against the float64
// reference and timed.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "cli_args.h"
#include "cli_commands.h"
#include "cli_device.h"
#include "cli_problem.h"
#include "dense_workload.h"
#include "reference_check.h"
#include "timing.h"

namespace attnkit::cli {
namespace {

// Below this many multiply-adds (B * Hq * Sq * Sk * D) the whole problem is checked: about a second of
// the float64 reference plus the naive formula on one core. Above it, a row sample.
constexpr double kWholeCheckMacs = 256.0e6;
constexpr std::int64_t kDefaultSampleRows = 512;

std::vector<OptionSpec> run_options() {
  std::vector<OptionSpec> specs = problem_options();
  specs.push_back(backend_option());
  specs.push_back({"--op", "OP", "dense (default) | gdn | kda: linear attention, see attnkit run --op gdn --help"});
  specs.push_back({"--seed", "N", "seed of the random inputs (default: drawn, and printed)"});
  specs.push_back(
      {"--check-rows", "N", "rows checked against the reference; 0 = all (default: all when small, else 512)"});
  specs.push_back({"--warmup", "N", "untimed runs first (default 10 on a GPU, 1 on the CPU)"});
  specs.push_back({"--iters", "N", "timed runs; the median is reported (default 50 on a GPU, 3 on the CPU)"});
  specs.push_back({"--help", "", "this help"});
  return specs;
}

std::string rate_text(double flops, double ms) {
  char text[64];
  const double per_second = flops / (ms * 1e-3);
  if (per_second >= 1e12) {
    std::snprintf(text, sizeof(text), "%.1f TFLOP/s", per_second * 1e-12);
  } else {
    std::snprintf(text, sizeof(text), "%.2f GFLOP/s", per_second * 1e-9);
  }
  return text;
}

// Tensors on the placement's device and the explanation of dispatch for them.
struct Prepared {
  Placement placement;
  DenseTensors tensors;
  DenseForwardArgs args;
  Explanation explanation;
};

Prepared prepare(const cases::DenseCase& c, const HostInputs& inputs, const Placement& placement, Backend backend) {
  Prepared prepared{placement, make_device_tensors(c, inputs, placement.device, false), {}, {}};
  prepared.args = forward_args(c, prepared.tensors, backend);
  prepared.explanation = explain(prepared.args);
  return prepared;
}

}  // namespace

const char* run_usage() {
  return "usage: attnkit run [options]\n"
         "Runs one dense attention forward (default B=2, S=1024, H=16, D=128, causal, bf16) on the best\n"
         "backend present (with --backend auto: a GPU backend when one can run the problem, else the CPU),\n"
         "checks it against the float64 reference with the tolerance rule of quality.md\n"
         "(max|out - ref| <= 2 * max|naive_lowp - ref| + atol), and times it. Exit code 1 when the check fails.\n";
}

int run_command(const std::vector<std::string>& argv) {
  // Linear attention has options of its own; its command line goes to tools/linear_run.cpp whole.
  for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == "--op" && argv[i + 1] != "dense") return run_linear_command(argv);
  }
  const std::vector<OptionSpec> specs = run_options();
  const ParsedArgs args(argv, specs);
  if (args.has("--help")) {
    std::printf("%s\noptions:\n%s", run_usage(), format_options(specs).c_str());
    return kExitOk;
  }
  const cases::DenseCase c = case_from_args(args);
  const Backend backend = backend_from_args(args);
  const std::uint64_t seed =
      static_cast<std::uint64_t>(args.get_int("--seed", static_cast<std::int64_t>(std::random_device{}() & 0x7fffffff),
                                              0, std::numeric_limits<std::int64_t>::max()));
  const std::int64_t rows_total = c.batch * c.seqlen_q * c.heads_q;
  const double check_macs = static_cast<double>(rows_total) * static_cast<double>(c.seqlen_k) * c.head_dim;
  const std::int64_t default_rows = check_macs <= kWholeCheckMacs ? 0 : kDefaultSampleRows;
  const std::int64_t check_rows =
      args.get_int("--check-rows", default_rows, 0, std::numeric_limits<std::int64_t>::max());

  std::printf("attnkit run: dense forward %s, seed %llu\n", c.name.c_str(), static_cast<unsigned long long>(seed));
  const HostInputs inputs = make_host_inputs(c, seed, false);

  Prepared prepared = prepare(c, inputs, place(backend), backend);
  if (!prepared.explanation.validation) {
    std::fprintf(stderr, "attnkit run: %s\n", prepared.explanation.to_string().c_str());
    return prepared.explanation.validation.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  if (prepared.explanation.chosen == Backend::kAuto && backend == Backend::kAuto &&
      prepared.placement.device.kind == DeviceKind::kCUDA) {
    // No GPU backend of this build can run the problem: say why, then run it on the CPU.
    std::printf("device: %s, but no GPU backend can run this problem:\n  %s\n", prepared.placement.why.c_str(),
                prepared.explanation.to_string().c_str());
    prepared = prepare(c, inputs, cpu_placement("no GPU backend can run it"), backend);
  }
  std::printf("device: %s (%s)\n", device_name(prepared.placement.device).c_str(), prepared.placement.why.c_str());
  std::printf("dispatch: %s\n", prepared.explanation.to_string().c_str());
  if (prepared.explanation.chosen == Backend::kAuto) {
    std::fprintf(stderr, "attnkit run: no backend can run this problem here\n");
    return kExitFailure;
  }

  DenseForwardArgs& call = prepared.args;
  DenseTensors& tensors = prepared.tensors;
  if (Status status = prepare_forward_workspace(&call, &tensors); !status) {
    std::fprintf(stderr, "attnkit run: workspace_size: %s\n", status.to_string().c_str());
    return kExitFailure;
  }
  // Poisoned outputs: a value the backend fails to write stays NaN and fails the check.
  tensors.out.fill_bytes(0xff);
  tensors.lse.fill_bytes(0xff);
  if (Status status = forward(call); !status) {
    std::fprintf(stderr, "attnkit run: forward: %s\n", status.to_string().c_str());
    return kExitFailure;
  }
  synchronize(tensors.device);

  const DenseSizes sizes = dense_sizes(c);
  std::vector<std::uint16_t> out(static_cast<std::size_t>(sizes.out));
  std::vector<float> lse(static_cast<std::size_t>(sizes.lse));
  tensors.out.download(out.data(), out.size() * sizeof(std::uint16_t));
  tensors.lse.download(lse.data(), lse.size() * sizeof(float));
  const ForwardCheck check = check_forward(c, inputs, out, lse, check_rows, seed ^ 0x5eed);
  std::printf("check against the float64 reference: %lld of %lld rows (%s)\n%s\n",
              static_cast<long long>(check.rows_checked), static_cast<long long>(check.rows_total),
              check.whole_problem ? "every row" : "random sample plus the first and last rows of the edge heads",
              check.summary().c_str());

  const bool on_gpu = tensors.device.kind == DeviceKind::kCUDA;
  const int warmup = static_cast<int>(args.get_int("--warmup", on_gpu ? 10 : 1, 0, 1000000));
  const int iterations = static_cast<int>(args.get_int("--iters", on_gpu ? 50 : 3, 1, 1000000));
  const Timing timing = time_calls(tensors.device, warmup, iterations, [&](int) {
    if (Status status = forward(call); !status) throw std::runtime_error("forward: " + status.to_string());
  });
  const double flops = c.forward_flops();
  std::printf("time: median %.4f ms over %d runs after %d warm-up (%s; min %.4f, max %.4f)\n", timing.median_ms,
              timing.iterations, warmup, on_gpu ? "CUDA events" : "steady_clock", timing.min_ms, timing.max_ms);
  std::printf("rate: %s (%.4g GFLOP: 2*B*Hq*Sq*Sk*(D+Dv)%s)\n",
              timing.median_ms > 0 ? rate_text(flops, timing.median_ms).c_str() : "n/a", flops * 1e-9,
              c.window_left >= 0 || c.window_right >= 0 ? ", the window not discounted"
              : c.causal                                ? ", halved for causal"
                                                        : "");
  std::printf("result: %s\n", check.passed ? "PASS" : "FAIL");
  return check.passed ? kExitOk : kExitFailure;
}

}  // namespace attnkit::cli
