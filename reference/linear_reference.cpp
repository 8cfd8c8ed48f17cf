// float64 references of linear attention (GDN, KDA); see linear_reference.h for every formula. Written
// for reading, not speed: the recurrence token by token, one loop per formula. The float64 reference and
// the naive input-precision twin are one body, instantiated with double (no rounding) and with float
// (rounding to the input dtype at the points the header lists).
#include "reference/linear_reference.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#include "attnkit/numeric.h"
#include "reference/tensor_load.h"

namespace attnkit::reference {
namespace {

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument("linear reference: " + message); }

// One element of a host tensor as double (see tensor_load.h).
double load(const TensorRef& t, std::int64_t offset) {
  if (const std::optional<double> value = load_element(t, offset)) return *value;
  fail("unknown dtype");
}

std::int64_t offset_of(const TensorRef& t, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d = 0) {
  return a * t.strides[0] + b * t.strides[1] + c * t.strides[2] + (t.rank > 3 ? d * t.strides[3] : 0);
}

void require_host(const char* name, const TensorRef& t, int rank, bool index = false) {
  if (t.rank != rank) fail(std::string(name) + ": expected rank " + std::to_string(rank) + ", got " + t.describe());
  if (t.device.kind != DeviceKind::kCPU) fail(std::string(name) + ": must be a host tensor, got " + t.describe());
  if (index != (t.dtype == DType::kInt32)) fail(std::string(name) + ": wrong dtype, got " + t.describe());
  if (t.numel() > 0 && t.data == nullptr) fail(std::string(name) + ": null data");
}

// Rounds to the input dtype in the naive twin; the identity in the float64 reference.
struct Rounder {
  DType dtype = DType::kFloat64;
  template <typename Real>
  Real operator()(Real x) const {
    switch (dtype) {
      case DType::kFloat16: return static_cast<Real>(fp16_to_float(float_to_fp16(static_cast<float>(x))));
      case DType::kBFloat16: return static_cast<Real>(bf16_to_float(float_to_bf16(static_cast<float>(x))));
      case DType::kFloat32: return static_cast<Real>(static_cast<float>(x));
      default: return x;
    }
  }
};

// Sizes and the token range of every sequence: sequence n owns tokens [begin[n], begin[n] + length[n])
// of batch row batch_row[n].
struct Sizes {
  std::int64_t B = 0, T = 0, H = 0, HV = 0, G = 1, K = 0, V = 0, N = 0;
  std::int64_t gate_width = 1;  // K for KDA, 1 for GDN
  std::vector<std::int64_t> batch_row, begin, length;
  std::int64_t pool = 0;  // decode: P
};

Sizes read_sizes(const LinearReferenceInputs& in, bool decode) {
  require_host("q", in.q, 4);
  require_host("k", in.k, 4);
  require_host("v", in.v, 4);
  Sizes s;
  s.B = in.q.shape[0];
  s.T = in.q.shape[1];
  s.H = in.q.shape[2];
  s.K = in.q.shape[3];
  s.HV = in.v.shape[2];
  s.V = in.v.shape[3];
  for (int axis = 0; axis < 4; ++axis) {
    if (in.k.shape[axis] != in.q.shape[axis]) fail("k: shape differs from q");
  }
  if (in.v.shape[0] != s.B || in.v.shape[1] != s.T) fail("v: B or T differs from q");
  if (s.H == 0 || s.HV % s.H != 0) fail("HV must be a positive multiple of H");
  s.G = s.HV / s.H;
  const bool per_key = in.options.variant == LinearVariant::kKimiDelta;
  s.gate_width = per_key ? s.K : 1;
  require_host("g", in.g, per_key ? 4 : 3);
  require_host("beta", in.beta, 3);
  if (in.g.shape[0] != s.B || in.g.shape[1] != s.T || in.g.shape[2] != s.HV || (per_key && in.g.shape[3] != s.K)) {
    fail("g: shape mismatch " + in.g.describe());
  }
  if (in.beta.shape[0] != s.B || in.beta.shape[1] != s.T || in.beta.shape[2] != s.HV) fail("beta: shape mismatch");
  const bool fused = in.options.gate_form != LinearGateForm::kLogDecay;
  if (fused) {
    require_host("A_log", in.A_log, 1);
    if (in.A_log.shape[0] != s.HV) fail("A_log: expected [HV]");
    if (in.dt_bias.defined()) {
      require_host("dt_bias", in.dt_bias, per_key ? 2 : 1);
      if (in.dt_bias.shape[0] != s.HV || (per_key && in.dt_bias.shape[1] != s.K)) fail("dt_bias: shape mismatch");
    }
  }
  if (in.cu_seqlens.defined()) {
    if (decode) fail("decode takes no cu_seqlens");
    require_host("cu_seqlens", in.cu_seqlens, 1, true);
    if (s.B != 1) fail("varlen needs B = 1");
    s.N = in.cu_seqlens.shape[0] - 1;
    for (std::int64_t n = 0; n < s.N; ++n) {
      const auto b = static_cast<std::int64_t>(load(in.cu_seqlens, n * in.cu_seqlens.strides[0]));
      const auto e = static_cast<std::int64_t>(load(in.cu_seqlens, (n + 1) * in.cu_seqlens.strides[0]));
      if (b < 0 || e < b || e > s.T) fail("cu_seqlens: bad offsets");
      s.batch_row.push_back(0);
      s.begin.push_back(b);
      s.length.push_back(e - b);
    }
  } else {
    s.N = s.B;
    for (std::int64_t n = 0; n < s.N; ++n) {
      s.batch_row.push_back(n);
      s.begin.push_back(0);
      s.length.push_back(s.T);
    }
  }
  const bool kv = in.options.state_layout == LinearStateLayout::kKV;
  if (in.initial_state.defined()) {
    require_host("initial_state", in.initial_state, 4);
    const TensorRef& st = in.initial_state;
    s.pool = st.shape[0];
    if (st.shape[1] != s.HV || st.shape[2] != (kv ? s.K : s.V) || st.shape[3] != (kv ? s.V : s.K)) {
      fail("initial_state: shape mismatch " + st.describe());
    }
    if (!decode && s.pool != s.N) fail("initial_state: expected N states");
  } else if (decode) {
    fail("decode needs the state pool in initial_state");
  }
  if (in.state_indices.defined()) {
    if (!decode) fail("state_indices is for decode only");
    require_host("state_indices", in.state_indices, 1, true);
    if (in.state_indices.shape[0] != s.N) fail("state_indices: expected [N]");
  } else if (decode && s.pool != s.N) {
    fail("decode without state_indices needs P = N");
  }
  return s;
}

// Index of state element (k, v) of (sequence or slot n, value head j) in a contiguous state tensor.
std::int64_t state_index(const Sizes& s, LinearStateLayout layout, std::int64_t n, std::int64_t j, std::int64_t k,
                         std::int64_t v) {
  return layout == LinearStateLayout::kKV ? ((n * s.HV + j) * s.K + k) * s.V + v : ((n * s.HV + j) * s.V + v) * s.K + k;
}

std::int64_t state_offset(const TensorRef& t, LinearStateLayout layout, std::int64_t n, std::int64_t j,
                          std::int64_t k, std::int64_t v) {
  return layout == LinearStateLayout::kKV ? offset_of(t, n, j, k, v) : offset_of(t, n, j, v, k);
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// Everything one (sequence, value head) reads, after the fusions, in the working precision Real.
template <typename Real>
struct Head {
  std::int64_t L = 0, K = 0, V = 0, gate_width = 1;
  std::vector<Real> q, k;          // [L, K] after the l2 norm (rounded in the naive twin)
  std::vector<Real> v;             // [L, V]
  std::vector<Real> gate;          // [L, gate_width]: the log decay
  std::vector<Real> decay;         // [L, gate_width]: exp(gate)
  std::vector<Real> beta;          // [L]: after the fusion
  Real scale = 1;
};

// The raw inputs of a (sequence, value head) and what the fusions' backward needs.
struct RawHead {
  std::vector<double> q, k;        // [L, K] as passed
  std::vector<double> gate;        // [L, gate_width] as passed
  std::vector<double> beta;        // [L] as passed
};

template <typename Real>
Head<Real> prepare_head(const LinearReferenceInputs& in, const Sizes& s, std::int64_t n, std::int64_t j,
                        const Rounder& round_qkv, const Rounder& round_beta, RawHead* raw) {
  const LinearOptions& o = in.options;
  Head<Real> hd;
  hd.L = s.length[n];
  hd.K = s.K;
  hd.V = s.V;
  hd.gate_width = s.gate_width;
  hd.scale = static_cast<Real>(o.scale.has_value() ? static_cast<double>(*o.scale) : 1.0 / std::sqrt(double(s.K)));
  const std::int64_t h = j / s.G, b = s.batch_row[n];
  hd.q.resize(hd.L * s.K);
  hd.k.resize(hd.L * s.K);
  hd.v.resize(hd.L * s.V);
  hd.gate.resize(hd.L * s.gate_width);
  hd.decay.resize(hd.L * s.gate_width);
  hd.beta.resize(hd.L);
  if (raw != nullptr) {
    raw->q.resize(hd.L * s.K);
    raw->k.resize(hd.L * s.K);
    raw->gate.resize(hd.L * s.gate_width);
    raw->beta.resize(hd.L);
  }
  const bool fused = o.gate_form != LinearGateForm::kLogDecay;
  const double a_exp = fused ? std::exp(load(in.A_log, j * in.A_log.strides[0])) : 0.0;
  for (std::int64_t i = 0; i < hd.L; ++i) {
    const std::int64_t t = s.begin[n] + i;
    for (int which = 0; which < 2; ++which) {
      const TensorRef& x = which == 0 ? in.q : in.k;
      std::vector<Real>& dst = which == 0 ? hd.q : hd.k;
      Real sum_sq = 0;
      for (std::int64_t d = 0; d < s.K; ++d) {
        const Real value = static_cast<Real>(load(x, offset_of(x, b, t, h, d)));
        dst[i * s.K + d] = value;
        sum_sq += value * value;
        if (raw != nullptr) (which == 0 ? raw->q : raw->k)[i * s.K + d] = value;
      }
      if (o.l2norm_qk) {
        const Real inv_norm = Real(1) / std::sqrt(sum_sq + Real(1e-6));
        for (std::int64_t d = 0; d < s.K; ++d) dst[i * s.K + d] = round_qkv(dst[i * s.K + d] * inv_norm);
      }
    }
    for (std::int64_t d = 0; d < s.V; ++d) hd.v[i * s.V + d] = static_cast<Real>(load(in.v, offset_of(in.v, b, t, j, d)));
    for (std::int64_t c = 0; c < s.gate_width; ++c) {
      const double x = load(in.g, offset_of(in.g, b, t, j, c));
      if (raw != nullptr) raw->gate[i * s.gate_width + c] = x;
      double gl = x;
      if (fused) {
        double bias = 0.0;
        if (in.dt_bias.defined()) {
          bias = load(in.dt_bias, s.gate_width > 1 ? j * in.dt_bias.strides[0] + c * in.dt_bias.strides[1]
                                                   : j * in.dt_bias.strides[0]);
        }
        const Real a = static_cast<Real>(x) + static_cast<Real>(bias);
        gl = o.gate_form == LinearGateForm::kSoftplus ? -a_exp * softplus(a)
                                                      : o.gate_lower_bound * sigmoid(a_exp * a);
      }
      hd.gate[i * s.gate_width + c] = static_cast<Real>(gl);
      hd.decay[i * s.gate_width + c] = std::exp(static_cast<Real>(gl));
    }
    const double b_raw = load(in.beta, offset_of(in.beta, b, t, j));
    if (raw != nullptr) raw->beta[i] = b_raw;
    double beta = b_raw;
    if (o.beta_form == LinearBetaForm::kSigmoid) beta = sigmoid(b_raw);
    if (o.beta_form == LinearBetaForm::kTwoSigmoid) beta = 2.0 * sigmoid(b_raw);
    hd.beta[i] = o.beta_form == LinearBetaForm::kValue ? static_cast<Real>(beta) : round_beta(static_cast<Real>(beta));
  }
  return hd;
}

// One step of the recurrence: S (= S_{t-1}, [K, V]) becomes S_t; writes S' and u when asked.
template <typename Real>
void step(const Head<Real>& hd, std::int64_t i, std::vector<Real>& S, const Rounder& round, std::vector<Real>* s_prime,
          std::vector<Real>* u_out) {
  const std::int64_t K = hd.K, V = hd.V, gw = hd.gate_width;
  for (std::int64_t k = 0; k < K; ++k) {
    const Real decay = hd.decay[i * gw + (gw > 1 ? k : 0)];
    for (std::int64_t v = 0; v < V; ++v) S[k * V + v] *= decay;
  }
  if (s_prime != nullptr) *s_prime = S;
  std::vector<Real> u(V);
  for (std::int64_t v = 0; v < V; ++v) {
    Real k_s = 0;  // (S'^T k_t)_v
    for (std::int64_t k = 0; k < K; ++k) k_s += S[k * V + v] * hd.k[i * K + k];
    u[v] = round(hd.beta[i] * (hd.v[i * V + v] - k_s));
  }
  for (std::int64_t k = 0; k < K; ++k) {
    for (std::int64_t v = 0; v < V; ++v) S[k * V + v] = round(S[k * V + v] + hd.k[i * K + k] * u[v]);
  }
  if (u_out != nullptr) *u_out = u;
}

// o_t = S_t^T (scale q_t)
template <typename Real>
void output_row(const Head<Real>& hd, std::int64_t i, const std::vector<Real>& S, const Rounder& round, Real* o) {
  for (std::int64_t v = 0; v < hd.V; ++v) {
    Real acc = 0;
    for (std::int64_t k = 0; k < hd.K; ++k) acc += S[k * hd.V + v] * hd.q[i * hd.K + k];
    o[v] = round(hd.scale * acc);
  }
}

template <typename Real>
std::vector<Real> read_state(const TensorRef& t, const Sizes& s, LinearStateLayout layout, std::int64_t slot,
                             std::int64_t j, const Rounder& round) {
  std::vector<Real> S(s.K * s.V, Real(0));
  if (!t.defined() || slot < 0) return S;
  for (std::int64_t k = 0; k < s.K; ++k) {
    for (std::int64_t v = 0; v < s.V; ++v) {
      S[k * s.V + v] = round(static_cast<Real>(load(t, state_offset(t, layout, slot, j, k, v))));
    }
  }
  return S;
}

std::int64_t out_index(const Sizes& s, std::int64_t n, std::int64_t i, std::int64_t j) {
  return ((s.batch_row[n] * s.T + s.begin[n] + i) * s.HV + j) * s.V;
}

template <typename Real>
LinearForwardResult forward_impl(const LinearReferenceInputs& in, bool decode, const Rounder& round_qkv,
                                 const Rounder& round_beta) {
  const Sizes s = read_sizes(in, decode);
  const LinearStateLayout layout = in.options.state_layout;
  LinearForwardResult result;
  result.out.assign(static_cast<std::size_t>(s.B * s.T * s.HV * s.V), 0.0);
  const std::int64_t state_count = decode ? s.pool : s.N;
  result.state.assign(static_cast<std::size_t>(state_count * s.HV * s.K * s.V), 0.0);
  if (decode) {  // untouched pool entries keep their values
    for (std::int64_t p = 0; p < s.pool; ++p)
      for (std::int64_t j = 0; j < s.HV; ++j)
        for (std::int64_t k = 0; k < s.K; ++k)
          for (std::int64_t v = 0; v < s.V; ++v)
            result.state[state_index(s, layout, p, j, k, v)] =
                load(in.initial_state, state_offset(in.initial_state, layout, p, j, k, v));
  }
  const std::int64_t tasks = s.N * s.HV;
#pragma omp parallel for schedule(dynamic)
  for (std::int64_t task = 0; task < tasks; ++task) {
    const std::int64_t n = task / s.HV, j = task % s.HV;
    std::int64_t slot = n;
    if (decode && in.state_indices.defined()) {
      slot = static_cast<std::int64_t>(load(in.state_indices, n * in.state_indices.strides[0]));
      if (slot < 0) continue;  // padding: out rows stay zero, no state changes
    }
    const Head<Real> hd = prepare_head<Real>(in, s, n, j, round_qkv, round_beta, nullptr);
    std::vector<Real> S = read_state<Real>(in.initial_state, s, layout, slot, j, Rounder{});
    std::vector<Real> o(s.V);
    for (std::int64_t i = 0; i < hd.L; ++i) {
      step<Real>(hd, i, S, round_qkv, nullptr, nullptr);
      output_row(hd, i, S, round_qkv, o.data());
      for (std::int64_t v = 0; v < s.V; ++v) result.out[out_index(s, n, i, j) + v] = o[v];
    }
    for (std::int64_t k = 0; k < s.K; ++k)
      for (std::int64_t v = 0; v < s.V; ++v) result.state[state_index(s, layout, slot, j, k, v)] = S[k * s.V + v];
  }
  return result;
}

// The backward of one (sequence, value head) through the recurrence: gradients of the fused-space
// quantities (normalised q, k; log gate; effective beta), v, and the initial state.
template <typename Real>
struct HeadGradients {
  std::vector<Real> dq, dk, dv, dgate, dbeta, dS0;
};

constexpr std::int64_t kCheckpointEvery = 32;

template <typename Real>
HeadGradients<Real> head_backward(const Head<Real>& hd, std::vector<Real> S0, const std::vector<Real>& dout,
                                  std::vector<Real> dS, const Rounder& round) {
  const std::int64_t L = hd.L, K = hd.K, V = hd.V, gw = hd.gate_width;
  HeadGradients<Real> gr;
  gr.dq.assign(L * K, 0);
  gr.dk.assign(L * K, 0);
  gr.dv.assign(L * V, 0);
  gr.dgate.assign(L * gw, 0);
  gr.dbeta.assign(L, 0);
  // Checkpoints: the state before token c * kCheckpointEvery.
  std::vector<std::vector<Real>> checkpoints;
  std::vector<Real> S = S0;
  for (std::int64_t i = 0; i < L; ++i) {
    if (i % kCheckpointEvery == 0) checkpoints.push_back(S);
    step<Real>(hd, i, S, round, nullptr, nullptr);
  }
  for (std::int64_t c = static_cast<std::int64_t>(checkpoints.size()) - 1; c >= 0; --c) {
    const std::int64_t first = c * kCheckpointEvery, last = std::min(L, first + kCheckpointEvery);
    // Recompute the segment: S' and u of each token, and S_t after it.
    std::vector<std::vector<Real>> s_prime(last - first), s_after(last - first), u(last - first);
    S = checkpoints[c];
    for (std::int64_t i = first; i < last; ++i) {
      step(hd, i, S, round, &s_prime[i - first], &u[i - first]);
      s_after[i - first] = S;
    }
    for (std::int64_t i = last - 1; i >= first; --i) {
      const std::vector<Real>& Sp = s_prime[i - first];
      const std::vector<Real>& St = s_after[i - first];
      const std::vector<Real>& ui = u[i - first];
      const Real* q = &hd.q[i * K];
      const Real* k = &hd.k[i * K];
      const Real* d_o = &dout[i * V];
      // o_t = scale S_t^T q_t
      for (std::int64_t a = 0; a < K; ++a) {
        Real acc = 0;
        for (std::int64_t v = 0; v < V; ++v) acc += St[a * V + v] * d_o[v];
        gr.dq[i * K + a] = hd.scale * acc;
        for (std::int64_t v = 0; v < V; ++v) dS[a * V + v] += hd.scale * q[a] * d_o[v];
      }
      // S_t = S' + k u^T
      std::vector<Real> du(V, 0);
      for (std::int64_t v = 0; v < V; ++v) {
        Real acc = 0;
        for (std::int64_t a = 0; a < K; ++a) acc += dS[a * V + v] * k[a];
        du[v] = acc;
      }
      for (std::int64_t a = 0; a < K; ++a) {
        Real acc = 0;
        for (std::int64_t v = 0; v < V; ++v) acc += dS[a * V + v] * ui[v];
        gr.dk[i * K + a] = acc;
      }
      // u = beta (v - S'^T k)
      Real dbeta = 0;
      std::vector<Real> dks(V);  // gradient of S'^T k
      for (std::int64_t v = 0; v < V; ++v) {
        Real k_s = 0;
        for (std::int64_t a = 0; a < K; ++a) k_s += Sp[a * V + v] * k[a];
        dbeta += du[v] * (hd.v[i * V + v] - k_s);
        gr.dv[i * V + v] = hd.beta[i] * du[v];
        dks[v] = -hd.beta[i] * du[v];
      }
      gr.dbeta[i] = dbeta;
      for (std::int64_t a = 0; a < K; ++a) {
        Real acc = 0;
        for (std::int64_t v = 0; v < V; ++v) {
          dS[a * V + v] += k[a] * dks[v];  // dS is now dS'
          acc += Sp[a * V + v] * dks[v];
        }
        gr.dk[i * K + a] += acc;
      }
      // S' = exp(g) S_{t-1}
      for (std::int64_t a = 0; a < K; ++a) {
        Real acc = 0;
        for (std::int64_t v = 0; v < V; ++v) acc += dS[a * V + v] * Sp[a * V + v];
        gr.dgate[i * gw + (gw > 1 ? a : 0)] += acc;
        const Real decay = hd.decay[i * gw + (gw > 1 ? a : 0)];
        for (std::int64_t v = 0; v < V; ++v) dS[a * V + v] = round(dS[a * V + v] * decay);
      }
    }
  }
  gr.dS0 = std::move(dS);
  return gr;
}

template <typename Real>
LinearBackwardResult backward_impl(const LinearReferenceInputs& in, const TensorRef& dout, const TensorRef& dfinal,
                                   const Rounder& round_qkv, const Rounder& round_beta, const Rounder& round_gate) {
  const Sizes s = read_sizes(in, false);
  const LinearOptions& o = in.options;
  const LinearStateLayout layout = o.state_layout;
  require_host("dout", dout, 4);
  if (dfinal.defined()) require_host("dfinal_state", dfinal, 4);
  const bool fused = o.gate_form != LinearGateForm::kLogDecay;
  const bool has_bias = fused && in.dt_bias.defined();
  const std::int64_t gw = s.gate_width;
  LinearBackwardResult r;
  r.dq.assign(static_cast<std::size_t>(s.B * s.T * s.H * s.K), 0.0);
  r.dk.assign(r.dq.size(), 0.0);
  r.dv.assign(static_cast<std::size_t>(s.B * s.T * s.HV * s.V), 0.0);
  r.dg.assign(static_cast<std::size_t>(s.B * s.T * s.HV * gw), 0.0);
  r.dbeta.assign(static_cast<std::size_t>(s.B * s.T * s.HV), 0.0);
  if (in.initial_state.defined()) r.d_initial_state.assign(static_cast<std::size_t>(s.N * s.HV * s.K * s.V), 0.0);
  // Per (sequence, value head) partial sums of the parameter gradients, added in a fixed order below.
  std::vector<double> dA_part(fused ? s.N * s.HV : 0, 0.0), dbias_part(has_bias ? s.N * s.HV * gw : 0, 0.0);
  const std::int64_t tasks = s.N * s.H;
#pragma omp parallel for schedule(dynamic)
  for (std::int64_t task = 0; task < tasks; ++task) {
    const std::int64_t n = task / s.H, h = task % s.H;
    const std::int64_t L = s.length[n];
    std::vector<double> dq_hat(L * s.K, 0.0), dk_hat(L * s.K, 0.0);  // summed over the group
    RawHead raw;
    for (std::int64_t j = h * s.G; j < (h + 1) * s.G; ++j) {
      const Head<Real> hd = prepare_head<Real>(in, s, n, j, round_qkv, round_beta, &raw);
      std::vector<Real> S0 = read_state<Real>(in.initial_state, s, layout, n, j, Rounder{});
      std::vector<Real> d_o(L * s.V), dS(s.K * s.V, 0);
      for (std::int64_t i = 0; i < L; ++i)
        for (std::int64_t v = 0; v < s.V; ++v)
          d_o[i * s.V + v] = static_cast<Real>(load(dout, offset_of(dout, s.batch_row[n], s.begin[n] + i, j, v)));
      if (dfinal.defined()) dS = read_state<Real>(dfinal, s, layout, n, j, Rounder{});
      const HeadGradients<Real> gr = head_backward(hd, S0, d_o, dS, round_qkv);
      for (std::int64_t e = 0; e < L * s.K; ++e) {
        dq_hat[e] += gr.dq[e];
        dk_hat[e] += gr.dk[e];
      }
      const double a_exp = fused ? std::exp(load(in.A_log, j * in.A_log.strides[0])) : 0.0;
      for (std::int64_t i = 0; i < L; ++i) {
        const std::int64_t token = s.batch_row[n] * s.T + s.begin[n] + i;
        for (std::int64_t v = 0; v < s.V; ++v) r.dv[(token * s.HV + j) * s.V + v] = round_qkv(gr.dv[i * s.V + v]);
        // beta fusion
        double dbeta = gr.dbeta[i];
        if (o.beta_form != LinearBetaForm::kValue) {
          const double sg = sigmoid(raw.beta[i]);
          dbeta *= (o.beta_form == LinearBetaForm::kTwoSigmoid ? 2.0 : 1.0) * sg * (1.0 - sg);
        }
        r.dbeta[token * s.HV + j] = round_beta(static_cast<Real>(dbeta));
        // gate fusion
        for (std::int64_t c = 0; c < gw; ++c) {
          const double dgl = gr.dgate[i * gw + c];
          double dx = dgl;
          if (fused) {
            double bias = 0.0;
            if (has_bias) {
              bias = load(in.dt_bias, gw > 1 ? j * in.dt_bias.strides[0] + c * in.dt_bias.strides[1]
                                             : j * in.dt_bias.strides[0]);
            }
            const double a = raw.gate[i * gw + c] + bias;
            double d_dA = 0.0;
            if (o.gate_form == LinearGateForm::kSoftplus) {
              dx = dgl * (-a_exp * sigmoid(a));
              d_dA = dgl * (-a_exp * softplus(a));  // d gl / d A_log = gl
            } else {
              const double z = a_exp * a, sg = sigmoid(z);
              const double dz = dgl * o.gate_lower_bound * sg * (1.0 - sg);
              dx = dz * a_exp;
              d_dA = dz * z;
            }
            dA_part[n * s.HV + j] += d_dA;
            if (has_bias) dbias_part[(n * s.HV + j) * gw + c] += dx;
          }
          r.dg[(token * s.HV + j) * gw + c] = round_gate(static_cast<Real>(dx));
        }
      }
      if (in.initial_state.defined()) {
        for (std::int64_t k = 0; k < s.K; ++k)
          for (std::int64_t v = 0; v < s.V; ++v)
            r.d_initial_state[state_index(s, layout, n, j, k, v)] = gr.dS0[k * s.V + v];
      }
    }
    // l2 norm: x_hat = x r, r = (|x|^2 + eps)^-1/2  =>  dx = r dx_hat - r^3 x <x, dx_hat>
    for (std::int64_t i = 0; i < L; ++i) {
      const std::int64_t token = s.batch_row[n] * s.T + s.begin[n] + i;
      for (int which = 0; which < 2; ++which) {
        const double* x = &(which == 0 ? raw.q : raw.k)[i * s.K];
        const double* dx_hat = &(which == 0 ? dq_hat : dk_hat)[i * s.K];
        std::vector<double>& dst = which == 0 ? r.dq : r.dk;
        double sum_sq = 0.0, dot = 0.0;
        for (std::int64_t d = 0; d < s.K; ++d) {
          sum_sq += x[d] * x[d];
          dot += x[d] * dx_hat[d];
        }
        const double inv = 1.0 / std::sqrt(sum_sq + 1e-6);
        for (std::int64_t d = 0; d < s.K; ++d) {
          const double g = o.l2norm_qk ? inv * dx_hat[d] - inv * inv * inv * x[d] * dot : dx_hat[d];
          dst[(token * s.H + h) * s.K + d] = round_qkv(static_cast<Real>(g));
        }
      }
    }
  }
  if (fused) {
    r.dA_log.assign(static_cast<std::size_t>(s.HV), 0.0);
    for (std::int64_t n = 0; n < s.N; ++n)
      for (std::int64_t j = 0; j < s.HV; ++j) r.dA_log[j] += dA_part[n * s.HV + j];
  }
  if (has_bias) {
    r.ddt_bias.assign(static_cast<std::size_t>(s.HV * gw), 0.0);
    for (std::int64_t n = 0; n < s.N; ++n)
      for (std::int64_t e = 0; e < s.HV * gw; ++e) r.ddt_bias[e] += dbias_part[n * s.HV * gw + e];
  }
  return r;
}

Rounder rounder_for(DType dtype) { return Rounder{dtype}; }

}  // namespace

LinearForwardResult linear_forward_reference(const LinearReferenceInputs& inputs) {
  return forward_impl<double>(inputs, false, Rounder{}, Rounder{});
}

LinearForwardResult linear_decode_reference(const LinearReferenceInputs& inputs) {
  return forward_impl<double>(inputs, true, Rounder{}, Rounder{});
}

LinearBackwardResult linear_backward_reference(const LinearReferenceInputs& inputs, const TensorRef& dout,
                                               const TensorRef& dfinal_state) {
  return backward_impl<double>(inputs, dout, dfinal_state, Rounder{}, Rounder{}, Rounder{});
}

LinearForwardResult linear_forward_naive_lowp(const LinearReferenceInputs& inputs) {
  if (inputs.q.dtype == DType::kFloat64) return linear_forward_reference(inputs);
  return forward_impl<float>(inputs, false, rounder_for(inputs.q.dtype), rounder_for(inputs.beta.dtype));
}

LinearForwardResult linear_decode_naive_lowp(const LinearReferenceInputs& inputs) {
  if (inputs.q.dtype == DType::kFloat64) return linear_decode_reference(inputs);
  return forward_impl<float>(inputs, true, rounder_for(inputs.q.dtype), rounder_for(inputs.beta.dtype));
}

LinearBackwardResult linear_backward_naive_lowp(const LinearReferenceInputs& inputs, const TensorRef& dout,
                                                const TensorRef& dfinal_state) {
  if (inputs.q.dtype == DType::kFloat64) return linear_backward_reference(inputs, dout, dfinal_state);
  return backward_impl<float>(inputs, dout, dfinal_state, rounder_for(inputs.q.dtype),
                              rounder_for(inputs.beta.dtype), rounder_for(inputs.g.dtype));
}

}  // namespace attnkit::reference
