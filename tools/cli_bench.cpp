// `attnkit bench`: times dense forward and backward over a suite of catalogue cases (or one case given
// by flags) and writes the results file of gpu-workflow.md.
//
// Method (gpu-workflow.md, "Measuring honestly"): fresh random inputs; the first call of each case runs
// on poisoned (NaN) outputs and is checked against the float64 reference (forward: o and lse of sampled
// rows; backward: every gradient value written and finite, and dq of sampled rows); then `warmup`
// untimed calls and `iters` timed ones, CUDA events on the GPU, steady_clock on the CPU; the median is
// reported. On the GPU, when one set of a case's tensors fits in the 50 MB L2, calls rotate over enough
// copies (2 x L2 in all) that no call finds its inputs in L2 from the call before.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "bench_suites.h"
#include "cli_args.h"
#include "cli_commands.h"
#include "cli_device.h"
#include "cli_problem.h"
#include "dense_workload.h"
#include "reference_check.h"
#include "results_json.h"
#include "system_info.h"
#include "timing.h"

namespace attnkit::cli {
namespace {

constexpr double kL2Bytes = 50.0 * 1024 * 1024;  // H100 L2: 50 MB
constexpr int kMaxRotatedSets = 32;
constexpr std::int64_t kDefaultCheckRows = 32;

std::vector<OptionSpec> bench_options() {
  std::vector<OptionSpec> specs = {
      {"--suite", "NAME",
       "a named suite of catalogue cases (see --list-suites); else one case from the problem options"},
      {"--list-suites", "", "print the suites and exit"},
      backend_option(),
      {"--fwd", "", "time the forward (default: forward and backward)"},
      {"--bwd", "", "time the backward (default: forward and backward)"},
      {"--out", "FILE", "results file (default bench/results/<device>-<date>-<commit>.json)"},
      {"--warmup", "N", "untimed calls per case and direction (default 10 on a GPU, 1 on the CPU)"},
      {"--iters", "N", "timed calls per case and direction; the median is reported (default 50 GPU, 5 CPU)"},
      {"--check-rows", "N", "rows checked against the reference per case and direction (default 32; 0 = all)"},
      {"--seed", "N", "seed of the random inputs (default 1)"},
      {"--help", "", "this help"},
  };
  const std::vector<OptionSpec> problem = problem_options();
  specs.insert(specs.end(), problem.begin(), problem.end());
  return specs;
}

bool all_finite_16bit(const std::vector<std::uint16_t>& values, DType dtype) {
  // An exponent field of all ones is inf or NaN: bf16 0x7f80, fp16 0x7c00.
  const std::uint16_t exponent_mask = dtype == DType::kBFloat16 ? 0x7f80 : 0x7c00;
  for (const std::uint16_t bits : values) {
    if ((bits & exponent_mask) == exponent_mask) return false;
  }
  return true;
}

std::vector<std::uint16_t> download_16bit(const Buffer& buffer) {
  std::vector<std::uint16_t> values(buffer.bytes() / sizeof(std::uint16_t));
  buffer.download(values.data(), values.size() * sizeof(std::uint16_t));
  return values;
}

void require_ok(const Status& status, const char* what) {
  if (!status) throw std::runtime_error(std::string(what) + ": " + status.to_string());
}

// What one case produced, for the final table.
struct CaseSummary {
  std::string name;
  std::optional<double> fwd_ms, fwd_tflops, bwd_ms, bwd_tflops;
  std::string backend;
  std::string note;  // check results, skips and errors
  bool failed = false;
};

ResultRow make_row(const cases::DenseCase& c, const char* op, double ms, double flops, Backend backend) {
  ResultRow row;
  row.op = op;
  row.impl = "attnkit";
  row.b = c.batch;
  row.sq = c.seqlen_q;
  row.sk = c.seqlen_k;
  row.hq = c.heads_q;
  row.hkv = c.heads_kv;
  row.d = c.head_dim;
  row.dv = c.head_dim_v;
  row.causal = c.causal;
  row.dtype = dtype_name(c.dtype);
  row.ms = ms;
  row.tflops = ms > 0 ? flops / (ms * 1e-3) * 1e-12 : 0.0;
  row.backend = backend_name(backend);
  if (c.window_left >= 0 || c.window_right >= 0) {
    row.extra["window_left"] = std::to_string(c.window_left);
    row.extra["window_right"] = std::to_string(c.window_right);
  }
  if (c.softcap > 0) row.extra["softcap"] = json_number(c.softcap);
  if (c.sinks) row.extra["sinks"] = "true";
  return row;
}

struct BenchSettings {
  Placement placement;
  Backend backend = Backend::kAuto;
  bool forward = true;
  bool backward = true;
  int warmup = 0;
  int iterations = 0;
  std::int64_t check_rows = kDefaultCheckRows;
  std::uint64_t seed = 1;
};

// Benchmarks one case in the directions asked for, appending its rows to `results`.
void bench_case(const cases::DenseCase& c, const BenchSettings& settings, ResultsFile* results, CaseSummary* summary) {
  const Device device = settings.placement.device;
  const HostInputs inputs = make_host_inputs(c, settings.seed, settings.backward);
  const DenseSizes sizes = dense_sizes(c);
  const std::size_t element = dtype_size(c.dtype);
  double set_bytes = static_cast<double>(sizes.q + sizes.k + sizes.v + sizes.out) * element + sizes.lse * 4.0;
  if (settings.backward) set_bytes += static_cast<double>(sizes.out + sizes.q + sizes.k + sizes.v) * element;
  int set_count = 1;
  if (device.kind == DeviceKind::kCUDA && set_bytes > 0 && set_bytes < kL2Bytes) {
    set_count = std::min(kMaxRotatedSets, static_cast<int>(std::ceil(2.0 * kL2Bytes / set_bytes)));
  }
  std::vector<DenseTensors> sets;
  std::vector<DenseForwardArgs> forward_calls;
  for (int s = 0; s < set_count; ++s) {
    sets.push_back(make_device_tensors(c, inputs, device, settings.backward));
    forward_calls.push_back(forward_args(c, sets.back(), settings.backend));
  }
  const Explanation forward_explanation = explain(forward_calls.front());
  if (!forward_explanation.validation) {
    throw std::runtime_error("invalid case: " + forward_explanation.validation.to_string());
  }
  if (forward_explanation.chosen == Backend::kAuto) {
    summary->note = "skipped: " + forward_explanation.to_string();
    return;
  }
  summary->backend = backend_name(forward_explanation.chosen);
  for (int s = 0; s < set_count; ++s)
    require_ok(prepare_forward_workspace(&forward_calls[s], &sets[s]), "workspace_size");

  // First call on poisoned outputs, checked; then one forward per extra set so that every set holds the
  // o and lse its backward reads.
  sets[0].out.fill_bytes(0xff);
  sets[0].lse.fill_bytes(0xff);
  require_ok(forward(forward_calls[0]), "forward");
  synchronize(device);
  std::vector<float> lse(static_cast<std::size_t>(sizes.lse));
  sets[0].lse.download(lse.data(), lse.size() * sizeof(float));
  const ForwardCheck check =
      check_forward(c, inputs, download_16bit(sets[0].out), lse, settings.check_rows, settings.seed);
  char check_note[160];
  std::snprintf(check_note, sizeof(check_note), "fwd check %s (%lld rows, err %.2e <= %.2e)",
                check.passed ? "ok" : "FAILED", static_cast<long long>(check.rows_checked), check.out.max_error,
                check.out.bound);
  summary->note = check_note;
  if (!check.passed) {
    summary->failed = true;
    std::fprintf(stderr, "\nattnkit bench: %s: forward check failed\n%s\n", c.name.c_str(), check.summary().c_str());
  }
  for (int s = 1; s < set_count; ++s) require_ok(forward(forward_calls[s]), "forward");

  const double flops = c.forward_flops();
  if (settings.forward) {
    const Timing timing = time_calls(device, settings.warmup, settings.iterations, [&](int i) {
      require_ok(forward(forward_calls[static_cast<std::size_t>(i % set_count)]), "forward");
    });
    ResultRow row = make_row(c, "dense_fwd", timing.median_ms, flops, forward_explanation.chosen);
    row.extra["check"] = json_quote(check.passed ? "passed" : "FAILED");
    row.extra["check_rows"] = std::to_string(check.rows_checked);
    row.extra["max_abs_err"] = json_number(check.out.max_error);
    row.extra["iters"] = std::to_string(timing.iterations);
    row.extra["rotated_sets"] = std::to_string(set_count);
    results->rows.push_back(row);
    summary->fwd_ms = timing.median_ms;
    summary->fwd_tflops = row.tflops;
  }
  if (!settings.backward) return;

  std::vector<DenseBackwardArgs> backward_calls;
  for (int s = 0; s < set_count; ++s) backward_calls.push_back(backward_args(c, sets[s], settings.backend));
  const Explanation backward_explanation = explain(backward_calls.front());
  if (backward_explanation.chosen == Backend::kAuto) {
    summary->note += "; bwd skipped: " + backward_explanation.to_string();
    return;
  }
  for (int s = 0; s < set_count; ++s)
    require_ok(prepare_backward_workspace(&backward_calls[s], &sets[s]), "workspace_size");
  sets[0].dq.fill_bytes(0xff);
  sets[0].dk.fill_bytes(0xff);
  sets[0].dv.fill_bytes(0xff);
  require_ok(backward(backward_calls[0]), "backward");
  synchronize(device);
  const std::vector<std::uint16_t> dq = download_16bit(sets[0].dq);
  const std::vector<std::uint16_t> dk = download_16bit(sets[0].dk);
  const std::vector<std::uint16_t> dv = download_16bit(sets[0].dv);
  // Every gradient value written and finite; dq of the sampled rows (all of dq, dk, dv when the case is
  // small enough to be checked whole) within the tolerance of the reference.
  const bool finite = all_finite_16bit(dq, c.dtype) && all_finite_16bit(dk, c.dtype) && all_finite_16bit(dv, c.dtype);
  const BackwardCheck gradients = check_backward(c, inputs, dq, dk, dv, settings.check_rows, settings.seed);
  const bool backward_passed = finite && gradients.passed;
  char backward_note[200];
  std::snprintf(backward_note, sizeof(backward_note), "; bwd check %s (%s, dq of %lld rows err %.2e <= %.2e%s)",
                backward_passed ? "ok" : "FAILED", finite ? "all finite" : "NOT all finite",
                static_cast<long long>(gradients.rows_checked), gradients.dq.max_error, gradients.dq.bound,
                gradients.whole_problem ? ", dk and dv too" : "");
  summary->note += backward_note;
  if (!backward_passed) {
    summary->failed = true;
    std::fprintf(stderr, "\nattnkit bench: %s: backward check failed (%s)\n%s\n", c.name.c_str(),
                 finite ? "values finite" : "non-finite or unwritten values", gradients.summary().c_str());
  }
  const Timing timing = time_calls(device, settings.warmup, settings.iterations, [&](int i) {
    require_ok(backward(backward_calls[static_cast<std::size_t>(i % set_count)]), "backward");
  });
  // Backward FLOPs by the field's convention: 2.5 x the forward.
  ResultRow row = make_row(c, "dense_bwd", timing.median_ms, 2.5 * flops, backward_explanation.chosen);
  row.extra["check"] = json_quote(backward_passed ? "passed" : "FAILED");
  row.extra["check_rows"] = std::to_string(gradients.rows_checked);
  row.extra["max_abs_err_dq"] = json_number(gradients.dq.max_error);
  row.extra["iters"] = std::to_string(timing.iterations);
  row.extra["rotated_sets"] = std::to_string(set_count);
  results->rows.push_back(row);
  summary->bwd_ms = timing.median_ms;
  summary->bwd_tflops = row.tflops;
  if (summary->backend != backend_name(backward_explanation.chosen)) {
    summary->backend += std::string("/") + backend_name(backward_explanation.chosen);
  }
}

std::string clock_text(double seconds) {
  const long long total = static_cast<long long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof(text), "%lld:%02lld", total / 60, total % 60);
  return text;
}

std::string cell(const std::optional<double>& value, const char* format) {
  if (!value) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), format, *value);
  return text;
}

void print_table(const std::vector<CaseSummary>& summaries) {
  std::size_t width = 4;
  for (const CaseSummary& s : summaries) width = std::max(width, s.name.size());
  std::printf("\n%-*s  %10s  %9s  %10s  %9s  %-12s  %s\n", static_cast<int>(width), "case", "fwd ms", "fwd TF/s",
              "bwd ms", "bwd TF/s", "backend", "notes");
  for (const CaseSummary& s : summaries) {
    std::printf("%-*s  %10s  %9s  %10s  %9s  %-12s  %s\n", static_cast<int>(width), s.name.c_str(),
                cell(s.fwd_ms, "%.4f").c_str(), cell(s.fwd_tflops, "%.3g").c_str(), cell(s.bwd_ms, "%.4f").c_str(),
                cell(s.bwd_tflops, "%.3g").c_str(), s.backend.c_str(), s.note.c_str());
  }
}

}  // namespace

const char* bench_usage() {
  return "usage: attnkit bench [--suite NAME | problem options] [options]\n"
         "Times dense attention forward and backward on the cases of a suite (or one case), each checked\n"
         "first, and writes the results file (gpu-workflow.md) with one row per case and direction.\n"
         "Progress goes to stderr; a table of the results to stdout at the end.\n";
}

int bench_command(const std::vector<std::string>& argv, const std::string& command_line) {
  const std::vector<OptionSpec> specs = bench_options();
  const ParsedArgs args(argv, specs);
  if (args.has("--help")) {
    std::printf("%s\noptions:\n%s", bench_usage(), format_options(specs).c_str());
    return kExitOk;
  }
  if (args.has("--list-suites")) {
    for (const BenchSuite& suite : bench_suites()) {
      std::printf("%-14s %3zu cases  %s\n", suite.name.c_str(), suite.cases.size(), suite.description.c_str());
    }
    return kExitOk;
  }
  if (args.has("--suite") && has_problem_options(args)) {
    throw UsageError("--suite and problem options (--s, --d, ...) exclude each other");
  }
  const std::vector<cases::DenseCase> case_list =
      args.has("--suite") ? find_suite(args.get_string("--suite", "")).cases : std::vector{case_from_args(args)};
  for (const cases::DenseCase& c : case_list) dense_sizes(c);  // rejects what the tool cannot lay out, up front

  BenchSettings settings;
  settings.backend = backend_from_args(args);
  settings.forward = !args.has("--bwd") || args.has("--fwd");
  settings.backward = !args.has("--fwd") || args.has("--bwd");
  settings.check_rows = args.get_int("--check-rows", kDefaultCheckRows, 0, std::numeric_limits<std::int64_t>::max());
  settings.seed = static_cast<std::uint64_t>(args.get_int("--seed", 1, 0, std::numeric_limits<std::int64_t>::max()));
  const std::optional<int> warmup_flag =
      args.has("--warmup") ? std::optional<int>(static_cast<int>(args.get_int("--warmup", 0, 0, 1000000)))
                           : std::nullopt;
  const std::optional<int> iters_flag =
      args.has("--iters") ? std::optional<int>(static_cast<int>(args.get_int("--iters", 1, 1, 1000000))) : std::nullopt;
  settings.placement = place(settings.backend);
  const bool on_gpu = settings.placement.device.kind == DeviceKind::kCUDA;
  settings.warmup = warmup_flag.value_or(on_gpu ? 10 : 1);
  settings.iterations = iters_flag.value_or(on_gpu ? 50 : 5);

  ResultsFile results;
  results.device = settings.placement.device_label;
  results.commit = build_commit();
  results.date = utc_timestamp();
  results.command = command_line;
  const std::string path = args.has("--out")
                               ? args.get_string("--out", "")
                               : default_results_path("bench/results", results.device, utc_day(), results.commit);
  std::fprintf(stderr, "attnkit bench: %zu cases on %s (%s); %s%s; warm-up %d, timed %d; results -> %s\n",
               case_list.size(), device_name(settings.placement.device).c_str(), settings.placement.why.c_str(),
               settings.forward ? "fwd" : "", settings.backward ? (settings.forward ? "+bwd" : "bwd") : "",
               settings.warmup, settings.iterations, path.c_str());

  // Progress: case i/N with elapsed time and an ETA weighted by the FLOPs still to run.
  const bool live = isatty(STDERR_FILENO) != 0;
  double total_flops = 0;
  for (const cases::DenseCase& c : case_list) total_flops += c.forward_flops();
  double done_flops = 0;
  const auto start = std::chrono::steady_clock::now();
  std::vector<CaseSummary> summaries;
  for (std::size_t index = 0; index < case_list.size(); ++index) {
    const cases::DenseCase& c = case_list[index];
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string eta = done_flops > 0 ? clock_text(elapsed * (total_flops - done_flops) / done_flops) : "?";
    std::fprintf(stderr, "%s[%zu/%zu] %s  elapsed %s  ETA %s%s", live ? "\r\033[K" : "", index + 1, case_list.size(),
                 c.name.c_str(), clock_text(elapsed).c_str(), eta.c_str(), live ? "" : "\n");
    CaseSummary summary;
    summary.name = c.name;
    try {
      bench_case(c, settings, &results, &summary);
    } catch (const std::exception& error) {
      summary.failed = true;
      summary.note += (summary.note.empty() ? "" : "; ") + std::string("ERROR: ") + error.what();
      std::fprintf(stderr, "\nattnkit bench: %s: %s\n", c.name.c_str(), error.what());
    }
    summaries.push_back(summary);
    done_flops += c.forward_flops();
    write_results(path, results);  // after every case: a run cut short keeps what it measured
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "%sattnkit bench: %zu cases in %s; %zu rows written to %s\n", live ? "\r\033[K" : "",
               case_list.size(), clock_text(elapsed).c_str(), results.rows.size(), path.c_str());
  print_table(summaries);
  for (const CaseSummary& s : summaries) {
    if (s.failed) return kExitFailure;
  }
  if (results.rows.empty()) {
    std::fprintf(stderr, "attnkit bench: nothing was measured (every case was skipped; see the notes)\n");
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace attnkit::cli
