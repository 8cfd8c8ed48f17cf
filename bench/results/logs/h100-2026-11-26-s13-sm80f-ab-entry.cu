// Throwaway A/B entry (second form): as fwd_entry.cu plus the heavy-first section size.
// AB_SECTIONS: the variant's ForwardParams has section_pairs; `sections` (0 = all pairs) is set there.
#include <cmath>
#include <cstdint>
#include "kernels/dense/sm80/forward/forward_kernel.cuh"
using namespace attnkit;
using namespace attnkit::sm80;
namespace attnkit::sm80 {
template Status launch_dense_forward<AB_SHAPE, DType::kBFloat16>(const ForwardParams&, void*);
}
extern "C" int AB_ENTRY(void** ptrs, int b, int s, int h, int d, int causal, void* stream, int sections) {
  ForwardParams p;
  p.q = ptrs[0]; p.k = ptrs[1]; p.v = ptrs[2]; p.out = ptrs[3]; p.lse = static_cast<float*>(ptrs[4]);
  const std::int64_t row = std::int64_t(h) * d, batch = row * s;
  p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.out_batch_stride = batch;
  p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = row;
  p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = d;
  p.lse_batch_stride = std::int64_t(h) * s; p.lse_head_stride = s; p.lse_row_stride = 1;
  p.batch = b; p.heads_q = h; p.group = 1; p.seqlen_q = s; p.seqlen_k = s; p.total_q = std::int64_t(b) * s;
  p.total_k = p.total_q; p.head_dim = d; p.head_dim_v = d;
  p.softmax_scale_log2 = 1.4426950408889634f / std::sqrt(float(d));
  p.window_right = causal ? 0 : -1;
  const ForwardTileShape sh = kForwardTileShapes[AB_SHAPE];
  if (sh.head_dim != d) return 3;
  p.num_m_blocks = (s + sh.block_m - 1) / sh.block_m;
  p.num_splits = 1;
  p.heavy_first = causal != 0;
#ifdef AB_SECTIONS
  p.section_pairs = sections > 0 && sections < b * h ? sections : b * h;
#else
  if (sections != 0) return 4;
#endif
  Status st = launch_dense_forward<AB_SHAPE, DType::kBFloat16>(p, stream);
  return st ? 0 : 1;
}
