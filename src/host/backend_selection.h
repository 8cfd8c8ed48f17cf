#pragma once
// What dense and linear dispatch share: the device gate of a backend row, and the walk over the backend
// table that writes explain()'s verdicts and the error of a call no backend can run.

#include <string>

#include "attnkit/dense.h"

namespace attnkit::host {

// Where must the tensors live for this backend, and is the device new enough? Answered without building
// a message (the success path of every call goes through it); device_gate() turns a closed gate into
// its reason for explain() and errors.
enum class Gate { kOpen, kNotCompiled, kNotOnCpu, kNotOnCuda, kCapabilityUnknown, kCapabilityTooLow };

// `missing_build_option` is the row's: empty when its kernels are part of the build.
Gate device_gate_code(const char* missing_build_option, Backend backend, Device device, int* capability);
Status device_gate(const char* missing_build_option, Backend backend, Device device);

// Asks `verdict_of(ops)` of each row of `backends` in order; the first usable row (of the requested
// backend, if one was requested) becomes *chosen. Fills explanation->verdicts and ->chosen. Returns ok
// when a row was chosen or there is no work, else why no backend can run the call.
template <typename Ops, typename Table, typename VerdictFn>
Status rank_backends(const Table& backends, Backend requested, bool no_work, VerdictFn&& verdict_of,
                     const Ops** chosen, Explanation* explanation) {
  std::string reasons;
  Status first_failure;
  for (const Ops& ops : backends) {
    Status verdict = verdict_of(ops);
    if (requested != Backend::kAuto && ops.backend != requested) {
      verdict = {StatusCode::kNotImplemented, std::string("not requested (backend = ") + backend_name(requested) + ")"};
    } else if (!verdict && requested != Backend::kAuto) {
      first_failure = verdict;
    }
    const bool usable = verdict.is_ok() && *chosen == nullptr;
    if (verdict.is_ok() && *chosen != nullptr) {
      verdict = {StatusCode::kOk, std::string("usable, but ") + backend_name((*chosen)->backend) + " is preferred"};
    }
    if (usable) *chosen = &ops;
    if (!verdict.is_ok()) reasons += std::string("\n  ") + backend_name(ops.backend) + ": " + verdict.message();
    // An ok verdict may name the kernel the backend will run ("chosen: GDN chunked backward ...").
    const std::string chosen_reason = verdict.message().empty() ? "chosen" : "chosen: " + verdict.message();
    explanation->verdicts.push_back({ops.backend, usable, usable ? chosen_reason : verdict.message()});
  }
  if (*chosen != nullptr) {
    explanation->chosen = (*chosen)->backend;
    return Status::ok();
  }
  // Zero-size work is a defined no-op on any device, even one no backend of this build can serve.
  if (no_work) return Status::ok();
  if (requested != Backend::kAuto) {
    return {first_failure.code(),
            std::string("backend ") + backend_name(requested) + " cannot run this call: " + first_failure.message()};
  }
  return {StatusCode::kNotImplemented, "no backend can run this call:" + reasons};
}

}  // namespace attnkit::host
