// Which work tile a CTA computes, and where its sequence lives.
//
// The grid is one-dimensional: grid.x = num_m_blocks * B * Hq * num_splits, checked on the host to be
// below 2^31 - 1, so batch * heads above 65,535 needs no second grid axis.
#pragma once

#include <cstdint>

#include "device/mask_policy.cuh"
#include "kernels/dense/sm80/forward/forward_params.h"

namespace attnkit::sm80 {

struct ForwardWork {
  int m_block;  // query tile
  int head;     // query head
  int batch;    // batch entry or varlen sequence
  int split;    // key-range split (0 when not split)
};

// Work order. Uniform tiles (no mask): the query tiles of one head are adjacent, so CTAs running at the
// same time read the same K/V from L2. Causal / window: heavy first, in sections of p.section_pairs
// (batch, head) pairs one after the other; within a section the tiles with the most key tiles go first,
// heads fastest, so the last wave holds short tiles instead of long ones, and the CTAs running at the same
// time read the K/V of about one section, sized for L2 by forward_host.cu (one section for long heads).
struct ForwardTileScheduler {
  static std::int64_t grid_size(const ForwardParams& p) {
    return std::int64_t{p.num_m_blocks} * p.batch * p.heads_q * p.num_splits;
  }

  __device__ static ForwardWork work(const ForwardParams& p, int linear) {
    ForwardWork w;
    w.split = linear % p.num_splits;
    linear /= p.num_splits;
    if (p.heavy_first) {
      const int section_ctas = p.section_pairs * p.num_m_blocks;
      const int section = linear / section_ctas;
      const int in_section = linear - section * section_ctas;
      const int first_pair = section * p.section_pairs;
      const int pairs = min(p.section_pairs, p.batch * p.heads_q - first_pair);  // the last one may be short
      const int pair = first_pair + in_section % pairs;
      w.m_block = p.num_m_blocks - 1 - in_section / pairs;
      w.head = pair % p.heads_q;
      w.batch = pair / p.heads_q;
    } else {
      w.m_block = linear % p.num_m_blocks;
      linear /= p.num_m_blocks;
      w.head = linear % p.heads_q;
      w.batch = linear / p.heads_q;
    }
    return w;
  }
};

// Where one batch entry (or varlen sequence) starts in every tensor, in elements, head 0 and row 0.
struct SequenceSpan {
  int seqlen_q;
  int seqlen_k;
  std::int64_t first_token_q;  // token index of row 0 among all total_q rows (split-KV workspace rows)
  std::int64_t q_offset;
  std::int64_t k_offset;
  std::int64_t v_offset;
  std::int64_t out_offset;
  std::int64_t lse_offset;
};

// Varlen offsets come from device memory that the host cannot check without a sync: every offset is
// clamped into [0, total] and every length to its max_seqlen bound, so bad metadata gives wrong
// numbers at worst, never an access out of bounds.
__device__ __forceinline__ SequenceSpan sequence_span(const ForwardParams& p, int batch) {
  SequenceSpan s;
  if (p.varlen) {
    const std::int64_t q_begin = min(max(std::int64_t{p.cu_seqlens_q[batch]}, std::int64_t{0}), p.total_q);
    const std::int64_t q_end = min(max(std::int64_t{p.cu_seqlens_q[batch + 1]}, q_begin), p.total_q);
    const std::int64_t k_begin = min(max(std::int64_t{p.cu_seqlens_k[batch]}, std::int64_t{0}), p.total_k);
    const std::int64_t k_end = min(max(std::int64_t{p.cu_seqlens_k[batch + 1]}, k_begin), p.total_k);
    s.seqlen_q = static_cast<int>(min(q_end - q_begin, std::int64_t{p.seqlen_q}));
    s.seqlen_k = static_cast<int>(min(k_end - k_begin, std::int64_t{p.seqlen_k}));
    s.first_token_q = q_begin;
    s.q_offset = q_begin * p.q_row_stride;
    s.k_offset = k_begin * p.k_row_stride;
    s.v_offset = k_begin * p.v_row_stride;
    s.out_offset = q_begin * p.out_row_stride;
    s.lse_offset = q_begin * p.lse_row_stride;
  } else {
    s.seqlen_q = p.seqlen_q;
    s.seqlen_k = p.seqlen_k;
    s.first_token_q = std::int64_t{batch} * p.seqlen_q;
    s.q_offset = batch * p.q_batch_stride;
    s.k_offset = batch * p.k_batch_stride;
    s.v_offset = batch * p.v_batch_stride;
    s.out_offset = batch * p.out_batch_stride;
    s.lse_offset = batch * p.lse_batch_stride;
  }
  return s;
}

// The key tiles split `split` of `num_splits` owns out of all the tiles the query tile needs: equal
// contiguous shares, the last ones possibly empty (their partial state is the empty state).
__device__ __forceinline__ device::TileRange split_tiles(device::TileRange all, int split, int num_splits) {
  if (num_splits == 1 || all.empty()) return all;
  const int per_split = (all.end - all.begin + num_splits - 1) / num_splits;
  const int begin = all.begin + split * per_split;
  const int end = min(all.end, begin + per_split);
  return {begin, end};
}

}  // namespace attnkit::sm80
