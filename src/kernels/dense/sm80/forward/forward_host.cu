// Host side of the sm80 dense forward: what it supports (and why not), its workspace, and the launch.
// Every decision is made here from the validated DenseProblem; the kernels make none.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "host/cuda_runtime.h"
#include "host/cuda_scoped_device.h"
#include "host/split_kv_heuristic.h"
#include "kernels/dense/sm80/dense_sm80.h"
#include "kernels/dense/sm80/forward/forward_params.h"

namespace attnkit::sm80 {
namespace {

// Per-sequence lengths above this would overflow the int row / key indices of the kernels, whose sums
// (row + Sk - Sq + window) stay below 2^31 only while Sq and Sk stay below 2^30.
constexpr std::int64_t kMaxSeqlen = (std::int64_t{1} << 30) - 1;

Status not_implemented(const std::string& why) { return {StatusCode::kNotImplemented, "sm80 forward: " + why}; }

// Everything the launch needs that depends on the device as well as the problem.
struct ForwardPlan {
  int shape_index = -1;
  ForwardTileShape shape{};
  int num_m_blocks = 0;
  int num_splits = 1;
};

Status make_plan(const host::DenseProblem& problem, ForwardPlan* plan) {
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(problem.device.index, &limits, &why)) {
    return {StatusCode::kCudaError, "sm80 forward: " + why};
  }
  std::string too_large;
  for (int i = 0; i < kForwardTileShapeCount; ++i) {
    const ForwardTileShape& shape = kForwardTileShapes[i];
    if (problem.head_dim > shape.head_dim || problem.head_dim_v > shape.head_dim_v) continue;
    if (shape.shared_memory_bytes() > limits.shared_memory_per_block_optin) {
      // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on "literal" + string&&.
      too_large.append(" ").append(std::to_string(shape.head_dim)).append("x");
      too_large.append(std::to_string(shape.head_dim_v)).append(" needs ");
      too_large.append(std::to_string(shape.shared_memory_bytes())).append(";");
      continue;
    }
    plan->shape_index = i;
    plan->shape = shape;
    break;
  }
  if (plan->shape_index < 0) {
    return not_implemented("(D, Dv) = (" + std::to_string(problem.head_dim) + ", " +
                           std::to_string(problem.head_dim_v) + ") has no tile that fits the " +
                           std::to_string(limits.shared_memory_per_block_optin) +
                           " bytes of shared memory per block of cuda:" + std::to_string(problem.device.index) +
                           " (tile shared memory in bytes:" + too_large + ")");
  }
  plan->num_m_blocks = static_cast<int>((problem.seqlen_q + plan->shape.block_m - 1) / plan->shape.block_m);
  host::SplitKvShape split_shape;
  split_shape.batch_heads = problem.batch * problem.heads_q;
  split_shape.query_tiles = plan->num_m_blocks;
  split_shape.key_length = problem.seqlen_k;
  split_shape.key_tile = plan->shape.block_n;
  split_shape.sm_count = limits.sm_count;
  // 4-warp tiles (<= 64 KiB of shared memory, <= 255 registers x 128 threads) fit twice per SM of
  // sm_80 / sm_90; 8-warp tiles once.
  split_shape.ctas_per_sm = plan->shape.warps == 4 ? 2 : 1;
  plan->num_splits = host::split_kv_count(split_shape);
  return Status::ok();
}

std::size_t workspace_bytes(const host::DenseProblem& problem, int num_splits) {
  if (num_splits <= 1) return 0;
  const auto rows = static_cast<std::size_t>(problem.total_q) * static_cast<std::size_t>(problem.heads_q);
  // o_partial [splits, total_q, Hq, Dv] then lse_partial [splits, Hq, total_q], fp32; o first keeps the
  // lse part 16-byte aligned (Dv is a multiple of 8).
  return static_cast<std::size_t>(num_splits) * rows * (static_cast<std::size_t>(problem.head_dim_v) + 1) *
         sizeof(float);
}

// cp.async moves 16-byte chunks: every row of q, k, v (and the 16-byte stores of out) must start on a
// 16-byte boundary, so the base address and every stride but the last (which is 1) must be too.
Status check_alignment(const char* name, const TensorRef& t) {
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) {
    return not_implemented(std::string(name) + ": data pointer must be 16-byte aligned for cp.async (address % 16 = " +
                           std::to_string(reinterpret_cast<std::uintptr_t>(t.data) % 16) + ")");
  }
  const std::int64_t element = static_cast<std::int64_t>(dtype_size(t.dtype));
  for (int axis = 0; axis + 1 < t.rank; ++axis) {
    if (t.shape[axis] > 1 && (t.strides[axis] * element) % 16 != 0) {
      return not_implemented(std::string(name) + ": stride " + std::to_string(t.strides[axis]) + " of axis " +
                             std::to_string(axis) + " is not a multiple of 16 bytes (" + std::to_string(16 / element) +
                             " elements), which cp.async needs");
    }
  }
  return Status::ok();
}

// The compiled instantiations, indexed by kForwardTileShapes entry: one switch from runtime to type.
template <DType kDType>
Status launch_shape(int shape_index, const ForwardParams& params, void* stream) {
  static_assert(kForwardTileShapeCount == 4, "add the new tile shape here and rerun generate_instantiations.py");
  switch (shape_index) {
    case 0: return launch_dense_forward<0, kDType>(params, stream);
    case 1: return launch_dense_forward<1, kDType>(params, stream);
    case 2: return launch_dense_forward<2, kDType>(params, stream);
    case 3: return launch_dense_forward<3, kDType>(params, stream);
    default: return {StatusCode::kInternal, "sm80 forward: no tile shape " + std::to_string(shape_index)};
  }
}

// A window bound at least as wide as the sequence is unbounded: -1 keeps the kernel's int arithmetic in
// range for any caller value.
int clamp_window(std::int64_t bound, std::int64_t unbounded_from) {
  return bound < 0 || bound >= unbounded_from ? -1 : static_cast<int>(bound);
}

ForwardParams make_params(const host::DenseProblem& problem, const DenseForwardArgs& args, const ForwardPlan& plan) {
  ForwardParams p;
  p.q = args.q.data;
  p.k = args.k.data;
  p.v = args.v.data;
  p.out = args.out.data;
  p.lse = static_cast<float*>(args.lse.data);
  p.sinks = static_cast<const float*>(args.sinks.data);
  p.varlen = problem.varlen;
  // BSHD strides (batch, row, head, 1); varlen (row, head, 1) with no batch axis.
  const int first = problem.varlen ? 0 : 1;
  auto strides = [&](const TensorRef& t, std::int64_t* batch, std::int64_t* row, std::int64_t* head) {
    *batch = problem.varlen ? 0 : t.strides[0];
    *row = t.strides[first];
    *head = t.strides[first + 1];
  };
  strides(args.q, &p.q_batch_stride, &p.q_row_stride, &p.q_head_stride);
  strides(args.k, &p.k_batch_stride, &p.k_row_stride, &p.k_head_stride);
  strides(args.v, &p.v_batch_stride, &p.v_row_stride, &p.v_head_stride);
  strides(args.out, &p.out_batch_stride, &p.out_row_stride, &p.out_head_stride);
  if (args.lse.defined()) {
    // BSHD [B, Hq, Sq]; varlen [Hq, Tq].
    p.lse_batch_stride = problem.varlen ? 0 : args.lse.strides[0];
    p.lse_head_stride = args.lse.strides[first];
    p.lse_row_stride = args.lse.strides[first + 1];
  }
  if (problem.varlen) {
    p.cu_seqlens_q = static_cast<const std::int32_t*>(args.cu_seqlens_q.data);
    p.cu_seqlens_k = static_cast<const std::int32_t*>(args.cu_seqlens_k.data);
  }
  p.batch = static_cast<int>(problem.batch);
  p.heads_q = static_cast<int>(problem.heads_q);
  p.group = static_cast<int>(problem.group);
  p.seqlen_q = static_cast<int>(problem.seqlen_q);
  p.seqlen_k = static_cast<int>(problem.seqlen_k);
  p.total_q = problem.total_q;
  p.total_k = problem.total_k;
  p.head_dim = static_cast<int>(problem.head_dim);
  p.head_dim_v = static_cast<int>(problem.head_dim_v);
  constexpr float kLog2e = 1.4426950408889634f;
  p.softcap = problem.softcap > 0.0f;
  if (p.softcap) {
    p.score_premultiplier = problem.scale / problem.softcap;
    p.softmax_scale_log2 = problem.softcap * kLog2e;
  } else {
    p.softmax_scale_log2 = problem.scale * kLog2e;
  }
  // Bottom-right aligned: left >= Sk or right >= Sq leaves no key out on that side.
  p.window_left = clamp_window(problem.window_left, problem.seqlen_k);
  p.window_right = clamp_window(problem.window_right, problem.seqlen_q);
  p.num_m_blocks = plan.num_m_blocks;
  p.num_splits = plan.num_splits;
  p.heavy_first = p.window_left >= 0 || p.window_right >= 0;
  p.section_pairs = heavy_first_section_pairs(problem.batch * problem.heads_q, problem.group, problem.seqlen_k,
                                              problem.head_dim + problem.head_dim_v,
                                              static_cast<std::int64_t>(dtype_size(problem.dtype)), plan.num_m_blocks);
  if (plan.num_splits > 1) {
    p.o_partial = static_cast<float*>(args.workspace);
    p.lse_partial =
        p.o_partial + std::int64_t{plan.num_splits} * problem.total_q * problem.heads_q * problem.head_dim_v;
  }
  return p;
}

}  // namespace

Status dense_supports_forward(const host::DenseProblem& problem, const DenseForwardArgs& args) {
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    return not_implemented(std::string("the sm80 kernels take fp16/bf16, got ") + dtype_name(problem.dtype) +
                           "; fp32 runs on the CPU backend");
  }
  for (auto [name, tensor] : {std::pair<const char*, const TensorRef*>{"q", &args.q}, {"k", &args.k}, {"v", &args.v},
                              {"out", &args.out}}) {
    if (Status s = check_alignment(name, *tensor); !s) return s;
  }
  if (problem.seqlen_q > kMaxSeqlen || problem.seqlen_k > kMaxSeqlen) {
    return not_implemented("sequence lengths above 2^30 - 1 are not supported (Sq = " +
                           std::to_string(problem.seqlen_q) + ", Sk = " + std::to_string(problem.seqlen_k) + ")");
  }
  if (problem.batch > INT32_MAX || problem.heads_q > INT32_MAX) {
    return not_implemented("batch and heads must be below 2^31");
  }
  ForwardPlan plan;
  if (Status s = make_plan(problem, &plan); !s) return s;
  const std::int64_t ctas = std::int64_t{plan.num_m_blocks} * problem.batch * problem.heads_q * plan.num_splits;
  if (ctas > INT32_MAX) {
    return not_implemented("the grid of " + std::to_string(ctas) +
                           " CTAs (query tiles x batch x heads x splits) passes the 2^31 - 1 limit of grid.x");
  }
  return Status::ok();
}

std::size_t dense_forward_workspace_bytes(const host::DenseProblem& problem) {
  ForwardPlan plan;
  if (!make_plan(problem, &plan)) return 0;  // dense_supports_forward reports the reason
  return workspace_bytes(problem, plan.num_splits);
}

Status dense_forward(const host::DenseProblem& problem, const DenseForwardArgs& args) {
  ForwardPlan plan;
  if (Status s = make_plan(problem, &plan); !s) return s;
  if (plan.num_splits > 1 && args.workspace_bytes < workspace_bytes(problem, plan.num_splits)) {
    return {StatusCode::kWorkspaceTooSmall, "sm80 forward: split-KV needs " +
                                                std::to_string(workspace_bytes(problem, plan.num_splits)) +
                                                " bytes of workspace, got " + std::to_string(args.workspace_bytes)};
  }
  // The partial states are read as float4: the workspace must start on a 16-byte boundary
  // (cudaMalloc gives 256).
  if (plan.num_splits > 1 && reinterpret_cast<std::uintptr_t>(args.workspace) % 16 != 0) {
    return {StatusCode::kInvalidArgument, "workspace: must be 16-byte aligned for the sm80 split-KV forward"};
  }
  const ForwardParams params = make_params(problem, args, plan);
  if (params.num_m_blocks == 0) return Status::ok();  // varlen with max_seqlen_q = 0: no query row
  host::ScopedDevice device(problem.device.index);
  if (device.status() != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm80 forward: cannot select cuda:") +
                                        std::to_string(problem.device.index) + ": " +
                                        cudaGetErrorString(device.status())};
  }
  void* stream = args.options.stream;
  Status launched = problem.dtype == DType::kBFloat16 ? launch_shape<DType::kBFloat16>(plan.shape_index, params, stream)
                                                      : launch_shape<DType::kFloat16>(plan.shape_index, params, stream);
  if (!launched || plan.num_splits == 1) return launched;
  return launch_split_kv_combine(params, problem.dtype, stream);
}

}  // namespace attnkit::sm80
