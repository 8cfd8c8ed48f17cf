// Picks the chunked-forward instantiation for a call: element type, gate kind, value slice.
#include "kernels/linear/sm80/linear_forward_sm80_instances.h"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {

int linear_forward_value_slice(const LinearForwardParams& params, int sm_count) {
  const LinearCommonParams& c = params.common;
  if (c.per_key_gate || c.value_dim <= 32) return 32;
  // A slice of 64 halves the repeated per-head work; take it when it still gives every SM a CTA
  // (1 CTA per SM: ~200 KB of shared memory each).
  const std::int64_t ctas_at_64 = static_cast<std::int64_t>(params.num_sequences) * c.heads_v * ((c.value_dim + 63) / 64);
  return ctas_at_64 >= sm_count ? 64 : 32;
}

cudaError_t launch_linear_forward(const LinearForwardParams& params, int value_slice, cudaStream_t stream) {
  using linear_detail::launch_linear_forward_instance;
  const bool bf16 = params.common.io_element == LinearElement::kBFloat16;
  if (params.common.per_key_gate) {
    return bf16 ? launch_linear_forward_instance<__nv_bfloat16, true, 32>(params, stream)
                : launch_linear_forward_instance<__half, true, 32>(params, stream);
  }
  if (value_slice == 64) {
    return bf16 ? launch_linear_forward_instance<__nv_bfloat16, false, 64>(params, stream)
                : launch_linear_forward_instance<__half, false, 64>(params, stream);
  }
  return bf16 ? launch_linear_forward_instance<__nv_bfloat16, false, 32>(params, stream)
              : launch_linear_forward_instance<__half, false, 32>(params, stream);
}

}  // namespace attnkit::sm80
