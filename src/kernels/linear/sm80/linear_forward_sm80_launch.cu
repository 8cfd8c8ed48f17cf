// Picks the chunked-forward kernels for a call: element type, variant and (GDN) the state pass's slice.
#include "kernels/linear/sm80/linear_forward_sm80_instances.h"
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {

int linear_gdn_state_slice(const LinearForwardParams& params, int sm_count) {
  const LinearCommonParams& c = params.common;
  // The state pass is the only sequential stage: slices of 32 value columns when that gives at least two
  // CTAs per SM, else 16 (twice the CTAs, each with half the work per chunk).
  const std::int64_t ctas_at_32 = static_cast<std::int64_t>(params.num_sequences) * c.heads_v * ((c.value_dim + 31) / 32);
  return ctas_at_32 >= 2 * static_cast<std::int64_t>(sm_count) ? 32 : 16;
}

namespace {

template <typename Element>
cudaError_t launch_gdn(const LinearForwardParams& params, int state_slice, cudaStream_t stream) {
  using namespace linear_detail;
  // T = 0 with states (final = initial): no chunk slots, so only the state pass runs (a grid of 0 CTAs
  // is a launch error).
  const bool chunks = params.chunk.slots > 0;
  cudaError_t status = chunks ? launch_linear_gdn_prep<Element>(params, stream) : cudaSuccess;
  if (status != cudaSuccess) return status;
  status = state_slice == 32 ? launch_linear_gdn_state<Element, 32>(params, stream)
                             : launch_linear_gdn_state<Element, 16>(params, stream);
  if (status != cudaSuccess) return status;
  return chunks ? launch_linear_gdn_output<Element>(params, stream) : cudaSuccess;
}

}  // namespace

cudaError_t launch_linear_forward(const LinearForwardParams& params, int gdn_state_slice, cudaStream_t stream) {
  using linear_detail::launch_linear_forward_instance;
  const bool bf16 = params.common.io_element == LinearElement::kBFloat16;
  if (params.common.per_key_gate) {
    return bf16 ? launch_linear_forward_instance<__nv_bfloat16, true, 32>(params, stream)
                : launch_linear_forward_instance<__half, true, 32>(params, stream);
  }
  return bf16 ? launch_gdn<__nv_bfloat16>(params, gdn_state_slice, stream)
              : launch_gdn<__half>(params, gdn_state_slice, stream);
}

}  // namespace attnkit::sm80
