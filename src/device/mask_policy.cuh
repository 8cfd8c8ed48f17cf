// Which keys a query row may see, as a small policy (CUTLASS fmha_fusion style): trip counts for the
// key-tile loop plus an apply hook for the tiles that straddle a boundary. Its predicate is written from
// semantics.md section 1 independently of the float64 reference, which has its own.
//
//   visible(i, j)  iff  0 <= j < Sk  and  i + (Sk - Sq) - left <= j <= i + (Sk - Sq) + right
//
// bottom-right aligned, with left / right = -1 meaning unbounded. No mask is (-1, -1), where only the
// key-length bound applies; causal is (left, 0). One runtime policy covers the three: a compile-time
// variant per mask would triple the instantiations of every kernel (build time, guide rule), and the
// runtime cost is one integer test per key tile plus a per-element test on boundary tiles only.
//
// Host and device: tests/cpp/mask_policy_test.cu runs it on the host through the kernels' own fragment
// partitions, against a brute-force predicate.
//
// All indices are int: the forward host code rejects lengths above 2^30 - 1 and turns a bound that
// reaches past the sequence (left >= Sk, right >= Sq) into -1, so i + (Sk - Sq) +- bound cannot overflow.
#pragma once

#include <cmath>

#include <cute/tensor.hpp>

namespace attnkit::device {

// A half-open range of key tiles [begin, end); empty when begin >= end.
struct TileRange {
  int begin = 0;
  int end = 0;
  CUTE_HOST_DEVICE bool empty() const { return begin >= end; }
};

struct WindowMask {
  int seqlen_q = 0;
  int seqlen_k = 0;
  int window_left = -1;   // -1 = unbounded
  int window_right = -1;  // -1 = unbounded; 0 = causal

  CUTE_HOST_DEVICE int diagonal_offset() const { return seqlen_k - seqlen_q; }

  // Key tiles of kBlockN keys that hold at least one key visible to a row in [row_begin, row_end)
  // (row_end is clipped to Sq). Empty when no row of the range sees any key.
  template <int kBlockN>
  CUTE_HOST_DEVICE TileRange key_tiles(int row_begin, int row_end) const {
    row_end = row_end < seqlen_q ? row_end : seqlen_q;
    if (row_begin >= row_end || seqlen_k <= 0) return {};
    int first_key = 0;
    int end_key = seqlen_k;
    if (window_left >= 0) first_key = cute::max(first_key, row_begin + diagonal_offset() - window_left);
    if (window_right >= 0) end_key = cute::min(end_key, row_end - 1 + diagonal_offset() + window_right + 1);
    if (first_key >= end_key) return {};
    return {first_key / kBlockN, (end_key + kBlockN - 1) / kBlockN};
  }

  // True when every (row, col) of the tile rows [row_begin, row_end) x cols [col_begin, col_end) is
  // visible (rows past Sq are ignored: nothing of theirs is stored), so apply() can be skipped.
  CUTE_HOST_DEVICE bool tile_fully_visible(int row_begin, int row_end, int col_begin, int col_end) const {
    row_end = row_end < seqlen_q ? row_end : seqlen_q;
    if (row_begin >= row_end) return true;
    return col_end <= seqlen_k &&
           (window_left < 0 || col_begin >= row_end - 1 + diagonal_offset() - window_left) &&
           (window_right < 0 || col_end - 1 <= row_begin + diagonal_offset() + window_right);
  }

  // scores: a (rows, cols) view of a score tile (rows_cols_view); coords: the same view of the partition
  // of an identity tensor of the tile, holding (row, col) within the tile. Invisible scores become -inf.
  // Per row the visible keys are one interval, computed once; per element that leaves two compares
  // against the interval, with the column offsets of the element compile-time constants (the
  // identity layout is static; only the thread's own first column is a run-time value).
  template <class ScoreTensor, class CoordTensor>
  CUTE_HOST_DEVICE void apply(ScoreTensor&& scores, const CoordTensor& coords, int row_base,
                                        int col_base) const {
    using namespace cute;
    static_assert(decltype(rank(scores))::value == 2 && decltype(rank(coords))::value == 2, "(rows, cols) views");
    static_assert(decltype(size(scores))::value == decltype(size(coords))::value);
    const int thread_col = get<1>(coords(0, 0));
    CUTE_UNROLL
    for (int r = 0; r < size<0>(scores); ++r) {
      const int diagonal = row_base + get<0>(coords(r, 0)) + diagonal_offset();
      // Visible columns of this row: [first, end), relative to this thread's first column.
      const int first = (window_left >= 0 ? diagonal - window_left : 0) - col_base - thread_col;
      const int end = (window_right >= 0 ? cute::min(seqlen_k, diagonal + window_right + 1) : seqlen_k) - col_base -
                      thread_col;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const int col = get<1>(coords(r, c)) - thread_col;
        if (col < first || col >= end) scores(r, c) = -INFINITY;
      }
    }
  }
};

}  // namespace attnkit::device
