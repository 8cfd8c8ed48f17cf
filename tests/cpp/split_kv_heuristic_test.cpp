// The split-KV heuristic is a pure function: its contract is checked here on the CPU.
#include "host/split_kv_heuristic.h"

#include <gtest/gtest.h>

namespace attnkit::host {
namespace {

// An H100-like device: 132 SMs, 2 resident CTAs of the kernel per SM (264 slots), 64-key tiles.
SplitKvShape decode(std::int64_t batch_heads, std::int64_t key_length) {
  SplitKvShape shape;
  shape.batch_heads = batch_heads;
  shape.query_tiles = 1;
  shape.key_length = key_length;
  shape.key_tile = 64;
  shape.sm_count = 132;
  shape.ctas_per_sm = 2;
  return shape;
}

TEST(SplitKvHeuristic, FullGridIsNotSplit) {
  // 16 heads x 128 query tiles = 2048 CTAs: many waves already.
  SplitKvShape prefill = decode(16, 16384);
  prefill.query_tiles = 128;
  EXPECT_EQ(split_kv_count(prefill), 1);
  // 80% of the 264 slots is 211.2: 212 CTAs are left alone; 100 CTAs (38%) are split.
  EXPECT_EQ(split_kv_count(decode(212, 1 << 20)), 1);
  EXPECT_GT(split_kv_count(decode(100, 1 << 20)), 1);
}

TEST(SplitKvHeuristic, DecodeAgainstLongKeysFillsTheDevice) {
  // 32 CTAs for 264 slots: the split count must bring one wave close to full.
  const int splits = split_kv_count(decode(32, 16384));
  EXPECT_GT(splits, 1);
  const double busy = 32.0 * splits / (264.0 * ((32 * splits + 263) / 264));
  EXPECT_GE(busy, 0.8) << "splits = " << splits;
  // It never asks for more than two waves of CTAs.
  EXPECT_LE(32 * splits, 2 * 264);
}

TEST(SplitKvHeuristic, ShortKeysAreNotSplitBelowTwoTilesPerSplit) {
  // One key tile: nothing to share.
  EXPECT_EQ(split_kv_count(decode(1, 64)), 1);
  EXPECT_EQ(split_kv_count(decode(1, 1)), 1);
  // Three tiles: at most one split of two tiles and one of one.
  EXPECT_EQ(split_kv_count(decode(1, 3 * 64)), 1);
  // Eight tiles: at most four splits of two tiles each.
  EXPECT_LE(split_kv_count(decode(1, 8 * 64)), 4);
  EXPECT_GT(split_kv_count(decode(1, 8 * 64)), 1);
}

TEST(SplitKvHeuristic, CappedAtTheWorkspaceBound) {
  // A single (batch, head) against a million keys would want hundreds of splits.
  const int splits = split_kv_count(decode(1, 1 << 20));
  EXPECT_LE(splits, kMaxKvSplits);
  EXPECT_GE(splits, 64);
}

TEST(SplitKvHeuristic, EverySplitOwnsDistinctWork) {
  // For every answer, no smaller count gives the same tiles per split (which would only add CTAs).
  for (std::int64_t key_length : {64 * 5, 64 * 17, 64 * 100, 64 * 1000}) {
    for (std::int64_t batch_heads : {1, 3, 8, 40, 100}) {
      const int splits = split_kv_count(decode(batch_heads, key_length));
      ASSERT_GE(splits, 1);
      if (splits > 1) {
        const std::int64_t tiles = (key_length + 63) / 64;
        EXPECT_NE((tiles + splits - 1) / splits, (tiles + splits - 2) / (splits - 1))
            << "batch_heads " << batch_heads << " key_length " << key_length << " splits " << splits;
        EXPECT_LE(splits, tiles / kMinKeyTilesPerSplit);
      }
    }
  }
}

TEST(SplitKvHeuristic, DegenerateInputsGiveOneSplit) {
  EXPECT_EQ(split_kv_count(decode(0, 4096)), 1);
  EXPECT_EQ(split_kv_count(decode(8, 0)), 1);
  SplitKvShape no_device = decode(8, 4096);
  no_device.sm_count = 0;
  EXPECT_EQ(split_kv_count(no_device), 1);
  SplitKvShape no_queries = decode(8, 4096);
  no_queries.query_tiles = 0;
  EXPECT_EQ(split_kv_count(no_queries), 1);
}

TEST(SplitKvHeuristic, MoreSmsNeverMeanFewerSplitsForTheSameWork) {
  SplitKvShape small = decode(16, 32768);
  small.sm_count = 46;  // an RTX-class part
  SplitKvShape large = decode(16, 32768);
  EXPECT_LE(split_kv_count(small), split_kv_count(large));
}

}  // namespace
}  // namespace attnkit::host
