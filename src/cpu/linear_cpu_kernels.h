// The arithmetic of the CPU linear-attention backend, on row-major fp32 buffers; the drivers
// (linear_forward_cpu.cpp, linear_backward_cpu.cpp) move data in and out of the API's tensors.
//
// Chunked forward of one chunk of L <= 64 tokens, state S [K, V] (the WY/UT form of the delta rule).
// With Gamma_i = sum_{s <= i} g_s (cumulative log decay inside the chunk; a [K] vector for KDA, a scalar
// for GDN, applied per key row of the state), the recurrence unrolls to
//   S_i = diag(e^Gamma_i) S_0 + sum_{s <= i} diag(e^(Gamma_i - Gamma_s)) k_s u_s^T
//   u_i = beta_i (v_i - S'_i^T k_i),  S'_i = diag(e^g_i) S_{i-1}
// so that the u solve the unit lower-triangular system (I + A) U = diag(beta) (V - Kd S_0) with
//   A_is  = beta_i <k_i, k_s>_(e^(Gamma_i - Gamma_s))   (s < i; the gated K K^T)
//   Kd_i  = e^Gamma_i o k_i
// and, by linearity, U = U0 - W S_0 with W = (I + A)^-1 diag(beta) Kd and U0 = (I + A)^-1 diag(beta) V
// (the "w" and "u" of the WY representation; a GPU computes them for every chunk in parallel, before the
// sequential state pass). Then
//   o_i   = scale (S_0^T (e^Gamma_i o q_i) + sum_{s <= i} <q_i, k_s>_(e^(Gamma_i - Gamma_s)) u_s)
//   S_L   = diag(e^Gamma_last) S_0 + sum_s (e^(Gamma_last - Gamma_s) o k_s) u_s^T
// Every exponent above is <= 0 for gates <= 0, so nothing overflows however strong the decay: the pairwise
// decays of KDA are taken as exp(Gamma_i - Gamma_s) per key, never as a product e^Gamma_i e^-Gamma_s.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/linear_cpu_common.h"

namespace attnkit::cpu::linear {

// Scratch of forward_chunk, sized once per thread.
struct ChunkWork {
  std::vector<float> gamma;       // [kChunk, gate_width]: cumulative log decay
  std::vector<float> kd, qd, kr;  // [kChunk, K]: e^Gamma_i o k_i, e^Gamma_i o q_i, e^(Gamma_last - Gamma_i) o k_i
  std::vector<float> A, P;        // [kChunk, kChunk]: beta-scaled gated K K^T (strictly lower), gated Q K^T (lower)
  std::vector<float> W;           // [kChunk, K]
  std::vector<float> U;           // [kChunk, V]
  std::vector<float> o;           // [kChunk, V]: the chunk's output rows
  void resize(std::int64_t key_dim, std::int64_t value_dim, std::int64_t gate_width);
};

// Advances S [K, V] over the chunk; with `want_output`, writes scale * o rows into work.o.
void forward_chunk(const Chunk& chunk, std::int64_t key_dim, std::int64_t value_dim, std::int64_t gate_width,
                   float scale, bool want_output, float* S, ChunkWork& work);

// One token of the recurrence: S (= S_{t-1}) becomes S_t. Writes o = scale S_t^T q (when o is not null),
// u = beta (v - S'^T k) and r = v - S'^T k (when not null).
void recurrent_step(const float* q, const float* k, const float* v, const float* gate, float beta,
                    std::int64_t key_dim, std::int64_t value_dim, std::int64_t gate_width, float scale, float* S,
                    float* o, float* u, float* r);

// Reverse mode of one token. In: S_before (S_{t-1}), the token's q, k, gate, beta, u and r from
// recurrent_step, dout; dS (gradient of S_t) becomes the gradient of S_{t-1}. Out: dq, dk (with respect
// to the normalised q, k), dv, dgate [gate_width] (with respect to the log decay), dbeta (with respect to
// the fused beta). `du` is scratch [V].
void backward_step(const float* S_before, const float* q, const float* k, const float* gate, float beta,
                   const float* u, const float* r, const float* dout, std::int64_t key_dim, std::int64_t value_dim,
                   std::int64_t gate_width, float scale, float* dS, float* dq, float* dk, float* dv, float* dgate,
                   float* dbeta, float* du);

}  // namespace attnkit::cpu::linear
