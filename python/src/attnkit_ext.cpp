// attnkit._ext: the compiled half of the Python package, a thin binding of include/attnkit/dense.h.
// It turns arrays into TensorRefs (tensor_import.h), calls the C++ API and maps a Status to a Python
// exception. Everything a user sees (argument names and defaults, output allocation, autograd,
// torch.library ops) lives in python/attnkit/; the functions here are private to the package.
//
// Status -> exception: InvalidArgument -> ValueError; NotImplemented and NotCompiled ->
// NotImplementedError (the message lists every backend's reason); CudaError, WorkspaceTooSmall and
// Internal -> RuntimeError.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "attnkit/dense.h"
#include "attnkit/linear.h"
#include "attnkit/version.h"
#include "host/dense_dispatch.h"
#include "tensor_import.h"

namespace nb = nanobind;

namespace attnkit::python {
namespace {

[[noreturn]] void raise_status(const Status& status) {
  PyObject* type = PyExc_RuntimeError;
  std::string message = status.message();
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      type = PyExc_ValueError;
      break;
    case StatusCode::kNotImplemented:
    case StatusCode::kNotCompiled:
      type = PyExc_NotImplementedError;
      break;
    default:
      message = status.to_string();  // names the code: "CUDA error: ...", "internal error: ..."
      break;
  }
  PyErr_SetString(type, message.c_str());
  throw nb::python_error();
}

Importer to_importer(int code) {
  if (code < static_cast<int>(Importer::kTorch) || code > static_cast<int>(Importer::kDLPackBf16)) {
    throw nb::value_error(("attnkit: unknown array importer " + std::to_string(code)).c_str());
  }
  return static_cast<Importer>(code);
}

// The options every call takes after its tensors (passed positionally by python/attnkit/_core.py):
// scale (None = 1 / sqrt(D)), causal, window_left, window_right, softcap, backend (the Backend enum
// value) and stream (cudaStream_t as an int; 0 = the default stream).
Backend to_backend(int backend) {
  if (backend < static_cast<int>(Backend::kAuto) || backend > static_cast<int>(Backend::kSm90)) {
    throw nb::value_error(("backend: unknown backend code " + std::to_string(backend)).c_str());
  }
  return static_cast<Backend>(backend);
}

DenseOptions to_options(std::optional<double> scale, bool causal, std::int64_t window_left,
                        std::int64_t window_right, double softcap, int backend, std::uintptr_t stream) {
  DenseOptions options;
  if (scale.has_value()) options.scale = static_cast<float>(*scale);
  options.causal = causal;
  options.window_left = window_left;
  options.window_right = window_right;
  options.softcap = static_cast<float>(softcap);
  options.backend = to_backend(backend);
  options.stream = reinterpret_cast<void*>(stream);
  return options;
}

// The library entry point for each kind of linear call (the dense ones go through run_dense()).
Status launch(const LinearForwardArgs& args) { return forward(args); }
Status launch(const LinearBackwardArgs& args) { return backward(args); }
Status launch(const LinearDecodeArgs& args) { return decode(args); }

// Runs the linear forward()/backward()/decode(). Only a call that needs scratch memory pays for asking its size: the first
// attempt runs without workspace, and WorkspaceTooSmall (returned before anything is launched or
// written) makes it ask workspace_size() and allocate through `workspace_alloc`, a Python callable
// (bytes, q) -> (owner, address) that allocates on q's device with q's framework's allocator.
// The GIL is released around CPU work (which computes) and kept for the GPU (which only launches).
template <typename Args>
void run(Args& args, nb::handle q, nb::handle workspace_alloc) {
  const bool on_host = on_cpu(args.q);
  auto call = [&]() {
    std::optional<nb::gil_scoped_release> unlocked;
    if (on_host) unlocked.emplace();
    return launch(args);
  };
  Status status = call();
  if (status.code() == StatusCode::kWorkspaceTooSmall && !workspace_alloc.is_none()) {
    std::size_t bytes = 0;
    if (Status s = workspace_size(args, &bytes); !s) raise_status(s);
    nb::tuple owner_and_address = nb::cast<nb::tuple>(workspace_alloc(bytes, q));
    nb::object owner = owner_and_address[0];  // keeps the allocation alive until the call returns
    args.workspace = reinterpret_cast<void*>(nb::cast<std::uintptr_t>(owner_and_address[1]));
    args.workspace_bytes = bytes;
    status = call();
  }
  if (!status) raise_status(status);
}

// Where a dense call's workspace comes from, asked by host::forward_allocating/backward_allocating only
// when the chosen backend needs one: the Python callable `workspace_alloc` (see run()), or for the
// torch fast path torch_workspace() (a per-stream buffer, or torch's allocator). `owner` keeps the
// allocation alive until the call returns. Called with or without the GIL (CPU work runs without).
struct DenseWorkspace {
  DenseWorkspace(nb::handle q, nb::handle workspace_alloc, const TensorRef* torch_like = nullptr,
                 std::uintptr_t stream = 0)
      : q(q), workspace_alloc(workspace_alloc), torch_like(torch_like), stream(stream) {}

  nb::handle q;
  nb::handle workspace_alloc;
  const TensorRef* torch_like;  // set: the torch fast path, on this tensor's device
  std::uintptr_t stream;
  nb::object owner;

  static void* allocate(void* context, std::size_t bytes, bool keeps_zeroed, bool* zeroed) {
    auto* self = static_cast<DenseWorkspace*>(context);
    nb::gil_scoped_acquire locked;
    if (self->torch_like != nullptr) {
      return torch_workspace(self->q, *self->torch_like, self->stream, bytes, keeps_zeroed, zeroed, &self->owner);
    }
    if (self->workspace_alloc.is_none()) return nullptr;
    nb::tuple owner_and_address = nb::cast<nb::tuple>(self->workspace_alloc(bytes, self->q));
    self->owner = owner_and_address[0];
    return reinterpret_cast<void*>(nb::cast<std::uintptr_t>(owner_and_address[1]));
  }
};

// The dense forward/backward: one plan per call (host/dense_dispatch.h), the workspace allocated only when
// the chosen backend needs it. GIL as in run().
template <typename Args>
void run_dense(const Args& args, DenseWorkspace* workspace) {
  const host::WorkspaceAllocator allocator{&DenseWorkspace::allocate, workspace};
  Status status;
  {
    std::optional<nb::gil_scoped_release> unlocked;
    if (on_cpu(args.q)) unlocked.emplace();
    if constexpr (std::is_same_v<Args, DenseForwardArgs>) {
      status = host::forward_allocating(args, allocator);
    } else {
      status = host::backward_allocating(args, allocator);
    }
  }
  if (!status) raise_status(status);
}

struct ForwardCall {
  DenseForwardArgs args;
  ImportKeepAlive keep;
};

void make_forward(ForwardCall* call, int importer_code, nb::handle q, nb::handle k, nb::handle v, nb::handle out,
                  nb::handle lse, nb::handle sinks, nb::handle cu_seqlens_q, nb::handle cu_seqlens_k,
                  std::int64_t max_seqlen_q, std::int64_t max_seqlen_k, const DenseOptions& options) {
  const Importer importer = to_importer(importer_code);
  DenseForwardArgs& a = call->args;
  a.q = import_tensor(importer, "q", q, &call->keep);
  a.k = import_tensor(importer, "k", k, &call->keep);
  a.v = import_tensor(importer, "v", v, &call->keep);
  a.out = import_tensor(importer, "out", out, &call->keep);
  a.lse = import_tensor(importer, "lse", lse, &call->keep);
  a.sinks = import_tensor(importer, "sinks", sinks, &call->keep);
  a.cu_seqlens_q = import_tensor(importer, "cu_seqlens_q", cu_seqlens_q, &call->keep);
  a.cu_seqlens_k = import_tensor(importer, "cu_seqlens_k", cu_seqlens_k, &call->keep);
  a.max_seqlen_q = max_seqlen_q;
  a.max_seqlen_k = max_seqlen_k;
  a.options = options;
}

struct BackwardCall {
  DenseBackwardArgs args;
  ImportKeepAlive keep;
};

void make_backward(BackwardCall* call, int importer_code, nb::handle q, nb::handle k, nb::handle v, nb::handle out,
                   nb::handle dout, nb::handle lse, nb::handle dq, nb::handle dk, nb::handle dv, nb::handle sinks,
                   nb::handle dsinks, nb::handle cu_seqlens_q, nb::handle cu_seqlens_k, std::int64_t max_seqlen_q,
                   std::int64_t max_seqlen_k, bool deterministic, const DenseOptions& options) {
  const Importer importer = to_importer(importer_code);
  DenseBackwardArgs& a = call->args;
  a.q = import_tensor(importer, "q", q, &call->keep);
  a.k = import_tensor(importer, "k", k, &call->keep);
  a.v = import_tensor(importer, "v", v, &call->keep);
  a.out = import_tensor(importer, "out", out, &call->keep);
  a.dout = import_tensor(importer, "dout", dout, &call->keep);
  a.lse = import_tensor(importer, "lse", lse, &call->keep);
  a.dq = import_tensor(importer, "dq", dq, &call->keep);
  a.dk = import_tensor(importer, "dk", dk, &call->keep);
  a.dv = import_tensor(importer, "dv", dv, &call->keep);
  a.sinks = import_tensor(importer, "sinks", sinks, &call->keep);
  a.dsinks = import_tensor(importer, "dsinks", dsinks, &call->keep);
  a.cu_seqlens_q = import_tensor(importer, "cu_seqlens_q", cu_seqlens_q, &call->keep);
  a.cu_seqlens_k = import_tensor(importer, "cu_seqlens_k", cu_seqlens_k, &call->keep);
  a.max_seqlen_q = max_seqlen_q;
  a.max_seqlen_k = max_seqlen_k;
  a.deterministic = deterministic;
  a.options = options;
}

// (validation code, validation message, chosen backend or "", [(backend, usable, reason)], text)
nb::tuple explanation_tuple(const Explanation& explanation) {
  nb::list verdicts;
  for (const BackendVerdict& verdict : explanation.verdicts) {
    verdicts.append(nb::make_tuple(backend_name(verdict.backend), verdict.usable, verdict.reason));
  }
  const char* chosen = explanation.chosen == Backend::kAuto ? "" : backend_name(explanation.chosen);
  return nb::make_tuple(status_code_name(explanation.validation.code()), explanation.validation.message(), chosen,
                        verdicts, explanation.to_string());
}

void dense_forward(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle lse,
                   nb::handle sinks, nb::handle cu_seqlens_q, nb::handle cu_seqlens_k, std::int64_t max_seqlen_q,
                   std::int64_t max_seqlen_k, std::optional<double> scale, bool causal, std::int64_t window_left,
                   std::int64_t window_right, double softcap, int backend, std::uintptr_t stream,
                   nb::handle workspace_alloc) {
  ForwardCall call;
  make_forward(&call, importer, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
               to_options(scale, causal, window_left, window_right, softcap, backend, stream));
  DenseWorkspace workspace{q, workspace_alloc};
  run_dense(call.args, &workspace);
}

// The PyTorch forward of the eager fast path (python/attnkit/_torch_ops.py) in one call: q, k, v, sinks and
// cu_seqlens are imported; out (and lse) are the caller's `out_given` / `lse_given` (imported and validated
// like any output), or allocated here, contiguous on q's device, so that their layout is known without
// reading it back: out with torch.empty_like(q) where it has q's shape (Dv = D) and q is contiguous,
// else with q.new_empty; lse (when need_lse and not given) with q.new_empty. The kernels run on the current
// stream of q's device (the GPU backends select q's device themselves). Returns (out, lse or None), or
// None when q or v does not have the rank of the layout, for the Python layer to raise its rank error
// (one wording everywhere).
nb::object dense_forward_torch(nb::handle q, nb::handle k, nb::handle v, nb::handle sinks, nb::handle cu_seqlens_q,
                               nb::handle cu_seqlens_k, std::int64_t max_seqlen_q, std::int64_t max_seqlen_k,
                               std::optional<double> scale, bool causal, std::int64_t window_left,
                               std::int64_t window_right, double softcap, int backend, bool need_lse,
                               nb::handle out_given, nb::handle lse_given) {
  const bool varlen = !cu_seqlens_q.is_none();
  const int rank = varlen ? 3 : 4;
  ForwardCall call;
  DenseForwardArgs& a = call.args;
  if (!import_torch_with_rank("q", q, rank, &a.q)) return nb::none();
  a.k = import_tensor(Importer::kTorch, "k", k, &call.keep);
  if (!import_torch_with_rank("v", v, rank, &a.v)) return nb::none();
  a.sinks = import_tensor(Importer::kTorch, "sinks", sinks, &call.keep);
  a.cu_seqlens_q = import_tensor(Importer::kTorch, "cu_seqlens_q", cu_seqlens_q, &call.keep);
  a.cu_seqlens_k = import_tensor(Importer::kTorch, "cu_seqlens_k", cu_seqlens_k, &call.keep);
  a.max_seqlen_q = max_seqlen_q;
  a.max_seqlen_k = max_seqlen_k;
  // BSHD: out [B, Sq, Hq, Dv], lse [B, Hq, Sq]; varlen: out [Tq, Hq, Dv], lse [Hq, Tq].
  const std::int64_t* qs = a.q.shape;
  nb::object out;
  if (!out_given.is_none()) {
    a.out = import_tensor(Importer::kTorch, "out", out_given, &call.keep);
    out = nb::borrow(out_given);
  } else if (a.v.shape[rank - 1] == qs[rank - 1] && is_contiguous_ref(a.q)) {
    out = torch_empty_like(q, a.q, &a.out);
  } else {
    const std::int64_t out_shape[4] = {qs[0], qs[1], varlen ? a.v.shape[2] : qs[2], varlen ? 0 : a.v.shape[3]};
    out = torch_new_empty(q, a.q, out_shape, rank, /*fp32=*/false, &a.out);
  }
  nb::object lse = nb::none();
  if (!lse_given.is_none()) {
    a.lse = import_tensor(Importer::kTorch, "lse_out", lse_given, &call.keep);
    lse = nb::borrow(lse_given);
  } else if (need_lse) {
    const std::int64_t lse_shape[3] = {varlen ? qs[1] : qs[0], varlen ? qs[0] : qs[2], varlen ? 0 : qs[1]};
    lse = torch_new_empty(q, a.q, lse_shape, rank - 1, /*fp32=*/true, &a.lse);
  }
  const std::uintptr_t stream = a.q.device.kind == DeviceKind::kCUDA ? torch_current_stream(a.q.device.index) : 0;
  a.options = to_options(scale, causal, window_left, window_right, softcap, backend, stream);
  DenseWorkspace workspace{q, nb::none(), &a.q, stream};
  run_dense(a, &workspace);
  return nb::make_tuple(out, lse);
}

nb::tuple dense_explain_forward(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle out,
                                nb::handle lse, nb::handle sinks, nb::handle cu_seqlens_q, nb::handle cu_seqlens_k,
                                std::int64_t max_seqlen_q, std::int64_t max_seqlen_k, std::optional<double> scale,
                                bool causal, std::int64_t window_left, std::int64_t window_right, double softcap,
                                int backend, std::uintptr_t stream) {
  ForwardCall call;
  make_forward(&call, importer, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
               to_options(scale, causal, window_left, window_right, softcap, backend, stream));
  return explanation_tuple(explain(call.args));
}

void dense_backward(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle dout,
                    nb::handle lse, nb::handle dq, nb::handle dk, nb::handle dv, nb::handle sinks, nb::handle dsinks,
                    nb::handle cu_seqlens_q, nb::handle cu_seqlens_k, std::int64_t max_seqlen_q,
                    std::int64_t max_seqlen_k, bool deterministic, std::optional<double> scale, bool causal,
                    std::int64_t window_left, std::int64_t window_right, double softcap, int backend,
                    std::uintptr_t stream, nb::handle workspace_alloc) {
  BackwardCall call;
  make_backward(&call, importer, q, k, v, out, dout, lse, dq, dk, dv, sinks, dsinks, cu_seqlens_q, cu_seqlens_k,
                max_seqlen_q, max_seqlen_k, deterministic,
                to_options(scale, causal, window_left, window_right, softcap, backend, stream));
  DenseWorkspace workspace{q, workspace_alloc};
  run_dense(call.args, &workspace);
}

nb::tuple dense_explain_backward(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle out,
                                 nb::handle dout, nb::handle lse, nb::handle dq, nb::handle dk, nb::handle dv,
                                 nb::handle sinks, nb::handle dsinks, nb::handle cu_seqlens_q,
                                 nb::handle cu_seqlens_k, std::int64_t max_seqlen_q, std::int64_t max_seqlen_k,
                                 bool deterministic, std::optional<double> scale, bool causal,
                                 std::int64_t window_left, std::int64_t window_right, double softcap, int backend,
                                 std::uintptr_t stream) {
  BackwardCall call;
  make_backward(&call, importer, q, k, v, out, dout, lse, dq, dk, dv, sinks, dsinks, cu_seqlens_q, cu_seqlens_k,
                max_seqlen_q, max_seqlen_k, deterministic,
                to_options(scale, causal, window_left, window_right, softcap, backend, stream));
  return explanation_tuple(explain(call.args));
}

// ---- Linear attention (include/attnkit/linear.h). The enums arrive as their integer values, named by
// python/attnkit/_linear.py; an out-of-range value is the C++ validation's to reject.

LinearOptions to_linear_options(int variant, std::optional<double> scale, bool l2norm_qk, int gate_form,
                                double gate_lower_bound, int beta_form, int state_layout, int backend,
                                std::uintptr_t stream) {
  LinearOptions options;
  options.variant = static_cast<LinearVariant>(variant);
  if (scale.has_value()) options.scale = static_cast<float>(*scale);
  options.l2norm_qk = l2norm_qk;
  options.gate_form = static_cast<LinearGateForm>(gate_form);
  options.gate_lower_bound = static_cast<float>(gate_lower_bound);
  options.beta_form = static_cast<LinearBetaForm>(beta_form);
  options.state_layout = static_cast<LinearStateLayout>(state_layout);
  options.backend = to_backend(backend);
  options.stream = reinterpret_cast<void*>(stream);
  return options;
}

struct LinearForwardCall {
  LinearForwardArgs args;
  ImportKeepAlive keep;
};

void make_linear_forward(LinearForwardCall* call, int importer_code, nb::handle q, nb::handle k, nb::handle v,
                         nb::handle g, nb::handle beta, nb::handle A_log, nb::handle dt_bias, nb::handle out,
                         nb::handle initial_state, nb::handle final_state, nb::handle cu_seqlens,
                         const LinearOptions& options) {
  const Importer importer = to_importer(importer_code);
  LinearForwardArgs& a = call->args;
  a.q = import_tensor(importer, "q", q, &call->keep);
  a.k = import_tensor(importer, "k", k, &call->keep);
  a.v = import_tensor(importer, "v", v, &call->keep);
  a.g = import_tensor(importer, "g", g, &call->keep);
  a.beta = import_tensor(importer, "beta", beta, &call->keep);
  a.A_log = import_tensor(importer, "A_log", A_log, &call->keep);
  a.dt_bias = import_tensor(importer, "dt_bias", dt_bias, &call->keep);
  a.out = import_tensor(importer, "out", out, &call->keep);
  a.initial_state = import_tensor(importer, "initial_state", initial_state, &call->keep);
  a.final_state = import_tensor(importer, "final_state", final_state, &call->keep);
  a.cu_seqlens = import_tensor(importer, "cu_seqlens", cu_seqlens, &call->keep);
  a.options = options;
}

void linear_forward(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle g, nb::handle beta,
                    nb::handle A_log, nb::handle dt_bias, nb::handle out, nb::handle initial_state,
                    nb::handle final_state, nb::handle cu_seqlens, int variant, std::optional<double> scale,
                    bool l2norm_qk, int gate_form, double gate_lower_bound, int beta_form, int state_layout,
                    int backend, std::uintptr_t stream, nb::handle workspace_alloc) {
  LinearForwardCall call;
  make_linear_forward(&call, importer, q, k, v, g, beta, A_log, dt_bias, out, initial_state, final_state, cu_seqlens,
                      to_linear_options(variant, scale, l2norm_qk, gate_form, gate_lower_bound, beta_form,
                                        state_layout, backend, stream));
  run(call.args, q, workspace_alloc);
}

void linear_backward(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle g, nb::handle beta,
                     nb::handle A_log, nb::handle dt_bias, nb::handle initial_state, nb::handle cu_seqlens,
                     nb::handle dout, nb::handle dfinal_state, nb::handle dq, nb::handle dk, nb::handle dv,
                     nb::handle dg, nb::handle dbeta, nb::handle d_initial_state, nb::handle dA_log,
                     nb::handle ddt_bias, int variant, std::optional<double> scale, bool l2norm_qk, int gate_form,
                     double gate_lower_bound, int beta_form, int state_layout, int backend, std::uintptr_t stream,
                     nb::handle workspace_alloc) {
  struct {
    LinearBackwardArgs args;
    ImportKeepAlive keep;
  } call;
  const Importer from = to_importer(importer);
  LinearBackwardArgs& a = call.args;
  a.q = import_tensor(from, "q", q, &call.keep);
  a.k = import_tensor(from, "k", k, &call.keep);
  a.v = import_tensor(from, "v", v, &call.keep);
  a.g = import_tensor(from, "g", g, &call.keep);
  a.beta = import_tensor(from, "beta", beta, &call.keep);
  a.A_log = import_tensor(from, "A_log", A_log, &call.keep);
  a.dt_bias = import_tensor(from, "dt_bias", dt_bias, &call.keep);
  a.initial_state = import_tensor(from, "initial_state", initial_state, &call.keep);
  a.cu_seqlens = import_tensor(from, "cu_seqlens", cu_seqlens, &call.keep);
  a.dout = import_tensor(from, "dout", dout, &call.keep);
  a.dfinal_state = import_tensor(from, "dfinal_state", dfinal_state, &call.keep);
  a.dq = import_tensor(from, "dq", dq, &call.keep);
  a.dk = import_tensor(from, "dk", dk, &call.keep);
  a.dv = import_tensor(from, "dv", dv, &call.keep);
  a.dg = import_tensor(from, "dg", dg, &call.keep);
  a.dbeta = import_tensor(from, "dbeta", dbeta, &call.keep);
  a.d_initial_state = import_tensor(from, "d_initial_state", d_initial_state, &call.keep);
  a.dA_log = import_tensor(from, "dA_log", dA_log, &call.keep);
  a.ddt_bias = import_tensor(from, "ddt_bias", ddt_bias, &call.keep);
  a.options = to_linear_options(variant, scale, l2norm_qk, gate_form, gate_lower_bound, beta_form, state_layout,
                                backend, stream);
  run(a, q, workspace_alloc);
}

void linear_decode(int importer, nb::handle q, nb::handle k, nb::handle v, nb::handle g, nb::handle beta,
                   nb::handle A_log, nb::handle dt_bias, nb::handle out, nb::handle state, nb::handle state_indices,
                   int variant, std::optional<double> scale, bool l2norm_qk, int gate_form, double gate_lower_bound,
                   int beta_form, int state_layout, int backend, std::uintptr_t stream, nb::handle workspace_alloc) {
  struct {
    LinearDecodeArgs args;
    ImportKeepAlive keep;
  } call;
  const Importer from = to_importer(importer);
  LinearDecodeArgs& a = call.args;
  a.q = import_tensor(from, "q", q, &call.keep);
  a.k = import_tensor(from, "k", k, &call.keep);
  a.v = import_tensor(from, "v", v, &call.keep);
  a.g = import_tensor(from, "g", g, &call.keep);
  a.beta = import_tensor(from, "beta", beta, &call.keep);
  a.A_log = import_tensor(from, "A_log", A_log, &call.keep);
  a.dt_bias = import_tensor(from, "dt_bias", dt_bias, &call.keep);
  a.out = import_tensor(from, "out", out, &call.keep);
  a.state = import_tensor(from, "state", state, &call.keep);
  a.state_indices = import_tensor(from, "state_indices", state_indices, &call.keep);
  a.options = to_linear_options(variant, scale, l2norm_qk, gate_form, gate_lower_bound, beta_form, state_layout,
                                backend, stream);
  run(a, q, workspace_alloc);
}

nb::dict build_info_dict() {
  const BuildInfo info = build_info();
  nb::dict result;
  result["version"] = info.version;
  result["cuda_enabled"] = info.cuda_enabled;
  result["cuda_archs"] = info.cuda_archs;
  result["compiled_backends"] = info.compiled_backends;
  result["compiler"] = info.compiler;
  return result;
}

// ([{ordinal, name, compute_capability, sm_count, memory_bytes}, ...], why there is none or "")
nb::tuple cuda_devices_list() {
  std::string why_none;
  nb::list devices;
  for (const CudaDeviceSummary& device : cuda_devices(&why_none)) {
    nb::dict entry;
    entry["ordinal"] = device.ordinal;
    entry["name"] = device.name;
    entry["compute_capability"] = device.compute_capability;
    entry["sm_count"] = device.sm_count;
    entry["memory_bytes"] = device.memory_bytes;
    devices.append(entry);
  }
  return nb::make_tuple(devices, why_none);
}

}  // namespace
}  // namespace attnkit::python

NB_MODULE(_ext, m) {
  namespace py = attnkit::python;
  m.doc() = "attnkit's compiled bindings (private: use the functions of the attnkit package)";
  // Optional tensors take None (nanobind refuses None for an object argument unless told).
  auto tensor = [](const char* name) { return nb::arg(name).none(); };
  auto options = [] {
    return std::make_tuple(nb::arg("scale").none(), nb::arg("causal"), nb::arg("window_left"),
                           nb::arg("window_right"), nb::arg("softcap"), nb::arg("backend"), nb::arg("stream"));
  };
  auto forward_tensors = [&] {
    return std::make_tuple(nb::arg("importer"), tensor("q"), tensor("k"), tensor("v"), tensor("out"), tensor("lse"),
                           tensor("sinks"), tensor("cu_seqlens_q"), tensor("cu_seqlens_k"), nb::arg("max_seqlen_q"),
                           nb::arg("max_seqlen_k"));
  };
  auto backward_tensors = [&] {
    return std::make_tuple(nb::arg("importer"), tensor("q"), tensor("k"), tensor("v"), tensor("out"), tensor("dout"),
                           tensor("lse"), tensor("dq"), tensor("dk"), tensor("dv"), tensor("sinks"),
                           tensor("dsinks"), tensor("cu_seqlens_q"), tensor("cu_seqlens_k"),
                           nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("deterministic"));
  };
  auto def = [&](const char* name, auto function, auto... arg_groups) {
    std::apply([&](auto... args) { m.def(name, function, args...); }, std::tuple_cat(arg_groups...));
  };
  def("dense_forward", &py::dense_forward, forward_tensors(), options(),
      std::make_tuple(nb::arg("workspace_alloc").none()));
  def("dense_backward", &py::dense_backward, backward_tensors(), options(),
      std::make_tuple(nb::arg("workspace_alloc").none()));
  def("dense_explain_forward", &py::dense_explain_forward, forward_tensors(), options());
  def("dense_explain_backward", &py::dense_explain_backward, backward_tensors(), options());
  auto linear_options = [] {
    return std::make_tuple(nb::arg("variant"), nb::arg("scale").none(), nb::arg("l2norm_qk"), nb::arg("gate_form"),
                           nb::arg("gate_lower_bound"), nb::arg("beta_form"), nb::arg("state_layout"),
                           nb::arg("backend"), nb::arg("stream"));
  };
  auto linear_inputs = [&] {
    return std::make_tuple(nb::arg("importer"), tensor("q"), tensor("k"), tensor("v"), tensor("g"), tensor("beta"),
                           tensor("A_log"), tensor("dt_bias"), tensor("out"));
  };
  def("linear_forward", &py::linear_forward, linear_inputs(),
      std::make_tuple(tensor("initial_state"), tensor("final_state"), tensor("cu_seqlens")), linear_options(),
      std::make_tuple(nb::arg("workspace_alloc").none()));
  def("linear_backward", &py::linear_backward,
      std::make_tuple(nb::arg("importer"), tensor("q"), tensor("k"), tensor("v"), tensor("g"), tensor("beta"),
                      tensor("A_log"), tensor("dt_bias"), tensor("initial_state"), tensor("cu_seqlens"),
                      tensor("dout"), tensor("dfinal_state"), tensor("dq"), tensor("dk"), tensor("dv"), tensor("dg"),
                      tensor("dbeta"), tensor("d_initial_state"), tensor("dA_log"), tensor("ddt_bias")),
      linear_options(), std::make_tuple(nb::arg("workspace_alloc").none()));
  def("linear_decode", &py::linear_decode, linear_inputs(), std::make_tuple(tensor("state"), tensor("state_indices")),
      linear_options(), std::make_tuple(nb::arg("workspace_alloc").none()));
  m.def("build_info", &py::build_info_dict);
  m.def("cuda_devices", &py::cuda_devices_list);
  def("dense_forward_torch", &py::dense_forward_torch,
      std::make_tuple(tensor("q"), tensor("k"), tensor("v"), tensor("sinks"), tensor("cu_seqlens_q"),
                      tensor("cu_seqlens_k"), nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("scale").none(),
                      nb::arg("causal"), nb::arg("window_left"), nb::arg("window_right"), nb::arg("softcap"),
                      nb::arg("backend"), nb::arg("need_lse"), tensor("out"), tensor("lse_out")));
  m.def("set_torch_types", &py::set_torch_types, nb::arg("tensor_type"), nb::arg("float16"), nb::arg("bfloat16"),
        nb::arg("float32"), nb::arg("float64"), nb::arg("int32"), nb::arg("uint8"), nb::arg("current_stream"),
        nb::arg("empty_like"));
}
