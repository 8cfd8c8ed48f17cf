#include "bench_suites.h"

#include "cli_args.h"
#include "cli_problem.h"

namespace attnkit::cli {

namespace {

// Small BSHD cases for a quick run of the CPU backend (2 cores: a few seconds in all).
std::vector<cases::DenseCase> cpu_small_cases() {
  std::vector<cases::DenseCase> list;
  for (const std::int64_t head_dim : {64, 128}) {
    for (const std::int64_t seqlen : {256, 512}) {
      for (const bool causal : {false, true}) {
        cases::DenseCase c;
        c.batch = 1;
        c.seqlen_q = c.seqlen_k = seqlen;
        c.heads_q = c.heads_kv = 4;
        c.head_dim = c.head_dim_v = head_dim;
        c.causal = causal;
        c.dtype = DType::kBFloat16;
        c.name = shape_name(c);
        list.push_back(c);
      }
    }
  }
  return list;
}

}  // namespace

std::vector<BenchSuite> bench_suites() {
  return {
      {"issue3", "D in {64,128,256} x S in {1024,4096,16384} x causal/not; bf16, B*S = 16384, H*D = 2048",
       cases::dense_bench_cases({64, 128, 256}, {1024, 4096, 16384})},
      {"issue3-quick", "the issue3 grid at D = 128 only (6 cases)",
       cases::dense_bench_cases({128}, {1024, 4096, 16384})},
      {"issue5",
       "Hopper forward bar: D in {64,128,256} x S in {1024,...,16384} x causal/not; bf16, B*S = 16384, H*D = 2048",
       cases::dense_bench_cases({64, 128, 256}, {1024, 2048, 4096, 8192, 16384})},
      {"issue5-quick", "the issue5 grid at D = 128, S in {1024, 4096, 16384} (6 cases)",
       cases::dense_bench_cases({128}, {1024, 4096, 16384})},
      {"cpu-small", "B=1, H=4, D in {64,128} x S in {256,512} x causal/not; bf16 (for the CPU backend)",
       cpu_small_cases()},
  };
}

BenchSuite find_suite(const std::string& name) {
  std::string names;
  for (BenchSuite& suite : bench_suites()) {
    if (suite.name == name) return suite;
    names += (names.empty() ? "" : ", ") + suite.name;
  }
  throw UsageError("--suite: no suite named '" + name + "' (suites: " + names + ")");
}

}  // namespace attnkit::cli
