// The sm80 forward's heavy-first order in L2-sized sections (forward_params.h, heavy_first_section_pairs)
// is a pure function of the launch: these checks tie the catalogue's sections_* case to it, so that the
// conformance suite keeps running more than one section with a short last one, and pin the issue-3 bench
// shapes that the A/B of stop 13 measured.
#include <gtest/gtest.h>

#include <cstdint>

#include "kernels/dense/sm80/forward/forward_params.h"
#include "tests/cases/dense_cases.h"

namespace attnkit {
namespace {

int shape_block_m(std::int64_t head_dim, std::int64_t head_dim_v) {
  for (const sm80::ForwardTileShape& shape : sm80::kForwardTileShapes) {
    if (head_dim <= shape.head_dim && head_dim_v <= shape.head_dim_v) return shape.block_m;
  }
  return 0;
}

int section_pairs_for(const cases::DenseCase& c) {
  const int block_m = shape_block_m(c.head_dim, c.head_dim_v);
  const int query_tiles = static_cast<int>((c.max_seqlen_q() + block_m - 1) / block_m);
  return sm80::heavy_first_section_pairs(c.batch * c.heads_q, c.heads_q / c.heads_kv, c.max_seqlen_k(),
                                         c.head_dim + c.head_dim_v, 2, query_tiles);
}

TEST(DenseForwardSections, CatalogueCaseRunsSeveralSectionsAndAShortLastOne) {
  int found = 0;
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (const cases::DenseCase& c : cases::dense_adversarial_cases(dtype)) {
      if (c.name.rfind("sections_", 0) != 0) continue;
      ++found;
      ASSERT_TRUE(c.causal) << c.name << ": only the heavy-first (causal / window) order has sections";
      const std::int64_t pairs = c.batch * c.heads_q;
      const int per_section = section_pairs_for(c);
      EXPECT_LT(per_section, pairs) << c.name << ": more than one section";
      EXPECT_NE(pairs % per_section, 0) << c.name << ": the last section is shorter than the others";
    }
  }
  EXPECT_EQ(found, 2);
}

TEST(DenseForwardSections, BenchShapes) {
  // Issue 3, B * S = 16384, H * D = 2048, bf16. S = 1024, D = 64: K/V of 256 KiB per head, 64 heads per
  // 16 MiB, 512 (batch, head) pairs: 8 sections. D = 256, S = 1024: 16 query tiles of 64 rows per head, 16 MiB
  // over 1 MiB per head: 16 pairs per section.
  EXPECT_EQ(sm80::heavy_first_section_pairs(16 * 32, 1, 1024, 128, 2, 8), 64);
  EXPECT_EQ(sm80::heavy_first_section_pairs(16 * 8, 1, 1024, 512, 2, 16), 16);
  // S = 4096: 32-64 query tiles per head keep one section (sections lost 1.4-3.6% there).
  EXPECT_EQ(sm80::heavy_first_section_pairs(4 * 32, 1, 4096, 128, 2, 32), 4 * 32);
  // GQA: the query heads of one group share K/V, so a pair carries 1 / group of it.
  EXPECT_EQ(sm80::heavy_first_section_pairs(512, 8, 1024, 128, 2, 8), 512);
  // Near-equal sections: 129 pairs of 128 KiB split 65 + 64, not 128 + 1.
  EXPECT_EQ(sm80::heavy_first_section_pairs(129, 1, 128, 512, 2, 2), 65);
}

}  // namespace
}  // namespace attnkit
