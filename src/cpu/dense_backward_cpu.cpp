// CPU dense attention backward (FlashAttention-2 recomputation from the saved LSE), in three steps:
//   1. delta_i = <dO_i, O_i> for every (row, head), and dsink_h = -sum_i exp(sink_h - lse_i) delta_i;
//   2. one work item per key tile, looping over the query tiles that see it: recompute S and P, then
//      dV += P^T dO, dP = dO V^T, dS = P (dP - delta), dK += dS^T Q, and the tile's share dS K of dq,
//      added to an fp32 accumulator in key-tile order (OrderedDq);
//   3. dq = scale * accumulator, in the input dtype.
// Deterministic by construction: dk and dv are written by exactly one work item each, whose sums run in
// a fixed order in one thread; every dq element is the same ordered sum on every run (no atomics on
// data, no thread-count-dependent reduction), so results are bitwise identical from run to run,
// independent of the number of threads and of the other sequences of the batch.
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "attnkit/numeric.h"
#include "cpu/dense_cpu.h"
#include "cpu/dense_cpu_context.h"
#include "cpu/dense_cpu_kernels.h"
#include "cpu/dense_cpu_limits.h"
#include "cpu/dense_cpu_schedule.h"

namespace attnkit::cpu {
namespace {

// Query row t of the flattened [total_q] rows as (batch, token) of the views: BSHD t = b * Sq + i.
struct RowAddress {
  std::int64_t batch;
  std::int64_t token;
};

RowAddress row_address(const host::DenseProblem& problem, std::int64_t row) {
  if (problem.varlen) return {0, row};
  return {row / problem.seqlen_q, row % problem.seqlen_q};
}

// delta [total_q, Hq] (ISA kernels, see backward_delta), then dsinks.
void compute_delta_and_dsinks(const host::DenseProblem& problem, const DenseCpuContext& ctx,
                              const DenseCpuKernels& kernels) {
  constexpr std::int64_t kQueriesPerItem = 64;
  std::vector<QueryRange> ranges;
  for (std::size_t s = 0; s < ctx.sequences.size(); ++s) {
    for (std::int64_t begin = 0; begin < ctx.sequences[s].len_q; begin += kQueriesPerItem) {
      ranges.push_back({static_cast<std::int64_t>(s), begin, std::min(begin + kQueriesPerItem, ctx.sequences[s].len_q)});
    }
  }
  const auto count = static_cast<std::ptrdiff_t>(ranges.size());
#pragma omp parallel for schedule(dynamic)
  for (std::ptrdiff_t i = 0; i < count; ++i) kernels.backward_delta(ctx, ranges[static_cast<std::size_t>(i)]);

  if (ctx.dsinks == nullptr) return;
  // One head per thread, rows in order, in double: deterministic and accurate over long sequences.
  const std::int64_t heads = ctx.heads_q;
#pragma omp parallel for schedule(static)
  for (std::int64_t head = 0; head < heads; ++head) {
    const double sink = ctx.sinks[head * ctx.sinks_stride];
    double sum = 0.0;
    for (std::int64_t row = 0; row < problem.total_q; ++row) {
      const RowAddress at = row_address(problem, row);
      const double lse = ctx.lse.at(at.batch, at.token, head);
      if (std::isinf(lse) && lse < 0) continue;  // nothing visible and no sink: the row has no gradient
      sum += std::exp(sink - lse) * ctx.delta[row * heads + head];
    }
    ctx.dsinks[head * ctx.dsinks_stride] = static_cast<float>(-sum);
  }
}

// dq = scale * accumulator, converted to the input dtype.
void write_dq(const host::DenseProblem& problem, const DenseCpuContext& ctx) {
  const std::int64_t heads = ctx.heads_q;
  const std::int64_t head_dim = ctx.head_dim;
#pragma omp parallel for schedule(static)
  for (std::int64_t row = 0; row < problem.total_q; ++row) {
    const RowAddress at = row_address(problem, row);
    for (std::int64_t head = 0; head < heads; ++head) {
      const float* acc = ctx.dq_accumulator + (row * heads + head) * head_dim;
      std::byte* dst = ctx.dq.row(at.batch, at.token, head);
      for (std::int64_t d = 0; d < head_dim; ++d) {
        const float value = acc[d] * ctx.scale;
        switch (ctx.dtype) {
          case DType::kFloat32: reinterpret_cast<float*>(dst)[d] = value; break;
          case DType::kFloat16: reinterpret_cast<std::uint16_t*>(dst)[d] = float_to_fp16(value); break;
          default: reinterpret_cast<std::uint16_t*>(dst)[d] = float_to_bf16(value); break;
        }
      }
    }
  }
}

}  // namespace

Status dense_supports_backward(const host::DenseProblem& problem, const DenseBackwardArgs&) {
  return check_cpu_limits(problem);
}

// The delta buffer and the per-thread scratch are host memory allocated by the backend itself.
std::size_t dense_backward_workspace_bytes(const host::DenseProblem&) { return 0; }

Status dense_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args) {
  try {
    DenseCpuContext ctx = make_dense_cpu_context(problem, args.q, args.k, args.v, args.out, args.lse, args.sinks,
                                                 args.cu_seqlens_q, args.cu_seqlens_k);
    ctx.dout = make_token_view(args.dout, problem.varlen);
    ctx.dq = make_token_view(args.dq, problem.varlen);
    ctx.dk = make_token_view(args.dk, problem.varlen);
    ctx.dv = make_token_view(args.dv, problem.varlen);
    if (args.dsinks.defined()) {
      ctx.dsinks = static_cast<float*>(args.dsinks.data);
      ctx.dsinks_stride = args.dsinks.strides[0];
    }
    const DenseCpuKernels& kernels = dense_cpu_kernels(active_cpu_isa());
    std::vector<float> delta(static_cast<std::size_t>(problem.total_q * problem.heads_q));  // [total_q, Hq]
    ctx.delta = delta.data();
    compute_delta_and_dsinks(problem, ctx, kernels);
    // [total_q, Hq, D] fp32, zero: rows that see no key get dq = 0.
    std::vector<float> dq_accumulator(static_cast<std::size_t>(problem.total_q * problem.heads_q * problem.head_dim));
    ctx.dq_accumulator = dq_accumulator.data();
    OrderedDq dq_order(ctx);
    ctx.dq_order = &dq_order;

    const std::vector<KeyTile> key_tiles = make_key_tiles(ctx);
    const bool ok = run_tiles_in_parallel(ctx, /*backward=*/true, key_tiles,
                                          [&](const KeyTile& tile, TileScratch& scratch) {
                                            kernels.backward_key_tile(ctx, tile, scratch);
                                          });
    if (!ok) return {StatusCode::kInternal, "CPU backward: out of host memory for the per-thread tile scratch"};
    write_dq(problem, ctx);
  } catch (const std::bad_alloc&) {
    return {StatusCode::kInternal,
            "CPU backward: out of host memory for the delta and dq buffers or the work lists"};
  }
  return Status::ok();
}

}  // namespace attnkit::cpu
