// The validated, resolved form of a linear-attention call (GDN, KDA): what every backend reads instead
// of re-deriving sizes from the arguments. Built only by make_linear_problem(), which checks every
// bad-input class of quality.md that applies to linear attention before anything runs.
#pragma once

#include <cstdint>

#include "attnkit/linear.h"

namespace attnkit::host {

enum class LinearOp : std::uint8_t { kForward, kBackward, kDecode };

// Element strides of a token-major tensor [B, T, heads, dim] (dim stride 1), or [B, T, heads] for the
// rank-3 GDN gate and beta. Varlen tensors have B = 1; decode tensors are [N, T, ...].
struct TokenStrides {
  std::int64_t batch = 0;
  std::int64_t token = 0;
  std::int64_t head = 0;
};

// Element strides of a state tensor [N or P, HV, rows, cols] (cols stride 1): rows x cols is K x V in
// the kKV layout and V x K in the kVK layout.
struct StateStrides {
  std::int64_t sequence = 0;
  std::int64_t head = 0;
  std::int64_t row = 0;
};

struct LinearProblem {
  LinearOp op = LinearOp::kForward;
  LinearVariant variant = LinearVariant::kGatedDeltaNet;
  bool varlen = false;
  std::int64_t batch = 0;          // B of the tensors (1 for varlen; N for decode)
  std::int64_t seqlen = 0;         // T of the tensors (varlen: the total token count; decode: tokens per step)
  std::int64_t num_sequences = 0;  // N: B, or the number of cu_seqlens intervals
  std::int64_t total_tokens = 0;   // B * T
  std::int64_t heads_qk = 0;       // H
  std::int64_t heads_v = 0;        // HV
  std::int64_t group = 1;          // G = HV / H: value head j reads q/k head j / G
  std::int64_t key_dim = 0;        // K
  std::int64_t value_dim = 0;      // V
  DType dtype = DType::kBFloat16;  // q, k, v, out (and dq, dk, dv, dout)
  DType gate_dtype = DType::kFloat32;  // g and dg: fp32 or dtype
  DType beta_dtype = DType::kFloat32;  // beta and dbeta: fp32 or dtype
  Device device;

  float scale = 0.0f;  // resolved: options.scale or K^-0.5
  bool l2norm_qk = false;
  LinearGateForm gate_form = LinearGateForm::kLogDecay;
  float gate_lower_bound = -5.0f;
  LinearBetaForm beta_form = LinearBetaForm::kValue;
  LinearStateLayout state_layout = LinearStateLayout::kKV;

  bool has_dt_bias = false;        // fused gate with a dt_bias (otherwise 0)
  bool has_initial_state = false;  // forward/backward: initial_state given (backward: d_initial_state too)
  bool has_final_state = false;    // forward: final_state requested
  bool has_dfinal_state = false;   // backward: dfinal_state given
  bool has_state_indices = false;  // decode: state_indices given
  std::int64_t state_pool = 0;     // decode: P, the number of states in the state tensor

  // Strides of the tensors the call has (zero for absent ones). In backward, `out` holds dout's
  // strides; the gradients have their own below.
  TokenStrides q, k, v, g, beta, out;
  TokenStrides dq, dk, dv, dg, dbeta;
  StateStrides initial_state, final_state, dfinal_state, d_initial_state, state;

  bool gate_fused() const { return gate_form != LinearGateForm::kLogDecay; }
  bool per_key_gate() const { return variant == LinearVariant::kKimiDelta; }

  // True when there is nothing to compute or write. A sequence of zero tokens still has a final state
  // (its initial state, or zeros) and, in backward, a d_initial_state (dfinal_state, or zeros); and a
  // backward with a fused gate writes dA_log and ddt_bias ([HV], zeros when there are no tokens). So an
  // empty token range is no work only when none of those is written.
  bool no_work() const {
    if (heads_v == 0) return true;
    const bool writes_parameter_gradients = op == LinearOp::kBackward && gate_fused();
    if (num_sequences == 0) return !writes_parameter_gradients;
    switch (op) {
      case LinearOp::kForward: return total_tokens == 0 && !has_final_state;
      case LinearOp::kBackward: return total_tokens == 0 && !has_initial_state && !writes_parameter_gradients;
      case LinearOp::kDecode: return total_tokens == 0;
    }
    return false;
  }
};

// Head dims every backend of this build accepts; backends may accept fewer (their reason says which).
constexpr std::int64_t kLinearMaxHeadDim = 256;

Status make_linear_problem(const LinearForwardArgs& args, LinearProblem* problem);
Status make_linear_problem(const LinearBackwardArgs& args, LinearProblem* problem);
Status make_linear_problem(const LinearDecodeArgs& args, LinearProblem* problem);

}  // namespace attnkit::host
