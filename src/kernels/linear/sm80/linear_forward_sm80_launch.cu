// Picks the chunked-forward kernels for a call: element type and variant.
#include "kernels/linear/sm80/linear_forward_sm80_instances.h"
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {

namespace {

// The state pass, the only sequential stage, takes slices of 16 value columns: ~107 KB of shared memory
// and 72 registers give 2 CTAs (8 warps) per SM, where slices of 32 (~132 KB) held 1, and each CTA's
// chunk step is a latency chain, not a throughput limit. Measured on the H100 (2026-11-26, same run):
// slice 16 instead of 32 took the state pass 2.00 -> 1.65 ms at (B, T, H, HV) = (4, 8192, 32, 32) and
// 3.92 -> 3.16 ms at (8, 4096, 16, 64), although every slice reads the whole w_neg and k of a chunk.
constexpr int kGdnStateSlice = 16;

template <typename Element>
cudaError_t launch_gdn(const LinearForwardParams& params, cudaStream_t stream) {
  using namespace linear_detail;
  // T = 0 with states (final = initial): no chunk slots, so only the state pass runs (a grid of 0 CTAs
  // is a launch error).
  const bool chunks = params.chunk.slots > 0;
  cudaError_t status = chunks ? launch_linear_gdn_prep<Element>(params, stream) : cudaSuccess;
  if (status != cudaSuccess) return status;
  status = launch_linear_gdn_state<Element, kGdnStateSlice>(params, stream);
  if (status != cudaSuccess) return status;
  return chunks ? launch_linear_gdn_output<Element>(params, stream) : cudaSuccess;
}

}  // namespace

cudaError_t launch_linear_forward(const LinearForwardParams& params, cudaStream_t stream) {
  using linear_detail::launch_linear_forward_instance;
  const bool bf16 = params.common.io_element == LinearElement::kBFloat16;
  if (params.common.per_key_gate) {
    return bf16 ? launch_linear_forward_instance<__nv_bfloat16, true, 32>(params, stream)
                : launch_linear_forward_instance<__half, true, 32>(params, stream);
  }
  return bf16 ? launch_gdn<__nv_bfloat16>(params, stream) : launch_gdn<__half>(params, stream);
}

}  // namespace attnkit::sm80
