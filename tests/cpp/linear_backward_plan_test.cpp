// The chunked GDN and KDA backwards' launch plan (linear_backward_plan.h) is a pure function of the grid and
// the device's limits: their kernels' shared memory, the state passes' choice of one or two chunk buffers,
// and the refusal (GDN) or the walk (KDA) on a device whose blocks get too little shared memory, checked
// here on the CPU.
#include "kernels/linear/sm80/linear_backward_plan.h"

#include <gtest/gtest.h>

namespace attnkit::sm80 {
namespace {

// Bytes of shared memory a block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin).
constexpr std::int64_t kSm80 = 163 * 1024;  // A100
constexpr std::int64_t kSm86 = 99 * 1024;   // RTX 30xx, A10; sm_89 and sm_120 the same
constexpr std::int64_t kSm90 = 227 * 1024;  // H100, H200

TEST(LinearBackwardPlan, KernelSharedMemory) {
  // The sizes of the kernels' Shared structs (static_asserts in linear_backward_chunked_sm80.cu).
  EXPECT_EQ(gdn_backward_prep_shared_bytes(), 112384u);
  EXPECT_EQ(gdn_backward_state_shared_bytes(false), 96000u);
  EXPECT_EQ(gdn_backward_state_shared_bytes(true), 173568u);
  EXPECT_EQ(gdn_backward_grad_shared_bytes(), 227584u);
  // KDA (static_asserts in linear_backward_kda_chunked_sm80.cu and linear_backward_chunk_sm80.cuh).
  EXPECT_EQ(kda_backward_prep_shared_bytes(), 111872u);  // two CTAs per SM on sm_90 (26dd671)
  EXPECT_EQ(kda_backward_state_shared_bytes(false), 96256u);
  EXPECT_EQ(kda_backward_state_shared_bytes(true), 174080u);
  EXPECT_EQ(kda_backward_grad_shared_bytes(), 215552u);
}

TEST(LinearBackwardPlan, OnlySm90Fits) {
  EXPECT_TRUE(gdn_backward_fits(kSm90));
  EXPECT_FALSE(gdn_backward_fits(kSm80));  // chunk_grad
  EXPECT_FALSE(gdn_backward_fits(kSm86));  // chunk_prep and chunk_grad
  EXPECT_TRUE(kda_backward_fits(kSm90));
  EXPECT_FALSE(kda_backward_fits(kSm80));  // chunk_grad: KDA takes the walk there
  EXPECT_FALSE(kda_backward_fits(kSm86));
}

TEST(LinearBackwardPlan, StatePassesPipelineWhereEveryCtaHasAnSm) {
  // (B, HV, V = 128) of the issue shapes on 132 SMs: 4 value slices of 32 per (sequence, value head).
  EXPECT_FALSE(gdn_backward_state_pipelined(4 * 32 * 4, 132, kSm90));  // 512 CTAs
  EXPECT_TRUE(gdn_backward_state_pipelined(1 * 32 * 4, 132, kSm90));   // 128 CTAs
  EXPECT_FALSE(gdn_backward_state_pipelined(8 * 64 * 4, 132, kSm90));  // 2048 CTAs
  EXPECT_TRUE(gdn_backward_state_pipelined(1 * 8 * 4, 132, kSm90));    // 32 CTAs
  // Two buffers (173,568 bytes) do not fit sm_80's 163 KB: one buffer there, however small the grid.
  EXPECT_FALSE(gdn_backward_state_pipelined(1 * 8 * 4, 108, kSm80));
  EXPECT_TRUE(backward_state_pipelined(true, 1 * 8 * 4, 132, kSm90));
  EXPECT_FALSE(backward_state_pipelined(true, 4 * 32 * 4, 132, kSm90));
}

}  // namespace
}  // namespace attnkit::sm80
