// What the CPU dense-attention kernels read: the validated problem turned into raw pointers, strides and
// per-sequence geometry, plus the work items the drivers hand to the threads and each thread's scratch.
// ISA-independent: both the AVX2 and the portable kernel sets (dense_cpu_tiles.inc) read these types.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "attnkit/dense.h"
#include "host/dense_problem.h"

namespace attnkit::cpu {

struct OrderedDq;  // dense_cpu_schedule.h

// Tile sizes. A query tile holds kBlockRows "packed" rows: for GQA the G query heads that share one kv
// head are interleaved (packed row r = i * G + g for query i and head g of the group), so every K/V tile
// that is loaded serves all G heads. With D = Dv = 128 the per-thread forward working set is Q^T, O^T,
// a K and a V tile (64 KiB each) and the 128 x 128 score tile (64 KiB): 320 KiB, inside the 512 KiB L2
// of a Zen core, while the micro-kernel's operand panels (depth x 16 floats, 8 KiB) stay in L1.
// Measured on the 2-core AMD EPYC host, one thread, S = 2048, D = 128: 64 x 64 tiles 26 GFLOP/s,
// 128 x 64 28, 64 x 128 27, 128 x 128 29, 32 x 64 24 (deeper GEMMs, fewer K/V reloads per query row).
constexpr std::int64_t kBlockRows = 128;  // packed query rows per tile
constexpr std::int64_t kBlockKeys = 128;  // keys per tile
constexpr std::int64_t kMaxHeadDimV = host::kMaxHeadDim;  // stack buffers of one row
// The vector axis of every tile is the packed query row; tiles are padded to a multiple of this width.
constexpr std::int64_t kRowPad = 8;

inline std::int64_t round_up(std::int64_t value, std::int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// A [B, S, H, X] (BSHD) or [T, H, X] (varlen) tensor as three strides in elements. The element offset of
// (batch b, token t, head h) is b * batch_stride + t * token_stride + h * head_stride; for varlen the
// batch stride is 0 and t already includes the sequence's first token. 64-bit throughout.
struct TokenTensorView {
  std::byte* data = nullptr;
  std::int64_t element_bytes = 0;
  std::int64_t batch_stride = 0;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;

  std::byte* row(std::int64_t batch, std::int64_t token, std::int64_t head) const {
    return data + (batch * batch_stride + token * token_stride + head * head_stride) * element_bytes;
  }
};

// The fp32 LSE, addressed as a TokenTensorView: BSHD [B, Hq, Sq], varlen [Hq, Tq].
struct LseView {
  float* data = nullptr;
  std::int64_t batch_stride = 0;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;

  float& at(std::int64_t batch, std::int64_t token, std::int64_t head) const {
    return data[batch * batch_stride + token * token_stride + head * head_stride];
  }
};

// One sequence of the batch (BSHD: batch index b; varlen: sequence b of cu_seqlens).
struct Sequence {
  std::int64_t batch = 0;          // index used with batch_stride (0 for varlen views)
  std::int64_t q_token_begin = 0;  // first query token (BSHD: 0, varlen: cu_seqlens_q[b])
  std::int64_t k_token_begin = 0;  // first key token (BSHD: 0, varlen: cu_seqlens_k[b])
  std::int64_t q_row_begin = 0;    // first row of the [total_q, Hq] delta buffer (BSHD: b * Sq)
  std::int64_t len_q = 0;
  std::int64_t len_k = 0;
};

struct DenseCpuContext {
  DType dtype = DType::kFloat32;
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;
  std::int64_t group = 1;  // G = Hq / Hkv
  std::int64_t head_dim = 0;
  std::int64_t head_dim_v = 0;
  float scale = 1.0f;
  float softcap = 0.0f;            // 0 = off
  std::int64_t window_left = -1;   // -1 = unbounded; clamped so that i + offset +- window cannot overflow
  std::int64_t window_right = -1;  // causal is 0
  std::vector<Sequence> sequences;

  TokenTensorView q, k, v, out;      // out: forward output, or backward's saved forward output
  TokenTensorView dout, dq, dk, dv;  // backward only
  LseView lse;                       // forward: optional output; backward: input
  const float* sinks = nullptr;      // [Hq], stride sinks_stride; null when absent
  std::int64_t sinks_stride = 0;
  float* dsinks = nullptr;           // backward, [Hq]
  std::int64_t dsinks_stride = 0;
  float* delta = nullptr;            // backward: [total_q, Hq], delta_i = <dO_i, O_i> per (row, head)

  // Backward dq, accumulated in fp32 by the dk/dv work items in a fixed order (see OrderedDq).
  float* dq_accumulator = nullptr;   // [total_q, Hq, D], unscaled (dq = scale * this)
  OrderedDq* dq_order = nullptr;
};

// Builds the context shared by forward and backward (q, k, v, out, lse, sinks and the sequences).
DenseCpuContext make_dense_cpu_context(const host::DenseProblem& problem, const TensorRef& q, const TensorRef& k,
                                       const TensorRef& v, const TensorRef& out, const TensorRef& lse,
                                       const TensorRef& sinks, const TensorRef& cu_seqlens_q,
                                       const TensorRef& cu_seqlens_k);
TokenTensorView make_token_view(const TensorRef& tensor, bool varlen);

// The half-open ranges of keys / queries that can be visible (semantics.md, bottom-right aligned window):
// key j is visible to query i iff  i + (Sk - Sq) - left <= j <= i + (Sk - Sq) + right.
struct IndexRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  bool empty() const { return end <= begin; }
};

// Keys visible to at least one of the queries [first_query, last_query].
inline IndexRange visible_keys(const DenseCpuContext& ctx, const Sequence& seq, std::int64_t first_query,
                               std::int64_t last_query) {
  const std::int64_t offset = seq.len_k - seq.len_q;
  IndexRange range{0, seq.len_k};
  if (ctx.window_left >= 0) range.begin = std::max<std::int64_t>(0, first_query + offset - ctx.window_left);
  if (ctx.window_right >= 0) range.end = std::min(seq.len_k, last_query + offset + ctx.window_right + 1);
  range.end = std::max(range.end, range.begin);
  return range;
}

// Queries that see at least one of the keys [first_key, last_key].
inline IndexRange visible_queries(const DenseCpuContext& ctx, const Sequence& seq, std::int64_t first_key,
                                  std::int64_t last_key) {
  const std::int64_t offset = seq.len_k - seq.len_q;
  IndexRange range{0, seq.len_q};
  if (ctx.window_right >= 0) range.begin = std::max<std::int64_t>(0, first_key - offset - ctx.window_right);
  if (ctx.window_left >= 0) range.end = std::min(seq.len_q, last_key - offset + ctx.window_left + 1);
  range.end = std::max(range.end, range.begin);
  return range;
}

// A forward (or backward dq) work item: packed rows [row_begin, row_end) of one (sequence, kv head).
struct QueryTile {
  std::int64_t sequence = 0;
  std::int64_t head_kv = 0;
  std::int64_t row_begin = 0;
  std::int64_t row_end = 0;
};

// A backward delta work item: queries [query_begin, query_end) of one sequence, every head.
struct QueryRange {
  std::int64_t sequence = 0;
  std::int64_t query_begin = 0;
  std::int64_t query_end = 0;
};

// A backward dk/dv work item: keys [key_begin, key_end) of one (sequence, kv head).
struct KeyTile {
  std::int64_t sequence = 0;
  std::int64_t head_kv = 0;
  std::int64_t key_begin = 0;
  std::int64_t key_end = 0;
};

// Per-thread scratch, grown (never shrunk) at the start of a call to fit the problem's head dims, never
// resized in a loop. Each thread keeps its own between calls (thread_scratch()), so that repeated small
// calls (decode) do not pay for allocation and page faults every time: at D = Dv = 128 that is about
// 330 KiB per thread after a forward and 0.8 MiB after a backward, held until the thread exits.
// Shapes in floats; "cols" is a query tile's padded packed-row count (<= kBlockRows).
struct TileScratch {
  std::vector<float> q_t;        // (D, cols): q of the tile, transposed, pre-multiplied (query_prescale)
  std::vector<float> q_rows;     // (cols, D): q rows (backward dk)
  std::vector<float> dout_t;     // (Dv, cols): dO transposed (backward)
  std::vector<float> dout_rows;  // (cols, Dv): dO rows (backward dv)
  std::vector<float> k_tile;     // (kBlockKeys, D): k converted to fp32
  std::vector<float> v_tile;     // (kBlockKeys, Dv)
  std::vector<float> scores;     // (kBlockKeys, cols): scores, then probabilities
  std::vector<float> tanh_values;  // (kBlockKeys, cols): tanh(u / c) when softcap is on (backward)
  std::vector<float> dscores;    // (kBlockKeys, cols): dP, then dS (backward)
  std::vector<float> acc_t;      // (Dv, cols): O^T (forward)
  std::vector<float> acc_k;      // (kBlockKeys, D): dK (backward)
  std::vector<float> acc_v;      // (kBlockKeys, Dv): dV (backward)
  std::vector<float> dq_rows;    // (cols, D): one query tile's dQ from one key tile (backward)
  std::vector<float> row_max;    // [cols] running max of the scores
  std::vector<float> row_sum;    // [cols]
  std::vector<float> row_alpha;  // [cols] rescale factor of the current key tile
  std::vector<float> row_lse;    // [cols] lse, +inf for rows with nothing visible (backward)
  std::vector<float> row_delta;  // [cols] (backward)
  std::vector<std::int32_t> row_lo;  // [cols] first visible key of the row
  std::vector<std::int32_t> row_hi;  // [cols] last visible key of the row
  std::vector<float> convert_row;    // [max(D, Dv)] one row converted to fp32

  // Grows every buffer the forward (or the backward) of ctx uses. Throws std::bad_alloc.
  void reserve_for(const DenseCpuContext& ctx, bool backward);
};

// The calling thread's scratch.
TileScratch& thread_scratch();

}  // namespace attnkit::cpu
