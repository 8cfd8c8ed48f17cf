// Picks the chunked-forward kernels for a call: element type and variant.
#include "kernels/linear/sm80/linear_gdn_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_gdn_plan.h"
#include "kernels/linear/sm80/linear_kda_chunked_sm80_instances.h"
#include "kernels/linear/sm80/linear_kda_plan.h"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {

namespace {

template <typename Element>
cudaError_t launch_gdn(const LinearForwardParams& params, int sm_count, cudaStream_t stream) {
  using namespace linear_detail;
  // T = 0 with states (final = initial): no chunk slots, so only the state pass runs (a grid of 0 CTAs
  // is a launch error).
  const bool chunks = params.chunk.slots > 0;
  cudaError_t status = chunks ? launch_linear_gdn_prep<Element>(params, stream) : cudaSuccess;
  if (status != cudaSuccess) return status;
  switch (sm80::gdn_forward_state_slice(params.num_sequences, params.common.heads_v, params.common.value_dim, sm_count)) {
    case 64: status = launch_linear_gdn_state<Element, 64>(params, stream); break;
    case 32: status = launch_linear_gdn_state<Element, 32>(params, stream); break;
    default: status = launch_linear_gdn_state<Element, 16>(params, stream); break;
  }
  if (status != cudaSuccess) return status;
  return chunks ? launch_linear_gdn_output<Element>(params, stream) : cudaSuccess;
}

// KDA's state pass runs one CTA per SM at any slice (its k operand is a pair: ~125 / ~141 / ~173 KB of
// shared memory at 16 / 32 / 64 columns), in GDN's forward slices where they fit (linear_kda_plan.h).
template <typename Element>
cudaError_t launch_kda(const LinearForwardParams& params, int sm_count, std::int64_t optin, cudaStream_t stream) {
  using namespace linear_detail;
  const bool chunks = params.chunk.slots > 0;  // T = 0: only the state pass (initial -> final state)
  cudaError_t status = chunks ? launch_linear_kda_prep<Element>(params, stream) : cudaSuccess;
  if (status != cudaSuccess) return status;
  switch (sm80::kda_forward_state_slice(params.num_sequences, params.common.heads_v, params.common.value_dim, sm_count, optin)) {
    case 64: status = launch_linear_kda_state<Element, 64>(params, stream); break;
    case 32: status = launch_linear_kda_state<Element, 32>(params, stream); break;
    default: status = launch_linear_kda_state<Element, 16>(params, stream); break;
  }
  if (status != cudaSuccess) return status;
  return chunks ? launch_linear_kda_output<Element>(params, stream) : cudaSuccess;
}

}  // namespace

cudaError_t launch_linear_forward(const LinearForwardParams& params, int sm_count, std::int64_t shared_memory_per_block_optin,
                                  cudaStream_t stream) {
  const bool bf16 = params.common.io_element == LinearElement::kBFloat16;
  if (params.common.per_key_gate) {
    return bf16 ? launch_kda<__nv_bfloat16>(params, sm_count, shared_memory_per_block_optin, stream)
                : launch_kda<__half>(params, sm_count, shared_memory_per_block_optin, stream);
  }
  return bf16 ? launch_gdn<__nv_bfloat16>(params, sm_count, stream) : launch_gdn<__half>(params, sm_count, stream);
}

}  // namespace attnkit::sm80
