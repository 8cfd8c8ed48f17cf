// Facts about where the tool runs, for `attnkit info` and the results file: the CPU model and vector
// features, OpenMP threads, the commit the binary was built from, and the time.
#pragma once

#include <string>

namespace attnkit::cli {

std::string cpu_model();            // "model name" of /proc/cpuinfo, or "unknown CPU"
std::string cpu_vector_features();  // e.g. "sse4.2 avx avx2 fma avx512f", as the running CPU reports them
int openmp_threads();               // omp_get_max_threads()

// The short commit the binary was built from, with "-dirty" when tracked files had changes at build time;
// where the build could not tell, `git rev-parse --short HEAD` in the current folder; else "unknown".
std::string build_commit();

std::string utc_timestamp();  // "2025-06-01T12:34:56Z"
std::string utc_day();        // "2025-06-01"

}  // namespace attnkit::cli
