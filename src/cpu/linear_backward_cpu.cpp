// CPU linear attention, backward: exact reverse mode through the recurrence with chunk checkpoints.
// One task per (sequence, q/k head), so that the G value heads that share q and k add their dq and dk
// in one place (no atomics, the same result for any thread count). For each value head of the group:
//   1. the chunked forward (forward_chunk, no output) stores the state at the start of every chunk;
//   2. chunks are visited last to first: the chunk's token states are recomputed from its checkpoint
//      token by token (recurrent_step), then each token is differentiated (backward_step) from the last
//      to the first, carrying dS, the gradient of the state, across tokens and chunks.
// Memory per task: one K x V checkpoint per chunk plus 64 K x V token states; work: about three times
// the forward's. Gradients then go through the fusions (gate, beta, l2 norm) to the tensors as passed.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/linear_cpu.h"
#include "cpu/linear_cpu_common.h"
#include "cpu/linear_cpu_kernels.h"

namespace attnkit::cpu {

using namespace linear;

Status linear_supports_backward(const host::LinearProblem&, const LinearBackwardArgs&) { return Status::ok(); }
// Checkpoints and gradient accumulators are allocated inside the call.
std::size_t linear_backward_workspace_bytes(const host::LinearProblem&) { return 0; }

Status linear_backward(const host::LinearProblem& p, const LinearBackwardArgs& args) {
  const LinearInputs in = make_inputs(p, args.q, args.k, args.v, args.g, args.beta, args.A_log, args.dt_bias);
  const TokenTensor dout{args.dout.data, args.dout.dtype, p.out, p.value_dim};
  const TokenOutput dq_out = make_output(args.dq, p.dq), dk_out = make_output(args.dk, p.dk);
  const TokenOutput dv_out = make_output(args.dv, p.dv), dg_out = make_output(args.dg, p.dg);
  const TokenOutput dbeta_out = make_output(args.dbeta, p.dbeta);
  const StateTensor initial = make_state(args.initial_state, p.initial_state, p.state_layout);
  const StateTensor dfinal = make_state(args.dfinal_state, p.dfinal_state, p.state_layout);
  const StateTensor d_initial = make_state(args.d_initial_state, p.d_initial_state, p.state_layout);
  const std::vector<SequenceRange> ranges = sequence_ranges(p, args.cu_seqlens);
  const std::int64_t K = p.key_dim, V = p.value_dim, gw = in.g.width, HV = p.heads_v;
  const bool fused = p.gate_fused();
  // Per (sequence, value head) partial sums of dA_log and ddt_bias, added in sequence order at the end.
  std::vector<double> dA_partial(fused ? p.num_sequences * HV : 0, 0.0);
  std::vector<double> dbias_partial(p.has_dt_bias ? p.num_sequences * HV * gw : 0, 0.0);
  const std::int64_t tasks = p.num_sequences * p.heads_qk;
#pragma omp parallel
  {
    Chunk chunk;
    chunk.resize(K, V, gw);
    ChunkWork work;
    work.resize(K, V, gw);
    std::vector<float> S(K * V), dS(K * V), checkpoints, states(kChunk * K * V), u(kChunk * V), r(kChunk * V);
    std::vector<float> dq_hat, dk_hat;  // [L, K]: summed over the group, with respect to the normalised q, k
    std::vector<float> d_o(V), du(V), dq(K), dk(K), dv(V), dgate(gw), raw_gate(gw), row(K);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t n = task / p.heads_qk, h = task % p.heads_qk;
      const SequenceRange& range = ranges[n];
      const std::int64_t chunks = (range.length + kChunk - 1) / kChunk;
      dq_hat.assign(range.length * K, 0.0f);
      dk_hat.assign(range.length * K, 0.0f);
      checkpoints.resize(chunks * K * V);
      for (std::int64_t j = h * p.group; j < (h + 1) * p.group; ++j) {
        const float a_log = fused ? in.A_log[j * in.a_log_stride] : 0.0f;
        initial.load(n, j, K, V, S.data());
        for (std::int64_t c = 0; c < chunks; ++c) {
          std::copy(S.begin(), S.end(), checkpoints.begin() + c * K * V);
          const std::int64_t first = c * kChunk, length = std::min(kChunk, range.length - first);
          load_chunk(p, in, range, j, first, length, &chunk);
          forward_chunk(chunk, K, V, gw, p.scale, false, S.data(), work);
        }
        dfinal.load(n, j, K, V, dS.data());
        for (std::int64_t c = chunks - 1; c >= 0; --c) {
          const std::int64_t first = c * kChunk, length = std::min(kChunk, range.length - first);
          load_chunk(p, in, range, j, first, length, &chunk);
          std::copy(checkpoints.begin() + c * K * V, checkpoints.begin() + (c + 1) * K * V, S.begin());
          for (std::int64_t i = 0; i < length; ++i) {
            std::copy(S.begin(), S.end(), states.begin() + i * K * V);
            recurrent_step(&chunk.q[i * K], &chunk.k[i * K], &chunk.v[i * V], &chunk.gate[i * gw], chunk.beta[i], K,
                           V, gw, p.scale, S.data(), nullptr, &u[i * V], &r[i * V]);
          }
          for (std::int64_t i = length - 1; i >= 0; --i) {
            const std::int64_t t = range.begin + first + i;
            dout.load(range.batch_row, t, j, d_o.data());
            float dbeta = 0.0f;
            backward_step(&states[i * K * V], &chunk.q[i * K], &chunk.k[i * K], &chunk.gate[i * gw], chunk.beta[i],
                          &u[i * V], &r[i * V], d_o.data(), K, V, gw, p.scale, dS.data(), dq.data(), dk.data(),
                          dv.data(), dgate.data(), &dbeta, du.data());
            for (std::int64_t d = 0; d < K; ++d) {
              dq_hat[(first + i) * K + d] += dq[d];
              dk_hat[(first + i) * K + d] += dk[d];
            }
            dv_out.store(range.batch_row, t, j, dv.data());
            // beta fusion: d/d(beta as passed)
            float beta_raw = 0.0f, d_beta_raw = 1.0f;
            in.beta.load(range.batch_row, t, j, &beta_raw);
            fused_beta(p, beta_raw, &d_beta_raw);
            dbeta *= d_beta_raw;
            dbeta_out.store(range.batch_row, t, j, &dbeta);
            // gate fusion: d/d(g as passed), and the parameters' partial sums
            if (fused) {
              in.g.load(range.batch_row, t, j, raw_gate.data());
              for (std::int64_t e = 0; e < gw; ++e) {
                const float bias =
                    in.dt_bias != nullptr ? in.dt_bias[j * in.dt_bias_strides[0] + e * in.dt_bias_strides[1]] : 0.0f;
                const GateDerivatives gd = fused_gate(p, raw_gate[e], a_log, bias);
                dA_partial[n * HV + j] += static_cast<double>(dgate[e]) * gd.d_a_log;
                dgate[e] *= gd.d_raw;
                if (p.has_dt_bias) dbias_partial[(n * HV + j) * gw + e] += dgate[e];
              }
            }
            dg_out.store(range.batch_row, t, j, dgate.data());
          }
        }
        d_initial.store(n, j, K, V, dS.data());
      }
      // l2 norm: x_hat = x s, s = (|x|^2 + eps)^-1/2  =>  dx = s dx_hat - s^3 x <x, dx_hat>
      for (std::int64_t i = 0; i < range.length; ++i) {
        const std::int64_t t = range.begin + i;
        for (int which = 0; which < 2; ++which) {
          float* grad = &(which == 0 ? dq_hat : dk_hat)[i * K];
          if (p.l2norm_qk) {
            (which == 0 ? in.q : in.k).load(range.batch_row, t, h, row.data());
            float sum_sq = 0.0f, x_dot_grad = 0.0f;
            for (std::int64_t d = 0; d < K; ++d) {
              sum_sq += row[d] * row[d];
              x_dot_grad += row[d] * grad[d];
            }
            const float inv = 1.0f / std::sqrt(sum_sq + 1e-6f);
            for (std::int64_t d = 0; d < K; ++d) grad[d] = inv * grad[d] - inv * inv * inv * row[d] * x_dot_grad;
          }
          (which == 0 ? dq_out : dk_out).store(range.batch_row, t, h, grad);
        }
      }
    }
  }
  if (fused) {
    auto* dA_log = static_cast<float*>(args.dA_log.data);
    for (std::int64_t j = 0; j < HV; ++j) {
      double sum = 0.0;
      for (std::int64_t n = 0; n < p.num_sequences; ++n) sum += dA_partial[n * HV + j];
      dA_log[j * args.dA_log.strides[0]] = static_cast<float>(sum);
    }
  }
  if (p.has_dt_bias) {
    auto* ddt_bias = static_cast<float*>(args.ddt_bias.data);
    for (std::int64_t j = 0; j < HV; ++j) {
      for (std::int64_t e = 0; e < gw; ++e) {
        double sum = 0.0;
        for (std::int64_t n = 0; n < p.num_sequences; ++n) sum += dbias_partial[(n * HV + j) * gw + e];
        ddt_bias[j * args.ddt_bias.strides[0] + e * (gw > 1 ? args.ddt_bias.strides[1] : 0)] = static_cast<float>(sum);
      }
    }
  }
  return Status::ok();
}

}  // namespace attnkit::cpu
