// Device-ready parameters of the sm_80+ dense backward and the launch entry points of its kernels.
// Host code (dense_backward_sm80.cu) fills DenseBackwardParams from the validated DenseProblem; the
// main kernel has one explicit instantiation per (dtype, tile), each in its own .cu file.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "attnkit/types.h"

namespace attnkit::sm80::backward {

// Strides are in elements. BSHD rows of batch b start at b * batch_stride; varlen sets batch_stride
// to 0 and starts sequence b at row cu_seqlens[b] (clamped to the token count).
struct TensorStrides {
  std::int64_t batch = 0;
  std::int64_t row = 0;
  std::int64_t head = 0;
};

struct DenseBackwardParams {
  const void* q = nullptr;     // [B, Sq, Hq, D] or [Tq, Hq, D]
  const void* k = nullptr;     // [B, Sk, Hkv, D] or [Tk, Hkv, D]
  const void* v = nullptr;     // [B, Sk, Hkv, Dv] or [Tk, Hkv, Dv]
  const void* out = nullptr;   // like q with Dv
  const void* dout = nullptr;  // like out
  void* dq = nullptr;          // like q
  void* dk = nullptr;          // like k
  void* dv = nullptr;          // like v
  TensorStrides q_strides, k_strides, v_strides, out_strides, dout_strides, dq_strides, dk_strides, dv_strides;

  const float* lse = nullptr;  // [B, Hq, Sq] or [Hq, Tq], natural log; -inf marks a row with no key
  TensorStrides lse_strides;   // batch, row (query index) and head strides of lse
  const float* sinks = nullptr;  // [Hq] or null
  std::int64_t sinks_stride = 0;
  float* dsinks = nullptr;       // [Hq] or null
  std::int64_t dsinks_stride = 0;

  const std::int32_t* cu_seqlens_q = nullptr;  // [B + 1] or null (BSHD)
  const std::int32_t* cu_seqlens_k = nullptr;  // [B + 1] or null (BSHD)

  // Workspace (see dense_backward_workspace_bytes).
  float* delta = nullptr;             // [Hq, total_q]: D_i = <dO_i, O_i>
  float* dq_accum = nullptr;          // fp32 dQ / scale in the main kernel's order (DqAccumLayout)
  std::int32_t* dq_semaphore = nullptr;  // [B, Hq, num_m_blocks]: deterministic mode only

  // Tail split (BackwardTailPlan, dense_backward_sm80_config.h; tail_tiles = 0: off). CTAs
  // [0, tail_first_cta) own the key tiles of the same index whole; the last tail_tiles key tiles
  // (tail_steps_per_tile steps each) are shared out by steps over the tail_ctas CTAs after them. A CTA
  // with part of a tile stores its dK, dV (fp32, unscaled) as one of the tile's parts; the one whose
  // steps complete the tile's count in tail_counters sums the parts and writes dk and dv.
  // Key-tile order (round 9): 0 = n_block fastest, then kv head, then batch; > 0 = the (batch, kv head)
  // pairs in groups of tile_group, and inside a group n_block slowest, so that the largest tiles of a
  // causal or windowed launch start first and its last wave holds the smallest.
  int tile_group = 0;

  int tail_first_cta = 0;
  int tail_tiles = 0;
  int tail_ctas = 0;
  int tail_steps_per_tile = 0;
  std::int32_t* tail_counters = nullptr;  // [tail_tiles], zeroed before the main kernel
  float* tail_parts = nullptr;            // [tail_ctas + tail_tiles][2 (dK, dV)][kBlockN * tier]

  int batch = 0;
  int seqlen_q = 0;  // Sq, or max_seqlen_q for varlen
  int seqlen_k = 0;  // Sk, or max_seqlen_k for varlen
  int total_q = 0;   // rows of q (B * Sq for BSHD)
  int total_k = 0;   // rows of k (B * Sk for BSHD)
  int heads_q = 0;
  int heads_kv = 0;
  int group = 1;     // Hq / Hkv
  int head_dim = 0;
  int head_dim_v = 0;
  int num_m_blocks = 0;  // ceil(seqlen_q / kBlockM)
  int num_n_blocks = 0;  // ceil(seqlen_k / kBlockN)
  float scale = 1.0f;
  float softcap = 0.0f;  // 0 = off
  // Window bounds with -1 = unbounded; a bound that cannot cut anything is passed as -1.
  int window_left = -1;
  int window_right = -1;
  bool deterministic = false;
  bool fp16 = false;  // element type of the pre/post kernels: fp16 when true, else bf16
};

// The main kernel (dK, dV, and dQ into dq_accum) for one element type and tile (BackwardTile<tier,
// stages> of dense_backward_sm80_config.h).
template <typename Element, typename Tile>
Status launch_dense_backward_main(const DenseBackwardParams& params, cudaStream_t stream);

// delta = rowsum(dO * O); dq_accum and the semaphores must be zeroed before the main kernel.
Status launch_dense_backward_preprocess(const DenseBackwardParams& params, cudaStream_t stream);
// dsinks[h] = -sum_i exp(sink_h - lse_i) * delta_i, in a fixed order (deterministic).
Status launch_dense_backward_sinks(const DenseBackwardParams& params, cudaStream_t stream);
// dq = scale * dq_accum, converted to the element type; `tier` (64, 128, 256) names the layout of
// dq_accum, that of the main kernel's tiles of that head-dim tier.
Status launch_dense_backward_postprocess(const DenseBackwardParams& params, int tier, cudaStream_t stream);

}  // namespace attnkit::sm80::backward
