// Linear attention of the delta-rule family: Gated DeltaNet (GDN) and Kimi Delta Attention (KDA),
// chunked forward and backward for prefill/training and the recurrent decode step (semantics.md
// section 5). Per sequence and value head j (q/k head h = j / G), with a state S of shape [K, V] (fp32):
//
//   S'  = exp(g_t) S_{t-1}                 GDN: g_t is one scalar per (token, value head)
//   S'  = diag(exp(g_t)) S_{t-1}           KDA: g_t is a [K] vector per (token, value head)
//   S_t = S' + beta_t k_t (v_t - S'^T k_t)^T
//   o_t = S_t^T (scale q_t)                the output reads the state after the token is written
//
// g are natural-log decays (<= 0; positive gates are outside the contract). scale defaults to K^-0.5.
// Fused options (applied inside the op, and differentiated through in backward):
//   l2norm_qk:            q <- q * rsqrt(sum q^2 + 1e-6), the same for k, before anything else
//   gate kSoftplus:       g = -exp(A_log[j]) * softplus(g_raw + dt_bias)
//   gate kLowerBoundSigmoid: g = lb * sigmoid(exp(A_log[j]) * (g_raw + dt_bias)),  -5 <= lb < 0
//   beta kSigmoid:        beta = sigmoid(b);  kTwoSigmoid: beta = 2 sigmoid(b) (negative eigenvalues)
// where g_raw and b are the tensors passed as `g` and `beta`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "attnkit/dense.h"  // Backend, BackendVerdict, Explanation
#include "attnkit/types.h"

namespace attnkit {

// Which recurrence. Simple GLA (head-scalar gate, no delta rule) and GLA (per-key gate) will be added
// as further values; every call already names its variant so that adding them changes no caller.
enum class LinearVariant : std::uint8_t {
  kGatedDeltaNet,  // GDN: g [B, T, HV]
  kKimiDelta,      // KDA: g [B, T, HV, K]
};

const char* linear_variant_name(LinearVariant variant);  // "gdn", "kda"

// Layout of every state tensor of a call (initial/final state, their gradients, the decode state).
enum class LinearStateLayout : std::uint8_t {
  kKV,  // [N, HV, K, V]: S[k][v] with v contiguous (FLA's layout)
  kVK,  // [N, HV, V, K]: the transpose, k contiguous (vLLM / SGLang's decode layout)
};

// How the gate tensor `g` becomes the log decay.
enum class LinearGateForm : std::uint8_t {
  kLogDecay,           // g is the log decay itself
  kSoftplus,           // g = -exp(A_log) * softplus(g_raw + dt_bias)           (Mamba2 / GDN / KDA)
  kLowerBoundSigmoid,  // g = lb * sigmoid(exp(A_log) * (g_raw + dt_bias))     (KDA's bounded form)
};

// How the beta tensor becomes the delta rule's step size.
enum class LinearBetaForm : std::uint8_t {
  kValue,       // beta as given
  kSigmoid,     // beta = sigmoid(b), in (0, 1)
  kTwoSigmoid,  // beta = 2 sigmoid(b), in (0, 2): allows negative eigenvalues of the transition
};

// Options shared by forward, backward and decode. A backward call must pass the options of its forward.
struct LinearOptions {
  LinearVariant variant = LinearVariant::kGatedDeltaNet;
  std::optional<float> scale;   // default K^-0.5; must be finite and > 0
  bool l2norm_qk = false;       // fused q/k L2 normalisation (eps 1e-6 inside the square root)
  LinearGateForm gate_form = LinearGateForm::kLogDecay;
  float gate_lower_bound = -5.0f;  // lb of kLowerBoundSigmoid; -5 <= lb < 0
  LinearBetaForm beta_form = LinearBetaForm::kValue;
  LinearStateLayout state_layout = LinearStateLayout::kKV;
  Backend backend = Backend::kAuto;
  void* stream = nullptr;       // cudaStream_t for the GPU backends; ignored on the CPU
};

// Shapes (H q/k heads, HV = G * H value heads, K key dim, V value dim, N sequences):
//   q, k  [B, T, H, K]      v, out [B, T, HV, V]      beta [B, T, HV]
//   g     [B, T, HV] (GDN) or [B, T, HV, K] (KDA)
//   A_log [HV] fp32 and dt_bias [HV] (GDN) or [HV, K] (KDA) fp32: fused gate only (dt_bias optional)
//   initial_state, final_state: fp32 [N, HV, K, V] (or [N, HV, V, K], options.state_layout)
// Varlen: B = 1 and cu_seqlens int32 [N + 1] (starts at 0, non-decreasing, ends at T); otherwise N = B.
// dtypes: q, k, v, out share one of fp16, bf16 (every backend) or fp32 (the CPU backend); g and beta are
// each fp32 or the dtype of q. K and V from 1 to 256 (K != V allowed; 64, 128 and 256 are the GPU fast
// paths). The last dimension of every tensor is contiguous; other strides are free.
struct LinearForwardArgs {
  TensorRef q;
  TensorRef k;
  TensorRef v;
  TensorRef g;
  TensorRef beta;
  TensorRef A_log;          // required with a fused gate form, otherwise absent
  TensorRef dt_bias;        // optional with a fused gate form (absent = 0), otherwise absent
  TensorRef out;
  TensorRef initial_state;  // optional: absent = zero state
  TensorRef final_state;    // optional output: the state after each sequence's last token
  TensorRef cu_seqlens;     // varlen only, int32 [N + 1]
  void* workspace = nullptr;  // device (or host, for the CPU) scratch, see workspace_size()
  std::size_t workspace_bytes = 0;
  LinearOptions options;
};

// Backward of L = <dout, out> + <dfinal_state, final_state> through the forward above (every
// intermediate is recomputed from the inputs). Gradients are with respect to the tensors as passed: with
// a fused gate dg is d/d(g_raw), with a fused beta dbeta is d/d(logits), with l2norm_qk dq/dk are with
// respect to the unnormalised q/k. dk and dq of a q/k head sum over its G value heads.
//   dq, dk, dv: shapes and dtype of q, k, v        dg, dbeta: shapes and dtypes of g, beta
//   d_initial_state: fp32, the shape of initial_state; required when initial_state is given
//   dA_log, ddt_bias: fp32, required when A_log / dt_bias are given
//   dfinal_state: optional input (absent = 0)
struct LinearBackwardArgs {
  TensorRef q;
  TensorRef k;
  TensorRef v;
  TensorRef g;
  TensorRef beta;
  TensorRef A_log;
  TensorRef dt_bias;
  TensorRef initial_state;
  TensorRef cu_seqlens;
  TensorRef dout;
  TensorRef dfinal_state;
  TensorRef dq;
  TensorRef dk;
  TensorRef dv;
  TensorRef dg;
  TensorRef dbeta;
  TensorRef d_initial_state;
  TensorRef dA_log;
  TensorRef ddt_bias;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  LinearOptions options;
};

// The recurrent step for serving: T = 1, or a few tokens per sequence (multi-token prediction), over N
// sequences that each own one state, read and written in place.
//   q, k [N, T, H, K]   v, out [N, T, HV, V]   g [N, T, HV] or [N, T, HV, K]   beta [N, T, HV]
//   state: fp32 [P, HV, K, V] (or [P, HV, V, K]); without state_indices P = N and sequence n owns
//          state[n]; with state_indices (int32 [N]) sequence n owns state[state_indices[n]] of a pool of
//          P states. A negative index marks a padding slot: that sequence's out rows are written as zeros
//          and no state is read or written. Indices must be < P and distinct (checked when on the host;
//          GPU kernels skip an index >= P instead of writing out of bounds).
struct LinearDecodeArgs {
  TensorRef q;
  TensorRef k;
  TensorRef v;
  TensorRef g;
  TensorRef beta;
  TensorRef A_log;
  TensorRef dt_bias;
  TensorRef out;
  TensorRef state;
  TensorRef state_indices;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  LinearOptions options;
};

// Validate without running. ok() means forward()/backward()/decode() would launch.
Status can_implement(const LinearForwardArgs& args);
Status can_implement(const LinearBackwardArgs& args);
Status can_implement(const LinearDecodeArgs& args);

// Which backend runs and why every other one was rejected.
Explanation explain(const LinearForwardArgs& args);
Explanation explain(const LinearBackwardArgs& args);
Explanation explain(const LinearDecodeArgs& args);

// Scratch bytes the chosen backend needs (0 when none). Errors as can_implement().
Status workspace_size(const LinearForwardArgs& args, std::size_t* bytes);
Status workspace_size(const LinearBackwardArgs& args, std::size_t* bytes);
Status workspace_size(const LinearDecodeArgs& args, std::size_t* bytes);

// Runs the call. Every argument is validated before any launch or write; zero-size work is a no-op.
// GPU backends are asynchronous on options.stream and never synchronise the host.
Status forward(const LinearForwardArgs& args);
Status backward(const LinearBackwardArgs& args);
Status decode(const LinearDecodeArgs& args);

}  // namespace attnkit
