// 64-bit offsets on the GPU: forward and backward on tensors of more than 2^31 elements, checked against
// the float64 reference on rows whose element offsets lie past 2^31 (where a 32-bit product of sizes
// would wrap around and read or write somewhere else).
//
// Two shapes of 2^31 + 2^19 elements per q/k/v/out tensor (bf16, 4.3 GB each, about 43 GB of device
// memory with the gradients and the backward's fp32 workspace):
//   - batch offsets: B = 4097 sequences of 256 tokens, 16 heads of 128; the last sequence starts at
//     element 4096 * 256 * 2048 = 2^31;
//   - row offsets: one sequence of 2^20 + 256 tokens, causal with a 127-key window (so that the work stays
//     linear in the length); its last rows lie past element 2^31.
// Only the checked rows hold random data (the rest is zero, which keeps every other row finite): the
// last 256 query rows and the keys they see. The reference runs on that sub-problem, which has the same
// answer for those rows because no other key is visible to them; for the backward, the keys every query
// of which lies in the sub-problem (the last 256) are compared.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/dense.h"
#include "attnkit/numeric.h"
#include "reference/dense_reference.h"
#include "tests/cpp/support/guarded_buffer.h"
#include "tests/cpp/support/tolerance.h"

namespace attnkit::testing {
namespace {

struct LargeShape {
  const char* name;
  std::int64_t batch;
  std::int64_t seqlen;
  std::int64_t window_left;  // -1: unbounded
  bool causal;
};

constexpr std::int64_t kHeads = 16;
constexpr std::int64_t kHeadDim = 128;
constexpr std::int64_t kCheckedRows = 256;  // query rows (and, for the gradients, keys) compared

// Device buffer freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) { error_ = cudaMalloc(&data_, bytes); }
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return data_; }
  cudaError_t error() const { return error_; }

 private:
  void* data_ = nullptr;
  cudaError_t error_ = cudaSuccess;
};

std::vector<std::uint16_t> random_bf16(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> values(count);
  for (auto& value : values) value = float_to_bf16(normal(generator));
  return values;
}

std::vector<double> bf16_to_double(const std::vector<std::uint16_t>& values) {
  std::vector<double> result(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) result[i] = bf16_to_float(values[i]);
  return result;
}

#define ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call << ": " << cudaGetErrorString(cudaGetLastError())

class DenseLargeOffsets : public ::testing::TestWithParam<LargeShape> {};

TEST_P(DenseLargeOffsets, Sm80ForwardAndBackwardPast2To31Elements) {
  std::string why_not;
  if (!cuda_device_available(&why_not)) GTEST_SKIP() << why_not;
  const LargeShape shape = GetParam();
  const std::int64_t row_elements = kHeads * kHeadDim;  // one token of q, k, v, out (BSHD, contiguous)
  const std::int64_t elements = shape.batch * shape.seqlen * row_elements;
  ASSERT_GT(elements, std::int64_t{1} << 31) << "the shape must pass 2^31 elements";
  const std::size_t tensor_bytes = static_cast<std::size_t>(elements) * 2;
  const std::size_t lse_bytes = static_cast<std::size_t>(shape.batch * kHeads * shape.seqlen) * sizeof(float);

  // The sub-problem: the last kCheckedRows queries of the last sequence and every key they see.
  const std::int64_t sub_q = kCheckedRows;
  const std::int64_t sub_k = shape.window_left < 0 ? shape.seqlen : sub_q + shape.window_left;
  ASSERT_LE(sub_k, shape.seqlen);
  const std::int64_t last = shape.batch - 1;
  const std::int64_t q_row0 = last * shape.seqlen + shape.seqlen - sub_q;  // first checked token overall
  const std::int64_t k_row0 = last * shape.seqlen + shape.seqlen - sub_k;
  ASSERT_GE(q_row0 * row_elements, std::int64_t{1} << 31) << "the checked rows must lie past 2^31 elements";

  DenseForwardArgs forward_args;
  DenseOptions options;
  options.backend = Backend::kSm80;
  options.causal = shape.causal;
  options.window_left = shape.window_left;

  // Ask for the memory first: 8 tensors, lse, and the backward workspace (queried below).
  std::size_t free_bytes = 0, total_bytes = 0;
  ASSERT_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  const std::size_t planned = 8 * tensor_bytes + lse_bytes + static_cast<std::size_t>(elements) * sizeof(float) +
                              (std::size_t{1} << 30);
  if (free_bytes < planned) {
    GTEST_SKIP() << "needs about " << planned / (1 << 20) << " MiB of device memory, " << free_bytes / (1 << 20)
                 << " MiB free";
  }

  const char* names[] = {"q", "k", "v", "out", "dout", "dq", "dk", "dv"};
  std::vector<std::unique_ptr<DeviceBuffer>> tensors;
  for (const char* name : names) {
    tensors.push_back(std::make_unique<DeviceBuffer>(tensor_bytes));
    ASSERT_CUDA(tensors.back()->error()) << " allocating " << name;
  }
  DeviceBuffer lse(lse_bytes);
  ASSERT_CUDA(lse.error());
  auto device_tensor = [&](int index) {
    return TensorRef::contiguous(tensors[index]->data(), DType::kBFloat16, {shape.batch, shape.seqlen, kHeads, kHeadDim},
                                 Device::cuda(0));
  };
  auto bytes_at = [&](int index, std::int64_t token) {
    return static_cast<char*>(tensors[index]->data()) + token * row_elements * 2;
  };

  // Inputs: zero, then random in the sub-problem's rows; outputs poisoned (0xFF bytes are NaN in bf16/fp32).
  for (int i = 0; i < 5; ++i) ASSERT_CUDA(cudaMemset(tensors[i]->data(), i == 3 ? 0xFF : 0, tensor_bytes));
  for (int i = 5; i < 8; ++i) ASSERT_CUDA(cudaMemset(tensors[i]->data(), 0xFF, tensor_bytes));
  ASSERT_CUDA(cudaMemset(lse.data(), 0xFF, lse_bytes));
  const auto host_q = random_bf16(static_cast<std::size_t>(sub_q * row_elements), 1);
  const auto host_k = random_bf16(static_cast<std::size_t>(sub_k * row_elements), 2);
  const auto host_v = random_bf16(static_cast<std::size_t>(sub_k * row_elements), 3);
  const auto host_dout = random_bf16(static_cast<std::size_t>(sub_q * row_elements), 4);
  ASSERT_CUDA(cudaMemcpy(bytes_at(0, q_row0), host_q.data(), host_q.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(bytes_at(1, k_row0), host_k.data(), host_k.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(bytes_at(2, k_row0), host_v.data(), host_v.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(bytes_at(4, q_row0), host_dout.data(), host_dout.size() * 2, cudaMemcpyHostToDevice));

  // The same rows as a host problem for the reference (Sq = sub_q, Sk = sub_k, bottom-right aligned).
  reference::DenseReferenceInputs sub;
  sub.q = TensorRef::contiguous(const_cast<std::uint16_t*>(host_q.data()), DType::kBFloat16, {1, sub_q, kHeads, kHeadDim},
                                Device::cpu());
  sub.k = TensorRef::contiguous(const_cast<std::uint16_t*>(host_k.data()), DType::kBFloat16, {1, sub_k, kHeads, kHeadDim},
                                Device::cpu());
  sub.v = TensorRef::contiguous(const_cast<std::uint16_t*>(host_v.data()), DType::kBFloat16, {1, sub_k, kHeads, kHeadDim},
                                Device::cpu());
  sub.options = options;
  const reference::DenseForwardResult expected = reference::dense_forward_reference(sub);
  const reference::DenseForwardResult naive = reference::dense_forward_naive_lowp(sub);

  // Forward.
  forward_args.q = device_tensor(0);
  forward_args.k = device_tensor(1);
  forward_args.v = device_tensor(2);
  forward_args.out = device_tensor(3);
  forward_args.lse = TensorRef::contiguous(lse.data(), DType::kFloat32, {shape.batch, kHeads, shape.seqlen}, Device::cuda(0));
  forward_args.options = options;
  std::size_t forward_workspace = 0;
  ASSERT_TRUE(workspace_size(forward_args, &forward_workspace).is_ok());
  DeviceBuffer forward_scratch(forward_workspace > 0 ? forward_workspace : 256);
  ASSERT_CUDA(forward_scratch.error());
  forward_args.workspace = forward_scratch.data();
  forward_args.workspace_bytes = forward_workspace;
  const Status forward_status = forward(forward_args);
  ASSERT_TRUE(forward_status.is_ok()) << forward_status.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());

  std::vector<std::uint16_t> out_rows(static_cast<std::size_t>(sub_q * row_elements));
  ASSERT_CUDA(cudaMemcpy(out_rows.data(), bytes_at(3, q_row0), out_rows.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<float> lse_rows(static_cast<std::size_t>(kHeads * sub_q));
  // lse is [B, H, S]: the checked rows of each head are one run of sub_q floats.
  ASSERT_CUDA(cudaMemcpy2D(lse_rows.data(), sub_q * sizeof(float),
                           static_cast<float*>(lse.data()) + (last * kHeads * shape.seqlen + shape.seqlen - sub_q),
                           shape.seqlen * sizeof(float), sub_q * sizeof(float), kHeads, cudaMemcpyDeviceToHost));
  const std::vector<std::int64_t> out_shape{1, sub_q, kHeads, kHeadDim};
  const ToleranceReport out_report =
      check_tolerance("out", out_shape, bf16_to_double(out_rows), expected.out, naive.out, kOutputFactor,
                      default_atol(DType::kBFloat16, expected.out, expected.max_abs_score));
  EXPECT_TRUE(out_report.passed) << out_report.text();
  std::vector<double> lse_actual(lse_rows.begin(), lse_rows.end());
  const ToleranceReport lse_report =
      check_tolerance("lse", {1, kHeads, sub_q}, lse_actual, expected.lse, naive.lse, kOutputFactor,
                      default_atol(DType::kFloat32, expected.lse, expected.max_abs_score));
  EXPECT_TRUE(lse_report.passed) << lse_report.text();

  // Backward from the reference's out (rounded to bf16) and lse in the checked rows, as the conformance
  // tests do, so that a forward error cannot pass for a backward one.
  std::vector<std::uint16_t> reference_out(expected.out.size());
  for (std::size_t i = 0; i < reference_out.size(); ++i) reference_out[i] = float_to_bf16(static_cast<float>(expected.out[i]));
  std::vector<float> reference_lse(expected.lse.begin(), expected.lse.end());
  ASSERT_CUDA(cudaMemcpy(bytes_at(3, q_row0), reference_out.data(), reference_out.size() * 2, cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy2D(static_cast<float*>(lse.data()) + (last * kHeads * shape.seqlen + shape.seqlen - sub_q),
                           shape.seqlen * sizeof(float), reference_lse.data(), sub_q * sizeof(float),
                           sub_q * sizeof(float), kHeads, cudaMemcpyHostToDevice));
  DenseBackwardArgs backward_args;
  backward_args.q = device_tensor(0);
  backward_args.k = device_tensor(1);
  backward_args.v = device_tensor(2);
  backward_args.out = device_tensor(3);
  backward_args.dout = device_tensor(4);
  backward_args.lse = forward_args.lse;
  backward_args.dq = device_tensor(5);
  backward_args.dk = device_tensor(6);
  backward_args.dv = device_tensor(7);
  backward_args.options = options;
  std::size_t backward_workspace = 0;
  ASSERT_TRUE(workspace_size(backward_args, &backward_workspace).is_ok());
  DeviceBuffer backward_scratch(backward_workspace > 0 ? backward_workspace : 256);
  ASSERT_CUDA(backward_scratch.error());
  backward_args.workspace = backward_scratch.data();
  backward_args.workspace_bytes = backward_workspace;
  const Status backward_status = backward(backward_args);
  ASSERT_TRUE(backward_status.is_ok()) << backward_status.to_string();
  ASSERT_CUDA(cudaDeviceSynchronize());

  const TensorRef host_dout_ref = TensorRef::contiguous(const_cast<std::uint16_t*>(host_dout.data()), DType::kBFloat16,
                                                        {1, sub_q, kHeads, kHeadDim}, Device::cpu());
  const TensorRef host_out_ref =
      TensorRef::contiguous(reference_out.data(), DType::kBFloat16, {1, sub_q, kHeads, kHeadDim}, Device::cpu());
  const reference::DenseBackwardResult expected_grad = reference::dense_backward_reference(sub, host_dout_ref);
  const reference::DenseBackwardResult naive_grad = reference::dense_backward_naive_lowp(sub, host_dout_ref, host_out_ref);
  const double term_magnitude = std::max({max_abs_finite(expected_grad.dq), max_abs_finite(expected_grad.dk),
                                          max_abs_finite(expected_grad.dv)});
  // dq: every checked row; dk, dv: the last sub_q keys (all their queries are in the sub-problem).
  struct Gradient {
    const char* name;
    int tensor;
    std::int64_t first_token;                // where the compared rows start in the device tensor
    const std::vector<double>* expected;     // over the sub-problem's rows
    const std::vector<double>* naive;
    std::int64_t first_sub_row;              // the compared rows' first row in the sub-problem
  };
  const Gradient gradients[] = {
      {"dq", 5, q_row0, &expected_grad.dq, &naive_grad.dq, 0},
      {"dk", 6, q_row0, &expected_grad.dk, &naive_grad.dk, sub_k - sub_q},
      {"dv", 7, q_row0, &expected_grad.dv, &naive_grad.dv, sub_k - sub_q},
  };
  for (const Gradient& g : gradients) {
    std::vector<std::uint16_t> rows(static_cast<std::size_t>(sub_q * row_elements));
    ASSERT_CUDA(cudaMemcpy(rows.data(), bytes_at(g.tensor, g.first_token), rows.size() * 2, cudaMemcpyDeviceToHost));
    const auto begin = static_cast<std::ptrdiff_t>(g.first_sub_row * row_elements);
    const auto end = begin + static_cast<std::ptrdiff_t>(sub_q * row_elements);
    const std::vector<double> expected_rows(g.expected->begin() + begin, g.expected->begin() + end);
    const std::vector<double> naive_rows(g.naive->begin() + begin, g.naive->begin() + end);
    const ToleranceReport report =
        check_tolerance(g.name, out_shape, bf16_to_double(rows), expected_rows, naive_rows, kGradientFactor,
                        default_atol(DType::kBFloat16, expected_rows, expected.max_abs_score, term_magnitude));
    EXPECT_TRUE(report.passed) << report.text();
  }
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseLargeOffsets,
                         ::testing::Values(LargeShape{"BatchOffsets", 4097, 256, -1, false},
                                           LargeShape{"RowOffsets", 1, (std::int64_t{1} << 20) + 256, 127, true}),
                         [](const ::testing::TestParamInfo<LargeShape>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace attnkit::testing
