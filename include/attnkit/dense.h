// Dense softmax attention, forward and backward (semantics.md section 1).
//
//   s_ij = scale * <q_i, k_j>            (then c * tanh(s_ij / c) when softcap c > 0)
//   visible(i, j) iff  i + (Sk - Sq) - left <= j <= i + (Sk - Sq) + right   (bottom-right aligned)
//   p_ij = exp(s_ij - m_i) / l_i,  l_i = sum_visible exp(s_ij - m_i) (+ exp(sink_h - m_i))
//   o_i  = sum_j p_ij v_j,         lse_i = log(sum_visible exp(s_ij) (+ exp(sink_h)))   (natural log)
//   a row with nothing visible (and no sink): o_i = 0, lse_i = -inf.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attnkit/types.h"

namespace attnkit {

enum class Backend : std::uint8_t {
  kAuto,  // the fastest usable backend for the arguments' device
  kCPU,   // tiled, multi-threaded CPU backend
  kSm80,  // portable tensor-core path for sm_80 and newer
  kSm90,  // Hopper path (sm_90a)
};

const char* backend_name(Backend backend);

// Options shared by forward and backward. A backward call must pass the options of its forward.
struct DenseOptions {
  std::optional<float> scale;  // softmax scale; default 1 / sqrt(D); must be finite and > 0
  bool causal = false;         // bottom-right aligned; the same as window_right = 0
  std::int64_t window_left = -1;   // keys visible to the left of the diagonal; -1 = unbounded
  std::int64_t window_right = -1;  // keys visible to the right of the diagonal; -1 = unbounded
  float softcap = 0.0f;        // 0 = off; otherwise c > 0 and s = c * tanh(s / c)
  Backend backend = Backend::kAuto;
  void* stream = nullptr;      // cudaStream_t for the GPU backends; ignored on the CPU
};

// Varlen: both cu_seqlens defined. q is [Tq, Hq, D], k [Tk, Hkv, D], v [Tk, Hkv, Dv], o [Tq, Hq, Dv],
// lse [Hq, Tq]; cu_seqlens_* are int32 [N + 1], start at 0, non-decreasing, end at Tq / Tk.
// Otherwise BSHD: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv], o [B, Sq, Hq, Dv],
// lse [B, Hq, Sq]. The last dimension is contiguous; other strides are free.
struct DenseForwardArgs {
  TensorRef q;
  TensorRef k;
  TensorRef v;
  TensorRef out;
  TensorRef lse;    // optional, fp32
  TensorRef sinks;  // optional, fp32 [Hq]: per-head logit added to the denominator only
  TensorRef cu_seqlens_q;  // varlen only, int32 [N + 1]
  TensorRef cu_seqlens_k;  // varlen only, int32 [N + 1]
  std::int64_t max_seqlen_q = 0;  // varlen only: an upper bound of the query lengths
  std::int64_t max_seqlen_k = 0;  // varlen only: an upper bound of the key lengths
  void* workspace = nullptr;       // device (or host, for the CPU) scratch, see workspace_size()
  std::size_t workspace_bytes = 0;
  DenseOptions options;
};

// dq/dk/dv have the shapes and dtype of q/k/v; dk and dv of a kv head sum over its G query heads.
// lse is required (fp32, as written by forward). dsinks (fp32 [Hq]) is required when sinks is given.
struct DenseBackwardArgs {
  TensorRef q;
  TensorRef k;
  TensorRef v;
  TensorRef out;
  TensorRef dout;
  TensorRef lse;
  TensorRef dq;
  TensorRef dk;
  TensorRef dv;
  TensorRef sinks;
  TensorRef dsinks;
  TensorRef cu_seqlens_q;
  TensorRef cu_seqlens_k;
  std::int64_t max_seqlen_q = 0;
  std::int64_t max_seqlen_k = 0;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  bool deterministic = false;  // every output bit-identical from run to run
  DenseOptions options;
};

// One backend's verdict on a call: usable, or the reason it is not.
struct BackendVerdict {
  Backend backend;
  bool usable;
  std::string reason;
};

struct Explanation {
  Status validation;           // not ok: the arguments themselves are wrong
  Backend chosen = Backend::kAuto;  // kAuto: nothing can run the call
  std::vector<BackendVerdict> verdicts;  // one per backend, in order of preference
  std::string to_string() const;
};

// Validate without running. ok() means forward()/backward() would launch.
Status can_implement(const DenseForwardArgs& args);
Status can_implement(const DenseBackwardArgs& args);

// Which backend runs and why every other one was rejected.
Explanation explain(const DenseForwardArgs& args);
Explanation explain(const DenseBackwardArgs& args);

// Scratch bytes the chosen backend needs (0 when none). Errors as can_implement().
Status workspace_size(const DenseForwardArgs& args, std::size_t* bytes);
Status workspace_size(const DenseBackwardArgs& args, std::size_t* bytes);

// Runs the call. Every argument is validated before any launch or write; zero-size work is a no-op.
// GPU backends are asynchronous on options.stream and never synchronise the host.
Status forward(const DenseForwardArgs& args);
Status backward(const DenseBackwardArgs& args);

}  // namespace attnkit
