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

namespace {

template <typename T>
void grow(std::vector<T>& buffer, std::size_t size) {
  if (buffer.size() < size) buffer.resize(size);
}

}  // namespace

void TileScratch::reserve_for(const DenseCpuContext& ctx, bool backward) {
  const auto d = static_cast<std::size_t>(ctx.head_dim);
  const auto dv = static_cast<std::size_t>(ctx.head_dim_v);
  const auto cols = static_cast<std::size_t>(kBlockRows);
  const auto keys = static_cast<std::size_t>(kBlockKeys);
  grow(q_t, d * cols);
  grow(k_tile, keys * d);
  grow(v_tile, keys * dv);
  grow(scores, keys * cols);
  grow(acc_t, dv * cols);
  grow(row_max, cols);
  grow(row_sum, cols);
  grow(row_alpha, cols);
  grow(row_lo, cols);
  grow(row_hi, cols);
  grow(convert_row, std::max(d, dv));
  if (backward) {
    grow(q_rows, cols * d);
    grow(dout_t, dv * cols);
    grow(dout_rows, cols * dv);
    if (ctx.softcap > 0.0f) grow(tanh_values, keys * cols);
    grow(dscores, keys * cols);
    grow(acc_k, keys * d);
    grow(acc_v, keys * dv);
    grow(dq_rows, cols * d);
    grow(row_lse, cols);
    grow(row_delta, cols);
  }
}

TileScratch& thread_scratch() {
  thread_local TileScratch scratch;
  return scratch;
}

}  // namespace attnkit::cpu
