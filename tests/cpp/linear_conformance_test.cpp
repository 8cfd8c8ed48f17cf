// Conformance of a linear-attention backend (GDN, KDA): every case of the linear catalogue through
// attnkit::forward, backward and decode with options.backend set explicitly, checked against the
// float64 recurrence by the accuracy rule of semantics.md section 6 (linear_check.h), with canaries.
//
// One body, two binaries: attnkit_cpu_tests runs Backend::kCPU on the host; attnkit_gpu_tests (built with
// ATTNKIT_TEST_GPU=1) runs kSm90 and kSm80 on cuda:0 and skips, with the library's reason, where there is
// no GPU or the backend answers kNotCompiled / kNotImplemented. The CPU backend must run every case.
//
// Environment: ATTNKIT_TEST_SEED (default 20260101) seeds all tensor contents.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <ostream>
#include <string>
#include <vector>

#include "attnkit/build_config.h"
#include "tests/cpp/linear_check.h"

#ifndef ATTNKIT_TEST_GPU
#define ATTNKIT_TEST_GPU 0
#endif

namespace attnkit::testing {
namespace {

constexpr std::uint64_t kDefaultSeed = 20260101;

std::uint64_t test_seed() {
  const char* text = std::getenv("ATTNKIT_TEST_SEED");
  return text != nullptr && *text != '\0' ? std::strtoull(text, nullptr, 0) : kDefaultSeed;
}

Device test_device() { return ATTNKIT_TEST_GPU ? Device::cuda(0) : Device::cpu(); }

std::vector<Backend> tested_backends() {
  if (!ATTNKIT_TEST_GPU) return {Backend::kCPU};
  std::vector<Backend> backends;
  if (ATTNKIT_ARCH_90A) backends.push_back(Backend::kSm90);
  if (ATTNKIT_ARCH_80) backends.push_back(Backend::kSm80);
  return backends;
}

// The CPU runs the catalogue in bf16 (what models use) and a part of it in fp16 and fp32, to keep the
// CI's CPU suite short; the GPU runs all of it in bf16 and fp16 (its kernels take no fp32).
std::vector<DType> tested_dtypes() {
  if (ATTNKIT_TEST_GPU) return {DType::kBFloat16, DType::kFloat16};
  return {DType::kBFloat16, DType::kFloat16, DType::kFloat32};
}

bool in_cpu_subset(DType dtype, std::size_t index) {
  return ATTNKIT_TEST_GPU || dtype == DType::kBFloat16 || index % 4 == 0;
}

std::string backend_label(Backend backend) {
  switch (backend) {
    case Backend::kCPU: return "Cpu";
    case Backend::kSm80: return "Sm80";
    case Backend::kSm90: return "Sm90";
    case Backend::kAuto: return "Auto";
  }
  return "Unknown";
}

struct LinearParam {
  Backend backend;
  LinearCall call;
  cases::LinearCase linear_case;
  std::uint64_t seed;
};

void PrintTo(const LinearParam& param, std::ostream* out) {
  *out << backend_name(param.backend) << ", " << param.linear_case.describe() << ", seed " << param.seed;
}

std::vector<LinearParam> params(LinearCall call) {
  std::vector<LinearParam> list;
  for (Backend backend : tested_backends()) {
    for (LinearVariant variant : {LinearVariant::kGatedDeltaNet, LinearVariant::kKimiDelta}) {
      for (DType dtype : tested_dtypes()) {
        std::vector<cases::LinearCase> catalogue = call == LinearCall::kDecode
                                                       ? cases::linear_decode_cases(variant, dtype)
                                                       : cases::linear_adversarial_cases(variant, dtype);
        for (std::size_t i = 0; i < catalogue.size(); ++i) {
          if (in_cpu_subset(dtype, i)) list.push_back({backend, call, std::move(catalogue[i]), test_seed()});
        }
      }
    }
  }
  return list;
}

std::string param_name(const ::testing::TestParamInfo<LinearParam>& info) {
  const cases::LinearCase& c = info.param.linear_case;
  return backend_label(info.param.backend) + "_" + linear_variant_name(c.variant) + "_" + dtype_name(c.dtype) + "_" +
         c.name;
}

class LinearConformance : public ::testing::TestWithParam<LinearParam> {
 protected:
  void run_check() const {
    const LinearParam& p = GetParam();
    if (test_device().kind == DeviceKind::kCUDA) {
      std::string why_not;
      if (!cuda_device_available(&why_not)) GTEST_SKIP() << why_not;
    }
    std::cout << "case " << p.linear_case.describe() << "\nseed " << p.seed << " (ATTNKIT_TEST_SEED), backend "
              << backend_name(p.backend) << " on " << device_name(test_device()) << std::endl;
    LinearCheckResult result;
    switch (p.call) {
      case LinearCall::kForward: result = check_linear_forward(p.linear_case, p.backend, test_device(), p.seed); break;
      case LinearCall::kBackward: result = check_linear_backward(p.linear_case, p.backend, test_device(), p.seed); break;
      case LinearCall::kDecode: result = check_linear_decode(p.linear_case, p.backend, test_device(), p.seed); break;
    }
    if (result.outcome == CheckOutcome::kUnsupported) {
      if (p.backend == Backend::kCPU) FAIL() << "the CPU backend must run every case: " << result.status.to_string();
      GTEST_SKIP() << backend_name(p.backend) << " unsupported: " << result.status.to_string();
    }
    std::cout << result.report();
    EXPECT_EQ(result.outcome, CheckOutcome::kPassed) << result.report();
  }
};

class LinearForward : public LinearConformance {};
class LinearBackward : public LinearConformance {};
class LinearDecode : public LinearConformance {};

TEST_P(LinearForward, MatchesReference) { run_check(); }
TEST_P(LinearBackward, MatchesReference) { run_check(); }
TEST_P(LinearDecode, MatchesReference) { run_check(); }

INSTANTIATE_TEST_SUITE_P(Linear, LinearForward, ::testing::ValuesIn(params(LinearCall::kForward)), param_name);
INSTANTIATE_TEST_SUITE_P(Linear, LinearBackward, ::testing::ValuesIn(params(LinearCall::kBackward)), param_name);
INSTANTIATE_TEST_SUITE_P(Linear, LinearDecode, ::testing::ValuesIn(params(LinearCall::kDecode)), param_name);

}  // namespace
}  // namespace attnkit::testing
