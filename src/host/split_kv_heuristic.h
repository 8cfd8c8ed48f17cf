// How many key splits a split-KV (flash-decoding) forward should use: a pure host function, unit-tested
// on the CPU (tests/cpp/split_kv_heuristic_test.cpp).
//
// Few query tiles against long keys leave most SMs idle when each CTA walks all its keys: decode has one
// query tile per (batch, head), so B * Hq CTAs for 132 SMs. Splitting the keys of each query tile into
// S contiguous ranges gives S times the CTAs; each writes a partial (o, lse) and a combine kernel merges
// them (semantics.md section 3). The cost: S partial states written and read back, and a second launch.
#pragma once

#include <cstdint>

namespace attnkit::host {

struct SplitKvShape {
  std::int64_t batch_heads = 0;  // B * Hq
  std::int64_t query_tiles = 0;  // query tiles per (batch, head)
  std::int64_t key_length = 0;   // keys each query tile reads (Sk, or max_seqlen_k for varlen)
  int key_tile = 64;             // keys per tile of the kernel
  int sm_count = 0;              // streaming multiprocessors of the device
  int ctas_per_sm = 1;           // CTAs of the kernel resident on one SM at once
};

// Upper bound of the split count: the workspace holds this many partial states per row at most.
constexpr int kMaxKvSplits = 128;
// Each split keeps at least this many key tiles, so that its fixed cost (the Q load, the partial
// write, its share of the combine) stays below its useful work.
constexpr int kMinKeyTilesPerSplit = 2;
// A grid that fills this fraction of the resident CTA slots in one wave is left unsplit.
constexpr double kFullOccupancy = 0.8;

// Returns the split count in [1, kMaxKvSplits]: 1 when the unsplit grid already fills the device or the
// keys are too short to share; otherwise the smallest count whose wave efficiency (busy CTA slots over
// all slots of the waves it needs) is within 85% of the best count's, since fewer splits cost less
// combine work for the same occupancy.
int split_kv_count(const SplitKvShape& shape);

}  // namespace attnkit::host
