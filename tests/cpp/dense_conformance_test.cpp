// Conformance of a dense attention backend: every case of the catalogue and of the seeded random sweep
// through attnkit::forward and attnkit::backward with options.backend set explicitly, checked against the
// float64 reference by the tolerance rule of quality.md, with NaN/-inf positions, canaries and the lse.
// Also: bit-identical deterministic backward over repeated runs, and a request's result independent of
// the rest of its batch.
//
// One body, two binaries: attnkit_cpu_tests runs Backend::kCPU on the host; attnkit_gpu_tests (built with
// ATTNKIT_TEST_GPU=1) runs kSm80 and kSm90 on cuda:0 and skips, with the reason, where there is no GPU or
// the backend answers kNotCompiled / kNotImplemented. The CPU backend is the one that runs everywhere:
// it must run every case, so an unsupported answer from it fails.
//
// Environment: ATTNKIT_TEST_SEED (default 20260101) seeds the random sweep and all tensor contents;
// ATTNKIT_TEST_RANDOM_CASES (default 12 on the CPU, 64 on the GPU) sizes the sweep, per dtype.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <ostream>
#include <string>
#include <vector>

#include "attnkit/build_config.h"
#include "tests/cpp/support/dense_check.h"

#ifndef ATTNKIT_TEST_GPU
#define ATTNKIT_TEST_GPU 0
#endif

namespace attnkit::testing {
namespace {

constexpr std::uint64_t kDefaultSeed = 20260101;
// The CPU suite must stay under 3 minutes on 2 cores: 12 random cases per dtype of up to 128 tokens
// cost a few seconds with the float64 reference. The GPU run can afford a wider sweep.
constexpr int kDefaultRandomCases = ATTNKIT_TEST_GPU ? 64 : 12;
constexpr std::int64_t kRandomMaxSeqlen = ATTNKIT_TEST_GPU ? 300 : 128;

std::uint64_t test_seed() {
  const char* text = std::getenv("ATTNKIT_TEST_SEED");
  return text != nullptr && *text != '\0' ? std::strtoull(text, nullptr, 0) : kDefaultSeed;
}

int random_case_count() {
  const char* text = std::getenv("ATTNKIT_TEST_RANDOM_CASES");
  return text != nullptr && *text != '\0' ? std::atoi(text) : kDefaultRandomCases;
}

Device test_device() { return ATTNKIT_TEST_GPU ? Device::cuda(0) : Device::cpu(); }

// Skips the current test (with the reason) when a GPU test has no GPU to run on.
#define ATTNKIT_SKIP_WITHOUT_DEVICE()                                                   \
  do {                                                                                  \
    if (test_device().kind == DeviceKind::kCUDA) {                                      \
      std::string why_not;                                                              \
      if (!cuda_device_available(&why_not)) GTEST_SKIP() << why_not;                    \
    }                                                                                   \
  } while (0)

// An unsupported answer skips a GPU backend's test with the library's reason and fails the CPU's.
#define ATTNKIT_HANDLE_UNSUPPORTED(backend, what, status)                                                   \
  do {                                                                                                      \
    if ((backend) == Backend::kCPU) {                                                                       \
      FAIL() << "the CPU backend must run every case, but " << (what) << " answered " << (status).to_string(); \
    }                                                                                                       \
    GTEST_SKIP() << backend_name(backend) << " " << (what) << " unsupported: " << (status).to_string();      \
  } while (0)

std::string backend_label(Backend backend) {
  switch (backend) {
    case Backend::kCPU: return "Cpu";
    case Backend::kSm80: return "Sm80";
    case Backend::kSm90: return "Sm90";
    case Backend::kAuto: return "Auto";
  }
  return "Unknown";
}

// The backends this binary tests.
std::vector<Backend> tested_backends() {
  if (!ATTNKIT_TEST_GPU) return {Backend::kCPU};
  std::vector<Backend> backends;
  if (ATTNKIT_ARCH_80) backends.push_back(Backend::kSm80);
  if (ATTNKIT_ARCH_90A) backends.push_back(Backend::kSm90);
  return backends;
}

// fp32 is a CPU-backend dtype only (the GPU kernels take fp16 and bf16).
std::vector<DType> tested_dtypes() {
  if (ATTNKIT_TEST_GPU) return {DType::kBFloat16, DType::kFloat16};
  return {DType::kBFloat16, DType::kFloat16, DType::kFloat32};
}

// ---- catalogue and random sweep -----------------------------------------------------------------

struct ConformanceParam {
  Backend backend;
  cases::DenseCase dense_case;
  std::uint64_t seed;
};

// gtest prints a parameter on failure; the case's one-line description says more than its bytes.
void PrintTo(const ConformanceParam& param, std::ostream* out) {
  *out << backend_name(param.backend) << ", " << param.dense_case.describe() << ", seed " << param.seed;
}

std::vector<ConformanceParam> conformance_params() {
  std::vector<ConformanceParam> params;
  const std::uint64_t seed = test_seed();
  for (Backend backend : tested_backends()) {
    for (DType dtype : tested_dtypes()) {
      for (cases::DenseCase& c : cases::dense_adversarial_cases(dtype)) params.push_back({backend, std::move(c), seed});
      for (cases::DenseCase& c : cases::dense_random_cases(seed, random_case_count(), kRandomMaxSeqlen, dtype)) {
        params.push_back({backend, std::move(c), seed});
      }
    }
  }
  return params;
}

std::string conformance_name(const ::testing::TestParamInfo<ConformanceParam>& info) {
  return backend_label(info.param.backend) + "_" + dtype_name(info.param.dense_case.dtype) + "_" +
         info.param.dense_case.name;
}

class DenseConformance : public ::testing::TestWithParam<ConformanceParam> {
 protected:
  void announce() const {
    std::cout << "case " << GetParam().dense_case.describe() << "\nseed " << GetParam().seed
              << " (ATTNKIT_TEST_SEED), backend " << backend_name(GetParam().backend) << " on "
              << device_name(test_device()) << std::endl;
  }
};

TEST_P(DenseConformance, Forward) {
  ATTNKIT_SKIP_WITHOUT_DEVICE();
  announce();
  const ConformanceParam& p = GetParam();
  const DenseCheckResult result = check_dense_forward(p.dense_case, {p.backend, test_device(), p.seed, false});
  if (result.outcome == CheckOutcome::kUnsupported) ATTNKIT_HANDLE_UNSUPPORTED(p.backend, "forward", result.status);
  std::cout << result.report();
  EXPECT_EQ(result.outcome, CheckOutcome::kPassed) << result.report();
}

TEST_P(DenseConformance, Backward) {
  ATTNKIT_SKIP_WITHOUT_DEVICE();
  announce();
  const ConformanceParam& p = GetParam();
  const DenseCheckResult result = check_dense_backward(p.dense_case, {p.backend, test_device(), p.seed, false});
  if (result.outcome == CheckOutcome::kUnsupported) ATTNKIT_HANDLE_UNSUPPORTED(p.backend, "backward", result.status);
  std::cout << result.report();
  EXPECT_EQ(result.outcome, CheckOutcome::kPassed) << result.report();
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseConformance, ::testing::ValuesIn(conformance_params()), conformance_name);

// ---- determinism --------------------------------------------------------------------------------

struct BackendParamName {
  std::string operator()(const ::testing::TestParamInfo<Backend>& info) const { return backend_label(info.param); }
};

class DenseDeterminism : public ::testing::TestWithParam<Backend> {};

// quality.md: with deterministic = true, 100 backward runs at a large batch are bit-identical. GQA and
// sinks make dk, dv and dsinks sums over many query rows and heads, where atomics would show. The CPU
// backend gets the same test at a size its run time allows.
TEST_P(DenseDeterminism, BackwardIsBitIdenticalOverRepeatedRuns) {
  ATTNKIT_SKIP_WITHOUT_DEVICE();
  const Backend backend = GetParam();
  cases::DenseCase c;
  c.name = "determinism";
  c.causal = true;
  c.sinks = true;
  c.heads_q = 8;
  c.heads_kv = 2;
  c.head_dim = c.head_dim_v = 128;
  c.batch = ATTNKIT_TEST_GPU ? 16 : 2;
  c.seqlen_q = c.seqlen_k = ATTNKIT_TEST_GPU ? 512 : 96;
  const int runs = ATTNKIT_TEST_GPU ? 100 : 5;
  std::cout << "case " << c.describe() << ", " << runs << " runs, seed " << test_seed() << std::endl;

  DenseCaseTensors tensors(c, test_device(), test_seed());
  std::vector<std::string> problems;
  // The backend's own forward provides out and lse (a float64 reference of this size would take minutes).
  const Status forward_status = run_dense_forward(tensors, backend, true, &problems);
  if (is_unsupported(forward_status)) ATTNKIT_HANDLE_UNSUPPORTED(backend, "forward", forward_status);
  ASSERT_TRUE(forward_status.is_ok()) << forward_status.to_string();
  ASSERT_TRUE(problems.empty()) << problems.front();

  const std::vector<DenseTensor> outputs = {DenseTensor::kDq, DenseTensor::kDk, DenseTensor::kDv, DenseTensor::kDsinks};
  std::vector<std::vector<double>> first;
  for (int run = 0; run < runs; ++run) {
    const Status status = run_dense_backward(tensors, backend, /*deterministic=*/true, &problems, /*check_memory=*/run == 0);
    if (run == 0 && is_unsupported(status)) ATTNKIT_HANDLE_UNSUPPORTED(backend, "deterministic backward", status);
    ASSERT_TRUE(status.is_ok()) << "run " << run << ": " << status.to_string();
    ASSERT_TRUE(problems.empty()) << "run " << run << ": " << problems.front();
    for (std::size_t o = 0; o < outputs.size(); ++o) {
      const std::vector<double> values = tensors.read_values(outputs[o]);
      if (run == 0) {
        first.push_back(values);
        continue;
      }
      for (std::size_t e = 0; e < values.size(); ++e) {
        ASSERT_EQ(std::memcmp(&values[e], &first[o][e], sizeof(double)), 0)
            << dense_tensor_name(outputs[o]) << " differs in run " << run << " at " << format_index(static_cast<std::int64_t>(e), tensors.shape(outputs[o]))
            << ": " << values[e] << " vs " << first[o][e] << " in run 0";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseDeterminism, ::testing::ValuesIn(tested_backends()), BackendParamName());

// ---- batch independence -------------------------------------------------------------------------

struct BatchParam {
  Backend backend;
  bool varlen;
};

void PrintTo(const BatchParam& param, std::ostream* out) {
  *out << backend_name(param.backend) << (param.varlen ? ", varlen" : ", BSHD");
}

class DenseBatchIndependence : public ::testing::TestWithParam<BatchParam> {};

// The logical elements of one request inside a batched tensor, in row-major order.
struct RequestSlice {
  bool varlen;
  std::int64_t index;          // BSHD: the batch element
  std::int64_t row_begin = 0;  // varlen: the request's token rows [row_begin, row_end)
  std::int64_t row_end = 0;

  std::vector<double> of(const std::vector<double>& values, const std::vector<std::int64_t>& shape, bool is_lse) const {
    std::vector<double> slice;
    if (!varlen) {  // [B, ...]: one contiguous block
      const std::int64_t block = static_cast<std::int64_t>(values.size()) / shape[0];
      return {values.begin() + index * block, values.begin() + (index + 1) * block};
    }
    if (is_lse) {  // [Hq, Tq]: one row range per head
      for (std::int64_t h = 0; h < shape[0]; ++h) {
        slice.insert(slice.end(), values.begin() + h * shape[1] + row_begin, values.begin() + h * shape[1] + row_end);
      }
      return slice;
    }
    const std::int64_t row = static_cast<std::int64_t>(values.size()) / shape[0];  // [T, H, D]
    return {values.begin() + row_begin * row, values.begin() + row_end * row};
  }
};

// quality.md: a request's result does not depend on the rest of its batch. The request runs alone and
// as element 2 of a batch of 4 (varlen: sequence 1 of 4, next to an empty one); out, lse, dq, dk and dv
// must be bit-identical. dsinks sums over the batch, so it is not compared.
TEST_P(DenseBatchIndependence, RequestResultDoesNotDependOnTheBatch) {
  ATTNKIT_SKIP_WITHOUT_DEVICE();
  const auto [backend, varlen] = GetParam();
  cases::DenseCase alone;
  alone.name = "alone";
  alone.heads_q = 4;
  alone.heads_kv = 2;
  alone.head_dim = alone.head_dim_v = 64;
  alone.causal = true;
  alone.sinks = true;
  cases::DenseCase batched = alone;
  batched.name = "batched";
  RequestSlice q_slice{varlen, 2}, k_slice{varlen, 2};
  if (varlen) {
    alone.varlen_q = {70};
    alone.varlen_k = {90};
    batched.varlen_q = {13, 70, 0, 41};
    batched.varlen_k = {20, 90, 5, 41};
    alone.batch = 1;
    batched.batch = 4;
    q_slice = {true, 1, 13, 83};
    k_slice = {true, 1, 20, 110};
  } else {
    alone.seqlen_q = batched.seqlen_q = 70;
    alone.seqlen_k = batched.seqlen_k = 90;
    alone.batch = 1;
    batched.batch = 4;
  }
  DenseCaseTensors big(batched, test_device(), test_seed());
  DenseCaseTensors one(alone, test_device(), test_seed() + 1);
  for (DenseTensor tensor : {DenseTensor::kQ, DenseTensor::kK, DenseTensor::kV, DenseTensor::kDout, DenseTensor::kSinks}) {
    const RequestSlice& slice = (tensor == DenseTensor::kK || tensor == DenseTensor::kV) ? k_slice : q_slice;
    const std::vector<double> values = big.read_values(tensor);
    one.write_values(tensor, tensor == DenseTensor::kSinks ? values : slice.of(values, big.shape(tensor), false));
  }
  std::vector<std::string> problems;
  for (DenseCaseTensors* tensors : {&big, &one}) {
    const Status status = run_dense_forward(*tensors, backend, true, &problems);
    if (is_unsupported(status)) ATTNKIT_HANDLE_UNSUPPORTED(backend, "forward", status);
    ASSERT_TRUE(status.is_ok()) << status.to_string();
    const Status backward_status = run_dense_backward(*tensors, backend, /*deterministic=*/true, &problems);
    if (is_unsupported(backward_status)) ATTNKIT_HANDLE_UNSUPPORTED(backend, "deterministic backward", backward_status);
    ASSERT_TRUE(backward_status.is_ok()) << backward_status.to_string();
  }
  ASSERT_TRUE(problems.empty()) << problems.front();
  for (DenseTensor tensor : {DenseTensor::kOut, DenseTensor::kLse, DenseTensor::kDq, DenseTensor::kDk, DenseTensor::kDv}) {
    const RequestSlice& slice = (tensor == DenseTensor::kDk || tensor == DenseTensor::kDv) ? k_slice : q_slice;
    const std::vector<double> from_batch = slice.of(big.read_values(tensor), big.shape(tensor), tensor == DenseTensor::kLse);
    const std::vector<double> from_alone = one.read_values(tensor);
    ASSERT_EQ(from_batch.size(), from_alone.size()) << dense_tensor_name(tensor);
    for (std::size_t e = 0; e < from_alone.size(); ++e) {
      ASSERT_EQ(std::memcmp(&from_batch[e], &from_alone[e], sizeof(double)), 0)
          << dense_tensor_name(tensor) << " at " << format_index(static_cast<std::int64_t>(e), one.shape(tensor)) << ": "
          << from_batch[e] << " inside the batch vs " << from_alone[e] << " alone";
    }
  }
}

std::vector<BatchParam> batch_params() {
  std::vector<BatchParam> params;
  for (Backend backend : tested_backends()) {
    params.push_back({backend, false});
    params.push_back({backend, true});
  }
  return params;
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseBatchIndependence, ::testing::ValuesIn(batch_params()),
                         [](const ::testing::TestParamInfo<BatchParam>& info) {
                           return backend_label(info.param.backend) + (info.param.varlen ? "_varlen" : "_bshd");
                         });

}  // namespace
}  // namespace attnkit::testing
