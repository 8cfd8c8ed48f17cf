// The sm80 backward's tail split is a pure function of the launch (dense_backward_sm80_config.h): these
// checks tie the catalogue's tail_split_* cases to it, so that the conformance suite keeps running the
// split path on the H100 (132 SMs) and the A100 (108), and pin the plan's arithmetic on the bench shapes.
#include <gtest/gtest.h>

#include <string>

#include "kernels/dense/sm80/backward/dense_backward_sm80_config.h"
#include "tests/cases/dense_cases.h"

namespace attnkit {
namespace backward = sm80::backward;
namespace {

std::int64_t tiles_of(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

backward::BackwardTailPlan plan_for(const cases::DenseCase& c, int sm_count) {
  const int tier = backward::backward_head_dim_tier(c.head_dim, c.head_dim_v);
  if (!backward::backward_tail_allowed(tier, false, c.softcap > 0.0f, c.varlen(),
                                       c.window_left >= 0 || c.window_right >= 0, c.seqlen_q, c.seqlen_k)) {
    return {};
  }
  const std::int64_t key_tiles = tiles_of(c.seqlen_k, backward::backward_block_n_for_tier(tier)) * c.heads_kv * c.batch;
  const std::int64_t steps = tiles_of(c.seqlen_q, backward::backward_block_m_for_tier(tier)) * (c.heads_q / c.heads_kv);
  return backward::backward_tail_plan(key_tiles, steps, sm_count);
}

TEST(DenseBackwardTailPlan, CatalogueCasesReachTheSplit) {
  int found = 0;
  for (const cases::DenseCase& c : cases::dense_adversarial_cases(DType::kBFloat16)) {
    if (c.name.rfind("tail_split_", 0) != 0) continue;
    ++found;
    ASSERT_FALSE(c.causal) << c.name;
    for (int sms : {132, 108}) {
      const backward::BackwardTailPlan plan = plan_for(c, sms);
      EXPECT_GT(plan.tiles, 0) << c.name << " on " << sms << " SMs";
      EXPECT_EQ(plan.first_cta, 0) << c.name << ": fewer key tiles than SMs, so every tile is split";
      EXPECT_GT(plan.ctas, plan.tiles) << c.name << ": the steps are shared over more CTAs than tiles";
    }
  }
  EXPECT_EQ(found, 3);
}

TEST(DenseBackwardTailPlan, BenchShapesSplitOnlyTheLastPartialWave) {
  // D = 128, S = 4096, B = 4, Hkv = 16: 2048 key tiles of 128 keys, 64 steps each; 2048 = 15 * 132 + 68.
  const backward::BackwardTailPlan plan = backward::backward_tail_plan(2048, 64, 132);
  EXPECT_EQ(plan.first_cta, 15 * 132);
  EXPECT_EQ(plan.tiles, 68);
  EXPECT_EQ(plan.ctas, 132);
  EXPECT_EQ(backward::backward_tail_plan(2048, 16, 132).tiles, 0) << "below kBackwardTailMinSteps";
  EXPECT_EQ(backward::backward_tail_plan(1320, 64, 132).tiles, 0) << "whole waves need no split";
  EXPECT_FALSE(backward::backward_tail_allowed(128, /*deterministic=*/true, false, false, false, 4096, 4096));
  EXPECT_FALSE(backward::backward_tail_allowed(64, false, false, false, false, 4000, 4096)) << "tier 64: whole tiles";
}

}  // namespace
}  // namespace attnkit
