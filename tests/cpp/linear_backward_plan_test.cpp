// The chunked GDN backward's launch plan (linear_backward_plan.h) is a pure function of the grid and the
// device's limits: its kernels' shared memory, the state passes' choice of one or two chunk buffers, and
// the refusal of a device whose blocks get too little shared memory, checked here on the CPU.
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
}

TEST(LinearBackwardPlan, OnlySm90Fits) {
  EXPECT_TRUE(gdn_backward_fits(kSm90));
  EXPECT_FALSE(gdn_backward_fits(kSm80));  // chunk_grad
  EXPECT_FALSE(gdn_backward_fits(kSm86));  // chunk_prep and chunk_grad
}

TEST(LinearBackwardPlan, StatePassesPipelineWhereEveryCtaHasAnSm) {
  // (B, HV, V = 128) of the issue shapes on 132 SMs: 4 value slices of 32 per (sequence, value head).
  EXPECT_FALSE(gdn_backward_state_pipelined(4 * 32 * 4, 132, kSm90));  // 512 CTAs
  EXPECT_TRUE(gdn_backward_state_pipelined(1 * 32 * 4, 132, kSm90));   // 128 CTAs
  EXPECT_FALSE(gdn_backward_state_pipelined(8 * 64 * 4, 132, kSm90));  // 2048 CTAs
  EXPECT_TRUE(gdn_backward_state_pipelined(1 * 8 * 4, 132, kSm90));    // 32 CTAs
  // Two buffers (173,568 bytes) do not fit sm_80's 163 KB: one buffer there, however small the grid.
  EXPECT_FALSE(gdn_backward_state_pipelined(1 * 8 * 4, 108, kSm80));
}

}  // namespace
}  // namespace attnkit::sm80
