#include "cpu/dense_cpu_context.h"

#include <algorithm>

namespace attnkit::cpu {

TokenTensorView make_token_view(const TensorRef& tensor, bool varlen) {
  TokenTensorView view;
  if (!tensor.defined()) return view;
  view.data = static_cast<std::byte*>(tensor.data);
  view.element_bytes = static_cast<std::int64_t>(dtype_size(tensor.dtype));
  if (varlen) {  // [T, H, X]
    view.token_stride = tensor.strides[0];
    view.head_stride = tensor.strides[1];
  } else {  // [B, S, H, X]
    view.batch_stride = tensor.strides[0];
    view.token_stride = tensor.strides[1];
    view.head_stride = tensor.strides[2];
  }
  return view;
}

DenseCpuContext make_dense_cpu_context(const host::DenseProblem& problem, const TensorRef& q, const TensorRef& k,
                                       const TensorRef& v, const TensorRef& out, const TensorRef& lse,
                                       const TensorRef& sinks, const TensorRef& cu_seqlens_q,
                                       const TensorRef& cu_seqlens_k) {
  DenseCpuContext ctx;
  ctx.dtype = problem.dtype;
  ctx.heads_q = problem.heads_q;
  ctx.heads_kv = problem.heads_kv;
  ctx.group = problem.group;
  ctx.head_dim = problem.head_dim;
  ctx.head_dim_v = problem.head_dim_v;
  ctx.scale = problem.scale;
  ctx.softcap = problem.softcap;
  // A window wider than Sq + Sk sees exactly what an unbounded one sees; clamping it keeps every
  // i + (Sk - Sq) +- window inside int64 whatever the caller passed.
  const std::int64_t widest = problem.seqlen_q + problem.seqlen_k;
  ctx.window_left = problem.window_left < 0 ? -1 : std::min(problem.window_left, widest);
  ctx.window_right = problem.window_right < 0 ? -1 : std::min(problem.window_right, widest);

  const bool varlen = problem.varlen;
  ctx.q = make_token_view(q, varlen);
  ctx.k = make_token_view(k, varlen);
  ctx.v = make_token_view(v, varlen);
  ctx.out = make_token_view(out, varlen);
  if (lse.defined()) {
    ctx.lse.data = static_cast<float*>(lse.data);
    if (varlen) {  // [Hq, Tq]
      ctx.lse.head_stride = lse.strides[0];
      ctx.lse.token_stride = lse.strides[1];
    } else {  // [B, Hq, Sq]
      ctx.lse.batch_stride = lse.strides[0];
      ctx.lse.head_stride = lse.strides[1];
      ctx.lse.token_stride = lse.strides[2];
    }
  }
  if (sinks.defined()) {
    ctx.sinks = static_cast<const float*>(sinks.data);
    ctx.sinks_stride = sinks.strides[0];
  }

  ctx.sequences.resize(static_cast<std::size_t>(problem.batch));
  for (std::int64_t b = 0; b < problem.batch; ++b) {
    Sequence& seq = ctx.sequences[static_cast<std::size_t>(b)];
    if (varlen) {  // host cu_seqlens, validated by make_dense_problem
      const auto* cu_q = static_cast<const std::int32_t*>(cu_seqlens_q.data);
      const auto* cu_k = static_cast<const std::int32_t*>(cu_seqlens_k.data);
      const std::int64_t q_begin = cu_q[b * cu_seqlens_q.strides[0]];
      const std::int64_t k_begin = cu_k[b * cu_seqlens_k.strides[0]];
      seq.q_token_begin = q_begin;
      seq.k_token_begin = k_begin;
      seq.q_row_begin = q_begin;
      seq.len_q = cu_q[(b + 1) * cu_seqlens_q.strides[0]] - q_begin;
      seq.len_k = cu_k[(b + 1) * cu_seqlens_k.strides[0]] - k_begin;
    } else {
      seq.batch = b;
      seq.q_row_begin = b * problem.seqlen_q;
      seq.len_q = problem.seqlen_q;
      seq.len_k = problem.seqlen_k;
    }
  }
  return ctx;
}

TileScratch::TileScratch(const DenseCpuContext& ctx, bool backward) {
  const auto d = static_cast<std::size_t>(ctx.head_dim);
  const auto dv = static_cast<std::size_t>(ctx.head_dim_v);
  const auto cols = static_cast<std::size_t>(kBlockRows);
  const auto keys = static_cast<std::size_t>(kBlockKeys);
  q_t.resize(d * cols);
  k_tile.resize(keys * d);
  v_tile.resize(keys * dv);
  scores.resize(keys * cols);
  acc_t.resize(dv * cols);
  row_max.resize(cols);
  row_sum.resize(cols);
  row_alpha.resize(cols);
  row_lo.resize(cols);
  row_hi.resize(cols);
  convert_row.resize(std::max(d, dv));
  if (backward) {
    q_rows.resize(cols * d);
    dout_t.resize(dv * cols);
    dout_rows.resize(cols * dv);
    if (ctx.softcap > 0.0f) tanh_values.resize(keys * cols);
    dscores.resize(keys * cols);
    acc_k.resize(keys * d);
    acc_v.resize(keys * dv);
    dq_rows.resize(cols * d);
    row_lse.resize(cols);
    row_delta.resize(cols);
  }
}

}  // namespace attnkit::cpu
