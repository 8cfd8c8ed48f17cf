// The validated, resolved form of a dense attention call: what every backend reads instead of
// re-deriving sizes from the arguments. Built only by make_dense_problem(), which checks every
// bad-input class of quality.md that applies to dense attention before anything runs.
#pragma once

#include <cstdint>

#include "attnkit/dense.h"

namespace attnkit::host {

struct DenseProblem {
  bool varlen = false;
  bool backward = false;
  std::int64_t batch = 0;       // B, or N sequences for varlen
  std::int64_t seqlen_q = 0;    // Sq; varlen: max_seqlen_q
  std::int64_t seqlen_k = 0;    // Sk; varlen: max_seqlen_k
  std::int64_t total_q = 0;     // varlen: Tq (rows of q); BSHD: B * Sq
  std::int64_t total_k = 0;     // varlen: Tk; BSHD: B * Sk
  std::int64_t heads_q = 0;     // Hq
  std::int64_t heads_kv = 0;    // Hkv
  std::int64_t group = 1;       // G = Hq / Hkv
  std::int64_t head_dim = 0;    // D
  std::int64_t head_dim_v = 0;  // Dv
  DType dtype = DType::kBFloat16;
  Device device;
  float scale = 0.0f;           // resolved: options.scale or 1 / sqrt(D)
  float softcap = 0.0f;         // 0 = off
  std::int64_t window_left = -1;   // -1 = unbounded
  std::int64_t window_right = -1;  // -1 = unbounded; causal folded in as 0
  bool has_lse = false;
  bool has_sinks = false;
  bool deterministic = false;
  // Forward only, set by host::forward_allocating alone: the workspace is all zero at the call (memory
  // reserved to backends whose launches leave it zero; see WorkspaceAllocator), so a backend that needs
  // it zeroed may skip the memset. Never set for a caller's own workspace, whose contents are unknown.
  bool workspace_zeroed = false;

  // True when there is nothing to compute or write: zero batch or heads, or no query rows (in backward
  // also no key rows, since dk and dv of keys that no query sees are written as zeros).
  bool no_work() const {
    return batch == 0 || heads_q == 0 || (total_q == 0 && (!backward || total_k == 0));
  }
};

// The head dims every backend of this build accepts (multiples of 8 up to 256).
constexpr std::int64_t kMaxHeadDim = 256;
constexpr std::int64_t kHeadDimMultiple = 8;

Status make_dense_problem(const DenseForwardArgs& args, DenseProblem* problem);
Status make_dense_problem(const DenseBackwardArgs& args, DenseProblem* problem);

}  // namespace attnkit::host
