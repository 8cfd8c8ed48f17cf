// See linear_cpu_kernels.h for the algebra. The hot functions are compiled twice by GCC's target_clones,
// for x86-64-v3 (AVX2 + FMA: 8 floats per instruction) and for the baseline, and picked once at load
// time by CPU features ("arch=haswell" would dispatch on the CPU model and leave AMD CPUs on the baseline).
// forward_chunk, K = V = 128, one Zen core: 0.7 ms of CPU time per chunk with AVX2 + FMA, 0.9 ms with the
// SSE2 baseline. Their loops run over the contiguous V or K axis so that the compiler vectorises them.
#include "cpu/linear_cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ATTNKIT_LINEAR_CPU_CLONES [[gnu::target_clones("arch=x86-64-v3", "default")]]
#else
#define ATTNKIT_LINEAR_CPU_CLONES
#endif

namespace attnkit::cpu::linear {
namespace {

// exp(x) for x <= 88 in fp32, branch-free so that loops over it vectorise (std::exp does not): x = n ln2
// + r with |r| <= ln2 / 2 (ln2 split in two parts, exact n * ln2_hi), e^r by its degree-7 Taylor
// polynomial (truncation (ln2/2)^8 / 8! = 5e-9, below fp32's 6e-8), times 2^n built in the exponent
// bits. Below -87.3 the result would be subnormal: it is clamped to e^-87.3 ~ 1e-38, which is zero next
// to every other term of the sums it enters.
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.3f), 88.0f);
  // Round to nearest by adding and removing 1.5 * 2^23 (|x log2 e| < 2^22): vectorises where nearbyint may not.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float dot(const float* a, const float* b, std::int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (std::int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// y += alpha x
inline void axpy(float* y, const float* x, float alpha, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

void ChunkWork::resize(std::int64_t key_dim, std::int64_t value_dim, std::int64_t gate_width) {
  gamma.resize(kChunk * gate_width);
  kd.resize(kChunk * key_dim);
  qd.resize(kChunk * key_dim);
  kr.resize(kChunk * key_dim);
  A.resize(kChunk * kChunk);
  P.resize(kChunk * kChunk);
  W.resize(kChunk * key_dim);
  U.resize(kChunk * value_dim);
  o.resize(kChunk * value_dim);
}

ATTNKIT_LINEAR_CPU_CLONES
void forward_chunk(const Chunk& chunk, std::int64_t K, std::int64_t V, std::int64_t gw, float scale, bool want_output,
                   float* S, ChunkWork& w) {
  const std::int64_t L = chunk.length;
  if (L == 0) return;
  const float* q = chunk.q.data();
  const float* k = chunk.k.data();
  const float* beta = chunk.beta.data();
  float* gamma = w.gamma.data();
  // Cumulative log decay inside the chunk.
  for (std::int64_t c = 0; c < gw; ++c) gamma[c] = chunk.gate[c];
  for (std::int64_t i = 1; i < L; ++i) {
    for (std::int64_t c = 0; c < gw; ++c) gamma[i * gw + c] = gamma[(i - 1) * gw + c] + chunk.gate[i * gw + c];
  }
  const float* last = &gamma[(L - 1) * gw];
  // Decayed keys and queries.
  for (std::int64_t i = 0; i < L; ++i) {
    float* kd = &w.kd[i * K];
    float* qd = &w.qd[i * K];
    float* kr = &w.kr[i * K];
    const float* gi = &gamma[i * gw];
    if (gw == 1) {
      const float to_start = std::exp(gi[0]), to_end = std::exp(last[0] - gi[0]);
#pragma omp simd
      for (std::int64_t d = 0; d < K; ++d) {
        kd[d] = k[i * K + d] * to_start;
        qd[d] = q[i * K + d] * to_start;
        kr[d] = k[i * K + d] * to_end;
      }
    } else {
#pragma omp simd
      for (std::int64_t d = 0; d < K; ++d) {
        const float to_start = exp_fast(gi[d]), to_end = exp_fast(last[d] - gi[d]);
        kd[d] = k[i * K + d] * to_start;
        qd[d] = q[i * K + d] * to_start;
        kr[d] = k[i * K + d] * to_end;
      }
    }
  }
  // Gated K K^T (scaled by beta_i, strictly lower) and gated Q K^T (lower, diagonal included).
  float* A = w.A.data();
  float* P = w.P.data();
  for (std::int64_t i = 0; i < L; ++i) {
    const float* ki = &k[i * K];
    const float* qi = &q[i * K];
    for (std::int64_t s = 0; s <= i; ++s) {
      const float* ks = &k[s * K];
      float kk = 0.0f, qk = 0.0f;
      if (gw == 1) {
        const float decay = std::exp(gamma[i] - gamma[s]);
        kk = decay * dot(ki, ks, K);
        qk = decay * dot(qi, ks, K);
      } else {
        const float* gi = &gamma[i * gw];
        const float* gs = &gamma[s * gw];
#pragma omp simd reduction(+ : kk, qk)
        for (std::int64_t d = 0; d < K; ++d) {
          const float decay = exp_fast(gi[d] - gs[d]);
          kk += ki[d] * ks[d] * decay;
          qk += qi[d] * ks[d] * decay;
        }
      }
      A[i * kChunk + s] = s < i ? beta[i] * kk : 0.0f;
      P[i * kChunk + s] = qk;
    }
  }
  // Forward substitution of (I + A) [W | U0] = diag(beta) [Kd | V].
  float* W = w.W.data();
  float* U = w.U.data();
  for (std::int64_t i = 0; i < L; ++i) {
    float* Wi = &W[i * K];
    float* Ui = &U[i * V];
#pragma omp simd
    for (std::int64_t d = 0; d < K; ++d) Wi[d] = beta[i] * w.kd[i * K + d];
#pragma omp simd
    for (std::int64_t c = 0; c < V; ++c) Ui[c] = beta[i] * chunk.v[i * V + c];
    for (std::int64_t s = 0; s < i; ++s) {
      const float a = A[i * kChunk + s];
      axpy(Wi, &W[s * K], -a, K);
      axpy(Ui, &U[s * V], -a, V);
    }
  }
  // U = U0 - W S_0
  for (std::int64_t i = 0; i < L; ++i) {
    for (std::int64_t a = 0; a < K; ++a) axpy(&U[i * V], &S[a * V], -W[i * K + a], V);
  }
  // o_i = scale (S_0^T qd_i + sum_{s <= i} P_is u_s)
  if (want_output) {
    for (std::int64_t i = 0; i < L; ++i) {
      float* oi = &w.o[i * V];
      std::fill(oi, oi + V, 0.0f);
      for (std::int64_t a = 0; a < K; ++a) axpy(oi, &S[a * V], w.qd[i * K + a], V);
      for (std::int64_t s = 0; s <= i; ++s) axpy(oi, &U[s * V], P[i * kChunk + s], V);
#pragma omp simd
      for (std::int64_t c = 0; c < V; ++c) oi[c] *= scale;
    }
  }
  // S_L = diag(e^Gamma_last) S_0 + sum_s kr_s u_s^T
  for (std::int64_t a = 0; a < K; ++a) {
    float* row = &S[a * V];
    const float decay = std::exp(last[gw == 1 ? 0 : a]);
#pragma omp simd
    for (std::int64_t c = 0; c < V; ++c) row[c] *= decay;
    for (std::int64_t s = 0; s < L; ++s) axpy(row, &U[s * V], w.kr[s * K + a], V);
  }
}

ATTNKIT_LINEAR_CPU_CLONES
void recurrent_step(const float* q, const float* k, const float* v, const float* gate, float beta, std::int64_t K,
                    std::int64_t V, std::int64_t gw, float scale, float* S, float* o, float* u, float* r) {
  // kS = S'^T k with S' = diag(e^g) S, accumulated row by row; S is decayed on the way.
  float k_s[256];  // V <= 256 (validated: kLinearMaxHeadDim)
  std::fill(k_s, k_s + V, 0.0f);
  for (std::int64_t a = 0; a < K; ++a) {
    float* row = &S[a * V];
    const float decay = std::exp(gate[gw == 1 ? 0 : a]);
#pragma omp simd
    for (std::int64_t c = 0; c < V; ++c) row[c] *= decay;
    axpy(k_s, row, k[a], V);
  }
  float u_local[256];
#pragma omp simd
  for (std::int64_t c = 0; c < V; ++c) {
    if (r != nullptr) r[c] = v[c] - k_s[c];
    u_local[c] = beta * (v[c] - k_s[c]);
  }
  if (u != nullptr) std::copy(u_local, u_local + V, u);
  for (std::int64_t a = 0; a < K; ++a) axpy(&S[a * V], u_local, k[a], V);
  if (o != nullptr) {
    std::fill(o, o + V, 0.0f);
    for (std::int64_t a = 0; a < K; ++a) axpy(o, &S[a * V], q[a], V);
#pragma omp simd
    for (std::int64_t c = 0; c < V; ++c) o[c] *= scale;
  }
}

ATTNKIT_LINEAR_CPU_CLONES
void backward_step(const float* S_before, const float* q, const float* k, const float* gate, float beta,
                   const float* u, const float* r, const float* dout, std::int64_t K, std::int64_t V, std::int64_t gw,
                   float scale, float* dS, float* dq, float* dk, float* dv, float* dgate, float* dbeta, float* du) {
  // o = scale S_t^T q with S_t = S' + k u^T:  dq_a = scale (<S'_a, do> + k_a <u, do>);  dS += scale q do^T.
  // S_t = S' + k u^T:  du = dS^T k;  dk_a = <dS_a, u>.
  const float u_dot_do = dot(u, dout, V);
  std::fill(du, du + V, 0.0f);
  for (std::int64_t a = 0; a < K; ++a) {
    const float decay = std::exp(gate[gw == 1 ? 0 : a]);
    const float* S_row = &S_before[a * V];
    float* dS_row = &dS[a * V];
    dq[a] = scale * (decay * dot(S_row, dout, V) + k[a] * u_dot_do);
    axpy(dS_row, dout, scale * q[a], V);
    axpy(du, dS_row, k[a], V);
    dk[a] = dot(dS_row, u, V);
  }
  // u = beta r, r = v - S'^T k:  dbeta = <du, r>;  dv = beta du;  d(S'^T k) = -beta du.
  *dbeta = dot(du, r, V);
#pragma omp simd
  for (std::int64_t c = 0; c < V; ++c) {
    dv[c] = beta * du[c];
    du[c] = -beta * du[c];  // du now holds d(S'^T k)
  }
  // dS' = dS + k d(S'^T k)^T;  dk_a += <S'_a, d(S'^T k)>;  S' = e^g S_{t-1}:  dg_a = <dS'_a, S'_a>,
  // dS_{t-1} = e^g dS'.
  float dgate_sum = 0.0f;
  for (std::int64_t a = 0; a < K; ++a) {
    const float decay = std::exp(gate[gw == 1 ? 0 : a]);
    const float* S_row = &S_before[a * V];
    float* dS_row = &dS[a * V];
    axpy(dS_row, du, k[a], V);
    dk[a] += decay * dot(S_row, du, V);
    const float dg = decay * dot(dS_row, S_row, V);
    if (gw == 1) {
      dgate_sum += dg;
    } else {
      dgate[a] = dg;
    }
#pragma omp simd
    for (std::int64_t c = 0; c < V; ++c) dS_row[c] *= decay;
  }
  if (gw == 1) dgate[0] = dgate_sum;
}

}  // namespace attnkit::cpu::linear
