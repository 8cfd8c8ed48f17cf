// Work lists and the threaded loop of the CPU dense backend. Work items are independent (each writes
// its own output rows), so the results do not depend on the number of threads or on which thread ran
// which item. Items are sorted by estimated cost, largest first, and handed out one at a time
// (OpenMP dynamic schedule): longest-processing-time-first, which balances causal and varlen work where
// the last query tiles of a sequence cost up to twice the average.
#pragma once

#include <cstddef>
#include <new>
#include <optional>
#include <vector>

#include "cpu/dense_cpu_context.h"

namespace attnkit::cpu {

// Query tiles of every (sequence, kv head): forward, and the dq pass of backward.
std::vector<QueryTile> make_query_tiles(const DenseCpuContext& ctx);
// Key tiles of every (sequence, kv head): the dk/dv pass of backward (keys no query sees included, so
// that their dk and dv are written as zeros).
std::vector<KeyTile> make_key_tiles(const DenseCpuContext& ctx);

// Runs run_item(item, scratch) for every item on the OpenMP threads, each thread with its own scratch
// (allocated once per call, never in the loop). Returns false when a thread could not allocate its
// scratch (its items were not run).
template <typename Item, typename RunItem>
bool run_tiles_in_parallel(const DenseCpuContext& ctx, bool backward, const std::vector<Item>& items,
                           RunItem run_item) {
  bool allocation_failed = false;
  const auto count = static_cast<std::ptrdiff_t>(items.size());
#pragma omp parallel
  {
    std::optional<TileScratch> scratch;
    try {
      scratch.emplace(ctx, backward);
    } catch (const std::bad_alloc&) {
#pragma omp atomic write
      allocation_failed = true;
    }
#pragma omp for schedule(dynamic, 1)
    for (std::ptrdiff_t i = 0; i < count; ++i) {
      if (scratch) run_item(items[static_cast<std::size_t>(i)], *scratch);
    }
  }
  return !allocation_failed;
}

}  // namespace attnkit::cpu
