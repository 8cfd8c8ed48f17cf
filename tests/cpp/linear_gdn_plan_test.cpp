// The GDN forward's launch plan (linear_gdn_plan.h) is a pure function of the problem and the device's
// limits: its slice choice, and the refusal where a block's shared memory is too small for the state and
// output kernels, are checked here on the CPU.
#include "kernels/linear/sm80/linear_gdn_plan.h"

#include <gtest/gtest.h>

namespace attnkit::sm80 {
namespace {

// Bytes of shared memory a block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin).
constexpr std::int64_t kSm80 = 163 * 1024;  // A100
constexpr std::int64_t kSm86 = 99 * 1024;   // RTX 30xx, A10; sm_89 and sm_120 the same
constexpr std::int64_t kSm90 = 227 * 1024;  // H100, H200

TEST(LinearGdnPlan, SliceFollowsTheGrid) {
  // (B, HV, V) of the issue shapes on 132 SMs: 512 / 128 / 2048 CTAs of 32 columns, or 32 for the long
  // single sequence, whose 64 CTAs of 16 columns each get an SM.
  EXPECT_EQ(gdn_state_slice(4, 32, 128, 132), 32);
  EXPECT_EQ(gdn_state_slice(1, 32, 128, 132), 32);
  EXPECT_EQ(gdn_state_slice(8, 64, 128, 132), 32);
  EXPECT_EQ(gdn_state_slice(1, 8, 128, 132), 16);
  EXPECT_EQ(gdn_state_slice(1, 1, 100, 132), 16);
}

TEST(LinearGdnPlan, ForwardTakesSlicesOf64WhereTheGridFillsTheSms) {
  // 256 and 1024 CTAs of 64 columns; 64 at (1, 32768, 16, 32) would leave SMs idle, so 32 there.
  EXPECT_EQ(gdn_forward_state_slice(4, 32, 128, 132), 64);
  EXPECT_EQ(gdn_forward_state_slice(1, 32, 128, 132), 32);
  EXPECT_EQ(gdn_forward_state_slice(8, 64, 128, 132), 64);
  EXPECT_EQ(gdn_forward_state_slice(1, 8, 128, 132), 16);
  // V = 100 pads to 128 columns either way; V = 96 and V = 32 would pad a slice of 64.
  EXPECT_EQ(gdn_forward_state_slice(4, 32, 100, 132), 64);
  EXPECT_EQ(gdn_forward_state_slice(8, 32, 96, 132), 32);
  EXPECT_EQ(gdn_forward_state_slice(16, 32, 32, 132), 32);
}

TEST(LinearGdnPlan, SharedMemoryOfEachKernel) {
  EXPECT_EQ(gdn_prep_shared_bytes(), 36352u);
  EXPECT_EQ(gdn_state_shared_bytes(16), 132864u);
  EXPECT_EQ(gdn_state_shared_bytes(32), 109056u);
  EXPECT_EQ(gdn_state_shared_bytes(64), 141824u);
  EXPECT_EQ(gdn_output_shared_bytes(), 105216u);
}

TEST(LinearGdnPlan, FitsSm80AndSm90) {
  for (const std::int64_t optin : {kSm80, kSm90}) {
    EXPECT_EQ(gdn_forward_plan(4, 32, 128, 132, optin), 64);
    EXPECT_EQ(gdn_forward_plan(1, 32, 128, 132, optin), 32);
    EXPECT_EQ(gdn_forward_plan(1, 8, 128, 132, optin), 16);
  }
  EXPECT_EQ(gdn_forward_plan(4, 32, 128, 108, kSm80), 64);
  EXPECT_EQ(gdn_forward_plan(1, 1, 64, 108, kSm80), 16);
}

TEST(LinearGdnPlan, RefusesWhereABlockHas99KB) {
  // The state pass (any slice) and the output kernel exceed 99 KB: the host returns NotImplemented
  // before any launch (linear_sm80.cpp) instead of a launch error.
  EXPECT_EQ(gdn_forward_plan(4, 32, 128, 84, kSm86), 0);
  EXPECT_EQ(gdn_forward_plan(1, 8, 128, 84, kSm86), 0);
  EXPECT_EQ(gdn_forward_plan(1, 1, 64, 28, kSm86), 0);
  // One byte short of the largest kernel is refused too.
  EXPECT_EQ(gdn_forward_plan(1, 1, 64, 132, static_cast<std::int64_t>(gdn_state_shared_bytes(16)) - 1), 0);
  EXPECT_EQ(gdn_forward_plan(1, 1, 64, 132, static_cast<std::int64_t>(gdn_state_shared_bytes(16))), 16);
}

}  // namespace
}  // namespace attnkit::sm80
