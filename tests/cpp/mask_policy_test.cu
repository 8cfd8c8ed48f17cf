// The window mask policy (src/device/mask_policy.cuh) checked on the host, through the same CuTe
// fragment partitions the sm80 forward kernel uses for every thread of its CTA: it needs nvcc and the
// CuTe headers, not a GPU. Against a brute-force predicate written here from semantics.md section 1:
//   visible(i, j)  iff  0 <= j < Sk  and  (left < 0 or j >= i + Sk - Sq - left)
//                                    and  (right < 0 or j <= i + Sk - Sq + right)
// Checked, for random lengths and windows (causal and unbounded among them):
//   - key_tiles() covers every visible key of the query tile (no visible key is skipped);
//   - a tile that tile_fully_visible() lets through unmasked is fully visible (rows below Sq);
//   - apply() leaves exactly the visible scores and sets the others to -inf (rows below Sq).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <cute/tensor.hpp>

#include "device/mask_policy.cuh"
#include "device/mma_fragment_sm80.cuh"
#include "kernels/dense/sm80/forward/forward_config.cuh"

namespace attnkit {
namespace {

bool visible(int i, int j, int sq, int sk, int left, int right) {
  const long diagonal = long(i) + sk - sq;
  return j >= 0 && j < sk && (left < 0 || j >= diagonal - left) && (right < 0 || j <= diagonal + right);
}

struct Window {
  int sq, sk, left, right;
};

Window random_window(std::mt19937& rng) {
  std::uniform_int_distribution<int> length(0, 700);
  std::uniform_int_distribution<int> bound(0, 400);
  std::uniform_int_distribution<int> kind(0, 3);
  Window w{std::max(1, length(rng)), length(rng), -1, -1};
  switch (kind(rng)) {
    case 0: break;                                     // no mask: key length only
    case 1: w.right = 0; break;                        // causal
    case 2: w.left = bound(rng); w.right = 0; break;   // causal sliding window
    default: w.left = bound(rng) - 1; w.right = bound(rng) - 1; break;  // any window, -1 included
  }
  return w;
}

template <int kShapeIndex>
void check_tile_shape(int trials) {
  using Config = sm80::ForwardConfig<kShapeIndex, DType::kBFloat16>;
  constexpr int kBlockM = Config::kBlockM;
  constexpr int kBlockN = Config::kBlockN;
  using namespace cute;
  typename Config::TiledMma mma;
  std::mt19937 rng(1234 + kShapeIndex);
  for (int trial = 0; trial < trials; ++trial) {
    const Window w = random_window(rng);
    SCOPED_TRACE(::testing::Message() << "tile " << kBlockM << "x" << kBlockN << " Sq " << w.sq << " Sk " << w.sk
                                      << " window (" << w.left << ", " << w.right << ")");
    const device::WindowMask mask{w.sq, w.sk, w.left, w.right};
    for (int row_begin = 0; row_begin < w.sq; row_begin += kBlockM) {
      const device::TileRange tiles = mask.template key_tiles<kBlockN>(row_begin, row_begin + kBlockM);
      const int row_end = std::min(row_begin + kBlockM, w.sq);
      for (int i = row_begin; i < row_end; ++i) {
        for (int j = 0; j < w.sk; ++j) {
          if (visible(i, j, w.sq, w.sk, w.left, w.right)) {
            ASSERT_TRUE(!tiles.empty() && j >= tiles.begin * kBlockN && j < tiles.end * kBlockN)
                << "visible key " << j << " of row " << i << " outside tiles [" << tiles.begin << ", " << tiles.end
                << ")";
          }
        }
      }
      for (int n = tiles.begin; n < tiles.end; ++n) {
        const int col_begin = n * kBlockN;
        const bool fully_visible = mask.tile_fully_visible(row_begin, row_begin + kBlockM, col_begin, col_begin + kBlockN);
        for (int thread = 0; thread < Config::kThreads; ++thread) {
          auto thread_mma = mma.get_thread_slice(thread);
          Tensor coords = thread_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
          Tensor scores = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
          fill(scores, 1.0f);
          if (!fully_visible) {
            mask.apply(device::rows_cols_view(scores), device::rows_cols_view(coords), row_begin, col_begin);
          }
          for (int e = 0; e < size(scores); ++e) {
            const int i = row_begin + get<0>(coords(e));
            const int j = col_begin + get<1>(coords(e));
            if (i >= w.sq) continue;  // rows past Sq are never stored
            const bool want = visible(i, j, w.sq, w.sk, w.left, w.right);
            ASSERT_EQ(scores(e) == 1.0f, want) << "thread " << thread << " row " << i << " key " << j
                                               << (fully_visible ? " (tile taken as fully visible)" : "");
            if (!want) ASSERT_TRUE(std::isinf(scores(e)) && scores(e) < 0);
          }
        }
      }
    }
  }
}

TEST(WindowMask, Tile128x128FourWarps) { check_tile_shape<0>(60); }
TEST(WindowMask, Tile128x64FourWarps) { check_tile_shape<1>(60); }
TEST(WindowMask, Tile128x64EightWarps) { check_tile_shape<3>(60); }

TEST(WindowMask, EmptyRangesWhenNothingIsVisible) {
  // Sk = 0: no key at all.
  EXPECT_TRUE((device::WindowMask{5, 0, -1, -1}.key_tiles<64>(0, 128).empty()));
  // Causal with Sq > Sk: the first Sq - Sk rows see nothing; a tile of only such rows has no key tile.
  EXPECT_TRUE((device::WindowMask{300, 10, -1, 0}.key_tiles<64>(0, 128).empty()));
  EXPECT_FALSE((device::WindowMask{300, 10, -1, 0}.key_tiles<64>(256, 384).empty()));
  // A window (0, 0) on Sq = Sk sees only the diagonal.
  const device::TileRange diagonal = device::WindowMask{256, 256, 0, 0}.key_tiles<64>(128, 256);
  EXPECT_EQ(diagonal.begin, 2);
  EXPECT_EQ(diagonal.end, 4);
}

}  // namespace
}  // namespace attnkit
