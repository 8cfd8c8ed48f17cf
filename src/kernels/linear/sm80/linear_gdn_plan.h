// Launch planning of the chunk-parallel GDN forward (linear_gdn_chunked_sm80_kernel.cuh): pure functions
// of the problem and the device's cached limits (host::CudaDeviceLimits), so that the host refuses a
// device whose blocks get too little shared memory before anything is launched, and the CPU tests check
// the choice without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attnkit::sm80 {

// Value columns per CTA of the state pass, the only sequential stage (a latency chain per chunk: a
// cp.async wait, two barriers, 16 + 32 dependent MMAs per warp). Slices of 32 (8 warps) read each chunk's
// w_neg and k once for twice the columns of a slice of 16 (4 warps). Measured on an H200 (2026-11-26, same
// run), state pass in ms, slice 16 / 32: (B, T, H, HV) = (4, 8192, 32, 32) 1.42 / 1.07, (1, 32768, 16, 32)
// 1.59 / 1.07 (256 / 128 CTAs), (8, 4096, 16, 64) 2.79 / 2.14, (1, 65536, 2, 8) 1.34 / 2.13 (64 / 32 CTAs:
// one per SM either way, where a chunk step of 4 warps took 1.3 us and one of 8 warps 2.1 us). So slices
// of 16 only while each of their CTAs gets an SM to itself.
constexpr int gdn_state_slice(std::int64_t num_sequences, std::int64_t heads_v, std::int64_t value_dim,
                              std::int64_t sm_count) {
  const std::int64_t ctas32 = num_sequences * heads_v * ((value_dim + 31) / 32);
  return 2 * ctas32 <= sm_count ? 16 : 32;
}

// The GDN forward's slice (KDA's too where its 173 KB pass fits a block: kda_forward_state_slice): slices
// of 64 (16 warps, one CTA per SM by registers) where that grid still gives every SM a CTA and adds no
// padding columns. Each chunk's w_neg and k (32 KB) are read once per slice CTA, so at (4, 8192, 32, 32)
// slices of 32 read 128 KB of them per chunk and value head, slices of 64 read 64 KB; the slice-32 pass
// moved 7.2 GB through L2 at 84% of its rate there (H100, ncu, 2026-11-26 run 8), two CTAs of 8 warps per
// SM.
constexpr int gdn_forward_state_slice(std::int64_t num_sequences, std::int64_t heads_v, std::int64_t value_dim,
                                      std::int64_t sm_count) {
  const int slice = gdn_state_slice(num_sequences, heads_v, value_dim, sm_count);
  const std::int64_t ctas64 = num_sequences * heads_v * ((value_dim + 63) / 64);
  const bool no_padding = (value_dim + 63) / 64 * 2 == (value_dim + 31) / 32;
  return slice == 32 && no_padding && ctas64 >= sm_count ? 64 : slice;
}

// Bytes of shared memory of one CTA of each kernel (fp16 / bf16; the kernels' Shared structs, checked by
// static_asserts beside them). Rows of 64 tokens x 128 key channels are 136 Elements apart (ldmatrix rows
// in distinct banks).
constexpr std::size_t kGdnKeyTileBytes = 64 * 136 * 2;

// prep: k, A (fp32, then T_beta's pair, then a v piece), G and beta: 35.5 KB.
constexpr std::size_t gdn_prep_shared_bytes() { return kGdnKeyTileBytes + 64 * 72 * 4 + 2 * 64 * 4; }

// state: per cp.async stage the chunk's w_neg and k, its fp32 u slice [64][slice + 4] and G; S as Element
// [128][slice + 8] and the decayed v_new pair [64][slice + 8] x 2. Slices of 16 keep three stages (they
// run one CTA per SM): 129.75 KB; slices of 32 two (2 CTAs per SM on sm_90): 106.5 KB; slices of 64 two:
// 138.5 KB.
constexpr std::size_t gdn_state_shared_bytes(int slice) {
  const std::size_t stages = slice == 16 ? 3 : 2;
  const std::size_t stage = 2 * kGdnKeyTileBytes + 64 * static_cast<std::size_t>(slice + 4) * 4 + 64 * 4;
  return stages * stage + (128 + 2 * 64) * static_cast<std::size_t>(slice + 8) * 2;
}

// output: q, k, S [128][136], the v_new pair [64][136] x 2, G and the L2 factors: 102.75 KB.
constexpr std::size_t gdn_output_shared_bytes() { return 2 * kGdnKeyTileBytes + 4 * kGdnKeyTileBytes + 3 * 64 * 4; }

// The state slice the launcher takes, or 0 where a kernel of the forward needs more shared memory than a
// block may opt in to (the caller refuses the call with NotImplemented): the state and output kernels
// need 103-139 KB, so sm_80 (163 KB) and sm_90 (227 KB) run them, sm_86 / sm_89 / sm_120 (99 KB) do not.
constexpr int gdn_forward_plan(std::int64_t num_sequences, std::int64_t heads_v, std::int64_t value_dim,
                               std::int64_t sm_count, std::int64_t shared_memory_per_block_optin) {
  const int slice = gdn_forward_state_slice(num_sequences, heads_v, value_dim, sm_count);
  const std::size_t optin = static_cast<std::size_t>(shared_memory_per_block_optin);
  const bool fits = gdn_prep_shared_bytes() <= optin && gdn_state_shared_bytes(slice) <= optin &&
                    gdn_output_shared_bytes() <= optin;
  return fits ? slice : 0;
}

}  // namespace attnkit::sm80
