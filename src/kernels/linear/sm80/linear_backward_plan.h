// Launch planning of the chunked GDN and KDA backwards (linear_backward_chunked_sm80.cu,
// linear_backward_kda_chunked_sm80.cu, linear_backward_chunk_sm80.cuh): each kernel's shared
// memory as pure functions (static_asserts beside the kernels' Shared structs tie them to the layouts),
// the state passes' choice of one or two chunk buffers, and whether a device's per-block opt-in limit
// takes all of them. The host refuses a device that does not before anything is launched (explain() and
// dispatch say so), and the CPU tests check the plan without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attnkit::sm80 {

// fp32 tiles of 64 token rows; row pitches + 4 floats (16-byte rows, rows of a column in distinct banks).
constexpr std::size_t kGdnBackwardRowBytes128 = 64 * (128 + 4) * 4;  // 64 x 128 (k, q, w)
constexpr std::size_t kGdnBackwardRowBytes64 = 64 * (64 + 4) * 4;    // 64 x 64 (A, P, Tinv, dO U^T, Y U^T)
constexpr std::size_t kGdnBackwardRowBytes32 = 64 * (32 + 4) * 4;    // 64 x 32 (a value slice)

// chunk_prep: k, q (then Tinv), A, P (then a slice of beta v), a slice of dout, G, gam and beta: 112,384
// bytes (2 CTAs per SM on sm_80 and sm_90).
constexpr std::size_t gdn_backward_prep_shared_bytes() {
  return 2 * kGdnBackwardRowBytes128 + 2 * kGdnBackwardRowBytes64 + kGdnBackwardRowBytes32 + 3 * 64 * 4;
}

// state_fwd / state_bwd: S or dh [128][36] and per chunk buffer w, k, a [64][36] slice of u or P^T dO,
// G, d and gam: 96,000 bytes with one buffer, 173,568 with two.
constexpr std::size_t gdn_backward_state_shared_bytes(bool pipelined) {
  const std::size_t chunk = 2 * kGdnBackwardRowBytes128 + kGdnBackwardRowBytes32 + 3 * 64 * 4;
  return 2 * kGdnBackwardRowBytes32 + (pipelined ? 2 : 1) * chunk;
}

// chunk_grad: k, Tinv, dO U^T, Y U^T; the value step's tiles (S0 and dh [128][36] twice each, u, dU,
// dout, R, Y, K S0, P^T dO), which the closing's q, P and B overlay; seven per-row arrays and the
// 256-float reduction: 227,584 bytes (sm_90 only: sm_80 allows 163 KB).
constexpr std::size_t gdn_backward_grad_shared_bytes() {
  const std::size_t slice = 2 * 2 * 2 * kGdnBackwardRowBytes32 + 7 * kGdnBackwardRowBytes32;
  return kGdnBackwardRowBytes128 + 3 * kGdnBackwardRowBytes64 + slice + 6 * 64 * 4 + 64 * 4 + 2 * 64 * 4 + 256 * 4;
}

// The KDA state passes: as GDN's with the chunk's row of G per key (128 floats, not 64) in each buffer:
// 96,256 bytes with one buffer, 174,080 with two.
constexpr std::size_t kda_backward_state_shared_bytes(bool pipelined) {
  return gdn_backward_state_shared_bytes(pipelined) + (pipelined ? 2 : 1) * 64 * 4;
}

// The state passes take two chunk buffers (the next chunk's loads in flight) where every CTA of the grid
// gets an SM of its own and the two buffers fit the block's opt-in limit.
constexpr bool backward_state_pipelined(bool kda, std::int64_t state_ctas, std::int64_t sm_count,
                                        std::int64_t shared_memory_per_block_optin) {
  const std::size_t two = kda ? kda_backward_state_shared_bytes(true) : gdn_backward_state_shared_bytes(true);
  return state_ctas <= sm_count && two <= static_cast<std::size_t>(shared_memory_per_block_optin);
}
constexpr bool gdn_backward_state_pipelined(std::int64_t state_ctas, std::int64_t sm_count,
                                            std::int64_t shared_memory_per_block_optin) {
  return backward_state_pipelined(false, state_ctas, sm_count, shared_memory_per_block_optin);
}

// The KDA chunked backward (linear_backward_kda_chunked_sm80.cu). chunk_prep: k, q (then Tinv), G of half
// the keys (then A), P (then a slice of beta v), a slice of dout, beta: 111,872 bytes (two CTAs per SM).
constexpr std::size_t kda_backward_prep_shared_bytes() {
  return 2 * kGdnBackwardRowBytes128 + 2 * kGdnBackwardRowBytes64 + kGdnBackwardRowBytes32 + 64 * 4;
}

// KDA chunk_grad: k, G per key, Tinv, dO U^T, Y U^T; the value step's tiles (S0 and dh [128][36], u, dU,
// dout, R, Y, Kg S0), which the closing's q and B overlay; beta, dbeta, two halves of diag(dh S0^T) and
// four row tiles' column sums: 215,552 bytes (sm_90 only: sm_80 allows 163 KB).
constexpr std::size_t kda_backward_grad_shared_bytes() {
  const std::size_t slice = 2 * 2 * kGdnBackwardRowBytes32 + 6 * kGdnBackwardRowBytes32;
  return 2 * kGdnBackwardRowBytes128 + 3 * kGdnBackwardRowBytes64 + slice + 2 * 64 * 4 + 2 * 128 * 4 + 4 * 128 * 4;
}

// Whether a block's opt-in limit takes every kernel of the chunked KDA backward (with one state buffer);
// where it does not, KDA takes the exact token walk (linear_backward_sm80.cu), which needs 38 KB.
constexpr bool kda_backward_fits(std::int64_t shared_memory_per_block_optin) {
  const std::size_t optin = static_cast<std::size_t>(shared_memory_per_block_optin);
  return kda_backward_prep_shared_bytes() <= optin && kda_backward_state_shared_bytes(false) <= optin &&
         kda_backward_grad_shared_bytes() <= optin;
}

// Whether a block's opt-in limit takes every kernel of the chunked GDN backward (with one state buffer).
constexpr bool gdn_backward_fits(std::int64_t shared_memory_per_block_optin) {
  const std::size_t optin = static_cast<std::size_t>(shared_memory_per_block_optin);
  return gdn_backward_prep_shared_bytes() <= optin && gdn_backward_state_shared_bytes(false) <= optin &&
         gdn_backward_grad_shared_bytes() <= optin;
}

}  // namespace attnkit::sm80
