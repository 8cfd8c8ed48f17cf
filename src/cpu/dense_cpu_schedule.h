// Work lists and the threaded loop of the CPU dense backend. Each work item writes its own output rows,
// so results do not depend on the number of threads or on which thread ran which item; the one shared
// output, backward's fp32 dq accumulator, is summed in a fixed order (OrderedDq).
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <thread>
#include <vector>

#include "cpu/dense_cpu_context.h"

namespace attnkit::cpu {

// Query tiles of every (sequence, kv head), for the forward. Sorted by estimated cost, largest first
// (longest-processing-time-first: with causal masks and varlen the last query tiles of a sequence cost
// up to twice the average).
std::vector<QueryTile> make_query_tiles(const DenseCpuContext& ctx);

// Key tiles of every (sequence, kv head), for the backward (keys that no query sees included, so that
// their dk and dv are written as zeros). Ordered by key-tile index first and (sequence, kv head) second:
// within one (sequence, kv head) key tiles come in ascending order, which OrderedDq relies on, and
// consecutive items mostly belong to different heads, so threads rarely wait on each other.
std::vector<KeyTile> make_key_tiles(const DenseCpuContext& ctx);

// Backward dq without atomics and in a fixed order. Every key tile adds its contribution to the dq rows
// of a query tile into the fp32 accumulator in turn: the key tiles that see query tile k form a
// contiguous range [first, last] of key-tile indices, and key tile t adds to query tile k only after
// key tile t - 1 has (turn[k] == t). Each dq element is therefore the same sum in the same order on
// every run, whatever the thread count. No deadlock: items are handed out in list order, where the key
// tiles of one (sequence, kv head) are ascending, and an item only ever waits on earlier items of its
// own (sequence, kv head), all of which have started.
struct OrderedDq {
  std::vector<std::int64_t> group_first_tile;  // [sequences * Hkv]: index of that group's query tile 0
  std::vector<std::atomic<std::int64_t>> turn;  // [query tiles of all groups]: key tile whose turn it is

  explicit OrderedDq(const DenseCpuContext& ctx);

  std::atomic<std::int64_t>& turn_of(const DenseCpuContext& ctx, std::int64_t sequence, std::int64_t head_kv,
                                     std::int64_t query_tile) {
    return turn[static_cast<std::size_t>(group_first_tile[static_cast<std::size_t>(sequence * ctx.heads_kv + head_kv)] +
                                         query_tile)];
  }

  static void wait_for(const std::atomic<std::int64_t>& turn, std::int64_t key_tile) {
    // Spin briefly, then yield the core: a wait is for at most one (query tile, key tile) step of the
    // thread ahead (about half a millisecond), and on an oversubscribed machine that thread may need it.
    for (int spins = 0; turn.load(std::memory_order_acquire) != key_tile; ++spins) {
      if (spins >= 256) std::this_thread::yield();
    }
  }
  static void pass(std::atomic<std::int64_t>& turn, std::int64_t key_tile) {
    turn.store(key_tile + 1, std::memory_order_release);
  }
};

// Runs run_item(item, scratch) for every item on the OpenMP threads, each with its own scratch
// (thread_scratch(), grown before any item runs). Items are handed out one at a time in list order
// (an atomic counter: OrderedDq relies on the order). Returns false, having run nothing, when a thread
// could not grow its scratch.
template <typename Item, typename RunItem>
bool run_tiles_in_parallel(const DenseCpuContext& ctx, bool backward, const std::vector<Item>& items,
                           RunItem run_item) {
  std::atomic<bool> allocation_failed{false};
  std::atomic<std::size_t> next_item{0};
  // No more threads than items: an idle team member only costs its start-up (and its scratch).
  const int threads = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(omp_get_max_threads()),
                                                             std::max<std::size_t>(items.size(), 1)));
#pragma omp parallel num_threads(threads)
  {
    TileScratch& scratch = thread_scratch();
    try {
      scratch.reserve_for(ctx, backward);
    } catch (const std::bad_alloc&) {
      allocation_failed.store(true);
    }
#pragma omp barrier
    if (!allocation_failed.load()) {
      for (std::size_t i = next_item.fetch_add(1); i < items.size(); i = next_item.fetch_add(1)) {
        run_item(items[i], scratch);
      }
    }
  }
  return !allocation_failed.load();
}

}  // namespace attnkit::cpu
