// float64 CPU references of linear attention of the delta-rule family, Gated DeltaNet and KDA
// (semantics.md section 5), in the recurrent form, token by token, written from the formulas: nothing
// here calls or shares code with src/ (the chunked algorithm of the backends is a different route to
// the same numbers, so a bug in it cannot hide in its reference).
//
// Per sequence n and value head j (q/k head h = j / G), token by token t, with the fusions first:
//   q_t, k_t  <- x * (sum x^2 + 1e-6)^-1/2                          with l2norm_qk
//   g_t       <- -exp(A_log_j) softplus(g_t + dt_bias_j)             gate kSoftplus
//             <- lb sigmoid(exp(A_log_j) (g_t + dt_bias_j))           gate kLowerBoundSigmoid
//   beta_t    <- sigmoid(b_t)  or  2 sigmoid(b_t)                     beta kSigmoid / kTwoSigmoid
//   S'  = exp(g_t) S_{t-1}  (GDN, scalar gate)   or   diag(exp(g_t)) S_{t-1}  (KDA, gate [K])
//   u_t = beta_t (v_t - S'^T k_t)                                     [V]
//   S_t = S' + k_t u_t^T                                              [K, V]
//   o_t = S_t^T (scale q_t)                                           [V]
// S_0 is the initial state (zeros when absent); the final state is S after the sequence's last token.
//
// Inputs are host TensorRefs of fp16, bf16, fp32 or fp64 with arbitrary strides, in the API's shapes
// (linear.h), varlen through a host int32 cu_seqlens; fp64 is accepted so that gradients can be checked
// by finite differences. Bad arguments throw std::invalid_argument: these are test tools, not the
// library. Results are contiguous std::vector<double> in the row-major order of the API tensor they
// stand for (states in the layout options.state_layout names).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/linear.h"

namespace attnkit::reference {

struct LinearReferenceInputs {
  TensorRef q;              // [B, T, H, K]
  TensorRef k;              // [B, T, H, K]
  TensorRef v;              // [B, T, HV, V]
  TensorRef g;              // [B, T, HV] (GDN) or [B, T, HV, K] (KDA)
  TensorRef beta;           // [B, T, HV]
  TensorRef A_log;          // fused gate only: [HV]
  TensorRef dt_bias;        // fused gate, optional: [HV] (GDN) or [HV, K] (KDA)
  TensorRef initial_state;  // optional [N, HV, K, V] or [N, HV, V, K]; decode: the state pool [P, HV, ...]
  TensorRef cu_seqlens;     // varlen only: host int32 [N + 1]
  TensorRef state_indices;  // decode only, optional: host int32 [N] into the pool (negative = padding)
  // variant, scale, l2norm_qk, gate_form, gate_lower_bound, beta_form and state_layout are read.
  LinearOptions options;
};

struct LinearForwardResult {
  std::vector<double> out;    // [B, T, HV, V]
  std::vector<double> state;  // forward: final state [N, HV, K, V] (or V, K); decode: the whole pool after the step
};

struct LinearBackwardResult {
  std::vector<double> dq;               // the shape of q (summed over the G value heads of a q/k head)
  std::vector<double> dk;               // the shape of k (summed likewise)
  std::vector<double> dv;               // the shape of v
  std::vector<double> dg;               // the shape of g: d/d(g as passed), raw gate when fused
  std::vector<double> dbeta;            // the shape of beta: d/d(beta as passed), logits when fused
  std::vector<double> d_initial_state;  // the shape of initial_state (empty without one)
  std::vector<double> dA_log;           // [HV] (empty without a fused gate)
  std::vector<double> ddt_bias;         // the shape of dt_bias (empty without one)
};

// Forward in float64: out and the final state.
LinearForwardResult linear_forward_reference(const LinearReferenceInputs& inputs);

// Backward in float64, exact reverse mode through the recurrence, of
//   L = <dout, out> + <dfinal_state, final state>         (dfinal_state optional: undefined = 0)
// Per step t, from t = last down to 1, with dS the gradient of S_t (starting at dfinal_state):
//   dq_t += scale S_t do_t;          dS += scale q_t do_t^T
//   du    = dS^T k_t;                dk_t += dS u_t
//   dbeta_t = <du, v_t - S'^T k_t>;  dv_t = beta_t du
//   dS'   = dS - beta_t k_t du^T;    dk_t -= beta_t S' du
//   dg_t  = sum_v (dS' o S') over v (KDA: one per key), over k and v (GDN)
//   dS_{t-1} = exp(g_t) o dS'
// then through the fusions (l2 norm, gate, beta) to the tensors as passed; dq/dk summed over the group,
// dA_log and ddt_bias over tokens and sequences. States are checkpointed every 32 tokens and the states
// of a segment recomputed from its checkpoint, which is exact (the same float64 operations).
LinearBackwardResult linear_backward_reference(const LinearReferenceInputs& inputs, const TensorRef& dout,
                                               const TensorRef& dfinal_state);

// Decode: inputs [N, T, ...] (no cu_seqlens), initial_state is the pool [P, HV, ...]; sequence n starts
// from pool[state_indices[n]] (or pool[n] without indices) and writes its state back there. A negative
// index is a padding slot: its out rows are zeros and no state changes. Returns out and the whole pool.
LinearForwardResult linear_decode_reference(const LinearReferenceInputs& inputs);

// The "naive formula in the input precision" of the accuracy rule (semantics.md section 6,
//   max|out - ref| <= 2 * max|naive_lowp - ref| + atol, gradients 3x):
// the same recurrence as an eager framework runs it on T-typed tensors (T = the dtype of q): fp32
// arithmetic, and every tensor it materialises rounded to T: the normalised q and k, beta (sigmoid of T
// logits is T), u_t, the state S_t after each token, and o_t. The gate (computed from fp32 parameters) and
// its exponential stay fp32. T = fp32: fp32 throughout; T = fp64: the reference itself.
LinearForwardResult linear_forward_naive_lowp(const LinearReferenceInputs& inputs);
LinearForwardResult linear_decode_naive_lowp(const LinearReferenceInputs& inputs);
// The backward of the same eager recurrence: fp32 arithmetic, the forward's rounded tensors, the state
// gradient dS rounded to T after each token and every gradient rounded to its tensor's dtype.
LinearBackwardResult linear_backward_naive_lowp(const LinearReferenceInputs& inputs, const TensorRef& dout,
                                                const TensorRef& dfinal_state);

}  // namespace attnkit::reference
