// Host side of the sm90 dense forward: what it supports (and why not) and the launch. Every decision
// is made here from the validated DenseProblem; the kernel makes none.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "host/cuda_runtime.h"
#include "host/cuda_scoped_device.h"
#include "host/split_kv_heuristic.h"
#include "kernels/dense/sm90/dense_sm90.h"
#include "kernels/dense/sm90/forward/forward_params_sm90.h"

namespace attnkit::sm90 {
namespace {

// Sums such as row + (Sk - Sq) + window stay below 2^31 only while Sq and Sk stay below 2^30; TMA
// coordinates are int32, so token counts must stay below 2^31.
constexpr std::int64_t kMaxSeqlen = (std::int64_t{1} << 30) - 1;
constexpr std::int64_t kMaxTokens = INT32_MAX;

Status not_implemented(const std::string& why) { return {StatusCode::kNotImplemented, "sm90 forward: " + why}; }

// Which (tile shape, dtype) instantiations this build compiled (src/kernels/dense/sm90/CMakeLists.txt
// defines one macro per generated file).
bool instance_compiled(int shape_index, DType dtype) {
  const bool bf16 = dtype == DType::kBFloat16;
  switch (shape_index) {
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D64_DV64_BF16)
    case 0: if (bf16) return true; break;
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D128_DV128_BF16)
    case 1: if (bf16) return true; break;
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D192_DV128_BF16)
    case 2: if (bf16) return true; break;
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D256_DV256_BF16)
    case 3: if (bf16) return true; break;
#endif
    default: break;
  }
  switch (shape_index) {
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D64_DV64_FP16)
    case 0: return !bf16;
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D128_DV128_FP16)
    case 1: return !bf16;
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D192_DV128_FP16)
    case 2: return !bf16;
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D256_DV256_FP16)
    case 3: return !bf16;
#endif
    default: return false;
  }
}

template <int kShapeIndex, DType kDType>
Status launch_if_compiled(const ForwardParams& params, void* stream);

#define ATTNKIT_SM90_LAUNCH(INDEX, DTYPE)                                                         \
  template <>                                                                                    \
  Status launch_if_compiled<INDEX, DTYPE>(const ForwardParams& params, void* stream) {           \
    return launch_dense_forward_sm90<INDEX, DTYPE>(params, stream);                              \
  }
#define ATTNKIT_SM90_MISSING(INDEX, DTYPE)                                                      \
  template <>                                                                                    \
  Status launch_if_compiled<INDEX, DTYPE>(const ForwardParams&, void*) {                         \
    return {StatusCode::kNotCompiled, "sm90 forward: tile " #INDEX " was not compiled"};         \
  }

#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D64_DV64_BF16)
ATTNKIT_SM90_LAUNCH(0, DType::kBFloat16)
#else
ATTNKIT_SM90_MISSING(0, DType::kBFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D128_DV128_BF16)
ATTNKIT_SM90_LAUNCH(1, DType::kBFloat16)
#else
ATTNKIT_SM90_MISSING(1, DType::kBFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D192_DV128_BF16)
ATTNKIT_SM90_LAUNCH(2, DType::kBFloat16)
#else
ATTNKIT_SM90_MISSING(2, DType::kBFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D256_DV256_BF16)
ATTNKIT_SM90_LAUNCH(3, DType::kBFloat16)
#else
ATTNKIT_SM90_MISSING(3, DType::kBFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D64_DV64_FP16)
ATTNKIT_SM90_LAUNCH(0, DType::kFloat16)
#else
ATTNKIT_SM90_MISSING(0, DType::kFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D128_DV128_FP16)
ATTNKIT_SM90_LAUNCH(1, DType::kFloat16)
#else
ATTNKIT_SM90_MISSING(1, DType::kFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D192_DV128_FP16)
ATTNKIT_SM90_LAUNCH(2, DType::kFloat16)
#else
ATTNKIT_SM90_MISSING(2, DType::kFloat16)
#endif
#if defined(ATTNKIT_HAVE_FORWARD_INSTANCE_SM90_D256_DV256_FP16)
ATTNKIT_SM90_LAUNCH(3, DType::kFloat16)
#else
ATTNKIT_SM90_MISSING(3, DType::kFloat16)
#endif
#undef ATTNKIT_SM90_LAUNCH
#undef ATTNKIT_SM90_MISSING

template <DType kDType>
Status launch_shape(int shape_index, const ForwardParams& params, void* stream) {
  static_assert(kForwardTileShapeCountSm90 == 4, "add the new tile shape here and rerun generate_instantiations.py");
  switch (shape_index) {
    case 0: return launch_if_compiled<0, kDType>(params, stream);
    case 1: return launch_if_compiled<1, kDType>(params, stream);
    case 2: return launch_if_compiled<2, kDType>(params, stream);
    case 3: return launch_if_compiled<3, kDType>(params, stream);
    default: return {StatusCode::kInternal, "sm90 forward: no tile shape " + std::to_string(shape_index)};
  }
}

// The first tile shape that covers (D, Dv), or -1. compiled_only: the first this build compiled (a
// partial development build runs D = 64 on the 128 tile rather than refusing it).
int shape_for(const host::DenseProblem& problem, bool compiled_only) {
  for (int i = 0; i < kForwardTileShapeCountSm90; ++i) {
    const ForwardTileShape& shape = kForwardTileShapesSm90[i];
    if (problem.head_dim <= shape.head_dim && problem.head_dim_v <= shape.head_dim_v &&
        (!compiled_only || instance_compiled(i, problem.dtype))) {
      return i;
    }
  }
  return -1;
}

int num_m_blocks(const host::DenseProblem& problem, int shape_index) {
  const int block_m = kForwardTileShapesSm90[shape_index].block_m;
  return static_cast<int>((problem.seqlen_q + block_m - 1) / block_m);
}

// TMA (the loads of q, k, v and the stores of out, or 16-byte vector stores for a varlen tile at the
// end of its sequence) needs a 16-byte aligned base and every stride of an axis longer than 1 a
// multiple of 16 bytes.
Status check_alignment(const char* name, const TensorRef& t) {
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) {
    return not_implemented(std::string(name) + ": data pointer must be 16-byte aligned for TMA (address % 16 = " +
                           std::to_string(reinterpret_cast<std::uintptr_t>(t.data) % 16) + ")");
  }
  const std::int64_t element = static_cast<std::int64_t>(dtype_size(t.dtype));
  for (int axis = 0; axis + 1 < t.rank; ++axis) {
    if (t.shape[axis] > 1 && (t.strides[axis] * element) % 16 != 0) {
      return not_implemented(std::string(name) + ": stride " + std::to_string(t.strides[axis]) + " of axis " +
                             std::to_string(axis) + " is not a multiple of 16 bytes (" + std::to_string(16 / element) +
                             " elements), which TMA needs");
    }
    // A TMA descriptor takes strides below 2^40 bytes.
    if (t.shape[axis] > 1 && t.strides[axis] * element >= (std::int64_t{1} << 40)) {
      return not_implemented(std::string(name) + ": stride " + std::to_string(t.strides[axis]) + " of axis " +
                             std::to_string(axis) + " passes the 2^40-byte limit of a TMA descriptor");
    }
  }
  return Status::ok();
}

int clamp_window(std::int64_t bound, std::int64_t unbounded_from) {
  return bound < 0 || bound >= unbounded_from ? -1 : static_cast<int>(bound);
}

ForwardParams make_params(const host::DenseProblem& problem, const DenseForwardArgs& args, int shape_index,
                          int sm_count) {
  ForwardParams p;
  p.q = args.q.data;
  p.k = args.k.data;
  p.v = args.v.data;
  p.out = args.out.data;
  p.lse = static_cast<float*>(args.lse.data);
  p.sinks = static_cast<const float*>(args.sinks.data);
  p.varlen = problem.varlen;
  // BSHD strides (batch, row, head, 1); varlen (row, head, 1) with no batch axis. An axis of extent 1
  // is never stepped along, but TMA still wants its stride a multiple of 16 bytes: 8 elements will do.
  const int first = problem.varlen ? 0 : 1;
  auto strides = [&](const TensorRef& t, bool tma, std::int64_t* batch, std::int64_t* row, std::int64_t* head) {
    auto usable = [&](int axis) {
      if (axis < 0) return std::int64_t{8};
      return tma && t.shape[axis] <= 1 ? std::int64_t{8} : t.strides[axis];
    };
    *batch = problem.varlen ? (tma ? 8 : 0) : usable(0);
    *row = usable(first);
    *head = usable(first + 1);
  };
  strides(args.q, true, &p.q_batch_stride, &p.q_row_stride, &p.q_head_stride);
  strides(args.k, true, &p.k_batch_stride, &p.k_row_stride, &p.k_head_stride);
  strides(args.v, true, &p.v_batch_stride, &p.v_row_stride, &p.v_head_stride);
  strides(args.out, true, &p.out_batch_stride, &p.out_row_stride, &p.out_head_stride);  // TMA stores O
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
  p.heads_kv = static_cast<int>(problem.heads_kv);
  p.group = static_cast<int>(problem.group);
  p.seqlen_q = static_cast<int>(problem.seqlen_q);
  p.seqlen_k = static_cast<int>(problem.seqlen_k);
  p.total_q = problem.total_q;
  p.total_k = problem.total_k;
  p.head_dim = static_cast<int>(problem.head_dim);
  p.head_dim_v = static_cast<int>(problem.head_dim_v);
  // No key row at all: no tile is loaded, but the TMA descriptors must still describe real memory of
  // at least one row. q's does (it has rows, or there would be no work).
  if ((problem.varlen ? problem.total_k : problem.seqlen_k) == 0) {
    p.k = p.v = p.q;
    p.k_batch_stride = p.v_batch_stride = p.q_batch_stride;
    p.k_row_stride = p.v_row_stride = p.q_row_stride;
    p.k_head_stride = p.v_head_stride = p.q_head_stride;
    p.heads_kv = std::min<int>(p.heads_kv, p.heads_q);
  }
  constexpr float kLog2e = 1.4426950408889634f;
  p.softcap = problem.softcap > 0.0f;
  if (p.softcap) {
    p.score_premultiplier = problem.scale / problem.softcap;
    p.softmax_scale_log2 = problem.softcap * kLog2e;
  } else {
    p.softmax_scale_log2 = problem.scale * kLog2e;
  }
  p.window_left = clamp_window(problem.window_left, problem.seqlen_k);
  p.window_right = clamp_window(problem.window_right, problem.seqlen_q);
  p.num_m_blocks = num_m_blocks(problem, shape_index);
  p.heavy_first = p.window_left >= 0 || p.window_right >= 0;
  if (p.heavy_first) {
    // Sections of (batch, head) pairs whose K/V fit in 32 MiB of the 50 MiB L2 (ForwardTileScheduler):
    // a section's tiles of one query-tile index run together, each reading its own head's K/V, which
    // must stay in L2 until the next index's tiles of the same heads come round. A query head's pairs
    // are adjacent within a batch entry, so `group` of them share one K/V head.
    //
    // Heads of at most 8 query tiles go head by head: there the sections measured slower on every D
    // (issue-5 causal S = 1024, 6 or 8 query tiles a head: D = 64 -8.0%, D = 128 -1.0%, D = 256 -1.3%,
    // where the tail model promised +3-11%), while from 11 query tiles up (S >= 2048) they gained
    // 2.6-7.9% (NOTES.md, run 17). The cost falls with the tile's length, as a fixed cost per tile
    // would: likely its first K/V tiles missing in L2, which the other query tiles of its head, running
    // beside it head by head, would have loaded. Only the last pairs, at most two waves of tiles and
    // 16 MiB of K/V, form one section, so that the launch still ends on light tiles. Measured at causal
    // S = 1024 over head by head with the same kernels (run 18, H100): D = 64 +2.6%, D = 128 +4.1%,
    // D = 256 +8.1% (two waves without the 16 MiB bound: +2.7%, +3.9%, +5.9%; sections of 16 MiB
    // throughout: 0.0%, +1.0%, +1.4%).
    constexpr int kHeadByHeadMaxQueryTiles = 8;
    constexpr int kTailWaves = 2;
    constexpr std::int64_t kTailBytes = std::int64_t{16} << 20;
    constexpr std::int64_t kSectionBytes = std::int64_t{32} << 20;
    const std::int64_t kv_head_bytes = std::max<std::int64_t>(
        1, std::int64_t{p.seqlen_k} * (problem.head_dim + problem.head_dim_v) * std::int64_t(dtype_size(problem.dtype)));
    const std::int64_t pairs = std::int64_t{problem.batch} * problem.heads_q;
    if (p.num_m_blocks <= kHeadByHeadMaxQueryTiles) {
      const std::int64_t tail = std::min<std::int64_t>(
          {pairs, (std::int64_t{kTailWaves} * sm_count + p.num_m_blocks - 1) / p.num_m_blocks,
           std::max<std::int64_t>(1, kTailBytes / kv_head_bytes) * problem.group});
      p.head_by_head_pairs = static_cast<int>(pairs - tail);
      p.section_heads = static_cast<int>(std::max<std::int64_t>(1, tail));
    } else {
      p.head_by_head_pairs = 0;
      p.section_heads = static_cast<int>(std::min<std::int64_t>(
          pairs, std::max<std::int64_t>(1, kSectionBytes / kv_head_bytes) * problem.group));
    }
  }
  // One persistent CTA per SM (a CTA takes all of an SM's registers), never more than the work tiles.
  const std::int64_t tiles = std::int64_t{p.num_m_blocks} * problem.batch * problem.heads_q;
  p.num_ctas = static_cast<int>(std::min<std::int64_t>(tiles, sm_count));
  p.tile_counter = static_cast<int*>(args.workspace);
  return p;
}

}  // namespace

Status dense_supports_forward(const host::DenseProblem& problem, const DenseForwardArgs& args) {
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    return not_implemented(std::string("the sm90 kernels take fp16/bf16, got ") + dtype_name(problem.dtype) +
                           "; fp32 runs on the CPU backend");
  }
  const int shape_index = shape_for(problem, true);
  if (shape_index < 0) {
    return {StatusCode::kNotCompiled, "sm90 forward: no compiled " + std::string(dtype_name(problem.dtype)) +
                                          " tile covers (D, Dv) = (" + std::to_string(problem.head_dim) + ", " +
                                          std::to_string(problem.head_dim_v) +
                                          ") (the build's ATTNKIT_SM90_FORWARD_INSTANCES left it out)"};
  }
  const ForwardTileShape& shape = kForwardTileShapesSm90[shape_index];
  for (auto [name, tensor] : {std::pair<const char*, const TensorRef*>{"q", &args.q}, {"k", &args.k}, {"v", &args.v},
                              {"out", &args.out}}) {
    if (Status s = check_alignment(name, *tensor); !s) return s;
  }
  if (problem.seqlen_q > kMaxSeqlen || problem.seqlen_k > kMaxSeqlen) {
    return not_implemented("sequence lengths above 2^30 - 1 are not supported (Sq = " +
                           std::to_string(problem.seqlen_q) + ", Sk = " + std::to_string(problem.seqlen_k) + ")");
  }
  if (problem.total_q > kMaxTokens || problem.total_k > kMaxTokens) {
    return not_implemented("token counts above 2^31 - 1 pass the int32 coordinates of TMA");
  }
  if (problem.batch > INT32_MAX || problem.heads_q > INT32_MAX) {
    return not_implemented("batch and heads must be below 2^31");
  }
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(problem.device.index, &limits, &why)) {
    return {StatusCode::kCudaError, "sm90 forward: " + why};
  }
  if (shape.shared_memory_bytes() > limits.shared_memory_per_block_optin) {
    return not_implemented("the " + std::to_string(shape.head_dim) + "x" + std::to_string(shape.head_dim_v) +
                           " tile needs " + std::to_string(shape.shared_memory_bytes()) +
                           " bytes of shared memory; cuda:" + std::to_string(problem.device.index) + " offers " +
                           std::to_string(limits.shared_memory_per_block_optin));
  }
  const std::int64_t ctas = std::int64_t{num_m_blocks(problem, shape_index)} * problem.batch * problem.heads_q;
  if (ctas > INT32_MAX) {
    return not_implemented("the grid of " + std::to_string(ctas) +
                           " CTAs (query tiles x batch x heads) passes the 2^31 - 1 limit of grid.x");
  }
  // Few query tiles against long keys want split-KV (flash-decoding), which only the sm80 forward has:
  // under Backend::kAuto that path is faster, so sm90 declines; asked for by name, sm90 runs unsplit.
  if (args.options.backend == Backend::kAuto) {
    host::SplitKvShape split_shape;
    split_shape.batch_heads = problem.batch * problem.heads_q;
    split_shape.query_tiles = num_m_blocks(problem, shape_index);
    split_shape.key_length = problem.seqlen_k;
    split_shape.key_tile = shape.block_n;
    split_shape.sm_count = limits.sm_count;
    split_shape.ctas_per_sm = 1;
    const int splits = host::split_kv_count(split_shape);
    if (splits > 1) {
      return not_implemented("few query tiles (" + std::to_string(ctas) + " CTAs for " +
                             std::to_string(limits.sm_count) + " SMs) against long keys want split-KV into " +
                             std::to_string(splits) + ", which the sm90 forward does not have yet");
    }
  }
  return Status::ok();
}

// The work-tile counter of the dynamic persistent scheduler (an int; 16 bytes keep what follows aligned).
constexpr std::size_t kWorkspaceBytes = 16;

std::size_t dense_forward_workspace_bytes(const host::DenseProblem&) { return kWorkspaceBytes; }

Status dense_forward(const host::DenseProblem& problem, const DenseForwardArgs& args) {
  const int shape_index = shape_for(problem, true);
  if (shape_index < 0) return {StatusCode::kNotCompiled, "sm90 forward: no compiled tile for this head dim"};
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(problem.device.index, &limits, &why)) {
    return {StatusCode::kCudaError, "sm90 forward: " + why};
  }
  const ForwardParams params = make_params(problem, args, shape_index, limits.sm_count);
  if (params.num_ctas == 0) return Status::ok();  // varlen with max_seqlen_q = 0: no query row
  host::ScopedDevice device(problem.device.index);
  if (device.status() != cudaSuccess) {
    return {StatusCode::kCudaError, std::string("sm90 forward: cannot select cuda:") +
                                        std::to_string(problem.device.index) + ": " +
                                        cudaGetErrorString(device.status())};
  }
  void* stream = args.options.stream;
  if (args.workspace == nullptr || args.workspace_bytes < kWorkspaceBytes) {
    return {StatusCode::kWorkspaceTooSmall, "sm90 forward: needs " + std::to_string(kWorkspaceBytes) +
                                                " bytes of workspace, got " + std::to_string(args.workspace_bytes)};
  }
  // The counter is an int, updated with atomicAdd: it must sit on a 4-byte boundary (cudaMalloc gives 256).
  if (reinterpret_cast<std::uintptr_t>(args.workspace) % alignof(int) != 0) {
    return {StatusCode::kInvalidArgument, "workspace: must be 4-byte aligned for the sm90 forward's tile counter"};
  }
  // The counter starts at 0 on every launch, and every launch leaves it at 0 (the last tile draw resets
  // it). A workspace the dispatch knows to be zero (problem.workspace_zeroed: the Python package's
  // per-stream buffer, used by nothing else) needs no memset, 0.9 us of host time a call on the H100;
  // any other is zeroed here, with an asynchronous memset that keeps the call graph-capturable.
  if (!problem.workspace_zeroed) {
    if (cudaError_t error =
            cudaMemsetAsync(params.tile_counter, 0, sizeof(int), static_cast<cudaStream_t>(stream));
        error != cudaSuccess) {
      return {StatusCode::kCudaError, std::string("sm90 forward: workspace memset: ") + cudaGetErrorString(error)};
    }
  }
  return problem.dtype == DType::kBFloat16 ? launch_shape<DType::kBFloat16>(shape_index, params, stream)
                                           : launch_shape<DType::kFloat16>(shape_index, params, stream);
}

}  // namespace attnkit::sm90
