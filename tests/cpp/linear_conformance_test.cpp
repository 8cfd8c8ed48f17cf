// Conformance of a linear-attention backend (GDN, KDA): every case of the linear catalogue through
// attnkit::forward, backward and decode with options.backend set explicitly, checked against the
// float64 recurrence by the accuracy rule of semantics.md section 6 (linear_check.h), with canaries.
//
// One body, two binaries: attnkit_cpu_tests runs Backend::kCPU on the host; attnkit_gpu_tests (built with
// ATTNKIT_TEST_GPU=1) runs kSm90 and kSm80 on cuda:0 and skips, with the library's reason, where there is
// no GPU or the backend answers kNotCompiled / kNotImplemented. The CPU backend must run every case.
//
// Environment: ATTNKIT_TEST_SEED (default 20260101) seeds the random sweep and all tensor contents;
// ATTNKIT_TEST_RANDOM_CASES (default 4 on the CPU, 32 on the GPU) sizes the sweep, per variant and dtype.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
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

// The CPU suite stays short on 2 cores: 4 random cases per variant of up to 200 tokens and head dims up
// to 128 (bf16 only) add a few seconds. The GPU run affords a wider sweep.
constexpr int kDefaultRandomCases = ATTNKIT_TEST_GPU ? 32 : 4;
constexpr std::int64_t kRandomMaxSeqlen = ATTNKIT_TEST_GPU ? 1000 : 200;
constexpr std::int64_t kRandomMaxHeadDim = ATTNKIT_TEST_GPU ? 256 : 128;

int random_case_count() {
  const char* text = std::getenv("ATTNKIT_TEST_RANDOM_CASES");
  return text != nullptr && *text != '\0' ? std::atoi(text) : kDefaultRandomCases;
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
        if (call == LinearCall::kDecode || !in_cpu_subset(dtype, 1)) continue;
        for (cases::LinearCase& c :
             cases::linear_random_cases(test_seed(), random_case_count(), kRandomMaxSeqlen, kRandomMaxHeadDim,
                                                          variant, dtype)) {
          list.push_back({backend, call, std::move(c), test_seed()});
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

// ---- decode equals forward ------------------------------------------------------------------------

// Token t of a token-major view: the same strides, T = 1.
TensorRef token_slice(TensorRef t, std::int64_t token) {
  t.data = static_cast<char*>(t.data) + token * t.strides[1] * static_cast<std::int64_t>(dtype_size(t.dtype));
  t.shape[1] = 1;
  return t;
}

struct ChainParam {
  Backend backend;
  LinearVariant variant;
};

class LinearDecodeChain : public ::testing::TestWithParam<ChainParam> {};

// T = 1 decode steps carried through one state reproduce the chunked forward over the same tokens. On the
// CPU: the outputs to within bf16 rounding (both round an fp32 value; a different fp32 path can land on
// the neighbouring bf16 value), the state to fp32 accumulation noise. The GPU forwards round the state
// and the chunk operands to bf16 for their tensor-core products (as FLA does) while decode keeps fp32
// throughout, so there both sides are held to the bound each meets against float64 (semantics.md
// section 6, rms 0.005); on the H100 the sm80 pair differed by rms 3.95e-3 (outputs) and 3.2e-3 (states).
TEST_P(LinearDecodeChain, StepsEqualForward) {
  const ChainParam& p = GetParam();
  if (test_device().kind == DeviceKind::kCUDA) {
    std::string why_not;
    if (!cuda_device_available(&why_not)) GTEST_SKIP() << why_not;
  }
  cases::LinearCase c;
  c.name = "decode_chain";
  c.variant = p.variant;
  c.batch = 3, c.seqlen = 70, c.heads_qk = 2, c.heads_v = 4, c.key_dim = 64, c.value_dim = 64;
  c.l2norm_qk = true, c.gate_form = LinearGateForm::kSoftplus, c.beta_form = LinearBetaForm::kSigmoid;
  c.initial_state = true;
  LinearCaseTensors tensors(c, LinearCall::kForward, test_device(), test_seed());
  LinearForwardArgs whole = tensors.forward_args(p.backend);
  const auto forward_workspace = attach_linear_workspace(&whole, test_device());
  const Status forward_status = forward(whole);
  if (p.backend != Backend::kCPU && is_unsupported(forward_status)) GTEST_SKIP() << forward_status.to_string();
  ASSERT_TRUE(forward_status.is_ok()) << forward_status.to_string();
  ASSERT_EQ(synchronize(test_device()), "");
  const std::vector<double> out_forward = tensors.read_values(LinearTensor::kOut);
  const std::vector<double> state_forward = tensors.read_values(LinearTensor::kFinalState);
  // Decode over the same buffers: token t's views, the initial state updated in place, out overwritten.
  for (std::int64_t t = 0; t < c.seqlen; ++t) {
    LinearDecodeArgs step;
    step.q = token_slice(tensors.device_view(LinearTensor::kQ), t);
    step.k = token_slice(tensors.device_view(LinearTensor::kK), t);
    step.v = token_slice(tensors.device_view(LinearTensor::kV), t);
    step.g = token_slice(tensors.device_view(LinearTensor::kG), t);
    step.beta = token_slice(tensors.device_view(LinearTensor::kBeta), t);
    step.A_log = tensors.device_view(LinearTensor::kALog);
    step.dt_bias = tensors.device_view(LinearTensor::kDtBias);
    step.out = token_slice(tensors.device_view(LinearTensor::kOut), t);
    step.state = tensors.device_view(LinearTensor::kInitialState);
    step.options = c.options(p.backend);
    const auto decode_workspace = attach_linear_workspace(&step, test_device());
    const Status status = decode(step);
    if (p.backend != Backend::kCPU && is_unsupported(status)) GTEST_SKIP() << status.to_string();
    ASSERT_TRUE(status.is_ok()) << "token " << t << ": " << status.to_string();
  }
  ASSERT_EQ(synchronize(test_device()), "");
  const std::vector<double> out_decode = tensors.read_values(LinearTensor::kOut);
  const std::vector<double> state_decode = tensors.read_values(LinearTensor::kInitialState);
  const double out_scale = max_abs_finite(out_forward);
  double max_out_diff = 0.0;
  for (std::size_t e = 0; e < out_forward.size(); ++e) {
    max_out_diff = std::max(max_out_diff, std::abs(out_decode[e] - out_forward[e]));
  }
  EXPECT_LE(max_out_diff, 2.0 * std::ldexp(1.0, -8) * out_scale) << "two bf16 ulps of max|out| = " << out_scale;
  const bool cpu = p.backend == Backend::kCPU;
  const RmsReport out_rms = rms_ratio("out", out_decode, out_forward, cpu ? 2e-3 : 5e-3);
  EXPECT_TRUE(out_rms.passed) << out_rms.text();
  const RmsReport state_rms = rms_ratio("state", state_decode, state_forward, cpu ? 1e-5 : 5e-3);
  EXPECT_TRUE(state_rms.passed) << state_rms.text();
}

std::vector<ChainParam> chain_params() {
  std::vector<ChainParam> list;
  for (Backend backend : tested_backends()) {
    for (LinearVariant variant : {LinearVariant::kGatedDeltaNet, LinearVariant::kKimiDelta}) {
      list.push_back({backend, variant});
    }
  }
  return list;
}

INSTANTIATE_TEST_SUITE_P(Linear, LinearDecodeChain, ::testing::ValuesIn(chain_params()),
                         [](const ::testing::TestParamInfo<ChainParam>& info) {
                           return backend_label(info.param.backend) + "_" + linear_variant_name(info.param.variant);
                         });

// explain() says which of the sm80 backend's two backward algorithms a call gets: GDN the chunked kernels,
// KDA its chunked kernels, or the exact token walk on a device whose blocks cannot hold them (then with
// the bytes they need and the device allows). The verdict is checked as the user reads it, by its words.
TEST(LinearBackwardExplain, Sm80NamesItsAlgorithm) {
  if (!ATTNKIT_TEST_GPU || !ATTNKIT_ARCH_80) GTEST_SKIP() << "needs the GPU test binary with sm80 kernels";
  std::string why_not;
  if (!cuda_device_available(&why_not)) GTEST_SKIP() << why_not;
  for (LinearVariant variant : {LinearVariant::kGatedDeltaNet, LinearVariant::kKimiDelta}) {
    cases::LinearCase c;
    c.name = "explain_backward";
    c.variant = variant;
    c.batch = 2, c.seqlen = 70, c.heads_qk = 2, c.heads_v = 2, c.key_dim = 64, c.value_dim = 64;
    LinearCaseTensors tensors(c, LinearCall::kBackward, test_device(), test_seed());
    const Explanation explanation = explain(tensors.backward_args(Backend::kSm80));
    const auto sm80 = std::find_if(explanation.verdicts.begin(), explanation.verdicts.end(),
                                   [](const BackendVerdict& v) { return v.backend == Backend::kSm80; });
    ASSERT_NE(sm80, explanation.verdicts.end()) << explanation.to_string();
    ASSERT_TRUE(sm80->usable) << explanation.to_string();
    const bool walk = variant == LinearVariant::kKimiDelta && sm80->reason.find("token walk") != std::string::npos;
    const char* expected = walk ? "bytes of shared memory per block" : "chunked backward";
    EXPECT_NE(sm80->reason.find(expected), std::string::npos) << linear_variant_name(variant) << ": " << sm80->reason;
  }
}

// The sm80 backward has no float atomics and sums in a fixed order (NOTES.md "GPU backward"), so two calls on
// the same inputs must give the same bits: every gradient of three calls compared bitwise (as the doubles
// their elements widen to, exact for fp16/bf16/fp32). Both algorithms: GDN's chunked kernels (GQA, two
// sequences of ragged length over value slices, initial state, dfinal state, fused gate and beta, so
// every output of the chunked path is written) and KDA's (its chunked kernels where the device holds them).
TEST(LinearBackwardRepeat, Sm80Bitwise) {
  if (!ATTNKIT_TEST_GPU || !ATTNKIT_ARCH_80) GTEST_SKIP() << "needs the GPU test binary with sm80 kernels";
  std::string why_not;
  if (!cuda_device_available(&why_not)) GTEST_SKIP() << why_not;
  const std::vector<LinearTensor> gradients = {LinearTensor::kDq,     LinearTensor::kDk,     LinearTensor::kDv,
                                               LinearTensor::kDg,     LinearTensor::kDbeta,  LinearTensor::kDInitialState,
                                               LinearTensor::kDALog,  LinearTensor::kDdtBias};
  for (LinearVariant variant : {LinearVariant::kGatedDeltaNet, LinearVariant::kKimiDelta}) {
    cases::LinearCase c;
    c.name = "repeat_backward";
    c.variant = variant;
    c.varlen = {300, 131};
    c.heads_qk = 2, c.heads_v = 4, c.key_dim = 128, c.value_dim = 96;
    c.l2norm_qk = true, c.gate_form = LinearGateForm::kSoftplus, c.beta_form = LinearBetaForm::kSigmoid;
    c.initial_state = true, c.dfinal_state = true;
    LinearCaseTensors tensors(c, LinearCall::kBackward, test_device(), test_seed());
    LinearBackwardArgs args = tensors.backward_args(Backend::kSm80);
    const auto workspace = attach_linear_workspace(&args, test_device());
    std::vector<std::vector<double>> first;
    for (int call = 0; call < 3; ++call) {
      tensors.poison(gradients);
      const Status status = backward(args);
      ASSERT_TRUE(status.is_ok()) << linear_variant_name(variant) << ": " << status.to_string();
      ASSERT_EQ(synchronize(test_device()), "");
      for (std::size_t g = 0; g < gradients.size(); ++g) {
        if (!tensors.has(gradients[g])) continue;
        std::vector<double> values = tensors.read_values(gradients[g]);
        if (call == 0) {
          first.resize(gradients.size());
          first[g] = std::move(values);
          continue;
        }
        ASSERT_EQ(values.size(), first[g].size());
        std::size_t differing = 0;
        for (std::size_t e = 0; e < values.size(); ++e) {
          differing += std::memcmp(&values[e], &first[g][e], sizeof(double)) != 0 ? 1 : 0;
        }
        EXPECT_EQ(differing, 0u) << linear_variant_name(variant) << " " << linear_tensor_name(gradients[g]) << ": "
                                 << differing << " of " << values.size() << " elements differ in call " << call;
      }
    }
  }
}

}  // namespace
}  // namespace attnkit::testing
