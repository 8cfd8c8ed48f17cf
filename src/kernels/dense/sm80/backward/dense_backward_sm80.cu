// Host side of the sm_80+ dense attention backward: what it supports, its workspace, and the launch
// sequence  memset(dq_accum, semaphores) -> preprocess (delta) -> sinks -> main -> postprocess (dq).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "host/cuda_runtime.h"
#include "host/cuda_scoped_device.h"
#include "kernels/dense/sm80/backward/dense_backward_sm80_config.h"
#include "kernels/dense/sm80/backward/dense_backward_sm80_params.h"
#include "kernels/dense/sm80/dense_sm80.h"

namespace attnkit::sm80 {
namespace {

using backward::DenseBackwardParams;
using backward::TensorStrides;

constexpr std::size_t kWorkspaceAlignment = 256;
// Every size the kernels index with int stays this far below 2^31, so tile arithmetic cannot overflow.
constexpr std::int64_t kMaxIntExtent = INT_MAX - 1024;

std::size_t align_up(std::size_t bytes) { return (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment; }

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

struct WorkspaceLayout {
  std::size_t delta = 0;         // offset of delta [Hq, total_q] fp32
  std::size_t dq_accum = 0;      // offset of dq_accum (DqAccumLayout: accum rows x Hq x tier) fp32
  std::size_t dq_accum_bytes = 0;
  backward::BackwardTailPlan tail;  // tail split of the main kernel (tail.tiles = 0: none)
  std::size_t tail_counters = 0;    // offset of the split tiles' step counters [tail.tiles] int32
  std::size_t tail_parts = 0;       // offset of their parts [tail.ctas + tail.tiles][backward_tail_part_floats] fp32
  std::size_t zeroed_bytes = 0;     // bytes from dq_accum on that the launch zeroes (dq_accum, the counters)
  std::size_t semaphore = 0;     // offset of the semaphores [B, Hq, num_m_blocks] int32 (deterministic)
  std::size_t semaphore_bytes = 0;
  std::size_t total = 0;
};

// Whether the kernel sees a window (causal included), as dense_backward passes it: a bound that cuts
// nothing is unbounded.
bool kernel_windowed(const host::DenseProblem& problem) {
  return (problem.window_left >= 0 && problem.window_left < problem.seqlen_k) ||
         (problem.window_right >= 0 && problem.window_right < problem.seqlen_q);
}

// The main kernel's tail split for this problem on its device: no split where the launch does not allow
// one or the device's SM count is unknown (the workspace size and the launch call this alike).
backward::BackwardTailPlan tail_plan(const host::DenseProblem& problem, int tier) {
  const bool windowed = kernel_windowed(problem);
  if (problem.device.kind != DeviceKind::kCUDA ||
      !backward::backward_tail_allowed(tier, problem.deterministic, problem.softcap > 0.0f, problem.varlen, windowed,
                                       problem.seqlen_q, problem.seqlen_k)) {
    return {};
  }
  host::CudaDeviceLimits limits;
  if (!host::cuda_device_limits(problem.device.index, &limits)) return {};
  const std::int64_t key_tiles =
      ceil_div(problem.seqlen_k, backward::backward_block_n_for_tier(tier)) * problem.heads_kv * problem.batch;
  const std::int64_t steps_per_tile =
      ceil_div(problem.seqlen_q, backward::backward_block_m_for_tier(tier)) * problem.group;
  return backward::backward_tail_plan(key_tiles, steps_per_tile, limits.sm_count);
}

WorkspaceLayout workspace_layout(const host::DenseProblem& problem) {
  const int tier = backward::backward_head_dim_tier(problem.head_dim, problem.head_dim_v);
  const auto heads = static_cast<std::size_t>(problem.heads_q);
  const auto rows = static_cast<std::size_t>(problem.total_q);
  WorkspaceLayout layout;
  layout.delta = 0;
  layout.dq_accum = align_up(heads * rows * sizeof(float));
  const int block_m = backward::backward_block_m_for_tier(tier);
  const std::int64_t m_blocks = ceil_div(problem.seqlen_q, block_m);
  const auto accum_rows =
      static_cast<std::size_t>(backward::dq_accum_rows(problem.varlen, problem.batch, problem.total_q, m_blocks, block_m));
  layout.dq_accum_bytes = accum_rows * heads * static_cast<std::size_t>(tier) * sizeof(float);
  layout.tail = tail_plan(problem, tier);
  const auto tail_tiles = static_cast<std::size_t>(layout.tail.tiles);
  const std::size_t tail_parts = tail_tiles == 0 ? 0 : tail_tiles + static_cast<std::size_t>(layout.tail.ctas);
  layout.tail_counters = layout.dq_accum + align_up(layout.dq_accum_bytes);
  layout.zeroed_bytes = layout.tail_counters + tail_tiles * sizeof(std::int32_t) - layout.dq_accum;
  layout.tail_parts = layout.tail_counters + align_up(tail_tiles * sizeof(std::int32_t));
  layout.semaphore =
      layout.tail_parts + align_up(tail_parts * backward::backward_tail_part_floats(tier) * sizeof(float));
  if (problem.deterministic) {
    layout.semaphore_bytes = static_cast<std::size_t>(problem.batch) * heads * static_cast<std::size_t>(m_blocks) * sizeof(std::int32_t);
  }
  layout.total = layout.semaphore + align_up(layout.semaphore_bytes);
  return layout;
}

// Strides of a [B, S, H, D] (BSHD) or [T, H, D] (varlen) tensor.
TensorStrides strides_of(const TensorRef& t, bool varlen) {
  if (varlen) return {0, t.strides[0], t.strides[1]};
  return {t.strides[0], t.strides[1], t.strides[2]};
}

// The cp.async and 16-byte vector paths need 16-byte aligned rows: the pointer, and every stride that
// can multiply a non-zero index, a multiple of 8 elements.
std::string alignment_problem(const char* name, const TensorRef& t) {
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) {
    return std::string(name) + ": data pointer is not 16-byte aligned (the sm80 backward copies 16-byte chunks)";
  }
  for (int axis = 0; axis + 1 < t.rank; ++axis) {
    if (t.shape[axis] > 1 && t.strides[axis] % 8 != 0) {
      return std::string(name) + ": stride " + std::to_string(t.strides[axis]) + " of axis " + std::to_string(axis) +
             " is not a multiple of 8 elements (the sm80 backward copies 16-byte chunks)";
    }
  }
  return "";
}

Status cuda_status(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::ok();
  return {StatusCode::kCudaError, std::string("sm80 dense backward: ") + what + ": " + cudaGetErrorString(error)};
}

// Opt-in shared memory per block of a device (bytes), as the runtime reported it once for that device.
Status shared_memory_limit(int device_index, std::size_t* bytes) {
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(device_index, &limits, &why)) {
    return {StatusCode::kCudaError, "sm80 dense backward: cannot query the shared-memory limit: " + why};
  }
  *bytes = static_cast<std::size_t>(limits.shared_memory_per_block_optin);
  return Status::ok();
}

template <typename Element>
Status launch_main_for_tier(int tier, int stages, const DenseBackwardParams& params, cudaStream_t stream) {
  using backward::BackwardTile;
  switch (tier) {
    case 64: return backward::launch_dense_backward_main<Element, BackwardTile<64, 2>>(params, stream);
    case 128: return backward::launch_dense_backward_main<Element, BackwardTile<128, 2>>(params, stream);
    default:
      return stages == 2 ? backward::launch_dense_backward_main<Element, BackwardTile<256, 2>>(params, stream)
                         : backward::launch_dense_backward_main<Element, BackwardTile<256, 1>>(params, stream);
  }
}

}  // namespace

Status dense_supports_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args) {
  std::string reasons;
  auto add = [&reasons](const std::string& reason) {
    if (!reason.empty()) reasons += (reasons.empty() ? "" : "; ") + reason;
  };
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    add(std::string("dtype ") + dtype_name(problem.dtype) +
        ": the sm80 backward runs fp16 and bf16 (fp32 runs on the CPU backend)");
  }
  for (const auto& [name, tensor] : {std::pair<const char*, const TensorRef*>{"q", &args.q}, {"k", &args.k},
                                     {"v", &args.v}, {"out", &args.out}, {"dout", &args.dout}, {"dq", &args.dq},
                                     {"dk", &args.dk}, {"dv", &args.dv}}) {
    add(alignment_problem(name, *tensor));
  }
  for (const auto& [name, extent] : {std::pair<const char*, std::int64_t>{"total query rows", problem.total_q},
                                     {"total key rows", problem.total_k}, {"seqlen_q", problem.seqlen_q},
                                     {"seqlen_k", problem.seqlen_k}, {"heads_q", problem.heads_q},
                                     {"batch", problem.batch}}) {
    if (extent > kMaxIntExtent) {
      add(std::string(name) + " = " + std::to_string(extent) + " exceeds the sm80 backward's limit of " +
          std::to_string(kMaxIntExtent));
    }
  }
  const int tier = backward::backward_head_dim_tier(problem.head_dim, problem.head_dim_v);
  const std::int64_t ctas =
      ceil_div(problem.seqlen_k, backward::backward_block_n_for_tier(tier)) * problem.heads_kv * problem.batch;
  if (ctas > INT_MAX) {
    add("the grid would need " + std::to_string(ctas) + " CTAs, more than 2^31 - 1");
  }
  if (problem.device.kind == DeviceKind::kCUDA) {
    std::size_t smem_optin = 0;
    if (Status s = shared_memory_limit(problem.device.index, &smem_optin); !s) return s;
    const std::size_t needed = backward::backward_min_smem_bytes_for_tier(tier);
    if (smem_optin < needed) {
      add("head dims (" + std::to_string(problem.head_dim) + ", " + std::to_string(problem.head_dim_v) +
          ") need " + std::to_string(needed) + " bytes of shared memory per block; " +
          device_name(problem.device) + " allows " + std::to_string(smem_optin));
    }
  }
  if (!reasons.empty()) return {StatusCode::kNotImplemented, "sm80 backward: " + reasons};
  return Status::ok();
}

std::size_t dense_backward_workspace_bytes(const host::DenseProblem& problem) {
  return workspace_layout(problem).total;
}

Status dense_backward(const host::DenseProblem& problem, const DenseBackwardArgs& args) {
  const int tier = backward::backward_head_dim_tier(problem.head_dim, problem.head_dim_v);
  const WorkspaceLayout layout = workspace_layout(problem);
  auto* workspace = static_cast<std::uint8_t*>(args.workspace);

  DenseBackwardParams p;
  p.q = args.q.data;
  p.k = args.k.data;
  p.v = args.v.data;
  p.out = args.out.data;
  p.dout = args.dout.data;
  p.dq = args.dq.data;
  p.dk = args.dk.data;
  p.dv = args.dv.data;
  p.q_strides = strides_of(args.q, problem.varlen);
  p.k_strides = strides_of(args.k, problem.varlen);
  p.v_strides = strides_of(args.v, problem.varlen);
  p.out_strides = strides_of(args.out, problem.varlen);
  p.dout_strides = strides_of(args.dout, problem.varlen);
  p.dq_strides = strides_of(args.dq, problem.varlen);
  p.dk_strides = strides_of(args.dk, problem.varlen);
  p.dv_strides = strides_of(args.dv, problem.varlen);
  p.lse = static_cast<const float*>(args.lse.data);
  // lse is [B, Hq, Sq] (BSHD) or [Hq, Tq] (varlen).
  p.lse_strides = problem.varlen ? TensorStrides{0, args.lse.strides[1], args.lse.strides[0]}
                                 : TensorStrides{args.lse.strides[0], args.lse.strides[2], args.lse.strides[1]};
  if (problem.has_sinks) {
    p.sinks = static_cast<const float*>(args.sinks.data);
    p.sinks_stride = args.sinks.strides[0];
    p.dsinks = static_cast<float*>(args.dsinks.data);
    p.dsinks_stride = args.dsinks.strides[0];
  }
  if (problem.varlen) {
    p.cu_seqlens_q = static_cast<const std::int32_t*>(args.cu_seqlens_q.data);
    p.cu_seqlens_k = static_cast<const std::int32_t*>(args.cu_seqlens_k.data);
  }
  p.delta = reinterpret_cast<float*>(workspace + layout.delta);
  p.dq_accum = reinterpret_cast<float*>(workspace + layout.dq_accum);
  p.dq_semaphore = problem.deterministic ? reinterpret_cast<std::int32_t*>(workspace + layout.semaphore) : nullptr;
  if (layout.tail.tiles > 0) {
    p.tail_first_cta = layout.tail.first_cta;
    p.tail_tiles = layout.tail.tiles;
    p.tail_ctas = layout.tail.ctas;
    p.tail_steps_per_tile =
        static_cast<int>(ceil_div(problem.seqlen_q, backward::backward_block_m_for_tier(tier)) * problem.group);
    p.tail_counters = reinterpret_cast<std::int32_t*>(workspace + layout.tail_counters);
    p.tail_parts = reinterpret_cast<float*>(workspace + layout.tail_parts);
  }
  p.batch = static_cast<int>(problem.batch);
  p.seqlen_q = static_cast<int>(problem.seqlen_q);
  p.seqlen_k = static_cast<int>(problem.seqlen_k);
  p.total_q = static_cast<int>(problem.total_q);
  p.total_k = static_cast<int>(problem.total_k);
  p.heads_q = static_cast<int>(problem.heads_q);
  p.heads_kv = static_cast<int>(problem.heads_kv);
  p.group = static_cast<int>(problem.group);
  p.head_dim = static_cast<int>(problem.head_dim);
  p.head_dim_v = static_cast<int>(problem.head_dim_v);
  p.num_m_blocks = static_cast<int>(ceil_div(problem.seqlen_q, backward::backward_block_m_for_tier(tier)));
  p.num_n_blocks = static_cast<int>(ceil_div(problem.seqlen_k, backward::backward_block_n_for_tier(tier)));
  p.scale = problem.scale;
  p.softcap = problem.softcap;
  // A bound at least as wide as the longest sequence cuts nothing: pass it as unbounded, which also
  // keeps the rest within int. (j - i >= Sk - Sq - left holds for all i, j once left >= Sk - 1.)
  p.window_left = problem.window_left >= problem.seqlen_k ? -1 : static_cast<int>(problem.window_left);
  p.window_right = problem.window_right >= problem.seqlen_q ? -1 : static_cast<int>(problem.window_right);
  p.deterministic = problem.deterministic;
  p.fp16 = problem.dtype == DType::kFloat16;
  p.tile_group = backward::backward_tile_group(tier, problem.deterministic, problem.varlen, kernel_windowed(problem),
                                               problem.seqlen_q, problem.group, problem.heads_kv * problem.batch);

  host::ScopedDevice device(problem.device.index);
  if (Status s = cuda_status(device.status(), "cannot select the tensors' device"); !s) return s;
  auto stream = static_cast<cudaStream_t>(args.options.stream);

  if (Status s = cuda_status(cudaMemsetAsync(p.dq_accum, 0, layout.zeroed_bytes, stream), "zeroing dq_accum"); !s)
    return s;
  if (layout.semaphore_bytes > 0) {
    if (Status s = cuda_status(cudaMemsetAsync(p.dq_semaphore, 0, layout.semaphore_bytes, stream), "zeroing semaphores");
        !s)
      return s;
  }
  if (Status s = backward::launch_dense_backward_preprocess(p, stream); !s) return s;
  if (problem.has_sinks) {
    if (Status s = backward::launch_dense_backward_sinks(p, stream); !s) return s;
  }
  std::size_t smem_limit = 0;
  if (Status s = shared_memory_limit(problem.device.index, &smem_limit); !s) return s;
  const int stages = backward::backward_stages_for_tier(tier, smem_limit);
  const Status main = p.fp16 ? launch_main_for_tier<__half>(tier, stages, p, stream)
                             : launch_main_for_tier<__nv_bfloat16>(tier, stages, p, stream);
  if (!main) return main;
  return backward::launch_dense_backward_postprocess(p, tier, stream);
}

}  // namespace attnkit::sm80
