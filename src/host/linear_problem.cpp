#include "host/linear_problem.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "host/tensor_checks.h"

namespace attnkit::host {
namespace {

Status check_shape(const char* name, const TensorRef& t, const std::vector<std::int64_t>& expected,
                   const std::string& meaning) {
  if (shape_matches(t, expected.data(), expected.size())) return Status::ok();
  return shape_mismatch(name, t, expected.data(), expected.size(), meaning);
}

// Layout, dtype, device and shape in one call: the checks every tensor of a call needs.
Status check_tensor(const char* name, const TensorRef& t, const std::vector<std::int64_t>& shape,
                    const std::string& meaning, DType dtype, const std::string& why_dtype, Device device) {
  if (Status s = check_layout(name, t, static_cast<int>(shape.size())); !s) return s;
  if (Status s = check_dtype(name, t, dtype, why_dtype.c_str()); !s) return s;
  if (Status s = check_device(name, t, device); !s) return s;
  return check_shape(name, t, shape, meaning);
}

TokenStrides token_strides(const TensorRef& t) {
  if (!t.defined()) return {};
  return {t.strides[0], t.strides[1], t.strides[2]};
}

StateStrides state_strides(const TensorRef& t) {
  if (!t.defined()) return {};
  return {t.strides[0], t.strides[1], t.strides[2]};
}

Status check_options(const LinearOptions& options, LinearProblem* p) {
  switch (options.variant) {
    case LinearVariant::kGatedDeltaNet:
    case LinearVariant::kKimiDelta: break;
    default: return invalid("options.variant: unknown value " + std::to_string(static_cast<int>(options.variant)));
  }
  switch (options.gate_form) {
    case LinearGateForm::kLogDecay:
    case LinearGateForm::kSoftplus:
    case LinearGateForm::kLowerBoundSigmoid: break;
    default: return invalid("options.gate_form: unknown value " + std::to_string(static_cast<int>(options.gate_form)));
  }
  switch (options.beta_form) {
    case LinearBetaForm::kValue:
    case LinearBetaForm::kSigmoid:
    case LinearBetaForm::kTwoSigmoid: break;
    default: return invalid("options.beta_form: unknown value " + std::to_string(static_cast<int>(options.beta_form)));
  }
  switch (options.state_layout) {
    case LinearStateLayout::kKV:
    case LinearStateLayout::kVK: break;
    default:
      return invalid("options.state_layout: unknown value " + std::to_string(static_cast<int>(options.state_layout)));
  }
  if (options.gate_form == LinearGateForm::kLowerBoundSigmoid &&
      !(options.gate_lower_bound >= -5.0f && options.gate_lower_bound < 0.0f)) {
    return invalid("options.gate_lower_bound: must satisfy -5 <= lb < 0, got " +
                   std::to_string(options.gate_lower_bound));
  }
  if (options.scale.has_value()) {
    const float scale = *options.scale;
    if (!std::isfinite(scale) || scale <= 0.0f) {
      return invalid("scale: must be finite and > 0, got " + std::to_string(scale));
    }
    p->scale = scale;
  } else {
    p->scale = p->key_dim > 0 ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(p->key_dim))) : 1.0f;
  }
  p->variant = options.variant;
  p->l2norm_qk = options.l2norm_qk;
  p->gate_form = options.gate_form;
  p->gate_lower_bound = options.gate_lower_bound;
  p->beta_form = options.beta_form;
  p->state_layout = options.state_layout;
  return Status::ok();
}

// cu_seqlens: int32 [N + 1]; contents are checked here when they live on the host. Device-resident
// offsets cannot be read without a sync: kernels clamp every token index to the token count instead.
Status check_cu_seqlens(const TensorRef& cu, std::int64_t total, Device device) {
  if (Status s = check_layout("cu_seqlens", cu, 1); !s) return s;
  if (Status s = check_dtype("cu_seqlens", cu, DType::kInt32, "index tensors are int32"); !s) return s;
  if (Status s = check_device("cu_seqlens", cu, device); !s) return s;
  if (cu.shape[0] == 0) return invalid("cu_seqlens: must hold at least one offset (0), got an empty tensor");
  if (cu.device.kind != DeviceKind::kCPU) return Status::ok();
  const auto* offsets = static_cast<const std::int32_t*>(cu.data);
  const std::int64_t stride = cu.strides[0];
  const std::int64_t count = cu.shape[0] - 1;
  if (offsets[0] != 0) return invalid("cu_seqlens: must start at 0, got " + std::to_string(offsets[0]));
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t begin = offsets[i * stride];
    const std::int64_t end = offsets[(i + 1) * stride];
    if (end < begin) {
      return invalid("cu_seqlens: must be non-decreasing, but entry " + std::to_string(i + 1) + " (" +
                     std::to_string(end) + ") < entry " + std::to_string(i) + " (" + std::to_string(begin) + ")");
    }
  }
  if (offsets[count * stride] != total) {
    return invalid("cu_seqlens: last entry " + std::to_string(offsets[count * stride]) +
                   " is inconsistent with the token count T = " + std::to_string(total));
  }
  return Status::ok();
}

// The inputs every op reads.
struct InputTensors {
  const TensorRef& q;
  const TensorRef& k;
  const TensorRef& v;
  const TensorRef& g;
  const TensorRef& beta;
  const TensorRef& A_log;
  const TensorRef& dt_bias;
};

std::vector<std::int64_t> state_shape(const LinearProblem& p, std::int64_t count) {
  return p.state_layout == LinearStateLayout::kKV ? std::vector<std::int64_t>{count, p.heads_v, p.key_dim, p.value_dim}
                                                  : std::vector<std::int64_t>{count, p.heads_v, p.value_dim, p.key_dim};
}

std::string state_meaning(const LinearProblem& p, const char* count_name) {
  return p.state_layout == LinearStateLayout::kKV ? std::string("(") + count_name + ", HV, K, V) in the kKV layout"
                                                  : std::string("(") + count_name + ", HV, V, K) in the kVK layout";
}

Status check_state(const char* name, const TensorRef& t, const LinearProblem& p) {
  return check_tensor(name, t, state_shape(p, p.num_sequences), state_meaning(p, "N"), DType::kFloat32,
                      "states are fp32", p.device);
}

std::vector<std::int64_t> gate_shape(const LinearProblem& p) {
  if (p.per_key_gate()) return {p.batch, p.seqlen, p.heads_v, p.key_dim};
  return {p.batch, p.seqlen, p.heads_v};
}

const char* gate_meaning(const LinearProblem& p) {
  return p.per_key_gate() ? "(B, T, HV, K): KDA's gate is per key" : "(B, T, HV): GDN's gate is per value head";
}

// Sizes, dtypes, devices and shapes of the inputs, and the options. Fills everything in `p` that does
// not depend on the op's outputs. `p->op` is set by the caller.
Status check_inputs(const InputTensors& in, const LinearOptions& options, LinearProblem* p) {
  if (Status s = check_layout("q", in.q, 4); !s) return s;
  if (Status s = check_layout("k", in.k, 4); !s) return s;
  if (Status s = check_layout("v", in.v, 4); !s) return s;
  const DType dtype = in.q.dtype;
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16 && dtype != DType::kFloat32) {
    return invalid(std::string("q: dtype must be fp16, bf16 or fp32 (fp32 on the CPU backend only), got ") +
                   dtype_name(dtype));
  }
  p->dtype = dtype;
  p->device = in.q.device;
  p->batch = in.q.shape[0];
  p->seqlen = in.q.shape[1];
  p->heads_qk = in.q.shape[2];
  p->key_dim = in.q.shape[3];
  p->heads_v = in.v.shape[2];
  p->value_dim = in.v.shape[3];
  p->total_tokens = p->batch * p->seqlen;
  if (Status s = check_tensor("k", in.k, {p->batch, p->seqlen, p->heads_qk, p->key_dim}, "(the shape of q)", dtype,
                              "the dtype of q", p->device);
      !s)
    return s;
  if (Status s = check_tensor("v", in.v, {p->batch, p->seqlen, p->heads_v, p->value_dim}, "(B and T of q, HV, V)",
                              dtype, "the dtype of q", p->device);
      !s)
    return s;
  if (p->heads_qk == 0 && p->heads_v != 0) {
    return invalid("q: has 0 heads but v has HV = " + std::to_string(p->heads_v));
  }
  if (p->heads_qk != 0 && p->heads_v % p->heads_qk != 0) {
    return invalid("heads: HV = " + std::to_string(p->heads_v) + " (value heads) is not a multiple of H = " +
                   std::to_string(p->heads_qk) + " (q/k heads); grouped value heads need HV = G * H");
  }
  p->group = p->heads_qk != 0 ? p->heads_v / p->heads_qk : 1;
  for (auto [name, dim] : {std::pair<const char*, std::int64_t>{"K (head dim of q and k)", p->key_dim},
                           std::pair<const char*, std::int64_t>{"V (head dim of v)", p->value_dim}}) {
    if (dim < 1 || dim > kLinearMaxHeadDim) {
      return {StatusCode::kNotImplemented, std::string(name) + " = " + std::to_string(dim) +
                                               " is not supported; supported head dims are 1 to 256 (GPU fast "
                                               "paths 64, 128, 256)"};
    }
  }
  if (Status s = check_options(options, p); !s) return s;

  const std::vector<std::int64_t> g_shape = gate_shape(*p);
  if (Status s = check_layout("g", in.g, static_cast<int>(g_shape.size())); !s) return s;
  if (in.g.dtype != DType::kFloat32 && in.g.dtype != dtype) {
    return invalid(std::string("g: dtype must be fp32 or the dtype of q (") + dtype_name(dtype) + "), got " +
                   dtype_name(in.g.dtype));
  }
  p->gate_dtype = in.g.dtype;
  if (Status s = check_tensor("g", in.g, g_shape, gate_meaning(*p), p->gate_dtype, "", p->device); !s) return s;
  if (Status s = check_layout("beta", in.beta, 3); !s) return s;
  if (in.beta.dtype != DType::kFloat32 && in.beta.dtype != dtype) {
    return invalid(std::string("beta: dtype must be fp32 or the dtype of q (") + dtype_name(dtype) + "), got " +
                   dtype_name(in.beta.dtype));
  }
  p->beta_dtype = in.beta.dtype;
  if (Status s = check_tensor("beta", in.beta, {p->batch, p->seqlen, p->heads_v}, "(B, T, HV)", p->beta_dtype, "",
                              p->device);
      !s)
    return s;

  if (p->gate_fused()) {
    if (!in.A_log.defined()) {
      return invalid("A_log: required (fp32 [HV]) with a fused gate form (softplus or lower-bound sigmoid)");
    }
    if (Status s = check_tensor("A_log", in.A_log, {p->heads_v}, "(HV)", DType::kFloat32, "gate parameters are fp32",
                                p->device);
        !s)
      return s;
    if (in.dt_bias.defined()) {
      const std::vector<std::int64_t> bias_shape =
          p->per_key_gate() ? std::vector<std::int64_t>{p->heads_v, p->key_dim} : std::vector<std::int64_t>{p->heads_v};
      if (Status s = check_tensor("dt_bias", in.dt_bias, bias_shape, p->per_key_gate() ? "(HV, K) for KDA" : "(HV) for GDN",
                                  DType::kFloat32, "gate parameters are fp32", p->device);
          !s)
        return s;
    }
    p->has_dt_bias = in.dt_bias.defined();
  } else if (in.A_log.defined() || in.dt_bias.defined()) {
    return invalid(std::string(in.A_log.defined() ? "A_log" : "dt_bias") +
                   ": given, but options.gate_form is kLogDecay (g is the log decay itself); choose kSoftplus or "
                   "kLowerBoundSigmoid to fuse the gate");
  }
  p->q = token_strides(in.q);
  p->k = token_strides(in.k);
  p->v = token_strides(in.v);
  p->g = token_strides(in.g);
  p->beta = token_strides(in.beta);
  return Status::ok();
}

// Varlen or not: sets num_sequences. Varlen needs B = 1.
Status check_sequences(const TensorRef& cu_seqlens, LinearProblem* p) {
  p->varlen = cu_seqlens.defined();
  if (!p->varlen) {
    p->num_sequences = p->batch;
    return Status::ok();
  }
  if (p->batch != 1) {
    return invalid("q: varlen (cu_seqlens given) packs every sequence into B = 1, got B = " + std::to_string(p->batch));
  }
  if (Status s = check_cu_seqlens(cu_seqlens, p->seqlen, p->device); !s) return s;
  p->num_sequences = cu_seqlens.shape[0] - 1;
  return Status::ok();
}

std::vector<NamedTensor> named_inputs(const InputTensors& in) {
  return {{"q", &in.q}, {"k", &in.k}, {"v", &in.v}, {"g", &in.g}, {"beta", &in.beta}, {"A_log", &in.A_log},
          {"dt_bias", &in.dt_bias}};
}

}  // namespace

Status make_linear_problem(const LinearForwardArgs& args, LinearProblem* problem) {
  LinearProblem p;
  p.op = LinearOp::kForward;
  const InputTensors in{args.q, args.k, args.v, args.g, args.beta, args.A_log, args.dt_bias};
  if (Status s = check_inputs(in, args.options, &p); !s) return s;
  if (Status s = check_tensor("out", args.out, {p.batch, p.seqlen, p.heads_v, p.value_dim}, "(the shape of v)", p.dtype,
                              "the dtype of q", p.device);
      !s)
    return s;
  if (Status s = check_sequences(args.cu_seqlens, &p); !s) return s;
  if (args.initial_state.defined()) {
    if (Status s = check_state("initial_state", args.initial_state, p); !s) return s;
  }
  if (args.final_state.defined()) {
    if (Status s = check_state("final_state", args.final_state, p); !s) return s;
  }
  p.has_initial_state = args.initial_state.defined();
  p.has_final_state = args.final_state.defined();
  p.out = token_strides(args.out);
  p.initial_state = state_strides(args.initial_state);
  p.final_state = state_strides(args.final_state);
  std::vector<NamedTensor> inputs = named_inputs(in);
  inputs.push_back({"initial_state", &args.initial_state});
  inputs.push_back({"cu_seqlens", &args.cu_seqlens});
  if (Status s = check_no_alias({{"out", &args.out}, {"final_state", &args.final_state}}, inputs); !s) return s;
  *problem = p;
  return Status::ok();
}

Status make_linear_problem(const LinearBackwardArgs& args, LinearProblem* problem) {
  LinearProblem p;
  p.op = LinearOp::kBackward;
  const InputTensors in{args.q, args.k, args.v, args.g, args.beta, args.A_log, args.dt_bias};
  if (Status s = check_inputs(in, args.options, &p); !s) return s;
  if (Status s = check_sequences(args.cu_seqlens, &p); !s) return s;
  if (Status s = check_tensor("dout", args.dout, {p.batch, p.seqlen, p.heads_v, p.value_dim}, "(the shape of v)",
                              p.dtype, "the dtype of q", p.device);
      !s)
    return s;
  struct Gradient {
    const char* name;
    const TensorRef& tensor;
    const TensorRef& like;
    const char* like_name;
  };
  for (const Gradient& grad : {Gradient{"dq", args.dq, args.q, "q"}, Gradient{"dk", args.dk, args.k, "k"},
                               Gradient{"dv", args.dv, args.v, "v"}, Gradient{"dg", args.dg, args.g, "g"},
                               Gradient{"dbeta", args.dbeta, args.beta, "beta"}}) {
    const std::vector<std::int64_t> shape(grad.like.shape, grad.like.shape + grad.like.rank);
    if (Status s = check_tensor(grad.name, grad.tensor, shape, std::string("(the shape of ") + grad.like_name + ")",
                                grad.like.dtype, std::string("the dtype of ") + grad.like_name, p.device);
        !s)
      return s;
  }
  if (args.initial_state.defined()) {
    if (Status s = check_state("initial_state", args.initial_state, p); !s) return s;
    if (!args.d_initial_state.defined()) {
      return invalid("d_initial_state: required (fp32, the shape of initial_state) when initial_state is given");
    }
    if (Status s = check_state("d_initial_state", args.d_initial_state, p); !s) return s;
  } else if (args.d_initial_state.defined()) {
    return invalid("d_initial_state: given without initial_state (the zero initial state has no gradient)");
  }
  if (args.dfinal_state.defined()) {
    if (Status s = check_state("dfinal_state", args.dfinal_state, p); !s) return s;
  }
  struct ParameterGradient {
    const char* name;
    const TensorRef& tensor;
    const TensorRef& parameter;
    const char* parameter_name;
  };
  for (const ParameterGradient& grad : {ParameterGradient{"dA_log", args.dA_log, args.A_log, "A_log"},
                                        ParameterGradient{"ddt_bias", args.ddt_bias, args.dt_bias, "dt_bias"}}) {
    if (grad.parameter.defined() != grad.tensor.defined()) {
      return invalid(std::string(grad.name) + (grad.parameter.defined() ? ": required (fp32, the shape of " : ": given without ") +
                     grad.parameter_name + (grad.parameter.defined() ? ") when it is given" : ""));
    }
    if (grad.tensor.defined()) {
      const std::vector<std::int64_t> shape(grad.parameter.shape, grad.parameter.shape + grad.parameter.rank);
      if (Status s = check_tensor(grad.name, grad.tensor, shape, std::string("(the shape of ") + grad.parameter_name + ")",
                                  DType::kFloat32, "parameter gradients are fp32", p.device);
          !s)
        return s;
    }
  }
  p.has_initial_state = args.initial_state.defined();
  p.has_dfinal_state = args.dfinal_state.defined();
  p.out = token_strides(args.dout);
  p.dq = token_strides(args.dq);
  p.dk = token_strides(args.dk);
  p.dv = token_strides(args.dv);
  p.dg = token_strides(args.dg);
  p.dbeta = token_strides(args.dbeta);
  p.initial_state = state_strides(args.initial_state);
  p.d_initial_state = state_strides(args.d_initial_state);
  p.dfinal_state = state_strides(args.dfinal_state);
  std::vector<NamedTensor> inputs = named_inputs(in);
  inputs.push_back({"initial_state", &args.initial_state});
  inputs.push_back({"cu_seqlens", &args.cu_seqlens});
  inputs.push_back({"dout", &args.dout});
  inputs.push_back({"dfinal_state", &args.dfinal_state});
  if (Status s = check_no_alias({{"dq", &args.dq},
                                 {"dk", &args.dk},
                                 {"dv", &args.dv},
                                 {"dg", &args.dg},
                                 {"dbeta", &args.dbeta},
                                 {"d_initial_state", &args.d_initial_state},
                                 {"dA_log", &args.dA_log},
                                 {"ddt_bias", &args.ddt_bias}},
                                inputs);
      !s)
    return s;
  *problem = p;
  return Status::ok();
}

Status make_linear_problem(const LinearDecodeArgs& args, LinearProblem* problem) {
  LinearProblem p;
  p.op = LinearOp::kDecode;
  const InputTensors in{args.q, args.k, args.v, args.g, args.beta, args.A_log, args.dt_bias};
  if (Status s = check_inputs(in, args.options, &p); !s) return s;
  p.num_sequences = p.batch;
  if (Status s = check_tensor("out", args.out, {p.batch, p.seqlen, p.heads_v, p.value_dim}, "(the shape of v)", p.dtype,
                              "the dtype of q", p.device);
      !s)
    return s;
  if (!args.state.defined()) return invalid("state is required but was not given (fp32, read and written in place)");
  if (Status s = check_layout("state", args.state, 4); !s) return s;
  p.state_pool = args.state.shape[0];
  if (Status s = check_tensor("state", args.state, state_shape(p, p.state_pool), state_meaning(p, "P"),
                              DType::kFloat32, "states are fp32", p.device);
      !s)
    return s;
  p.has_state_indices = args.state_indices.defined();
  if (p.has_state_indices) {
    if (Status s = check_tensor("state_indices", args.state_indices, {p.num_sequences}, "(N, the batch of q)",
                                DType::kInt32, "index tensors are int32", p.device);
        !s)
      return s;
    if (args.state_indices.device.kind == DeviceKind::kCPU) {
      const auto* indices = static_cast<const std::int32_t*>(args.state_indices.data);
      std::vector<std::int32_t> used;
      for (std::int64_t n = 0; n < p.num_sequences; ++n) {
        const std::int32_t index = indices[n * args.state_indices.strides[0]];
        if (index >= p.state_pool) {
          return invalid("state_indices: entry " + std::to_string(n) + " = " + std::to_string(index) +
                         " is out of range for a pool of P = " + std::to_string(p.state_pool) + " states");
        }
        if (index >= 0) used.push_back(index);
      }
      std::sort(used.begin(), used.end());
      if (const auto twin = std::adjacent_find(used.begin(), used.end()); twin != used.end()) {
        return invalid("state_indices: state " + std::to_string(*twin) +
                       " is named by two sequences; each sequence must own its state");
      }
    }
  } else if (p.state_pool != p.num_sequences) {
    const std::vector<std::int64_t> expected = state_shape(p, p.num_sequences);
    return invalid("state: expected shape " + shape_string(expected.data(), expected.size()) +
                   " (one state per sequence; pass state_indices to address a pool), got " + shape_string(args.state));
  }
  p.out = token_strides(args.out);
  p.state = state_strides(args.state);
  std::vector<NamedTensor> inputs = named_inputs(in);
  inputs.push_back({"state_indices", &args.state_indices});
  if (Status s = check_no_alias({{"out", &args.out}, {"state", &args.state}}, inputs); !s) return s;
  *problem = p;
  return Status::ok();
}

}  // namespace attnkit::host
