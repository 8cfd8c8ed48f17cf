// The KDA forward's launch plan (linear_kda_plan.h): its slice choice and the refusal where a block's
// shared memory is too small for its kernels, checked on the CPU.
#include "kernels/linear/sm80/linear_kda_plan.h"

#include <gtest/gtest.h>

namespace attnkit::sm80 {
namespace {

// Bytes of shared memory a block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin).
constexpr std::int64_t kSm80 = 163 * 1024;  // A100
constexpr std::int64_t kSm86 = 99 * 1024;   // RTX 30xx, A10; sm_89 and sm_120 the same
constexpr std::int64_t kSm90 = 227 * 1024;  // H100, H200

TEST(LinearKdaPlan, SharedMemoryOfEachKernel) {
  EXPECT_EQ(kda_prep_shared_bytes(), 106240u);
  EXPECT_EQ(kda_state_shared_bytes(16), 128000u);
  EXPECT_EQ(kda_state_shared_bytes(32), 144384u);
  EXPECT_EQ(kda_state_shared_bytes(64), 177152u);
  EXPECT_EQ(kda_output_shared_bytes(), 105472u);
}

TEST(LinearKdaPlan, FitsSm80AndSm90WithGdnsSlice) {
  for (const std::int64_t optin : {kSm80, kSm90}) {
    EXPECT_EQ(kda_forward_plan(1, 32, 128, 132, optin), 32);  // 64 CTAs of 64 columns: fewer than the SMs
    EXPECT_EQ(kda_forward_plan(1, 8, 128, 132, optin), 16);
    EXPECT_EQ(kda_forward_plan(4, 32, 96, 132, optin), 32);  // slices of 64 would pad V = 96 to 128 columns
  }
}

// GDN's slices of 64 (256 CTAs at (4, 8192, 32, 32), 1024 at (8, 4096, 16, 64)) only where a block may opt
// in to their 173 KB: sm_90 takes them, sm_80 (163 KB) keeps slices of 32.
TEST(LinearKdaPlan, SlicesOf64WhereTheyFit) {
  EXPECT_EQ(kda_forward_plan(4, 32, 128, 132, kSm90), 64);
  EXPECT_EQ(kda_forward_plan(8, 64, 128, 132, kSm90), 64);
  EXPECT_EQ(kda_forward_plan(4, 32, 128, 108, kSm80), 32);
  EXPECT_EQ(kda_forward_state_slice(4, 32, 128, 132, static_cast<std::int64_t>(kda_state_shared_bytes(64)) - 1), 32);
  EXPECT_EQ(kda_forward_state_slice(4, 32, 128, 132, static_cast<std::int64_t>(kda_state_shared_bytes(64))), 64);
}

TEST(LinearKdaPlan, RefusesWhereABlockHas99KB) {
  EXPECT_EQ(kda_forward_plan(4, 32, 128, 84, kSm86), 0);
  EXPECT_EQ(kda_forward_plan(1, 1, 64, 28, kSm86), 0);
  // One byte short of the state pass at a slice of 32 is refused too.
  EXPECT_EQ(kda_forward_plan(1, 32, 128, 132, static_cast<std::int64_t>(kda_state_shared_bytes(32)) - 1), 0);
  EXPECT_EQ(kda_forward_plan(1, 32, 128, 132, static_cast<std::int64_t>(kda_state_shared_bytes(32))), 32);
}

}  // namespace
}  // namespace attnkit::sm80
