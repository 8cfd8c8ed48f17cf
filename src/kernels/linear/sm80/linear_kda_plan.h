// Launch planning of the chunk-parallel KDA forward (linear_kda_chunked_sm80_kernel.cuh), as
// linear_gdn_plan.h does it for GDN: pure functions of the problem and the device's cached limits, so
// that the host refuses a device whose blocks get too little shared memory before anything is launched.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/linear/sm80/linear_gdn_plan.h"

namespace attnkit::sm80 {

// Bytes of shared memory of one CTA of each kernel (fp16 / bf16; the Shared structs, checked by
// static_asserts beside them).

// prep: q (then a v piece), k and k Gamma [64][136], G fp32 [64][136], A (fp32, then T_beta's pair), beta
// and the L2 factors: 103.75 KB.
constexpr std::size_t kda_prep_shared_bytes() {
  return 3 * kGdnKeyTileBytes + 64 * 136 * 4 + 64 * 72 * 4 + 3 * 64 * 4;
}

// state: per cp.async stage (two) the chunk's w_neg and the k pair [64][136] x 3, its fp32 u slice
// [64][slice + 4]; S as Element [128][slice + 8], the v_new pair [64][slice + 8] x 2, exp(G_last) [128]
// per stage: 125 KB at a slice of 16, 141 KB at 32, 173 KB at 64 (more than sm_80's 163 KB).
constexpr std::size_t kda_state_shared_bytes(int slice) {
  const std::size_t stage = 3 * kGdnKeyTileBytes + 64 * static_cast<std::size_t>(slice + 4) * 4;
  return 2 * stage + (128 + 2 * 64) * static_cast<std::size_t>(slice + 8) * 2 + 2 * 128 * 4;
}

// The KDA state pass's slice: GDN's forward rule (linear_gdn_plan.h: slices of 64 where that grid still
// gives every SM a CTA and adds no padding columns), with slices of 64 only where a block may opt in to
// their 173 KB (sm_90's 227 KB; sm_80 keeps slices of 32). The k pair makes each chunk's operands 48 KB,
// read once per slice CTA: at (4, 8192, 32, 32) slices of 32 read 192 KB of them per chunk and value head,
// slices of 64 96 KB, and run 16 warps per SM where slices of 32 (141 KB, one CTA per SM) run 8.
constexpr int kda_forward_state_slice(std::int64_t num_sequences, std::int64_t heads_v, std::int64_t value_dim,
                                      std::int64_t sm_count, std::int64_t shared_memory_per_block_optin) {
  const int slice = gdn_forward_state_slice(num_sequences, heads_v, value_dim, sm_count);
  const bool fits64 = kda_state_shared_bytes(64) <= static_cast<std::size_t>(shared_memory_per_block_optin);
  return slice == 64 && !fits64 ? 32 : slice;
}

// output: scale q Gamma [64][136], the P pair [64][72] x 2, S [128][136], the v_new pair [64][136] x 2:
// 103 KB.
constexpr std::size_t kda_output_shared_bytes() { return 5 * kGdnKeyTileBytes + 2 * 64 * 72 * 2; }

// The state slice the launcher takes (kda_forward_state_slice), or 0 where a kernel needs more shared
// memory than a block may opt in to (the caller refuses the call with NotImplemented): the state pass
// needs 125 / 141 KB at slices of 16 / 32, so sm_80 (163 KB) and sm_90 (227 KB) run it, sm_86 / sm_89 /
// sm_120 (99 KB) do not.
constexpr int kda_forward_plan(std::int64_t num_sequences, std::int64_t heads_v, std::int64_t value_dim,
                               std::int64_t sm_count, std::int64_t shared_memory_per_block_optin) {
  const int slice = kda_forward_state_slice(num_sequences, heads_v, value_dim, sm_count, shared_memory_per_block_optin);
  const std::size_t optin = static_cast<std::size_t>(shared_memory_per_block_optin);
  const bool fits = kda_prep_shared_bytes() <= optin && kda_state_shared_bytes(slice) <= optin &&
                    kda_output_shared_bytes() <= optin;
  return fits ? slice : 0;
}

}  // namespace attnkit::sm80
