// LinearProblem -> kernel parameters for the sm80 linear-attention kernels, and what they support.
#include "kernels/linear/sm80/linear_sm80.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "host/cuda_runtime.h"
#include "host/cuda_scoped_device.h"
#include "kernels/linear/sm80/linear_backward_plan.h"
#include "kernels/linear/sm80/linear_backward_sm80.h"
#include "kernels/linear/sm80/linear_gdn_plan.h"
#include "kernels/linear/sm80/linear_kda_plan.h"
#include "kernels/linear/sm80/linear_sm80_kernels.h"

namespace attnkit::sm80 {
namespace {

using host::LinearProblem;

LinearElement element_of(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return LinearElement::kFloat16;
    case DType::kBFloat16: return LinearElement::kBFloat16;
    default: return LinearElement::kFloat32;
  }
}

LinearTokenTensor token_tensor(const TensorRef& ref, const host::TokenStrides& strides) {
  return {ref.data, strides.batch, strides.token, strides.head};
}

LinearStateTensor state_tensor(const TensorRef& ref, const host::StateStrides& strides) {
  return {static_cast<float*>(ref.data), strides.sequence, strides.head, strides.row};
}

template <typename Args>
LinearCommonParams common_params(const LinearProblem& problem, const Args& args) {
  LinearCommonParams c;
  c.q = token_tensor(args.q, problem.q);
  c.k = token_tensor(args.k, problem.k);
  c.v = token_tensor(args.v, problem.v);
  c.g = token_tensor(args.g, problem.g);
  c.beta = token_tensor(args.beta, problem.beta);
  c.out = token_tensor(args.out, problem.out);
  c.out_data = args.out.data;
  c.A_log = static_cast<const float*>(args.A_log.data);
  c.dt_bias = problem.has_dt_bias ? static_cast<const float*>(args.dt_bias.data) : nullptr;
  c.io_element = element_of(problem.dtype);
  c.gate_element = element_of(problem.gate_dtype);
  c.beta_element = element_of(problem.beta_dtype);
  switch (problem.gate_form) {
    case LinearGateForm::kLogDecay: c.gate = LinearGate::kLogDecay; break;
    case LinearGateForm::kSoftplus: c.gate = LinearGate::kSoftplus; break;
    case LinearGateForm::kLowerBoundSigmoid: c.gate = LinearGate::kLowerBoundSigmoid; break;
  }
  switch (problem.beta_form) {
    case LinearBetaForm::kValue: c.beta_form = LinearBeta::kValue; break;
    case LinearBetaForm::kSigmoid: c.beta_form = LinearBeta::kSigmoid; break;
    case LinearBetaForm::kTwoSigmoid: c.beta_form = LinearBeta::kTwoSigmoid; break;
  }
  c.gate_lower_bound = problem.gate_lower_bound;
  c.scale = problem.scale;
  c.l2norm_qk = problem.l2norm_qk;
  c.per_key_gate = problem.per_key_gate();
  c.state_vk = problem.state_layout == LinearStateLayout::kVK;
  c.heads_v = static_cast<int>(problem.heads_v);
  c.group = static_cast<int>(problem.group);
  c.key_dim = static_cast<int>(problem.key_dim);
  c.value_dim = static_cast<int>(problem.value_dim);
  return c;
}

// Grid limits shared by both kernels: value heads on grid.y, (sequence, value slice) on grid.x.
Status grid_fits(const LinearProblem& problem, std::int64_t slices) {
  if (problem.heads_v > 65535) {
    return {StatusCode::kNotImplemented, "HV = " + std::to_string(problem.heads_v) +
                                             " value heads: the sm80 linear kernels put them on grid.y (at most 65535)"};
  }
  if (problem.num_sequences * slices > 0x7fffffff) {
    return {StatusCode::kNotImplemented, "N = " + std::to_string(problem.num_sequences) +
                                             " sequences times the value slices exceed grid.x (2^31 - 1)"};
  }
  return Status::ok();
}

bool aligned16(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; }
bool strides_multiple_of_8(const host::TokenStrides& s) { return s.batch % 8 == 0 && s.token % 8 == 0 && s.head % 8 == 0; }

cudaStream_t stream_of(const LinearOptions& options) { return static_cast<cudaStream_t>(options.stream); }

Status launch_status(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::ok();
  return {StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(error)};
}

// Where the chunk-parallel forwards keep their intermediates (LinearChunkWorkspace) in the workspace:
// byte offsets of 256-byte aligned pieces. At (B, T, HV) = (4, 8192, 32), K = V = 128: GDN 2.15 GB,
// KDA 2.9 GB (its update's k as a pair, scale q Gamma, P as a pair and exp(G_last) besides GDN's pieces).
struct ChunkWorkspaceLayout {
  std::int64_t slots = 0;
  std::int64_t value_pad = 0;
  std::size_t w_neg = 0, key = 0, u = 0, gate = 0, h = 0, v_new = 0, v_new_lo = 0, total = 0;
  std::size_t key_lo = 0, query = 0, p = 0, p_lo = 0, decay = 0;  // KDA only
};

ChunkWorkspaceLayout chunk_workspace_layout(const LinearProblem& problem) {
  constexpr std::int64_t kChunk = kLinearChunk;
  ChunkWorkspaceLayout layout;
  layout.slots = problem.varlen ? problem.seqlen / kChunk + problem.num_sequences
                                : problem.num_sequences * ((problem.seqlen + kChunk - 1) / kChunk);
  layout.value_pad = (problem.value_dim + 63) / 64 * 64;
  const std::size_t heads = static_cast<std::size_t>(layout.slots) * static_cast<std::size_t>(problem.heads_v);
  const std::size_t element = 2;  // fp16 / bf16
  auto take = [&](std::size_t bytes) {
    const std::size_t at = layout.total;
    layout.total += (bytes + 255) / 256 * 256;
    return at;
  };
  layout.w_neg = take(heads * kChunk * kLinearForwardMaxKeyDim * element);
  layout.key = take(heads * kChunk * kLinearForwardMaxKeyDim * element);
  layout.u = take(heads * kChunk * layout.value_pad * sizeof(float));
  layout.gate = take(heads * kChunk * sizeof(float));
  layout.h = take(heads * kLinearForwardMaxKeyDim * layout.value_pad * element);
  layout.v_new = take(heads * kChunk * layout.value_pad * element);
  layout.v_new_lo = take(heads * kChunk * layout.value_pad * element);
  if (problem.per_key_gate()) {
    layout.key_lo = take(heads * kChunk * kLinearForwardMaxKeyDim * element);
    layout.query = take(heads * kChunk * kLinearForwardMaxKeyDim * element);
    layout.p = take(heads * kChunk * kChunk * element);
    layout.p_lo = take(heads * kChunk * kChunk * element);
    layout.decay = take(heads * kLinearForwardMaxKeyDim * sizeof(float));
  }
  return layout;
}

}  // namespace

// The chunked kernels' shared memory against the device's per-block opt-in limit (linear_gdn_plan.h,
// linear_kda_plan.h): sm_86 / sm_89 / sm_120 give a block 99 KB, where the state pass and the output kernel
// would fail to launch. Checked here, with the other limits, so that explain() and dispatch say so too.
Status forward_shared_memory_fits(const LinearProblem& problem) {
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(problem.device.index, &limits, &why)) {
    return {StatusCode::kCudaError, "linear forward (sm80): " + why};
  }
  const std::int64_t optin = limits.shared_memory_per_block_optin;
  const std::string allows = " bytes of shared memory per block; cuda:" + std::to_string(problem.device.index) +
                             " allows " + std::to_string(optin);
  if (!problem.per_key_gate()) {
    const int gdn_slice = gdn_forward_state_slice(problem.num_sequences, problem.heads_v, problem.value_dim, limits.sm_count);
    if (gdn_forward_plan(problem.num_sequences, problem.heads_v, problem.value_dim, limits.sm_count, optin) != 0) {
      return Status::ok();
    }
    return {StatusCode::kNotImplemented, "linear forward (sm80): the GDN state pass (value slices of " +
                                             std::to_string(gdn_slice) + ") and output kernels need " +
                                             std::to_string(gdn_state_shared_bytes(gdn_slice)) + " and " +
                                             std::to_string(gdn_output_shared_bytes()) + allows};
  }
  if (kda_forward_plan(problem.num_sequences, problem.heads_v, problem.value_dim, limits.sm_count, optin) != 0) {
    return Status::ok();
  }
  const int slice = kda_forward_state_slice(problem.num_sequences, problem.heads_v, problem.value_dim, limits.sm_count, optin);
  return {StatusCode::kNotImplemented, "linear forward (sm80): the KDA prep, state pass (value slices of " +
                                           std::to_string(slice) + ") and output kernels need " +
                                           std::to_string(kda_prep_shared_bytes()) + ", " +
                                           std::to_string(kda_state_shared_bytes(slice)) + " and " +
                                           std::to_string(kda_output_shared_bytes()) + allows};
}

Status linear_supports_forward(const LinearProblem& problem, const LinearForwardArgs&) {
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    return {StatusCode::kNotImplemented, std::string("the sm80 chunked forward takes fp16 or bf16 q/k/v, not ") +
                                             dtype_name(problem.dtype)};
  }
  if (problem.key_dim > kLinearForwardMaxKeyDim) {
    return {StatusCode::kNotImplemented, "K = " + std::to_string(problem.key_dim) +
                                             ": the sm80 chunked forward pads K to 128 and supports K <= 128"};
  }
  if (Status fits = forward_shared_memory_fits(problem); !fits) return fits;
  return grid_fits(problem, (problem.value_dim + 31) / 32);
}

std::size_t linear_forward_workspace_bytes(const LinearProblem& problem) { return chunk_workspace_layout(problem).total; }

Status linear_forward(const LinearProblem& problem, const LinearForwardArgs& args) {
  LinearForwardParams params;
  params.common = common_params(problem, args);
  if (problem.has_initial_state) params.initial_state = state_tensor(args.initial_state, problem.initial_state);
  if (problem.has_final_state) params.final_state = state_tensor(args.final_state, problem.final_state);
  if (problem.varlen) {
    params.cu_seqlens = static_cast<const std::int32_t*>(args.cu_seqlens.data);
    params.cu_seqlens_stride = args.cu_seqlens.strides[0];
  }
  params.num_sequences = static_cast<int>(problem.num_sequences);
  params.seqlen = problem.seqlen;
  params.vectorized_io = problem.key_dim % 8 == 0 && problem.value_dim % 8 == 0 && aligned16(args.q.data) &&
                         aligned16(args.k.data) && aligned16(args.v.data) && strides_multiple_of_8(problem.q) &&
                         strides_multiple_of_8(problem.k) && strides_multiple_of_8(problem.v);
  {
    const ChunkWorkspaceLayout layout = chunk_workspace_layout(problem);
    if (layout.slots * ((layout.value_pad + 127) / 128) > 0x7fffffff) {
      return {StatusCode::kNotImplemented, "linear forward (sm80): " + std::to_string(layout.slots) +
                                               " chunks times the 128-column value blocks exceed grid.x (2^31 - 1)"};
    }
    if (reinterpret_cast<std::uintptr_t>(args.workspace) % 256 != 0) {
      return {StatusCode::kInvalidArgument, "linear forward (sm80): the workspace must be 256-byte aligned"};
    }
    unsigned char* base = static_cast<unsigned char*>(args.workspace);
    params.chunk.w_neg = base + layout.w_neg;
    params.chunk.key = base + layout.key;
    params.chunk.u = reinterpret_cast<float*>(base + layout.u);
    params.chunk.gate = reinterpret_cast<float*>(base + layout.gate);
    params.chunk.h = base + layout.h;
    params.chunk.v_new = base + layout.v_new;
    params.chunk.v_new_lo = base + layout.v_new_lo;
    if (problem.per_key_gate()) {
      params.chunk.key_lo = base + layout.key_lo;
      params.chunk.query = base + layout.query;
      params.chunk.p = base + layout.p;
      params.chunk.p_lo = base + layout.p_lo;
      params.chunk.decay = reinterpret_cast<float*>(base + layout.decay);
    }
    params.chunk.slots = layout.slots;
    params.chunk.value_pad = static_cast<int>(layout.value_pad);
  }
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(problem.device.index, &limits, &why)) {
    return {StatusCode::kCudaError, "linear forward (sm80): " + why};
  }
  host::ScopedDevice device(problem.device.index);
  if (Status s = launch_status(device.status(), "linear forward (sm80): selecting the tensors' device"); !s) return s;
  return launch_status(launch_linear_forward(params, limits.sm_count, limits.shared_memory_per_block_optin, stream_of(args.options)),
                       "linear forward (sm80) launch");
}

Status linear_supports_decode(const LinearProblem& problem, const LinearDecodeArgs&) {
  if (problem.key_dim > kLinearDecodeMaxKeyDim) {
    return {StatusCode::kNotImplemented, "K = " + std::to_string(problem.key_dim) + ": the sm80 decode supports K <= 256"};
  }
  return grid_fits(problem, (problem.value_dim + 31) / 32);
}

std::size_t linear_decode_workspace_bytes(const LinearProblem&) { return 0; }

Status linear_decode(const LinearProblem& problem, const LinearDecodeArgs& args) {
  LinearDecodeParams params;
  params.common = common_params(problem, args);
  params.state = state_tensor(args.state, problem.state);
  if (problem.has_state_indices) {
    params.state_indices = static_cast<const std::int32_t*>(args.state_indices.data);
    params.state_indices_stride = args.state_indices.strides[0];
  }
  params.state_pool = problem.state_pool;
  params.num_sequences = static_cast<int>(problem.num_sequences);
  params.tokens = static_cast<int>(problem.seqlen);
  host::ScopedDevice device(problem.device.index);
  if (Status s = launch_status(device.status(), "linear decode (sm80): selecting the tensors' device"); !s) return s;
  return launch_status(launch_linear_decode(params, stream_of(args.options)), "linear decode (sm80) launch");
}


// The backward, K <= 128, any V, every fused option, varlen, grouped value heads, both state layouts:
// GDN and KDA take the chunked backward (linear_backward_chunked_sm80.cu, linear_backward_kda_chunked_sm80.cu:
// chunk-parallel kernels and two sequential state passes over value slices of 32). KDA takes the exact
// token walk (linear_backward_sm80.cu, value slices of 32, 38 KB of shared memory) on devices whose blocks
// cannot hold its chunked kernels (chunk_grad 215,552 bytes: sm_80's 163 KB and sm_86 / sm_89's 99 KB).
namespace {
bool kda_backward_chunked(const LinearProblem& problem, const host::CudaDeviceLimits& limits) {
  return problem.per_key_gate() && kda_backward_fits(limits.shared_memory_per_block_optin);
}
}  // namespace

Status linear_supports_backward(const LinearProblem& problem, const LinearBackwardArgs&) {
  if (problem.dtype != DType::kFloat16 && problem.dtype != DType::kBFloat16) {
    return {StatusCode::kNotImplemented, std::string("the sm80 linear backward takes fp16 or bf16 q/k/v, not ") +
                                             dtype_name(problem.dtype)};
  }
  if (problem.key_dim > kLinearBackwardMaxKeyDim) {
    return {StatusCode::kNotImplemented, "K = " + std::to_string(problem.key_dim) +
                                             ": the sm80 linear backward keeps 32 key rows per warp in registers "
                                             "(4 warps) and supports K <= 128"};
  }
  if (Status fits = grid_fits(problem, (problem.value_dim + kLinearBackwardColumns - 1) / kLinearBackwardColumns);
      !fits) {
    return fits;
  }
  host::CudaDeviceLimits limits;
  if (std::string why; !host::cuda_device_limits(problem.device.index, &limits, &why)) {
    return {StatusCode::kCudaError, "linear backward (sm80): " + why};
  }
  // Which of the backward algorithms runs (see the comment above): said by explain(). The chunked GDN
  // backward's kernels against the block's opt-in shared memory (linear_backward_plan.h): chunk_grad needs
  // 222 KB, which sm_90 gives and sm_80 (163 KB) and sm_86 / sm_89 (99 KB) do not; without this check they
  // would fail at launch with a CUDA error.
  if (!problem.per_key_gate()) {
    if (!gdn_backward_fits(limits.shared_memory_per_block_optin)) {
      return {StatusCode::kNotImplemented,
              "linear backward (sm80): the GDN chunked backward's chunk_prep, state passes and chunk_grad need " +
                  std::to_string(gdn_backward_prep_shared_bytes()) + ", " +
                  std::to_string(gdn_backward_state_shared_bytes(false)) + " and " +
                  std::to_string(gdn_backward_grad_shared_bytes()) + " bytes of shared memory per block; cuda:" +
                  std::to_string(problem.device.index) + " allows " +
                  std::to_string(limits.shared_memory_per_block_optin)};
    }
    return {StatusCode::kOk, "GDN chunked backward (chunk-parallel kernels, sequential state passes)"};
  }
  if (kda_backward_chunked(problem, limits)) {
    return {StatusCode::kOk, "KDA chunked backward (chunk-parallel kernels, sequential state passes)"};
  }
  return {StatusCode::kOk, "KDA exact token walk: the chunked kernels need " +
                               std::to_string(kda_backward_grad_shared_bytes()) +
                               " bytes of shared memory per block (chunk_grad); cuda:" +
                               std::to_string(problem.device.index) + " allows " +
                               std::to_string(limits.shared_memory_per_block_optin)};
}

namespace {
// Whether the backward runs chunked: always for GDN, for KDA where the device takes its kernels (a device
// whose limits cannot be read gets the chunked layout; its launch then reports the CUDA error).
bool backward_chunked(const LinearProblem& problem) {
  if (!problem.per_key_gate()) return true;
  host::CudaDeviceLimits limits;
  return !host::cuda_device_limits(problem.device.index, &limits) || kda_backward_chunked(problem, limits);
}

LinearBackwardLayout backward_layout(const LinearProblem& problem) {
  return linear_backward_layout(problem.total_tokens, problem.num_sequences, problem.seqlen, problem.varlen,
                                problem.heads_qk, problem.heads_v, problem.value_dim, problem.per_key_gate(),
                                backward_chunked(problem));
}

LinearTokenOutput token_output(const TensorRef& ref, const host::TokenStrides& strides) {
  return {ref.data, strides.batch, strides.token, strides.head};
}
}  // namespace

std::size_t linear_backward_workspace_bytes(const LinearProblem& problem) { return backward_layout(problem).total; }

Status linear_backward(const LinearProblem& problem, const LinearBackwardArgs& args) {
  if (reinterpret_cast<std::uintptr_t>(args.workspace) % 256 != 0) {
    return {StatusCode::kInvalidArgument, "linear backward (sm80): the workspace must be 256-byte aligned"};
  }
  LinearForwardArgs inputs;  // the forward's view of the inputs, with dout in the place of out
  inputs.q = args.q;
  inputs.k = args.k;
  inputs.v = args.v;
  inputs.g = args.g;
  inputs.beta = args.beta;
  inputs.A_log = args.A_log;
  inputs.dt_bias = args.dt_bias;
  inputs.out = args.dout;
  LinearBackwardParams params;
  params.common = common_params(problem, inputs);
  params.dout = token_tensor(args.dout, problem.out);
  params.dq = token_output(args.dq, problem.dq);
  params.dk = token_output(args.dk, problem.dk);
  params.dv = token_output(args.dv, problem.dv);
  params.dg = token_output(args.dg, problem.dg);
  params.dbeta = token_output(args.dbeta, problem.dbeta);
  params.gate_grad_element = element_of(problem.gate_dtype);
  params.beta_grad_element = element_of(problem.beta_dtype);
  if (problem.has_initial_state) {
    params.initial_state = state_tensor(args.initial_state, problem.initial_state);
    params.d_initial_state = state_tensor(args.d_initial_state, problem.d_initial_state);
  }
  if (problem.has_dfinal_state) params.dfinal_state = state_tensor(args.dfinal_state, problem.dfinal_state);
  if (problem.gate_fused()) {
    params.a_log_stride = args.A_log.strides[0];
    params.dA_log = static_cast<float*>(args.dA_log.data);
    params.dA_log_stride = args.dA_log.strides[0];
  }
  if (problem.has_dt_bias) {
    params.dt_bias_stride[0] = args.dt_bias.strides[0];
    params.dt_bias_stride[1] = problem.per_key_gate() ? args.dt_bias.strides[1] : 0;
    params.ddt_bias = static_cast<float*>(args.ddt_bias.data);
    params.ddt_bias_stride[0] = args.ddt_bias.strides[0];
    params.ddt_bias_stride[1] = problem.per_key_gate() ? args.ddt_bias.strides[1] : 0;
  }
  if (problem.varlen) {
    params.cu_seqlens = static_cast<const std::int32_t*>(args.cu_seqlens.data);
    params.cu_seqlens_stride = args.cu_seqlens.strides[0];
  }
  params.num_sequences = static_cast<int>(problem.num_sequences);
  params.heads_qk = static_cast<int>(problem.heads_qk);
  params.seqlen = problem.seqlen;
  params.tokens = problem.total_tokens;
  params.slices = static_cast<int>((problem.value_dim + kLinearBackwardColumns - 1) / kLinearBackwardColumns);
  params.gate_pad = problem.per_key_gate() ? kLinearBackwardMaxKeyDim : 1;
  params.chunked = backward_chunked(problem);
  params.share_slices = params.chunked ? 1 : params.slices;
  const LinearBackwardLayout layout = backward_layout(problem);
  unsigned char* base = static_cast<unsigned char*>(args.workspace);
  auto at = [&](std::size_t offset) { return reinterpret_cast<float*>(base + offset); };
  params.ws.qn = at(layout.qn);
  params.ws.kn = at(layout.kn);
  params.ws.gate = at(layout.gate);
  params.ws.beta = at(layout.beta);
  params.ws.checkpoint = at(layout.checkpoint);
  params.ws.scratch = at(layout.scratch);
  params.ws.dq = at(layout.dq);
  params.ws.dk = at(layout.dk);
  params.ws.dg = at(layout.dg);
  params.ws.dbeta = at(layout.dbeta);
  params.ws.dg_raw = at(layout.dg_raw);
  params.ws.dg_alog = at(layout.dg_alog);
  params.ws.gc = at(layout.gc);
  params.ws.tinv = at(layout.tinv);
  params.ws.w = at(layout.w);
  params.ws.vnew = at(layout.vnew);
  params.ws.s0 = at(layout.s0);
  params.ws.pdo = at(layout.pdo);
  params.ws.dvnew = at(layout.dvnew);
  params.ws.dh = at(layout.dh);
  params.ws.pmat = at(layout.pmat);
  params.ws.bmat = at(layout.bmat);
  params.ws.kd = at(layout.kd);
  params.ws.slots = layout.slots;
  host::ScopedDevice device(problem.device.index);
  if (Status s = launch_status(device.status(), "linear backward (sm80): selecting the tensors' device"); !s) return s;
  return launch_status(launch_linear_backward(params, stream_of(args.options)), "linear backward (sm80) launch");
}

}  // namespace attnkit::sm80
