// CPU dense attention against the machine's own sgemm rate.
//
// Measures, in one process on one machine:
//   - OpenBLAS sgemm (row-major C = A B, fp32) with the same thread count as attnkit: a square
//     2048^3 (the reference rate, measured before and after the attention runs; the higher of the two
//     is used, so the ratios are not flattered by a slow sgemm run) and the two GEMM shapes of one
//     attention head at S = 2048, D = 128 (S x S x D for Q K^T, S x D x S for P V);
//   - attnkit's CPU backend, forward and backward, BSHD, Hq = Hkv, D = Dv = 128, S in {2048, 8192},
//     bf16 and fp32 inputs, causal and not.
// FLOPs by the field's convention: forward 4 * B * H * Sq * Sk * D, halved when causal; backward 2.5x
// the forward. Each figure is the median of --reps timed runs after one untimed warm-up run, on fresh
// N(0, 1) inputs; outputs are poisoned with NaN before the runs and checked to be finite after. Each
// row also records cpu_busy, the process CPU time over wall time x threads: on a shared machine it drops
// below 1 and says how far the wall-clock figures understate the code.
// Writes bench/results/cpu-<host>-<date>-<short commit>.json (gpu-workflow.md format, "device" = the CPU
// model) and prints a table.
//
// Usage: cpu_dense_vs_sgemm [--reps N] [--threads N] [--quick] [--out-dir DIR]
//   --quick: S = 2048 only, 3 repetitions (a smoke run; its results file is still written).
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "attnkit/dense.h"
#include "attnkit/numeric.h"
#include "cpu/dense_cpu.h"

// The reference BLAS interface (every BLAS provides it) and OpenBLAS's thread control.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void openblas_set_num_threads(int num_threads);
}

namespace {

using attnkit::DType;

struct Options {
  int reps = 5;
  int threads = 0;  // 0: omp_get_max_threads()
  bool quick = false;
  std::string out_dir = ATTNKIT_SOURCE_DIR "/bench/results";
  std::string command;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

struct Timing {
  double ms = 0;        // median wall time of the timed runs
  double cpu_busy = 0;  // process CPU time / (wall time x threads) over the timed runs: below ~0.95 the
                        // machine was shared (or threads waited), and the figures understate the code
};

// Median wall time in ms of `reps` runs of `run`, after one untimed warm-up run.
Timing time_runs(int reps, int threads, const std::function<void()>& run) {
  run();
  std::vector<double> ms;
  double wall_total = 0;
  const double cpu_start = process_cpu_seconds();
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    wall_total += ms.back() * 1e-3;
  }
  return {median(ms), (process_cpu_seconds() - cpu_start) / (wall_total * threads)};
}

std::string read_command_output(const std::string& command) {
  std::string text;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[256];
    while (fgets(buffer, sizeof(buffer), pipe)) text += buffer;
    pclose(pipe);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown CPU";
}

std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// A file-name-safe copy: letters, digits, '-' and '.' kept, anything else '_'.
std::string file_safe(const std::string& text) {
  std::string out;
  for (char c : text) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  return out;
}

// ---- sgemm --------------------------------------------------------------------------------------------

struct SgemmResult {
  int m, n, k;
  Timing timing;
  double gflops;
};

// Row-major C (m, n) = A (m, k) B (k, n) through the column-major interface: C^T = B^T A^T.
SgemmResult time_sgemm(int m, int n, int k, int reps, int threads, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> a(static_cast<std::size_t>(m) * k), b(static_cast<std::size_t>(k) * n),
      c(static_cast<std::size_t>(m) * n);
  for (float& x : a) x = normal(rng);
  for (float& x : b) x = normal(rng);
  const float alpha = 1.0f, beta = 0.0f;
  const Timing timing = time_runs(reps, threads, [&] {
    sgemm_("N", "N", &n, &m, &k, &alpha, b.data(), &n, a.data(), &k, &beta, c.data(), &n);
  });
  return {m, n, k, timing, 2.0 * m * n * k / (timing.ms * 1e-3) / 1e9};
}

// ---- attention ----------------------------------------------------------------------------------------

struct AttentionCase {
  std::int64_t b, s, h, d;
  bool causal;
  DType dtype;
};

struct AttentionResult {
  AttentionCase c;
  Timing forward, backward;
  double forward_gflops = 0, backward_gflops = 0;
};

// A tensor of `count` elements of `dtype`, stored as raw bytes.
struct HostTensor {
  DType dtype;
  std::vector<std::uint16_t> half;
  std::vector<float> single;

  HostTensor(DType type, std::size_t count) : dtype(type) {
    if (type == DType::kFloat32) {
      single.assign(count, 0.0f);
    } else {
      half.assign(count, 0);
    }
  }
  void* data() { return dtype == DType::kFloat32 ? static_cast<void*>(single.data()) : half.data(); }
  std::size_t size() const { return dtype == DType::kFloat32 ? single.size() : half.size(); }
  float get(std::size_t i) const {
    return dtype == DType::kFloat32 ? single[i] : attnkit::bf16_to_float(half[i]);
  }
  void set(std::size_t i, float value) {
    if (dtype == DType::kFloat32) {
      single[i] = value;
    } else {
      half[i] = attnkit::float_to_bf16(value);
    }
  }
  void fill_normal(std::mt19937& rng) {
    std::normal_distribution<float> normal;
    for (std::size_t i = 0; i < size(); ++i) set(i, normal(rng));
  }
  void poison() {
    for (std::size_t i = 0; i < size(); ++i) set(i, std::numeric_limits<float>::quiet_NaN());
  }
  bool all_finite() const {
    for (std::size_t i = 0; i < size(); ++i) {
      if (!std::isfinite(get(i))) return false;
    }
    return true;
  }
};

bool check(const attnkit::Status& status, const char* what) {
  if (!status) std::fprintf(stderr, "%s failed: %s\n", what, status.to_string().c_str());
  return status.is_ok();
}

double forward_flops(const AttentionCase& c) {
  const double flops = 4.0 * c.b * c.h * c.s * c.s * c.d;
  return c.causal ? flops / 2 : flops;
}

bool run_attention(const AttentionCase& c, int reps, int threads, std::mt19937& rng, AttentionResult* result) {
  const auto count = static_cast<std::size_t>(c.b * c.s * c.h * c.d);
  HostTensor q(c.dtype, count), k(c.dtype, count), v(c.dtype, count), out(c.dtype, count), dout(c.dtype, count);
  HostTensor dq(c.dtype, count), dk(c.dtype, count), dv(c.dtype, count);
  std::vector<float> lse(static_cast<std::size_t>(c.b * c.h * c.s));
  q.fill_normal(rng);
  k.fill_normal(rng);
  v.fill_normal(rng);
  dout.fill_normal(rng);
  out.poison();
  dq.poison();
  dk.poison();
  dv.poison();
  std::fill(lse.begin(), lse.end(), std::numeric_limits<float>::quiet_NaN());

  auto bshd = [&](HostTensor& t) { return attnkit::TensorRef::contiguous(t.data(), c.dtype, {c.b, c.s, c.h, c.d}); };
  attnkit::DenseForwardArgs forward;
  forward.q = bshd(q);
  forward.k = bshd(k);
  forward.v = bshd(v);
  forward.out = bshd(out);
  forward.lse = attnkit::TensorRef::contiguous(lse.data(), DType::kFloat32, {c.b, c.h, c.s});
  forward.options.causal = c.causal;
  forward.options.backend = attnkit::Backend::kCPU;

  attnkit::Status status;
  result->c = c;
  result->forward = time_runs(reps, threads, [&] { status = attnkit::forward(forward); });
  if (!check(status, "forward")) return false;
  if (!out.all_finite()) {
    std::fprintf(stderr, "forward wrote a non-finite output\n");
    return false;
  }
  result->forward_gflops = forward_flops(c) / (result->forward.ms * 1e-3) / 1e9;

  attnkit::DenseBackwardArgs backward;
  backward.q = forward.q;
  backward.k = forward.k;
  backward.v = forward.v;
  backward.out = forward.out;
  backward.lse = forward.lse;
  backward.dout = bshd(dout);
  backward.dq = bshd(dq);
  backward.dk = bshd(dk);
  backward.dv = bshd(dv);
  backward.deterministic = true;
  backward.options = forward.options;
  // The backward costs about 3.5x the forward: fewer repetitions keep the run to a few minutes.
  const int backward_reps = std::max(3, (reps + 1) / 2);
  result->backward = time_runs(backward_reps, threads, [&] { status = attnkit::backward(backward); });
  if (!check(status, "backward")) return false;
  if (!dq.all_finite() || !dk.all_finite() || !dv.all_finite()) {
    std::fprintf(stderr, "backward wrote a non-finite gradient\n");
    return false;
  }
  result->backward_gflops = 2.5 * forward_flops(c) / (result->backward.ms * 1e-3) / 1e9;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 0; i < argc; ++i) {
    if (i > 0) options.command += ' ';
    options.command += argv[i];
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--reps" && i + 1 < argc) {
      options.reps = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--threads" && i + 1 < argc) {
      options.threads = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--quick") {
      options.quick = true;
      options.reps = 3;
    } else if (arg == "--out-dir" && i + 1 < argc) {
      options.out_dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--threads N] [--quick] [--out-dir DIR]\n", argv[0]);
      return 2;
    }
  }
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  const std::string device = cpu_model();
  const std::string isa = attnkit::cpu::dense_cpu_isa_name();
  const std::string commit =
      read_command_output("git -C '" ATTNKIT_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null");
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  std::printf("device: %s, %d threads, attnkit CPU kernels: %s, commit %s\n", device.c_str(), threads, isa.c_str(),
              commit.empty() ? "unknown" : commit.c_str());

  std::mt19937 rng(20240611);
  const auto pause = [] {  // let OpenBLAS's and OpenMP's spinning worker threads go idle between phases
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  };
  std::vector<SgemmResult> sgemm;
  sgemm.push_back(time_sgemm(2048, 2048, 2048, options.reps, threads, rng));
  sgemm.push_back(time_sgemm(2048, 2048, 128, options.reps, threads, rng));  // S = Q K^T of one head
  sgemm.push_back(time_sgemm(2048, 128, 2048, options.reps, threads, rng));  // O = P V of one head
  pause();

  // B and H chosen so a forward run takes about a second at ~60 GFLOP/s: 34 GFLOP at S = 2048
  // (H = 16), 69 GFLOP at S = 8192 (H = 2), half that when causal.
  std::vector<AttentionCase> cases;
  std::vector<std::int64_t> seqlens = {2048};
  if (!options.quick) seqlens.push_back(8192);
  for (std::int64_t s : seqlens) {
    for (DType dtype : {DType::kBFloat16, DType::kFloat32}) {
      for (bool causal : {false, true}) cases.push_back({1, s, s == 2048 ? 16 : 2, 128, causal, dtype});
    }
  }
  std::vector<AttentionResult> results;
  for (const AttentionCase& c : cases) {
    AttentionResult r;
    if (!run_attention(c, options.reps, threads, rng, &r)) return 1;
    std::printf("  S %5lld  %s  %-6s  fwd %8.1f ms %6.1f GFLOP/s   bwd %8.1f ms %6.1f GFLOP/s\n",
                static_cast<long long>(c.s), attnkit::dtype_name(c.dtype), c.causal ? "causal" : "full", r.forward.ms,
                r.forward_gflops, r.backward.ms, r.backward_gflops);
    std::fflush(stdout);
    results.push_back(r);
  }
  pause();
  const SgemmResult square_after = time_sgemm(2048, 2048, 2048, options.reps, threads, rng);
  const double sgemm_reference = std::max(sgemm[0].gflops, square_after.gflops);

  // ---- results file ----
  std::ostringstream json;
  json << "{\n  \"device\": \"" << json_escape(device) << "\",\n  \"commit\": \"" << json_escape(commit)
       << "\",\n  \"date\": \"" << date << "\",\n  \"command\": \"" << json_escape(options.command)
       << "\",\n  \"host\": \"" << json_escape(host) << "\",\n  \"threads\": " << threads << ",\n  \"isa\": \""
       << isa << "\",\n  \"sgemm_reference_gflops\": " << sgemm_reference
       << ",\n  \"notes\": \"sgemm = OpenBLAS, fp32, row-major C = A B; ratio_to_sgemm = gflops / the 2048^3 sgemm "
          "rate (the higher of the runs before and after the attention runs). Attention FLOPs: 4*B*H*Sq*Sk*D, "
          "halved when causal; backward 2.5x the forward.\",\n  \"rows\": [\n";
  bool first = true;
  auto row_separator = [&] {
    json << (first ? "" : ",\n");
    first = false;
  };
  std::vector<SgemmResult> sgemm_rows = sgemm;
  sgemm_rows.push_back(square_after);
  for (const SgemmResult& r : sgemm_rows) {
    row_separator();
    json << "    {\"op\": \"sgemm\", \"impl\": \"openblas\", \"m\": " << r.m << ", \"n\": " << r.n << ", \"k\": " << r.k
         << ", \"dtype\": \"fp32\", \"ms\": " << r.timing.ms << ", \"gflops\": " << r.gflops
         << ", \"tflops\": " << r.gflops / 1e3 << ", \"ratio_to_sgemm\": " << r.gflops / sgemm_reference
         << ", \"threads\": " << threads << ", \"cpu_busy\": " << r.timing.cpu_busy << "}";
  }
  for (const AttentionResult& r : results) {
    for (const char* op : {"dense_fwd", "dense_bwd"}) {
      const bool fwd = std::strcmp(op, "dense_fwd") == 0;
      const double gflops = fwd ? r.forward_gflops : r.backward_gflops;
      const Timing& timing = fwd ? r.forward : r.backward;
      row_separator();
      json << "    {\"op\": \"" << op << "\", \"impl\": \"attnkit_cpu\", \"b\": " << r.c.b << ", \"sq\": " << r.c.s
           << ", \"sk\": " << r.c.s << ", \"hq\": " << r.c.h << ", \"hkv\": " << r.c.h << ", \"d\": " << r.c.d
           << ", \"dv\": " << r.c.d << ", \"causal\": " << (r.c.causal ? "true" : "false") << ", \"dtype\": \""
           << attnkit::dtype_name(r.c.dtype) << "\", \"ms\": " << timing.ms
           << ", \"gflops\": " << gflops << ", \"tflops\": " << gflops / 1e3
           << ", \"ratio_to_sgemm\": " << gflops / sgemm_reference << ", \"isa\": \"" << isa
           << "\", \"threads\": " << threads << ", \"cpu_busy\": " << timing.cpu_busy << "}";
    }
  }
  json << "\n  ]\n}\n";
  const std::string path = options.out_dir + "/cpu-" + file_safe(host) + "-" + date + "-" +
                           (commit.empty() ? std::string("unknown") : file_safe(commit)) + ".json";
  std::ofstream file(path);
  file << json.str();
  if (!file) {
    std::fprintf(stderr, "could not write %s\n", path.c_str());
    return 1;
  }

  std::printf("\nsgemm (OpenBLAS, %d threads): 2048^3 %.1f GFLOP/s before (cpu busy %.2f), %.1f after (%.2f); Q K^T "
              "shape %.1f, P V shape %.1f\n",
              threads, sgemm[0].gflops, sgemm[0].timing.cpu_busy, square_after.gflops, square_after.timing.cpu_busy,
              sgemm[1].gflops, sgemm[2].gflops);
  std::printf("%-6s %-5s %-7s %-4s %10s %9s %9s %9s\n", "S", "dtype", "mask", "op", "ms", "GFLOP/s", "x sgemm",
              "cpu busy");
  for (const AttentionResult& r : results) {
    for (bool fwd : {true, false}) {
      const double gflops = fwd ? r.forward_gflops : r.backward_gflops;
      const Timing& timing = fwd ? r.forward : r.backward;
      std::printf("%-6lld %-5s %-7s %-4s %10.1f %9.1f %9.2f %9.2f\n", static_cast<long long>(r.c.s),
                  attnkit::dtype_name(r.c.dtype), r.c.causal ? "causal" : "full", fwd ? "fwd" : "bwd", timing.ms, gflops,
                  gflops / sgemm_reference, timing.cpu_busy);
    }
  }
  std::printf("results: %s\n", path.c_str());
  return 0;
}
