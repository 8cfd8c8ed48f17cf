#include "system_info.h"

#include <omp.h>

#include <array>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "attnkit_git_commit.h"  // generated at build time by tools/git_commit.cmake: ATTNKIT_GIT_COMMIT

namespace attnkit::cli {

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

std::string cpu_vector_features() {
  std::string features;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  auto add = [&features](bool present, const char* name) {
    if (!present) return;
    if (!features.empty()) features += ' ';
    features += name;
  };
  add(__builtin_cpu_supports("sse4.2"), "sse4.2");
  add(__builtin_cpu_supports("avx"), "avx");
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  add(__builtin_cpu_supports("f16c"), "f16c");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  add(__builtin_cpu_supports("avx512vl"), "avx512vl");
  add(__builtin_cpu_supports("avx512bf16"), "avx512bf16");
  add(__builtin_cpu_supports("avx512fp16"), "avx512fp16");
#elif defined(__aarch64__)
  features = "neon (aarch64 baseline)";
#endif
  return features.empty() ? std::string("none detected") : features;
}

int openmp_threads() { return omp_get_max_threads(); }

std::string build_commit() {
  const std::string built = ATTNKIT_GIT_COMMIT;
  if (!built.empty()) return built;
  std::string commit;
  if (FILE* pipe = popen("git rev-parse --short HEAD 2>/dev/null", "r")) {
    std::array<char, 128> buffer{};
    while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe) != nullptr) commit += buffer.data();
    pclose(pipe);
  }
  while (!commit.empty() && (commit.back() == '\n' || commit.back() == '\r')) commit.pop_back();
  return commit.empty() ? std::string("unknown") : commit;
}

namespace {
std::string format_utc(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[64];
  std::strftime(text, sizeof(text), format, &utc);
  return text;
}
}  // namespace

std::string utc_timestamp() { return format_utc("%Y-%m-%dT%H:%M:%SZ"); }
std::string utc_day() { return format_utc("%Y-%m-%d"); }

}  // namespace attnkit::cli
