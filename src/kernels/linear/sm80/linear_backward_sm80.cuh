// Device helpers shared by the two kernel files of the sm80 linear backward (the walk and prep/finish
// kernels in linear_backward_sm80.cu, the chunked GDN kernels in linear_backward_chunked_sm80.cu).
#pragma once

#include <cstdint>

#include "kernels/linear/sm80/linear_backward_sm80.h"

namespace attnkit::sm80::linear_backward_detail {

// Element offset of flat token row `token` (b * T + t; varlen: t) in a token-major tensor.
__device__ __forceinline__ std::int64_t token_offset(const LinearBackwardParams& p, std::int64_t token,
                                                     std::int64_t batch_stride, std::int64_t token_stride) {
  if (p.cu_seqlens != nullptr) return token * token_stride;
  const std::int64_t b = token / p.seqlen, t = token - b * p.seqlen;
  return b * batch_stride + t * token_stride;
}

}  // namespace attnkit::sm80::linear_backward_detail
