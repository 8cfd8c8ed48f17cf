// Launch planning of the chunked GDN backward (linear_backward_chunked_sm80.cu): each kernel's shared
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

// The state passes take two chunk buffers (the next chunk's loads in flight) where every CTA of the grid
// gets an SM of its own and the two buffers fit the block's opt-in limit.
constexpr bool gdn_backward_state_pipelined(std::int64_t state_ctas, std::int64_t sm_count,
                                            std::int64_t shared_memory_per_block_optin) {
  return state_ctas <= sm_count &&
         gdn_backward_state_shared_bytes(true) <= static_cast<std::size_t>(shared_memory_per_block_optin);
}

// Whether a block's opt-in limit takes every kernel of the chunked GDN backward (with one state buffer).
constexpr bool gdn_backward_fits(std::int64_t shared_memory_per_block_optin) {
  const std::size_t optin = static_cast<std::size_t>(shared_memory_per_block_optin);
  return gdn_backward_prep_shared_bytes() <= optin && gdn_backward_state_shared_bytes(false) <= optin &&
         gdn_backward_grad_shared_bytes() <= optin;
}

}  // namespace attnkit::sm80
