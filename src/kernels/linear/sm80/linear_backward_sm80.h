// Parameters and launcher of the sm80 linear-attention backward (GDN and KDA; linear_backward_sm80.cu).
// Filled from a validated host::LinearProblem by linear_sm80.cpp; nothing here is checked again.
// Offsets are 64-bit throughout: the partial-gradient arrays pass 2^31 elements at the issue-6 shapes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/linear/sm80/linear_sm80_params.h"

namespace attnkit::sm80 {

// The walk keeps 32 key rows per warp and 4 warps: K up to 128. One CTA owns 32 value columns.
constexpr int kLinearBackwardMaxKeyDim = 128;
constexpr int kLinearBackwardColumns = 32;

// A token-major gradient tensor [B, T, heads, dim] or [B, T, heads] (dim contiguous), written.
struct LinearTokenOutput {
  void* data = nullptr;
  std::int64_t batch_stride = 0;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
};

// Intermediates of the backward in the workspace, all fp32 (`tokens` = B * T flat token rows, `slices`
// = ceil(V / 32) value slices, gate_pad = 1 (GDN) or 128 (KDA)):
//   qn, kn      [tokens][H][128]            q, k after the fused L2 norm, zero past K
//   gate        [tokens][HV][gate_pad]      the log decay after the gate fusion
//   beta        [tokens][HV]                beta after the beta fusion
//   checkpoint  [slots][HV][slices][128][32] the state at each 64-token chunk's start (slots as the forward)
//   scratch     [ctas][64][128][32]         one CTA's per-token states of the chunk it differentiates
//   dq, dk      [slices][tokens][HV][128]   each value slice's share of d q_hat, d k_hat (summed later)
//   dg          [slices][tokens][HV][gate_pad], dbeta [slices][tokens][HV]: the same for the gate, beta
//   dg_raw, dg_alog [tokens][HV][gate_pad]  d/d(g as passed) and its A_log factor, for dA_log / ddt_bias
// The walk (KDA where the chunked kernels do not fit the device) uses checkpoint and scratch and `slices`
// shares of dq, dk, dg, dbeta. The chunked backwards (GDN: linear_backward_chunked_sm80.cu, KDA:
// linear_backward_kda_chunked_sm80.cu) write one share of each and use instead, per (chunk slot, value
// head), with value_pad = slices * 32 columns (KDA: the decays per key, as noted):
//   gc     [slots][HV][64]               G, the inclusive cumulative log decay in the chunk (KDA:
//                                        [slots][HV][64][128], per key and in log2 units)
//   tinv   [slots][HV][64][64]           (I + A)^-1, A[i][j] = beta_i exp(G_i - G_j) k_i . k_j (i > j)
//   w      [slots][HV][64][128]          tinv (beta Gamma k)
//   vnew   [slots][HV][64][value_pad]    tinv (beta v), then v_new = that - w S0 (the state pass)
//   s0     [slots][HV][128][value_pad]   the state at the chunk's start
//   pdo    [slots][HV][64][value_pad]    P^T dout
//   dvnew  [slots][HV][64][value_pad]    dL/dv_new (the reverse state pass)
//   dh     [slots][HV][128][value_pad]   scale (Gamma Q)^T dout, then dL/dS at the chunk's end
//   pmat   [slots][HV][64][64]           P[i][j] = scale exp(G_i - G_j) q_i . k_j (j <= i)
//   bmat   [slots][HV][64][64]           B[i][j] = exp(G_i - G_j) k_i . k_j (i > j): A = diag(beta) B
//   kd     [slots][HV][64][128]          KDA only: exp(G_C - G_i) .* k_i, the state passes' keys
// (KDA has no pmat: its chunk_grad takes the decays per key in its own products.)
struct LinearBackwardWorkspace {
  float* qn = nullptr;
  float* kn = nullptr;
  float* gate = nullptr;
  float* beta = nullptr;
  float* checkpoint = nullptr;
  float* scratch = nullptr;
  float* dq = nullptr;
  float* dk = nullptr;
  float* dg = nullptr;
  float* dbeta = nullptr;
  float* dg_raw = nullptr;
  float* dg_alog = nullptr;
  float* gc = nullptr;
  float* tinv = nullptr;
  float* w = nullptr;
  float* vnew = nullptr;
  float* s0 = nullptr;
  float* pdo = nullptr;
  float* dvnew = nullptr;
  float* dh = nullptr;
  float* pmat = nullptr;
  float* bmat = nullptr;
  float* kd = nullptr;
  std::int64_t slots = 0;
};

struct LinearBackwardParams {
  LinearCommonParams common;  // q, k, v, g, beta and the options; common.out holds dout's strides
  LinearTokenTensor dout;
  LinearTokenOutput dq, dk, dv, dg, dbeta;
  LinearElement gate_grad_element = LinearElement::kFloat32;  // dg: the dtype of g
  LinearElement beta_grad_element = LinearElement::kFloat32;  // dbeta: the dtype of beta
  LinearStateTensor initial_state;    // data null: zero state
  LinearStateTensor dfinal_state;     // data null: zero gradient into the final state
  LinearStateTensor d_initial_state;  // data null: not requested
  std::int64_t a_log_stride = 1;
  std::int64_t dt_bias_stride[2] = {1, 1};  // [HV] (GDN) or [HV, K] (KDA)
  float* dA_log = nullptr;            // [HV] fp32, fused gate only
  std::int64_t dA_log_stride = 1;
  float* ddt_bias = nullptr;          // [HV] or [HV, K] fp32, fused gate with dt_bias only
  std::int64_t ddt_bias_stride[2] = {1, 1};
  const std::int32_t* cu_seqlens = nullptr;
  std::int64_t cu_seqlens_stride = 1;
  int num_sequences = 0;   // N
  int heads_qk = 0;        // H
  std::int64_t seqlen = 0; // T of each sequence (fixed length) or of the packed batch (varlen)
  std::int64_t tokens = 0; // B * T
  int slices = 0;          // ceil(V / 32)
  int share_slices = 0;    // shares of dq, dk, dg, dbeta the finish kernels add: slices (walk) or 1 (chunked)
  bool chunked = true;     // false: KDA takes the walk (the device's blocks cannot hold its chunked kernels)
  int gate_pad = 1;        // 1 (GDN) or 128 (KDA)
  LinearBackwardWorkspace ws;
};

// Workspace bytes of the layout above (256-byte aligned pieces), and where each piece starts.
struct LinearBackwardLayout {
  std::size_t qn = 0, kn = 0, gate = 0, beta = 0, checkpoint = 0, scratch = 0, dq = 0, dk = 0, dg = 0, dbeta = 0,
              dg_raw = 0, dg_alog = 0, gc = 0, tinv = 0, w = 0, vnew = 0, s0 = 0, pdo = 0, dvnew = 0, dh = 0, pmat = 0,
              bmat = 0, kd = 0, total = 0;
  std::int64_t slots = 0;
};
LinearBackwardLayout linear_backward_layout(std::int64_t tokens, std::int64_t num_sequences, std::int64_t seqlen,
                                            bool varlen, std::int64_t heads_qk, std::int64_t heads_v,
                                            std::int64_t value_dim, bool per_key_gate, bool chunked);

// GDN takes the chunked backward, KDA its chunked backward or, with params.chunked false, the walk; see
// linear_backward_sm80.cu.
cudaError_t launch_linear_backward(const LinearBackwardParams& params, cudaStream_t stream);

// The chunk-level kernels of the GDN backward (between the prep and finish kernels of the launcher above).
cudaError_t launch_gdn_backward_chunked(const LinearBackwardParams& params, cudaStream_t stream);
cudaError_t launch_kda_backward_chunked(const LinearBackwardParams& params, cudaStream_t stream);

}  // namespace attnkit::sm80
