#include "host/split_kv_heuristic.h"

#include <algorithm>

namespace attnkit::host {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

int split_kv_count(const SplitKvShape& shape) {
  if (shape.batch_heads <= 0 || shape.query_tiles <= 0 || shape.key_length <= 0 || shape.key_tile <= 0 ||
      shape.sm_count <= 0 || shape.ctas_per_sm <= 0) {
    return 1;
  }
  const std::int64_t slots = std::int64_t{shape.sm_count} * shape.ctas_per_sm;
  const std::int64_t ctas = shape.batch_heads * shape.query_tiles;
  if (static_cast<double>(ctas) >= kFullOccupancy * static_cast<double>(slots)) return 1;
  const std::int64_t key_tiles = ceil_div(shape.key_length, shape.key_tile);
  const std::int64_t max_splits =
      std::min<std::int64_t>({kMaxKvSplits, key_tiles / kMinKeyTilesPerSplit, ceil_div(2 * slots, ctas)});
  if (max_splits <= 1) return 1;

  // Wave efficiency of every candidate; a count that leaves the tiles per split unchanged from the
  // previous count only adds CTAs that finish no sooner, so it is skipped.
  auto efficiency = [&](std::int64_t splits) {
    const std::int64_t total = ctas * splits;
    return static_cast<double>(total) / static_cast<double>(ceil_div(total, slots) * slots);
  };
  auto useful = [&](std::int64_t splits) {
    return splits == 1 || ceil_div(key_tiles, splits) != ceil_div(key_tiles, splits - 1);
  };
  double best = 0.0;
  for (std::int64_t splits = 1; splits <= max_splits; ++splits) {
    if (useful(splits)) best = std::max(best, efficiency(splits));
  }
  for (std::int64_t splits = 1; splits <= max_splits; ++splits) {
    if (useful(splits) && efficiency(splits) >= 0.85 * best) return static_cast<int>(splits);
  }
  return 1;
}

}  // namespace attnkit::host
