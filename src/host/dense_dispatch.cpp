// Dispatch for dense attention: validate, ask each backend in order of preference, run the first that
// can. An explicitly requested backend that cannot run the call is an error, never a silent fallback.
#include <array>
#include <string>
#include <type_traits>

#include "attnkit/build_config.h"
#include "attnkit/dense.h"
#include "cpu/dense_cpu.h"
#include "host/backend_selection.h"
#include "host/dense_backend.h"
#include "host/dense_dispatch.h"
#include "host/dense_problem.h"

// The sm80 forward and backward are separate translation units, each announced by its own define
// (set by src/kernels/dense/sm80/CMakeLists.txt when its sources are part of the build).
#if ATTNKIT_HAVE_DENSE_SM80_FORWARD || ATTNKIT_HAVE_DENSE_SM80_BACKWARD
#include "kernels/dense/sm80/dense_sm80.h"
#endif
// The sm90 forward, announced by src/kernels/dense/sm90/CMakeLists.txt when 90a is built. There is no
// sm90 backward kernel: its row answers "no backward kernel yet" and sm80 runs the backward.
#if ATTNKIT_HAVE_DENSE_SM90_FORWARD
#include "kernels/dense/sm90/dense_sm90.h"
#endif

namespace attnkit {

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::kAuto: return "auto";
    case Backend::kCPU: return "cpu";
    case Backend::kSm80: return "sm80";
    case Backend::kSm90: return "sm90";
  }
  return "unknown";
}

namespace host {
namespace {

constexpr std::size_t kBackendCount = 3;

// In order of preference: the first usable one runs under Backend::kAuto.
std::array<DenseBackendOps, kBackendCount> dense_backends() {
#if ATTNKIT_HAVE_DENSE_SM90_FORWARD
  DenseBackendOps sm90{Backend::kSm90, "", sm90::dense_supports_forward, nullptr, sm90::dense_forward_workspace_bytes,
                       nullptr, sm90::dense_forward, nullptr, /*forward_keeps_workspace_zeroed=*/true};
#else
  DenseBackendOps sm90{Backend::kSm90,
                       ATTNKIT_ENABLE_CUDA ? "ATTNKIT_CUDA_ARCHS including 90a (and ATTNKIT_OP_DENSE=ON)"
                                           : "ATTNKIT_ENABLE_CUDA=ON with ATTNKIT_CUDA_ARCHS including 90a",
                       nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, false};
#endif
#if ATTNKIT_HAVE_DENSE_SM80_FORWARD || ATTNKIT_HAVE_DENSE_SM80_BACKWARD
  DenseBackendOps sm80{Backend::kSm80, "", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, false};
#if ATTNKIT_HAVE_DENSE_SM80_FORWARD
  sm80.supports_forward = sm80::dense_supports_forward;
  sm80.forward_workspace_bytes = sm80::dense_forward_workspace_bytes;
  sm80.run_forward = sm80::dense_forward;
#endif
#if ATTNKIT_HAVE_DENSE_SM80_BACKWARD
  sm80.supports_backward = sm80::dense_supports_backward;
  sm80.backward_workspace_bytes = sm80::dense_backward_workspace_bytes;
  sm80.run_backward = sm80::dense_backward;
#endif
#else
  DenseBackendOps sm80{Backend::kSm80,
                       ATTNKIT_ENABLE_CUDA ? "ATTNKIT_CUDA_ARCHS including 80 (and ATTNKIT_OP_DENSE=ON)"
                                           : "ATTNKIT_ENABLE_CUDA=ON with ATTNKIT_CUDA_ARCHS including 80",
                       nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, false};
#endif
  DenseBackendOps cpu_backend{Backend::kCPU, "",
                              cpu::dense_supports_forward, cpu::dense_supports_backward,
                              cpu::dense_forward_workspace_bytes, cpu::dense_backward_workspace_bytes,
                              cpu::dense_forward, cpu::dense_backward, false};
  return {sm90, sm80, cpu_backend};
}

// The table above, built once: dispatch runs on every call and the table never changes.
const std::array<DenseBackendOps, kBackendCount>& backend_table() {
  static const std::array<DenseBackendOps, kBackendCount> table = dense_backends();
  return table;
}

template <typename Args>
Status backend_verdict(const DenseBackendOps& ops, const DenseProblem& problem, const Args& args) {
  if (Status gate = device_gate(ops.missing_build_option, ops.backend, problem.device); !gate) return gate;
  if constexpr (std::is_same_v<Args, DenseForwardArgs>) {
    if (ops.supports_forward == nullptr) return {StatusCode::kNotImplemented, "this backend has no forward kernel yet"};
    return ops.supports_forward(problem, args);
  } else {
    if (ops.supports_backward == nullptr) {
      return {StatusCode::kNotImplemented, "this backend has no backward kernel yet"};
    }
    return ops.supports_backward(problem, args);
  }
}

struct Selection {
  Status status;                 // ok, or why nothing can run
  const DenseBackendOps* chosen = nullptr;
  DenseProblem problem;
  Explanation explanation;
};

template <typename Args>
Selection select_backend(const Args& args, const std::array<DenseBackendOps, kBackendCount>& backends) {
  Selection selection;
  selection.status = make_dense_problem(args, &selection.problem);
  selection.explanation.validation = selection.status;
  if (!selection.status) return selection;
  selection.status = rank_backends(
      backends, args.options.backend, selection.problem.no_work(),
      [&](const DenseBackendOps& ops) { return backend_verdict(ops, selection.problem, args); }, &selection.chosen,
      &selection.explanation);
  return selection;
}

// The backend that select_backend() would choose, found without writing any verdict: the path of every
// successful call. A backend's supports_* may still build its own message when it declines. nullptr when
// none can run the call; select_backend() then says why.
template <typename Args>
const DenseBackendOps* first_usable_backend(const Args& args, const DenseProblem& problem,
                                            const std::array<DenseBackendOps, kBackendCount>& backends) {
  const Backend requested = args.options.backend;
  for (const DenseBackendOps& ops : backends) {
    if (requested != Backend::kAuto && ops.backend != requested) continue;
    int capability = -1;
    if (device_gate_code(ops.missing_build_option, ops.backend, problem.device, &capability) != Gate::kOpen) {
      continue;
    }
    if constexpr (std::is_same_v<Args, DenseForwardArgs>) {
      if (ops.supports_forward != nullptr && ops.supports_forward(problem, args).is_ok()) return &ops;
    } else {
      if (ops.supports_backward != nullptr && ops.supports_backward(problem, args).is_ok()) return &ops;
    }
  }
  return nullptr;
}

// Validation, then the chosen backend; zero-size work needs no backend (chosen stays nullptr, ok).
template <typename Args>
Status choose_backend(const Args& args, DenseProblem* problem, const DenseBackendOps** chosen) {
  *chosen = nullptr;
  if (Status s = make_dense_problem(args, problem); !s) return s;
  if (problem->no_work()) return Status::ok();
  const auto& backends = backend_table();
  *chosen = first_usable_backend(args, *problem, backends);
  if (*chosen == nullptr) return select_backend(args, backends).status;  // builds every backend's reason
  return Status::ok();
}

template <typename Args>
std::size_t needed_workspace(const DenseBackendOps& chosen, const DenseProblem& problem) {
  if constexpr (std::is_same_v<Args, DenseForwardArgs>) {
    return chosen.forward_workspace_bytes(problem);
  } else {
    return chosen.backward_workspace_bytes(problem);
  }
}

template <typename Args>
Status check_workspace(const Args& args, const DenseBackendOps& chosen, const DenseProblem& problem) {
  const std::size_t needed = needed_workspace<Args>(chosen, problem);
  if (needed > 0 && (args.workspace == nullptr || args.workspace_bytes < needed)) {
    return {StatusCode::kWorkspaceTooSmall,
            std::string("workspace: backend ") + backend_name(chosen.backend) + " needs " +
                std::to_string(needed) + " bytes, got " + std::to_string(args.workspace_bytes) +
                (args.workspace == nullptr ? " (null pointer)" : "") + "; ask workspace_size() first"};
  }
  return Status::ok();
}

template <typename Args>
Status can_implement_impl(const Args& args) {
  DenseProblem problem;
  const DenseBackendOps* chosen = nullptr;
  if (Status s = choose_backend(args, &problem, &chosen); !s) return s;
  if (chosen == nullptr) return Status::ok();  // zero-size work
  return check_workspace(args, *chosen, problem);
}

template <typename Args>
Status run_impl(const Args& args) {
  DenseProblem problem;
  const DenseBackendOps* chosen = nullptr;
  if (Status s = choose_backend(args, &problem, &chosen); !s) return s;
  if (chosen == nullptr) return Status::ok();  // zero-size work
  if (Status s = check_workspace(args, *chosen, problem); !s) return s;
  if constexpr (std::is_same_v<Args, DenseForwardArgs>) {
    return chosen->run_forward(problem, args);
  } else {
    return chosen->run_backward(problem, args);
  }
}

// run_impl with the workspace taken from `allocator` when the caller's is too small: the plan (validation,
// backend choice, workspace size) is made once.
template <typename Args>
Status run_allocating_impl(Args& args, const WorkspaceAllocator& allocator) {
  DenseProblem problem;
  const DenseBackendOps* chosen = nullptr;
  if (Status s = choose_backend(args, &problem, &chosen); !s) return s;
  if (chosen == nullptr) return Status::ok();  // zero-size work
  const std::size_t needed = needed_workspace<Args>(*chosen, problem);
  constexpr bool kForward = std::is_same_v<Args, DenseForwardArgs>;
  if (needed > 0 && (args.workspace == nullptr || args.workspace_bytes < needed)) {
    const bool keeps_zeroed = kForward && chosen->forward_keeps_workspace_zeroed;
    bool zeroed = false;
    void* memory = allocator.allocate == nullptr
                       ? nullptr
                       : allocator.allocate(allocator.context, needed, keeps_zeroed, &zeroed);
    if (memory == nullptr) {
      return {StatusCode::kWorkspaceTooSmall, std::string("workspace: backend ") + backend_name(chosen->backend) +
                                                  " needs " + std::to_string(needed) +
                                                  " bytes and none could be allocated"};
    }
    args.workspace = memory;
    args.workspace_bytes = needed;
    problem.workspace_zeroed = keeps_zeroed && zeroed;
  }
  if constexpr (kForward) {
    return chosen->run_forward(problem, args);
  } else {
    return chosen->run_backward(problem, args);
  }
}

template <typename Args>
Status workspace_size_impl(const Args& args, std::size_t* bytes) {
  if (bytes == nullptr) return {StatusCode::kInvalidArgument, "workspace_size: bytes must not be null"};
  DenseProblem problem;
  const DenseBackendOps* chosen = nullptr;
  if (Status s = choose_backend(args, &problem, &chosen); !s) return s;
  *bytes = chosen == nullptr ? 0 : needed_workspace<Args>(*chosen, problem);
  return Status::ok();
}

template <typename Args>
Explanation explain_impl(const Args& args) {
  return select_backend(args, backend_table()).explanation;
}

}  // namespace

Status forward_allocating(DenseForwardArgs args, const WorkspaceAllocator& allocator) {
  return run_allocating_impl(args, allocator);
}
Status backward_allocating(DenseBackwardArgs args, const WorkspaceAllocator& allocator) {
  return run_allocating_impl(args, allocator);
}

}  // namespace host

std::string Explanation::to_string() const {
  if (!validation) return "the arguments are invalid: " + validation.to_string();
  std::string text = chosen == Backend::kAuto ? std::string("no backend can run this call")
                                              : std::string("runs on ") + backend_name(chosen);
  for (const BackendVerdict& verdict : verdicts) {
    text += std::string("\n  ") + backend_name(verdict.backend) + ": " + verdict.reason;
  }
  return text;
}

Status can_implement(const DenseForwardArgs& args) { return host::can_implement_impl(args); }
Status can_implement(const DenseBackwardArgs& args) { return host::can_implement_impl(args); }
Explanation explain(const DenseForwardArgs& args) { return host::explain_impl(args); }
Explanation explain(const DenseBackwardArgs& args) { return host::explain_impl(args); }
Status workspace_size(const DenseForwardArgs& args, std::size_t* bytes) { return host::workspace_size_impl(args, bytes); }
Status workspace_size(const DenseBackwardArgs& args, std::size_t* bytes) {
  return host::workspace_size_impl(args, bytes);
}
Status forward(const DenseForwardArgs& args) { return host::run_impl(args); }
Status backward(const DenseBackwardArgs& args) { return host::run_impl(args); }

}  // namespace attnkit
