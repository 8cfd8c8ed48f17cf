// Named benchmark suites: lists of cases from the case catalogue (tests/cases/dense_cases.h).
#pragma once

#include <string>
#include <vector>

#include "tests/cases/dense_cases.h"

namespace attnkit::cli {

struct BenchSuite {
  std::string name;
  std::string description;
  std::vector<cases::DenseCase> cases;
};

std::vector<BenchSuite> bench_suites();

// The suite of that name, or UsageError listing the names.
BenchSuite find_suite(const std::string& name);

}  // namespace attnkit::cli
