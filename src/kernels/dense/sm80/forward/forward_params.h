// Device-ready parameters of the sm80 dense forward and its split-KV combine, built on the host from a
// validated DenseProblem (forward_host.cu). Plain data: it is passed by value as a __grid_constant__.
//
// Tiles and their instantiations: kForwardTileShapes is the one list both the host (which picks a
// shape) and the instantiation generator (generate_instantiations.py) read.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/types.h"

namespace attnkit::sm80 {

struct ForwardParams {
  // Tensors. Strides are in elements; the last dim is contiguous. Varlen tensors have no batch axis
  // (their batch strides are 0) and rows are tokens.
  const void* q = nullptr;  // BSHD [B, Sq, Hq, D]   varlen [Tq, Hq, D]
  const void* k = nullptr;  // BSHD [B, Sk, Hkv, D]  varlen [Tk, Hkv, D]
  const void* v = nullptr;  // BSHD [B, Sk, Hkv, Dv] varlen [Tk, Hkv, Dv]
  void* out = nullptr;      // BSHD [B, Sq, Hq, Dv]  varlen [Tq, Hq, Dv]
  float* lse = nullptr;     // optional; BSHD [B, Hq, Sq]  varlen [Hq, Tq]
  const float* sinks = nullptr;         // optional, [Hq], logit units
  const std::int32_t* cu_seqlens_q = nullptr;  // varlen only, [B + 1], device
  const std::int32_t* cu_seqlens_k = nullptr;  // varlen only, [B + 1], device
  std::int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  std::int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  std::int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  std::int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  std::int64_t lse_batch_stride = 0, lse_head_stride = 0, lse_row_stride = 0;

  // Sizes. Varlen: seqlen_q / seqlen_k are the max_seqlen bounds (the grid covers seqlen_q rows) and
  // total_q / total_k the token counts that every index read from cu_seqlens is clamped to.
  bool varlen = false;
  int batch = 0;
  int heads_q = 0;
  int group = 1;  // Hq / Hkv: query head h reads kv head h / group
  int seqlen_q = 0;
  int seqlen_k = 0;
  std::int64_t total_q = 0;
  std::int64_t total_k = 0;
  int head_dim = 0;    // D, <= the tile's padded head dim
  int head_dim_v = 0;  // Dv, likewise

  // Scores: with softcap c > 0 the kernel keeps u = (scale / c) * <q, k> and takes tanh, so s = c * u;
  // without, u = <q, k> and s = scale * u. softmax_scale_log2 = (logit per unit) * log2(e).
  float score_premultiplier = 1.0f;  // scale / c, used only when softcap > 0
  float softmax_scale_log2 = 0.0f;
  bool softcap = false;
  int window_left = -1;   // -1 = unbounded (also for any bound >= Sk, which leaves no key out)
  int window_right = -1;  // -1 = unbounded (also for any bound >= Sq); 0 = causal

  // Work decomposition.
  int num_m_blocks = 0;    // ceil(seqlen_q / kBlockM)
  int num_splits = 1;      // > 1: split-KV, partial states go to the workspace, then a combine kernel
  bool heavy_first = false;  // order query tiles from the most key tiles to the fewest (causal / window)
  int section_pairs = 0;     // heavy_first: (batch, head) pairs per section of that order, 1 .. batch * heads_q

  // Split-KV workspace (fp32), num_splits > 1 only:
  float* o_partial = nullptr;    // [num_splits, total_q, Hq, Dv]
  float* lse_partial = nullptr;  // [num_splits, Hq, total_q]
};

// One tile configuration: padded head dims, query rows x key rows per CTA, warps.
struct ForwardTileShape {
  int head_dim;    // padded D: every D <= head_dim (multiple of 8) runs here
  int head_dim_v;  // padded Dv
  int block_m;
  int block_n;
  int warps;
  constexpr int shared_memory_bytes() const { return 2 * (block_m * head_dim + block_n * (head_dim + head_dim_v)); }
};

// In order of cost: the host picks the first that covers (D, Dv) and fits the device's shared memory.
// D <= 192 follow FlashAttention-2's A100/H100 choices: 128 query rows; 128 keys at D = 64 (48 KiB) and
// 64 keys above (D = 128: 64 KiB, two CTAs per SM); 8 warps at D = 192, where the output accumulator
// would otherwise pass 128 registers per thread. D = 256 takes 64 x 64 tiles of 4 warps (96 KiB, two
// CTAs per SM on the H100, so that one CTA's loads and softmax hide under the other's GEMMs): on the
// H100 it ran 0.99-1.12x torch flash where 128 x 64 x 8 warps (128 KiB, one CTA per SM) ran 0.89-1.01x
// (backward/README.md, same run); it also fits the 99 KiB of sm_86 / sm_89.
inline constexpr ForwardTileShape kForwardTileShapes[] = {
    {64, 64, 128, 128, 4},
    {128, 128, 128, 64, 4},
    {192, 128, 128, 64, 8},
    {256, 256, 64, 64, 4},
};
inline constexpr int kForwardTileShapeCount = sizeof(kForwardTileShapes) / sizeof(kForwardTileShapes[0]);

// The heavy-first order walks the (batch, head) pairs in sections whose K and V together take at most
// kSectionKvBytes, so that the CTAs running at the same time share their K/V in L2 (ForwardTileScheduler),
// for heads of at most kSectionMaxQueryTiles query tiles; longer heads keep one section. The K/V of the
// issue-3 grid is 134 MB against the H100's 50 MB of L2, and with one section the CTAs in flight at S = 1024
// are one or two query tiles of every head. Same-process A/B on the H100 (NOTES.md, stop 13), causal, 8
// sections of 16 MiB against one: S = 1024 +6.7% (D = 64), +3.5% (D = 128), +11% (D = 256); S = 4096
// -3.1%, -3.6%, -1.4% (32-64 query tiles); S = 16384 +3.5%, +1.2%, -3.9%. Near-equal sections, so the last
// one is not a short one. A pure function of the launch, so the CPU tests pin it (dense_forward_sections_test).
inline constexpr std::int64_t kSectionKvBytes = std::int64_t{16} << 20;
inline constexpr int kSectionMaxQueryTiles = 16;

// pairs = batch * heads_q; kv_row_elements = D + Dv; group = Hq / Hkv. Returns the pairs per section,
// 1 .. pairs (pairs when the order keeps one section).
inline int heavy_first_section_pairs(std::int64_t pairs, std::int64_t group, std::int64_t seqlen_k,
                                     std::int64_t kv_row_elements, std::int64_t element_bytes, int num_m_blocks) {
  if (num_m_blocks > kSectionMaxQueryTiles) return static_cast<int>(pairs);
  // Query heads of one group read the same K/V and are adjacent in a section.
  const std::int64_t kv_bytes_per_pair = std::max<std::int64_t>(1, seqlen_k * kv_row_elements * element_bytes / group);
  const std::int64_t per_section = std::clamp<std::int64_t>(kSectionKvBytes / kv_bytes_per_pair, 1, pairs);
  const std::int64_t sections = (pairs + per_section - 1) / per_section;
  return static_cast<int>((pairs + sections - 1) / sections);
}

// One launch of a compiled (tile shape, dtype) instantiation; defined in forward_launch.cuh and
// explicitly instantiated once per generated .cu file. stream: a cudaStream_t.
template <int kShapeIndex, DType kDType>
Status launch_dense_forward(const ForwardParams& params, void* stream);

// Combines the split-KV partial states into out / lse (split_kv_combine.cu), for fp16 and bf16.
Status launch_split_kv_combine(const ForwardParams& params, DType dtype, void* stream);

}  // namespace attnkit::sm80
