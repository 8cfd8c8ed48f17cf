// Device-ready parameters of the Hopper (sm_90a) dense forward, built on the host from a validated
// DenseProblem (forward_host_sm90.cu). Plain data; the launch (forward_kernel_sm90.cuh) adds the TMA
// descriptors it derives from them and passes everything as one __grid_constant__.
//
// kForwardTileShapesSm90 is the one list both the host (which picks a shape) and the instantiation
// generator (generate_instantiations.py) read.
#pragma once

#include <cstdint>

#include "attnkit/types.h"

namespace attnkit::sm90 {

struct ForwardParams {
  // Tensors. Strides are in elements; the last dim is contiguous. Varlen tensors have no batch axis and
  // rows are tokens. TMA needs every stride of an axis longer than 1 to be a multiple of 16 bytes.
  const void* q = nullptr;  // BSHD [B, Sq, Hq, D]   varlen [Tq, Hq, D]
  const void* k = nullptr;  // BSHD [B, Sk, Hkv, D]  varlen [Tk, Hkv, D]
  const void* v = nullptr;  // BSHD [B, Sk, Hkv, Dv] varlen [Tk, Hkv, Dv]
  void* out = nullptr;      // BSHD [B, Sq, Hq, Dv]  varlen [Tq, Hq, Dv]
  float* lse = nullptr;     // optional; BSHD [B, Hq, Sq]  varlen [Hq, Tq]
  const float* sinks = nullptr;                // optional, [Hq], logit units
  const std::int32_t* cu_seqlens_q = nullptr;  // varlen only, [B + 1], device
  const std::int32_t* cu_seqlens_k = nullptr;  // varlen only, [B + 1], device
  std::int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  std::int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  std::int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  std::int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  std::int64_t lse_batch_stride = 0, lse_head_stride = 0, lse_row_stride = 0;

  // Sizes. Varlen: seqlen_q / seqlen_k are the max_seqlen bounds (the grid covers seqlen_q rows);
  // total_q / total_k the token counts (the TMA tensors' row extents, and the clamp of cu_seqlens).
  bool varlen = false;
  int batch = 0;
  int heads_q = 0;
  int heads_kv = 0;
  int group = 1;  // Hq / Hkv: query head h reads kv head h / group
  int seqlen_q = 0;
  int seqlen_k = 0;
  std::int64_t total_q = 0;
  std::int64_t total_k = 0;
  int head_dim = 0;    // D, <= the tile's padded head dim (TMA zero-fills the columns beyond)
  int head_dim_v = 0;  // Dv, likewise

  // Scores, as in the sm80 forward: with softcap c > 0 the kernel keeps u = (scale / c) * <q, k> and
  // takes tanh, so s = c * u; without, u = <q, k> and s = scale * u. softmax_scale_log2 = (logit per
  // unit) * log2(e).
  float score_premultiplier = 1.0f;
  float softmax_scale_log2 = 0.0f;
  bool softcap = false;
  int window_left = -1;   // -1 = unbounded (also for any bound >= Sk)
  int window_right = -1;  // -1 = unbounded (also for any bound >= Sq); 0 = causal

  // Work decomposition.
  int num_m_blocks = 0;      // ceil(seqlen_q / kBlockM)
  int num_ctas = 0;          // persistent CTAs: min(work tiles, SMs)
  int* tile_counter = nullptr;  // workspace, zeroed before the launch: work tiles handed out past the first
  bool heavy_first = false;  // query tiles with the most key tiles first (causal / window)
  // With heavy_first (ForwardTileScheduler): the first head_by_head_pairs (batch, head) pairs are taken
  // head by head (heaviest query tile first), the rest in sections of section_heads pairs, within a
  // section query tile by query tile (heaviest first) over its heads; a section of 1 is head by head.
  // Both unused (0) without heavy_first.
  int head_by_head_pairs = 0;
  int section_heads = 0;
};

// One tile configuration: padded head dims and query rows x key rows per CTA. Every CTA has one
// producer warpgroup (TMA) and block_m / 64 consumer warpgroups (wgmma, 64 query rows each).
struct ForwardTileShape {
  int head_dim;    // padded D: every D <= head_dim (multiple of 8) runs here
  int head_dim_v;  // padded Dv
  int block_m;
  int block_n;
  int stages;      // K and V buffers each
  constexpr int shared_memory_bytes() const {
    return 2 * (block_m * head_dim + stages * block_n * (head_dim + head_dim_v));
  }
};

// In order of cost: the host picks the first that covers (D, Dv). Shared memory (227 KiB per block on
// H100) decides block_n: D = 128 with 128 keys and two stages takes 160 KiB, D = 256 with 80 keys
// 224 KiB, (192, 128) with 112 keys 188 KiB. D = 64 takes 192 query rows (three consumer warpgroups):
// its GEMMs are half as long per score as D = 128's, so more rows share each K/V tile and softmax.
// Two stages everywhere: three and four at D = 64 (which reads the most K/V per FLOP) measured within
// 1.5% of two at every S up to 4096 and inside the round-to-round noise above (NOTES.md, run 8), so
// the loads are not what limits it.
inline constexpr ForwardTileShape kForwardTileShapesSm90[] = {
    {64, 64, 192, 128, 2},
    {128, 128, 128, 128, 2},
    {192, 128, 128, 112, 2},
    {256, 256, 128, 80, 2},
};
inline constexpr int kForwardTileShapeCountSm90 = sizeof(kForwardTileShapesSm90) / sizeof(kForwardTileShapesSm90[0]);

// One launch of a compiled (tile shape, dtype) instantiation, defined in forward_kernel_sm90.cuh and
// explicitly instantiated once per generated .cu file. stream: a cudaStream_t.
template <int kShapeIndex, DType kDType>
Status launch_dense_forward_sm90(const ForwardParams& params, void* stream);

}  // namespace attnkit::sm90
