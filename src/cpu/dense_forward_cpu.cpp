// CPU dense attention forward: one work item per query tile (kBlockRows packed rows of one sequence and
// kv head), run by dense_cpu_tiles.inc's forward_query_tile on the OpenMP threads.
#include <new>

#include "cpu/dense_cpu.h"
#include "cpu/dense_cpu_context.h"
#include "cpu/dense_cpu_kernels.h"
#include "cpu/dense_cpu_limits.h"
#include "cpu/dense_cpu_schedule.h"

namespace attnkit::cpu {

Status dense_supports_forward(const host::DenseProblem& problem, const DenseForwardArgs&) {
  return check_cpu_limits(problem);
}

// Scratch is per-thread host memory allocated by the backend itself: no caller workspace.
std::size_t dense_forward_workspace_bytes(const host::DenseProblem&) { return 0; }

Status dense_forward(const host::DenseProblem& problem, const DenseForwardArgs& args) {
  try {
    const DenseCpuContext ctx = make_dense_cpu_context(problem, args.q, args.k, args.v, args.out, args.lse,
                                                       args.sinks, args.cu_seqlens_q, args.cu_seqlens_k);
    const std::vector<QueryTile> tiles = make_query_tiles(ctx);
    const DenseCpuKernels& kernels = dense_cpu_kernels(active_cpu_isa());
    const bool ok = run_tiles_in_parallel(ctx, /*backward=*/false, tiles,
                                          [&](const QueryTile& tile, TileScratch& scratch) {
                                            kernels.forward_query_tile(ctx, tile, scratch);
                                          });
    if (!ok) return {StatusCode::kInternal, "CPU forward: out of host memory for the per-thread tile scratch"};
  } catch (const std::bad_alloc&) {
    return {StatusCode::kInternal, "CPU forward: out of host memory for the work list"};
  }
  return Status::ok();
}

}  // namespace attnkit::cpu
