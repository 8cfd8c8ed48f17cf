#include "cpu/dense_cpu_schedule.h"

#include <algorithm>
#include <cstdint>

namespace attnkit::cpu {
namespace {

// Packing a tile and writing it out costs about as much as this many keys of attention work per row.
constexpr std::int64_t kTileOverheadKeys = 4;

template <typename Item>
void sort_largest_first(std::vector<Item>& items, std::vector<std::int64_t>& costs) {
  std::vector<std::size_t> order(items.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
  std::vector<Item> sorted;
  sorted.reserve(items.size());
  for (std::size_t i : order) sorted.push_back(items[i]);
  items.swap(sorted);
}

}  // namespace

std::vector<QueryTile> make_query_tiles(const DenseCpuContext& ctx) {
  std::vector<QueryTile> tiles;
  std::vector<std::int64_t> costs;
  for (std::size_t s = 0; s < ctx.sequences.size(); ++s) {
    const Sequence& seq = ctx.sequences[s];
    const std::int64_t rows = seq.len_q * ctx.group;
    for (std::int64_t head_kv = 0; head_kv < ctx.heads_kv; ++head_kv) {
      for (std::int64_t row_begin = 0; row_begin < rows; row_begin += kBlockRows) {
        const QueryTile tile{static_cast<std::int64_t>(s), head_kv, row_begin, std::min(row_begin + kBlockRows, rows)};
        const IndexRange keys =
            visible_keys(ctx, seq, tile.row_begin / ctx.group, (tile.row_end - 1) / ctx.group);
        tiles.push_back(tile);
        costs.push_back((tile.row_end - tile.row_begin) * (keys.end - keys.begin + kTileOverheadKeys));
      }
    }
  }
  sort_largest_first(tiles, costs);
  return tiles;
}

std::vector<KeyTile> make_key_tiles(const DenseCpuContext& ctx) {
  std::vector<KeyTile> tiles;
  std::int64_t most_tiles = 0;
  for (const Sequence& seq : ctx.sequences) most_tiles = std::max(most_tiles, (seq.len_k + kBlockKeys - 1) / kBlockKeys);
  for (std::int64_t index = 0; index < most_tiles; ++index) {
    const std::int64_t key_begin = index * kBlockKeys;
    for (std::size_t s = 0; s < ctx.sequences.size(); ++s) {
      const Sequence& seq = ctx.sequences[s];
      if (key_begin >= seq.len_k) continue;
      for (std::int64_t head_kv = 0; head_kv < ctx.heads_kv; ++head_kv) {
        tiles.push_back({static_cast<std::int64_t>(s), head_kv, key_begin, std::min(key_begin + kBlockKeys, seq.len_k)});
      }
    }
  }
  return tiles;
}

OrderedDq::OrderedDq(const DenseCpuContext& ctx)
    : group_first_tile(ctx.sequences.size() * static_cast<std::size_t>(ctx.heads_kv)) {
  std::vector<std::int64_t> first_turn;  // per query tile, in group order
  for (std::size_t s = 0; s < ctx.sequences.size(); ++s) {
    const Sequence& seq = ctx.sequences[s];
    const std::int64_t rows = seq.len_q * ctx.group;
    for (std::int64_t head_kv = 0; head_kv < ctx.heads_kv; ++head_kv) {
      group_first_tile[s * static_cast<std::size_t>(ctx.heads_kv) + static_cast<std::size_t>(head_kv)] =
          static_cast<std::int64_t>(first_turn.size());
      for (std::int64_t row_begin = 0; row_begin < rows; row_begin += kBlockRows) {
        const std::int64_t row_end = std::min(row_begin + kBlockRows, rows);
        const IndexRange keys = visible_keys(ctx, seq, row_begin / ctx.group, (row_end - 1) / ctx.group);
        first_turn.push_back(keys.empty() ? -1 : keys.begin / kBlockKeys);  // -1: no key tile ever adds
      }
    }
  }
  turn = std::vector<std::atomic<std::int64_t>>(first_turn.size());
  for (std::size_t i = 0; i < first_turn.size(); ++i) turn[i].store(first_turn[i], std::memory_order_relaxed);
}

}  // namespace attnkit::cpu
