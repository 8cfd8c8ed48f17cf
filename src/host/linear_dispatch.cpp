// Dispatch for linear attention (GDN, KDA): validate, ask each backend in order of preference, run the
// first that can. An explicitly requested backend that cannot run the call is an error, never a silent
// fallback. The GPU rows are filled by src/kernels/linear/ when it is part of the build (see
// linear_backend.h for the defines and function names it provides).
#include <array>
#include <string>

#include "attnkit/build_config.h"
#include "attnkit/linear.h"
#include "cpu/linear_cpu.h"
#include "host/backend_selection.h"
#include "host/linear_backend.h"
#include "host/linear_problem.h"

#if ATTNKIT_HAVE_LINEAR_SM90_FORWARD || ATTNKIT_HAVE_LINEAR_SM90_BACKWARD || ATTNKIT_HAVE_LINEAR_SM90_DECODE
#define ATTNKIT_HAVE_LINEAR_SM90 1
#include "kernels/linear/sm90/linear_sm90.h"
#else
#define ATTNKIT_HAVE_LINEAR_SM90 0
#endif
#if ATTNKIT_HAVE_LINEAR_SM80_FORWARD || ATTNKIT_HAVE_LINEAR_SM80_BACKWARD || ATTNKIT_HAVE_LINEAR_SM80_DECODE
#define ATTNKIT_HAVE_LINEAR_SM80 1
#include "kernels/linear/sm80/linear_sm80.h"
#else
#define ATTNKIT_HAVE_LINEAR_SM80 0
#endif

namespace attnkit {

const char* linear_variant_name(LinearVariant variant) {
  switch (variant) {
    case LinearVariant::kGatedDeltaNet: return "gdn";
    case LinearVariant::kKimiDelta: return "kda";
  }
  return "unknown";
}

namespace host {
namespace {

constexpr std::size_t kBackendCount = 3;
using BackendTable = std::array<LinearBackendOps, kBackendCount>;

// What a GPU row says when this build has no kernel for it.
const char* missing_gpu_option(bool arch_in_build) {
  if (!ATTNKIT_ENABLE_CUDA) return "ATTNKIT_ENABLE_CUDA=ON with the arch in ATTNKIT_CUDA_ARCHS";
  if (!arch_in_build) return "the arch in ATTNKIT_CUDA_ARCHS (and ATTNKIT_OP_LINEAR=ON)";
  return "a linear-attention kernel for this arch (src/kernels/linear/); none is part of this build";
}

// In order of preference: the first usable one runs under Backend::kAuto.
BackendTable linear_backends() {
  LinearBackendOps sm90{Backend::kSm90, "", nullptr, nullptr, nullptr, nullptr, nullptr,
                        nullptr,        nullptr, nullptr, nullptr};
  LinearBackendOps sm80{Backend::kSm80, "", nullptr, nullptr, nullptr, nullptr, nullptr,
                        nullptr,        nullptr, nullptr, nullptr};
#if ATTNKIT_HAVE_LINEAR_SM90_FORWARD
  sm90.supports_forward = sm90::linear_supports_forward;
  sm90.forward_workspace_bytes = sm90::linear_forward_workspace_bytes;
  sm90.run_forward = sm90::linear_forward;
#endif
#if ATTNKIT_HAVE_LINEAR_SM90_BACKWARD
  sm90.supports_backward = sm90::linear_supports_backward;
  sm90.backward_workspace_bytes = sm90::linear_backward_workspace_bytes;
  sm90.run_backward = sm90::linear_backward;
#endif
#if ATTNKIT_HAVE_LINEAR_SM90_DECODE
  sm90.supports_decode = sm90::linear_supports_decode;
  sm90.decode_workspace_bytes = sm90::linear_decode_workspace_bytes;
  sm90.run_decode = sm90::linear_decode;
#endif
#if ATTNKIT_HAVE_LINEAR_SM80_FORWARD
  sm80.supports_forward = sm80::linear_supports_forward;
  sm80.forward_workspace_bytes = sm80::linear_forward_workspace_bytes;
  sm80.run_forward = sm80::linear_forward;
#endif
#if ATTNKIT_HAVE_LINEAR_SM80_BACKWARD
  sm80.supports_backward = sm80::linear_supports_backward;
  sm80.backward_workspace_bytes = sm80::linear_backward_workspace_bytes;
  sm80.run_backward = sm80::linear_backward;
#endif
#if ATTNKIT_HAVE_LINEAR_SM80_DECODE
  sm80.supports_decode = sm80::linear_supports_decode;
  sm80.decode_workspace_bytes = sm80::linear_decode_workspace_bytes;
  sm80.run_decode = sm80::linear_decode;
#endif
  if (!ATTNKIT_HAVE_LINEAR_SM90) sm90.missing_build_option = missing_gpu_option(ATTNKIT_ARCH_90A);
  if (!ATTNKIT_HAVE_LINEAR_SM80) sm80.missing_build_option = missing_gpu_option(ATTNKIT_ARCH_80);
  LinearBackendOps cpu_backend{Backend::kCPU,
                               "",
                               cpu::linear_supports_forward,
                               cpu::linear_supports_backward,
                               cpu::linear_supports_decode,
                               cpu::linear_forward_workspace_bytes,
                               cpu::linear_backward_workspace_bytes,
                               cpu::linear_decode_workspace_bytes,
                               cpu::linear_forward,
                               cpu::linear_backward,
                               cpu::linear_decode};
  return {sm90, sm80, cpu_backend};
}

// Per-op members of the backend table, so that one body serves forward, backward and decode.
template <typename Args>
struct OpMembers;
template <>
struct OpMembers<LinearForwardArgs> {
  static constexpr const char* kName = "forward";
  static constexpr auto kSupports = &LinearBackendOps::supports_forward;
  static constexpr auto kWorkspace = &LinearBackendOps::forward_workspace_bytes;
  static constexpr auto kRun = &LinearBackendOps::run_forward;
};
template <>
struct OpMembers<LinearBackwardArgs> {
  static constexpr const char* kName = "backward";
  static constexpr auto kSupports = &LinearBackendOps::supports_backward;
  static constexpr auto kWorkspace = &LinearBackendOps::backward_workspace_bytes;
  static constexpr auto kRun = &LinearBackendOps::run_backward;
};
template <>
struct OpMembers<LinearDecodeArgs> {
  static constexpr const char* kName = "decode";
  static constexpr auto kSupports = &LinearBackendOps::supports_decode;
  static constexpr auto kWorkspace = &LinearBackendOps::decode_workspace_bytes;
  static constexpr auto kRun = &LinearBackendOps::run_decode;
};

template <typename Args>
Status backend_verdict(const LinearBackendOps& ops, const LinearProblem& problem, const Args& args) {
  if (Status gate = device_gate(ops.missing_build_option, ops.backend, problem.device); !gate) return gate;
  const auto supports = ops.*OpMembers<Args>::kSupports;
  if (supports == nullptr) {
    return {StatusCode::kNotImplemented, std::string("this backend has no linear-attention ") + OpMembers<Args>::kName +
                                             " kernel yet"};
  }
  return supports(problem, args);
}

struct Selection {
  Status status;  // ok, or why nothing can run
  const LinearBackendOps* chosen = nullptr;
  LinearProblem problem;
  Explanation explanation;
};

template <typename Args>
Selection select_backend(const Args& args, const BackendTable& backends) {
  Selection selection;
  selection.status = make_linear_problem(args, &selection.problem);
  selection.explanation.validation = selection.status;
  if (!selection.status) return selection;
  selection.status = rank_backends(
      backends, args.options.backend, selection.problem.no_work(),
      [&](const LinearBackendOps& ops) { return backend_verdict(ops, selection.problem, args); }, &selection.chosen,
      &selection.explanation);
  return selection;
}

template <typename Args>
Status check_workspace(const Args& args, const Selection& selection) {
  const std::size_t needed = (selection.chosen->*OpMembers<Args>::kWorkspace)(selection.problem);
  if (needed > 0 && (args.workspace == nullptr || args.workspace_bytes < needed)) {
    return {StatusCode::kWorkspaceTooSmall,
            std::string("workspace: backend ") + backend_name(selection.chosen->backend) + " needs " +
                std::to_string(needed) + " bytes, got " + std::to_string(args.workspace_bytes) +
                (args.workspace == nullptr ? " (null pointer)" : "") + "; ask workspace_size() first"};
  }
  return Status::ok();
}

template <typename Args>
Status can_implement_impl(const Args& args) {
  const BackendTable backends = linear_backends();
  Selection selection = select_backend(args, backends);
  if (!selection.status) return selection.status;
  if (selection.problem.no_work()) return Status::ok();
  return check_workspace(args, selection);
}

template <typename Args>
Status run_impl(const Args& args) {
  const BackendTable backends = linear_backends();
  Selection selection = select_backend(args, backends);
  if (!selection.status) return selection.status;
  if (selection.problem.no_work()) return Status::ok();
  if (Status s = check_workspace(args, selection); !s) return s;
  return (selection.chosen->*OpMembers<Args>::kRun)(selection.problem, args);
}

template <typename Args>
Status workspace_size_impl(const Args& args, std::size_t* bytes) {
  if (bytes == nullptr) return {StatusCode::kInvalidArgument, "workspace_size: bytes must not be null"};
  const BackendTable backends = linear_backends();
  Selection selection = select_backend(args, backends);
  if (!selection.status) return selection.status;
  *bytes = selection.problem.no_work() ? 0 : (selection.chosen->*OpMembers<Args>::kWorkspace)(selection.problem);
  return Status::ok();
}

template <typename Args>
Explanation explain_impl(const Args& args) {
  const BackendTable backends = linear_backends();
  return select_backend(args, backends).explanation;
}

}  // namespace
}  // namespace host

Status can_implement(const LinearForwardArgs& args) { return host::can_implement_impl(args); }
Status can_implement(const LinearBackwardArgs& args) { return host::can_implement_impl(args); }
Status can_implement(const LinearDecodeArgs& args) { return host::can_implement_impl(args); }
Explanation explain(const LinearForwardArgs& args) { return host::explain_impl(args); }
Explanation explain(const LinearBackwardArgs& args) { return host::explain_impl(args); }
Explanation explain(const LinearDecodeArgs& args) { return host::explain_impl(args); }
Status workspace_size(const LinearForwardArgs& args, std::size_t* bytes) { return host::workspace_size_impl(args, bytes); }
Status workspace_size(const LinearBackwardArgs& args, std::size_t* bytes) { return host::workspace_size_impl(args, bytes); }
Status workspace_size(const LinearDecodeArgs& args, std::size_t* bytes) { return host::workspace_size_impl(args, bytes); }
Status forward(const LinearForwardArgs& args) { return host::run_impl(args); }
Status backward(const LinearBackwardArgs& args) { return host::run_impl(args); }
Status decode(const LinearDecodeArgs& args) { return host::run_impl(args); }

}  // namespace attnkit
