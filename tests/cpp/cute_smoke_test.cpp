// Runs the CuTe smoke GEMM (src/device/cute_smoke.cu) that CI only compiles: C = A * B^T, 64 x 64 x 64,
// bf16 in, fp32 out, against a float64 host product of the same bf16 values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_runtime_api.h>

#include "attnkit/numeric.h"
#include "device/cute_smoke.h"
#include "support/guarded_buffer.h"

namespace attnkit {
namespace {

TEST(CuteSmoke, TensorCoreGemmMatchesFloat64) {
  std::string why_not;
  if (!testing::cuda_device_available(&why_not)) GTEST_SKIP() << why_not;
  constexpr int n = device::kCuteSmokeSize;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> a(n * n), b(n * n);
  for (auto* m : {&a, &b})
    for (std::uint16_t& x : *m) x = float_to_bf16(normal(rng));
  void* a_dev = nullptr;
  void* b_dev = nullptr;
  float* c_dev = nullptr;
  ASSERT_EQ(cudaMalloc(&a_dev, a.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&b_dev, b.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&c_dev), n * n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(a_dev, a.data(), a.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b_dev, b.data(), b.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(c_dev, 0xff, n * n * sizeof(float)), cudaSuccess);  // NaN until written
  const Status status = device::cute_smoke_gemm(a_dev, b_dev, c_dev);
  std::vector<float> c(n * n);
  ASSERT_EQ(cudaMemcpy(c.data(), c_dev, c.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(a_dev);
  cudaFree(b_dev);
  cudaFree(c_dev);
  ASSERT_TRUE(status.is_ok()) << status.to_string();
  double worst = 0.0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double exact = 0.0;
      for (int k = 0; k < n; ++k) exact += double(bf16_to_float(a[i * n + k])) * bf16_to_float(b[j * n + k]);
      ASSERT_TRUE(std::isfinite(c[i * n + j])) << "c[" << i << ", " << j << "] was not written";
      worst = std::max(worst, std::abs(c[i * n + j] - exact));
    }
  }
  // fp32 accumulation of 64 products of magnitude ~1: a few ulps of ~8 (|c| ~ sqrt(64)).
  EXPECT_LT(worst, 1e-4) << "max |c - exact| = " << worst;
}

}  // namespace
}  // namespace attnkit
