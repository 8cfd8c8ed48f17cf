#include "host/dense_problem.h"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

#include "host/tensor_checks.h"

namespace attnkit::host {
namespace {

Status check_options(const DenseOptions& options, DenseProblem* problem) {
  if (options.scale.has_value()) {
    const float scale = *options.scale;
    if (!std::isfinite(scale) || scale <= 0.0f) {
      return invalid("scale: must be finite and > 0, got " + std::to_string(scale));
    }
    problem->scale = scale;
  } else {
    problem->scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(problem->head_dim)));
  }
  if (!std::isfinite(options.softcap) || options.softcap < 0.0f) {
    return invalid("softcap: must be 0 (off) or finite and > 0, got " + std::to_string(options.softcap));
  }
  problem->softcap = options.softcap;
  if (options.window_left < -1 || options.window_right < -1) {
    return invalid("window: bounds must be >= -1 (-1 = unbounded), got (" + std::to_string(options.window_left) +
                   ", " + std::to_string(options.window_right) + ")");
  }
  if (options.causal && options.window_right > 0) {
    return invalid("window: causal means window_right = 0, but window_right = " +
                   std::to_string(options.window_right) + " was also given");
  }
  problem->window_left = options.window_left;
  problem->window_right = options.causal ? 0 : options.window_right;
  return Status::ok();
}

// cu_seqlens: int32 [N + 1]; contents are checked here when they live on the host. Device-resident
// offsets cannot be read without a sync: kernels clamp every row index to the token count instead.
Status check_cu_seqlens(const char* name, const TensorRef& cu, std::int64_t batch, std::int64_t total,
                        std::int64_t max_seqlen, const char* max_name) {
  if (Status s = check_layout(name, cu, 1); !s) return s;
  if (Status s = check_dtype(name, cu, DType::kInt32, "index tensors are int32"); !s) return s;
  if (cu.shape[0] != batch + 1) {
    return invalid(std::string(name) + ": expected length " + std::to_string(batch + 1) +
                   " (N + 1, with N from cu_seqlens_q), got " + std::to_string(cu.shape[0]));
  }
  if (cu.shape[0] == 0) return invalid(std::string(name) + ": must hold at least one offset (0)");
  if (cu.device.kind != DeviceKind::kCPU) return Status::ok();
  const auto* offsets = static_cast<const std::int32_t*>(cu.data);
  const std::int64_t stride = cu.strides[0];
  if (offsets[0] != 0) return invalid(std::string(name) + ": must start at 0, got " + std::to_string(offsets[0]));
  for (std::int64_t i = 0; i < batch; ++i) {
    const std::int64_t begin = offsets[i * stride];
    const std::int64_t end = offsets[(i + 1) * stride];
    if (end < begin) {
      return invalid(std::string(name) + ": must be non-decreasing, but entry " + std::to_string(i + 1) + " (" +
                     std::to_string(end) + ") < entry " + std::to_string(i) + " (" + std::to_string(begin) + ")");
    }
    if (end - begin > max_seqlen) {
      return invalid(std::string(name) + ": sequence " + std::to_string(i) + " has length " +
                     std::to_string(end - begin) + " > " + max_name + " = " + std::to_string(max_seqlen));
    }
  }
  if (offsets[batch * stride] != total) {
    return invalid(std::string(name) + ": last entry " + std::to_string(offsets[batch * stride]) +
                   " is inconsistent with the token count " + std::to_string(total));
  }
  return Status::ok();
}

// What forward and backward share: q, k, v, out, lse, sinks, varlen metadata, options.
struct CommonTensors {
  const TensorRef& q;
  const TensorRef& k;
  const TensorRef& v;
  const TensorRef& out;
  const TensorRef& lse;
  const TensorRef& sinks;
  const TensorRef& cu_seqlens_q;
  const TensorRef& cu_seqlens_k;
  std::int64_t max_seqlen_q;
  std::int64_t max_seqlen_k;
  const char* out_name;
};

Status check_common(const CommonTensors& c, const DenseOptions& options, DenseProblem* p) {
  const bool has_cu_q = c.cu_seqlens_q.defined();
  const bool has_cu_k = c.cu_seqlens_k.defined();
  if (has_cu_q != has_cu_k) {
    return invalid("varlen needs both cu_seqlens_q and cu_seqlens_k; only " +
                   std::string(has_cu_q ? "cu_seqlens_q" : "cu_seqlens_k") + " was given");
  }
  p->varlen = has_cu_q;
  const int rank = p->varlen ? 3 : 4;
  if (Status s = check_layout("q", c.q, rank); !s) return s;
  if (Status s = check_layout("k", c.k, rank); !s) return s;
  if (Status s = check_layout("v", c.v, rank); !s) return s;
  if (Status s = check_layout(c.out_name, c.out, rank); !s) return s;

  const DType dtype = c.q.dtype;
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16 && dtype != DType::kFloat32) {
    return invalid(std::string("q: dtype must be fp16, bf16 or fp32 (fp32 on the CPU backend only), got ") +
                   dtype_name(dtype));
  }
  if (Status s = check_dtype("k", c.k, dtype, "the dtype of q"); !s) return s;
  if (Status s = check_dtype("v", c.v, dtype, "the dtype of q"); !s) return s;
  if (Status s = check_dtype(c.out_name, c.out, dtype, "the dtype of q"); !s) return s;
  p->dtype = dtype;
  p->device = c.q.device;
  for (const NamedTensor& t : {NamedTensor{"k", &c.k}, NamedTensor{"v", &c.v}, NamedTensor{c.out_name, &c.out},
                               NamedTensor{"lse", &c.lse}, NamedTensor{"sinks", &c.sinks},
                               NamedTensor{"cu_seqlens_q", &c.cu_seqlens_q},
                               NamedTensor{"cu_seqlens_k", &c.cu_seqlens_k}}) {
    if (t.tensor->defined()) {
      if (Status s = check_device(t.name, *t.tensor, p->device); !s) return s;
    }
  }

  if (p->varlen) {
    p->total_q = c.q.shape[0];
    p->heads_q = c.q.shape[1];
    p->head_dim = c.q.shape[2];
    p->total_k = c.k.shape[0];
    p->heads_kv = c.k.shape[1];
    p->head_dim_v = c.v.shape[2];
    p->batch = c.cu_seqlens_q.rank == 1 ? c.cu_seqlens_q.shape[0] - 1 : 0;
    if (c.max_seqlen_q < 0 || c.max_seqlen_k < 0) {
      return invalid("max_seqlen_q / max_seqlen_k: must be >= 0, got " + std::to_string(c.max_seqlen_q) + " / " +
                     std::to_string(c.max_seqlen_k));
    }
    p->seqlen_q = c.max_seqlen_q;
    p->seqlen_k = c.max_seqlen_k;
    if (Status s = check_shape("k", c.k, {p->total_k, p->heads_kv, p->head_dim}, "(Tk, Hkv, D of q)"); !s) return s;
    if (Status s = check_shape("v", c.v, {p->total_k, p->heads_kv, p->head_dim_v}, "(Tk and Hkv of k)"); !s) return s;
    if (Status s = check_shape(c.out_name, c.out, {p->total_q, p->heads_q, p->head_dim_v}, "(Tq, Hq, Dv)"); !s)
      return s;
  } else {
    p->batch = c.q.shape[0];
    p->seqlen_q = c.q.shape[1];
    p->heads_q = c.q.shape[2];
    p->head_dim = c.q.shape[3];
    p->seqlen_k = c.k.shape[1];
    p->heads_kv = c.k.shape[2];
    p->head_dim_v = c.v.shape[3];
    p->total_q = p->batch * p->seqlen_q;
    p->total_k = p->batch * p->seqlen_k;
    if (Status s = check_shape("k", c.k, {p->batch, p->seqlen_k, p->heads_kv, p->head_dim}, "(B of q, Sk, Hkv, D of q)");
        !s)
      return s;
    if (Status s = check_shape("v", c.v, {p->batch, p->seqlen_k, p->heads_kv, p->head_dim_v}, "(B, Sk, Hkv of k, Dv)");
        !s)
      return s;
    if (Status s = check_shape(c.out_name, c.out, {p->batch, p->seqlen_q, p->heads_q, p->head_dim_v},
                               "(B, Sq, Hq of q, Dv of v)");
        !s)
      return s;
  }

  if (p->heads_kv == 0 && p->heads_q != 0) return invalid("k: has 0 heads but q has " + std::to_string(p->heads_q));
  if (p->heads_kv != 0 && p->heads_q % p->heads_kv != 0) {
    return invalid("heads: Hq = " + std::to_string(p->heads_q) + " is not a multiple of Hkv = " +
                   std::to_string(p->heads_kv) + " (GQA needs Hq = G * Hkv)");
  }
  p->group = p->heads_kv ? p->heads_q / p->heads_kv : 1;
  for (auto [name, dim] : {std::pair<const char*, std::int64_t>{"D (head dim of q and k)", p->head_dim},
                           std::pair<const char*, std::int64_t>{"Dv (head dim of v)", p->head_dim_v}}) {
    if (dim <= 0 || dim > kMaxHeadDim || dim % kHeadDimMultiple != 0) {
      return {StatusCode::kNotImplemented, std::string(name) + " = " + std::to_string(dim) +
                                               " is not supported; supported head dims are the multiples of 8 "
                                               "from 8 to 256 (fast paths 64, 128, 256)"};
    }
  }

  if (c.lse.defined()) {
    if (Status s = check_layout("lse", c.lse, p->varlen ? 2 : 3); !s) return s;
    if (Status s = check_dtype("lse", c.lse, DType::kFloat32, "lse is fp32"); !s) return s;
    if (p->varlen) {
      if (Status s = check_shape("lse", c.lse, {p->heads_q, p->total_q}, "(Hq, Tq)"); !s) return s;
    } else {
      if (Status s = check_shape("lse", c.lse, {p->batch, p->heads_q, p->seqlen_q}, "(B, Hq, Sq)"); !s) return s;
    }
  }
  p->has_lse = c.lse.defined();
  if (c.sinks.defined()) {
    if (Status s = check_layout("sinks", c.sinks, 1); !s) return s;
    if (Status s = check_dtype("sinks", c.sinks, DType::kFloat32, "sink logits are fp32"); !s) return s;
    if (Status s = check_shape("sinks", c.sinks, {p->heads_q}, "(Hq)"); !s) return s;
  }
  p->has_sinks = c.sinks.defined();

  if (p->varlen) {
    if (Status s = check_cu_seqlens("cu_seqlens_q", c.cu_seqlens_q, p->batch, p->total_q, p->seqlen_q,
                                    "max_seqlen_q");
        !s)
      return s;
    if (Status s = check_cu_seqlens("cu_seqlens_k", c.cu_seqlens_k, p->batch, p->total_k, p->seqlen_k,
                                    "max_seqlen_k");
        !s)
      return s;
  }
  return check_options(options, p);
}

}  // namespace

Status make_dense_problem(const DenseForwardArgs& args, DenseProblem* problem) {
  DenseProblem p;
  CommonTensors common{args.q,     args.k,           args.v,           args.out,          args.lse,
                       args.sinks, args.cu_seqlens_q, args.cu_seqlens_k, args.max_seqlen_q, args.max_seqlen_k,
                       "out"};
  if (Status s = check_common(common, args.options, &p); !s) return s;
  if (Status s = check_no_alias({{"out", &args.out}, {"lse", &args.lse}},
                                {{"q", &args.q},
                                 {"k", &args.k},
                                 {"v", &args.v},
                                 {"sinks", &args.sinks},
                                 {"cu_seqlens_q", &args.cu_seqlens_q},
                                 {"cu_seqlens_k", &args.cu_seqlens_k}});
      !s)
    return s;
  *problem = p;
  return Status::ok();
}

Status make_dense_problem(const DenseBackwardArgs& args, DenseProblem* problem) {
  DenseProblem p;
  p.backward = true;
  CommonTensors common{args.q,     args.k,           args.v,           args.out,          args.lse,
                       args.sinks, args.cu_seqlens_q, args.cu_seqlens_k, args.max_seqlen_q, args.max_seqlen_k,
                       "out"};
  if (!args.lse.defined()) return invalid("lse: backward needs the fp32 lse written by forward");
  if (Status s = check_common(common, args.options, &p); !s) return s;
  const int rank = p.varlen ? 3 : 4;
  struct Gradient {
    const char* name;
    const TensorRef& tensor;
    const TensorRef& like;
    const char* like_name;
  };
  for (const Gradient& g : {Gradient{"dout", args.dout, args.out, "out"}, Gradient{"dq", args.dq, args.q, "q"},
                            Gradient{"dk", args.dk, args.k, "k"}, Gradient{"dv", args.dv, args.v, "v"}}) {
    if (Status s = check_layout(g.name, g.tensor, rank); !s) return s;
    if (Status s = check_dtype(g.name, g.tensor, p.dtype, "the dtype of q"); !s) return s;
    if (Status s = check_device(g.name, g.tensor, p.device); !s) return s;
    if (!shape_matches(g.tensor, g.like.shape, static_cast<std::size_t>(rank))) {
      return shape_mismatch(g.name, g.tensor, g.like.shape, static_cast<std::size_t>(rank),
                            std::string("(the shape of ") + g.like_name + ")");
    }
  }
  if (args.sinks.defined() != args.dsinks.defined()) {
    return invalid(args.sinks.defined() ? "dsinks: required (fp32 [Hq]) when sinks are given"
                                        : "dsinks: given without sinks");
  }
  if (args.dsinks.defined()) {
    if (Status s = check_layout("dsinks", args.dsinks, 1); !s) return s;
    if (Status s = check_dtype("dsinks", args.dsinks, DType::kFloat32, "sink gradients are fp32"); !s) return s;
    if (Status s = check_device("dsinks", args.dsinks, p.device); !s) return s;
    if (Status s = check_shape("dsinks", args.dsinks, {p.heads_q}, "(Hq)"); !s) return s;
  }
  if (Status s = check_no_alias({{"dq", &args.dq}, {"dk", &args.dk}, {"dv", &args.dv}, {"dsinks", &args.dsinks}},
                                {{"q", &args.q},
                                 {"k", &args.k},
                                 {"v", &args.v},
                                 {"out", &args.out},
                                 {"dout", &args.dout},
                                 {"lse", &args.lse},
                                 {"sinks", &args.sinks},
                                 {"cu_seqlens_q", &args.cu_seqlens_q},
                                 {"cu_seqlens_k", &args.cu_seqlens_k}});
      !s)
    return s;
  p.deterministic = args.deterministic;
  *problem = p;
  return Status::ok();
}

}  // namespace attnkit::host
