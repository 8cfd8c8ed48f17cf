// The case catalogue is test input: its promises (names usable as test names, the features it claims
// to cover, reproducible random sweeps, the bench grid's sizes) are checked here.
#include <gtest/gtest.h>

#include <cctype>
#include <set>
#include <stdexcept>
#include <string>

#include "tests/cases/dense_cases.h"

namespace attnkit::cases {
namespace {

TEST(DenseCases, AdversarialNamesAreUniqueTestNames) {
  std::set<std::string> names;
  for (const DenseCase& c : dense_adversarial_cases(DType::kBFloat16)) {
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate " << c.name;
    for (char ch : c.name) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_') << c.name;
    EXPECT_EQ(c.dtype, DType::kBFloat16);
    EXPECT_EQ(c.heads_q % c.heads_kv, 0) << c.name;
  }
}

TEST(DenseCases, AdversarialCoversTheClassesOfQualityMd) {
  bool zero_q = false, zero_k = false, one = false, odd = false, sq_gt_sk = false, sq_lt_sk = false;
  bool masked_rows = false, empty_varlen = false, d_not_pow2 = false, d256 = false, d192_128 = false;
  bool softcap = false, sinks = false, window = false, packed = false, padded = false;
  std::set<std::int64_t> groups;
  for (const DenseCase& c : dense_adversarial_cases(DType::kFloat16)) {
    const std::int64_t sq = c.max_seqlen_q();
    zero_q |= c.total_q() == 0 && c.total_k() > 0;
    zero_k |= !c.varlen() && c.seqlen_k == 0 && c.seqlen_q > 0;
    one |= !c.varlen() && c.seqlen_q == 1 && c.seqlen_k == 1;
    odd |= sq % 2 == 1 && sq > 1;
    sq_gt_sk |= !c.varlen() && c.seqlen_q > c.seqlen_k && c.seqlen_k > 0;
    sq_lt_sk |= !c.varlen() && c.seqlen_q < c.seqlen_k && c.seqlen_q > 0;
    masked_rows |= !c.varlen() && (c.causal || c.window_right >= 0) && c.seqlen_q > c.seqlen_k + std::max<std::int64_t>(c.window_right, 0);
    for (std::size_t n = 0; n < c.varlen_q.size(); ++n) empty_varlen |= c.varlen_q[n] == 0 || c.varlen_k[n] == 0;
    d_not_pow2 |= (c.head_dim & (c.head_dim - 1)) != 0;
    d256 |= c.head_dim == 256;
    d192_128 |= c.head_dim == 192 && c.head_dim_v == 128;
    softcap |= c.softcap > 0.0f;
    sinks |= c.sinks;
    window |= c.window_left >= 0 || c.window_right >= 0;
    packed |= c.layout == DenseLayout::kPackedQkv;
    padded |= c.layout == DenseLayout::kPadded;
    groups.insert(c.heads_q / c.heads_kv);
  }
  EXPECT_TRUE(zero_q && zero_k && one && odd && sq_gt_sk && sq_lt_sk && masked_rows && empty_varlen);
  EXPECT_TRUE(d_not_pow2 && d256 && d192_128 && softcap && sinks && window && packed && padded);
  for (std::int64_t g : {1, 2, 4, 8}) EXPECT_TRUE(groups.count(g)) << "GQA ratio " << g;
}

TEST(DenseCases, RandomSweepIsReproducibleAndSeedDependent) {
  const std::vector<DenseCase> a = dense_random_cases(5, 40, 128, DType::kBFloat16);
  const std::vector<DenseCase> b = dense_random_cases(5, 40, 128, DType::kBFloat16);
  const std::vector<DenseCase> c = dense_random_cases(6, 40, 128, DType::kBFloat16);
  ASSERT_EQ(a.size(), 40u);
  int differing = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].describe(), b[i].describe());
    differing += a[i].describe() != c[i].describe();
    EXPECT_LE(a[i].max_seqlen_q(), 128);
    EXPECT_LE(a[i].max_seqlen_k(), 128);
    EXPECT_EQ(a[i].head_dim % 8, 0);
    EXPECT_EQ(a[i].head_dim_v % 8, 0);
    EXPECT_EQ(a[i].heads_q % a[i].heads_kv, 0);
    if (a[i].layout == DenseLayout::kPackedQkv) {
      EXPECT_EQ(a[i].head_dim, a[i].head_dim_v);
      EXPECT_EQ(a[i].varlen_q, a[i].varlen_k);
      EXPECT_EQ(a[i].seqlen_q, a[i].seqlen_k);
    }
  }
  EXPECT_GT(differing, 30);
}

TEST(DenseCases, BenchGridHasTheIssueSizes) {
  const std::vector<DenseCase> grid = dense_bench_cases({64, 128}, {1024, 16384});
  ASSERT_EQ(grid.size(), 8u);  // 2 head dims x 2 lengths x causal or not
  for (const DenseCase& c : grid) {
    EXPECT_EQ(c.batch * c.seqlen_q, 16384) << c.name;
    EXPECT_EQ(c.heads_q * c.head_dim, 2048) << c.name;
    EXPECT_EQ(c.dtype, DType::kBFloat16);
  }
  // 4 * B * H * S * S * D, halved when causal: D = 64, S = 1024 gives 4 * 16 * 32 * 1024^2 * 64.
  EXPECT_DOUBLE_EQ(grid[0].forward_flops(), 4.0 * 16 * 32 * 1024.0 * 1024.0 * 64);
  EXPECT_DOUBLE_EQ(grid[1].forward_flops(), grid[0].forward_flops() / 2);
  EXPECT_THROW(dense_bench_cases({48}, {1024}), std::invalid_argument);
}

}  // namespace
}  // namespace attnkit::cases
