// Tests of the linear-attention references themselves (reference/linear_reference.h): the backward
// against float64 central finite differences of L = <dout, out> + <dfinal, final state> for every input
// and every fused option, a hand-computed single step, KDA with a key-independent gate equal to GDN,
// decode equal to forward, and the naive input-precision twin close to the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "reference/linear_reference.h"
#include "tests/cases/splitmix64.h"

namespace attnkit::testing {
namespace {

using reference::LinearReferenceInputs;

struct Config {
  std::string name;
  LinearVariant variant = LinearVariant::kGatedDeltaNet;
  std::int64_t T = 5, H = 1, HV = 2, K = 3, V = 2;
  std::vector<std::int32_t> varlen;  // varlen (B = 1) when not empty; otherwise B = 2
  bool l2norm = false;
  LinearGateForm gate_form = LinearGateForm::kLogDecay;
  LinearBetaForm beta_form = LinearBetaForm::kValue;
  LinearStateLayout layout = LinearStateLayout::kKV;
};

void PrintTo(const Config& config, std::ostream* out) { *out << config.name; }

// float64 tensors of one problem, owned, with their gradients' seeds (dout, dfinal).
struct Problem {
  Config config;
  std::int64_t B = 2, N = 2;
  std::vector<double> q, k, v, g, beta, A_log, dt_bias, h0, dout, dfinal;
  std::vector<std::int32_t> cu;

  std::int64_t gate_width() const { return config.variant == LinearVariant::kKimiDelta ? config.K : 1; }
  bool fused() const { return config.gate_form != LinearGateForm::kLogDecay; }

  explicit Problem(const Config& c, std::uint64_t seed = 7) : config(c) {
    cases::SplitMix64 rng(seed);
    auto uniform = [&](double low, double high) { return low + (high - low) * rng.uniform01(); };
    if (!c.varlen.empty()) {
      B = 1;
      N = static_cast<std::int64_t>(c.varlen.size());
      cu.push_back(0);
      for (std::int32_t length : c.varlen) cu.push_back(cu.back() + length);
    } else {
      N = B;
    }
    const std::int64_t gw = gate_width();
    auto fill = [&](std::vector<double>& x, std::int64_t count, double low, double high) {
      x.resize(static_cast<std::size_t>(count));
      for (double& value : x) value = uniform(low, high);
    };
    fill(q, B * c.T * c.H * c.K, -1.0, 1.0);
    fill(k, B * c.T * c.H * c.K, -0.6, 0.6);  // |k|^2 < 1.1: the delta rule stays stable
    fill(v, B * c.T * c.HV * c.V, -1.0, 1.0);
    if (fused()) {
      fill(g, B * c.T * c.HV * gw, -1.0, 1.0);
      fill(A_log, c.HV, -1.0, 0.5);
      fill(dt_bias, c.HV * gw, -0.5, 0.5);
    } else {
      fill(g, B * c.T * c.HV * gw, -0.8, -0.05);
    }
    fill(beta, B * c.T * c.HV, c.beta_form == LinearBetaForm::kValue ? 0.1 : -2.0, c.beta_form == LinearBetaForm::kValue ? 0.9 : 2.0);
    fill(h0, N * c.HV * c.K * c.V, -1.0, 1.0);
    fill(dout, B * c.T * c.HV * c.V, -1.0, 1.0);
    fill(dfinal, N * c.HV * c.K * c.V, -1.0, 1.0);
  }

  LinearReferenceInputs inputs() {
    const Config& c = config;
    const std::int64_t gw = gate_width();
    LinearReferenceInputs in;
    in.q = TensorRef::contiguous(q.data(), DType::kFloat64, {B, c.T, c.H, c.K});
    in.k = TensorRef::contiguous(k.data(), DType::kFloat64, {B, c.T, c.H, c.K});
    in.v = TensorRef::contiguous(v.data(), DType::kFloat64, {B, c.T, c.HV, c.V});
    in.g = gw > 1 ? TensorRef::contiguous(g.data(), DType::kFloat64, {B, c.T, c.HV, gw})
                  : TensorRef::contiguous(g.data(), DType::kFloat64, {B, c.T, c.HV});
    in.beta = TensorRef::contiguous(beta.data(), DType::kFloat64, {B, c.T, c.HV});
    if (fused()) {
      in.A_log = TensorRef::contiguous(A_log.data(), DType::kFloat64, {c.HV});
      in.dt_bias = gw > 1 ? TensorRef::contiguous(dt_bias.data(), DType::kFloat64, {c.HV, gw})
                          : TensorRef::contiguous(dt_bias.data(), DType::kFloat64, {c.HV});
    }
    in.initial_state = state_view(h0);
    if (!cu.empty()) in.cu_seqlens = TensorRef::contiguous(cu.data(), DType::kInt32, {N + 1});
    in.options.variant = c.variant;
    in.options.l2norm_qk = c.l2norm;
    in.options.gate_form = c.gate_form;
    in.options.gate_lower_bound = -3.0f;
    in.options.beta_form = c.beta_form;
    in.options.state_layout = c.layout;
    in.options.scale = 0.75f;
    return in;
  }

  TensorRef state_view(std::vector<double>& s) {
    const Config& c = config;
    return c.layout == LinearStateLayout::kKV ? TensorRef::contiguous(s.data(), DType::kFloat64, {N, c.HV, c.K, c.V})
                                              : TensorRef::contiguous(s.data(), DType::kFloat64, {N, c.HV, c.V, c.K});
  }

  double loss() {
    const reference::LinearForwardResult r = reference::linear_forward_reference(inputs());
    return std::inner_product(dout.begin(), dout.end(), r.out.begin(), 0.0) +
           std::inner_product(dfinal.begin(), dfinal.end(), r.state.begin(), 0.0);
  }
};

// Central differences of the loss with respect to every element of `x`, against `analytic`.
void expect_gradient(Problem& p, std::vector<double>& x, const std::vector<double>& analytic, const char* name) {
  ASSERT_EQ(x.size(), analytic.size()) << name;
  constexpr double kStep = 1e-6;
  for (std::size_t e = 0; e < x.size(); ++e) {
    const double saved = x[e];
    x[e] = saved + kStep;
    const double up = p.loss();
    x[e] = saved - kStep;
    const double down = p.loss();
    x[e] = saved;
    const double numeric = (up - down) / (2.0 * kStep);
    // Central differences at h = 1e-6 are good to ~1e-9 here (h^2 f''' plus 1e-16 / h roundoff).
    EXPECT_NEAR(analytic[e], numeric, 1e-7 * std::max(1.0, std::abs(numeric))) << name << "[" << e << "]";
  }
}

class LinearReferenceGradient : public ::testing::TestWithParam<Config> {};

TEST_P(LinearReferenceGradient, MatchesFiniteDifferences) {
  Problem p(GetParam());
  LinearReferenceInputs in = p.inputs();
  const TensorRef dout = TensorRef::contiguous(p.dout.data(), DType::kFloat64, {p.B, p.config.T, p.config.HV, p.config.V});
  const reference::LinearBackwardResult grad = reference::linear_backward_reference(in, dout, p.state_view(p.dfinal));
  expect_gradient(p, p.q, grad.dq, "dq");
  expect_gradient(p, p.k, grad.dk, "dk");
  expect_gradient(p, p.v, grad.dv, "dv");
  expect_gradient(p, p.g, grad.dg, "dg");
  expect_gradient(p, p.beta, grad.dbeta, "dbeta");
  expect_gradient(p, p.h0, grad.d_initial_state, "d_initial_state");
  if (p.fused()) {
    expect_gradient(p, p.A_log, grad.dA_log, "dA_log");
    expect_gradient(p, p.dt_bias, grad.ddt_bias, "ddt_bias");
  }
}

std::vector<Config> gradient_configs() {
  std::vector<Config> configs;
  Config c;
  c.name = "gdn_varlen_G2";
  c.varlen = {2, 0, 3};
  configs.push_back(c);
  c = Config{};
  c.name = "gdn_fused_softplus_sigmoid_l2norm";
  c.l2norm = true, c.gate_form = LinearGateForm::kSoftplus, c.beta_form = LinearBetaForm::kSigmoid;
  configs.push_back(c);
  c = Config{};
  c.name = "kda_lower_bound_two_sigmoid_l2norm_VK";
  c.variant = LinearVariant::kKimiDelta, c.l2norm = true, c.gate_form = LinearGateForm::kLowerBoundSigmoid;
  c.beta_form = LinearBetaForm::kTwoSigmoid, c.layout = LinearStateLayout::kVK, c.V = 3, c.K = 2;
  configs.push_back(c);
  c = Config{};
  c.name = "kda_T40_past_a_checkpoint";  // the reference checkpoints its states every 32 tokens
  c.variant = LinearVariant::kKimiDelta, c.T = 40, c.HV = 1, c.K = 2, c.V = 2;
  configs.push_back(c);
  c = Config{};
  c.name = "kda_softplus_varlen";
  c.variant = LinearVariant::kKimiDelta, c.gate_form = LinearGateForm::kSoftplus, c.varlen = {1, 4};
  configs.push_back(c);
  return configs;
}

INSTANTIATE_TEST_SUITE_P(Linear, LinearReferenceGradient, ::testing::ValuesIn(gradient_configs()),
                         [](const ::testing::TestParamInfo<Config>& info) { return info.param.name; });

TEST(LinearReference, OneStepByHand) {
  // K = V = 1, T = 1: S' = e^g s, u = beta (v - S' k), S = S' + k u, o = scale S q.
  double q = 0.5, k = 0.8, v = -1.5, g = -0.3, beta = 0.6, s = 2.0;
  LinearReferenceInputs in;
  in.q = TensorRef::contiguous(&q, DType::kFloat64, {1, 1, 1, 1});
  in.k = TensorRef::contiguous(&k, DType::kFloat64, {1, 1, 1, 1});
  in.v = TensorRef::contiguous(&v, DType::kFloat64, {1, 1, 1, 1});
  in.g = TensorRef::contiguous(&g, DType::kFloat64, {1, 1, 1});
  in.beta = TensorRef::contiguous(&beta, DType::kFloat64, {1, 1, 1});
  in.initial_state = TensorRef::contiguous(&s, DType::kFloat64, {1, 1, 1, 1});
  in.options.scale = 2.0f;
  const double s_prime = std::exp(-0.3) * 2.0;
  const double u = 0.6 * (-1.5 - s_prime * 0.8);
  const double state = s_prime + 0.8 * u;
  const reference::LinearForwardResult r = reference::linear_forward_reference(in);
  EXPECT_DOUBLE_EQ(r.state[0], state);
  EXPECT_DOUBLE_EQ(r.out[0], 2.0 * state * 0.5);
}

TEST(LinearReference, KdaWithKeyIndependentGateIsGdn) {
  Config c;
  c.T = 9, c.K = 4, c.V = 3;
  Problem gdn(c);
  c.variant = LinearVariant::kKimiDelta;
  Problem kda(c);
  kda.q = gdn.q, kda.k = gdn.k, kda.v = gdn.v, kda.beta = gdn.beta, kda.h0 = gdn.h0;
  for (std::size_t e = 0; e < gdn.g.size(); ++e) {
    for (std::int64_t d = 0; d < c.K; ++d) kda.g[e * c.K + d] = gdn.g[e];
  }
  const reference::LinearForwardResult a = reference::linear_forward_reference(gdn.inputs());
  const reference::LinearForwardResult b = reference::linear_forward_reference(kda.inputs());
  ASSERT_EQ(a.out.size(), b.out.size());
  for (std::size_t e = 0; e < a.out.size(); ++e) EXPECT_NEAR(a.out[e], b.out[e], 1e-14);
  for (std::size_t e = 0; e < a.state.size(); ++e) EXPECT_NEAR(a.state[e], b.state[e], 1e-14);
}

TEST(LinearReference, DecodeStepsEqualForward) {
  Config c;
  c.T = 6;
  Problem p(c);
  const reference::LinearForwardResult whole = reference::linear_forward_reference(p.inputs());
  // Run the same tokens through decode one at a time, carrying the state.
  std::vector<double> state = p.h0;
  for (std::int64_t t = 0; t < c.T; ++t) {
    auto slice = [&](const std::vector<double>& x, std::int64_t width) {
      std::vector<double> s;
      for (std::int64_t b = 0; b < p.B; ++b) {
        const auto begin = x.begin() + (b * c.T + t) * width;
        s.insert(s.end(), begin, begin + width);
      }
      return s;
    };
    std::vector<double> q = slice(p.q, c.H * c.K), k = slice(p.k, c.H * c.K), v = slice(p.v, c.HV * c.V);
    std::vector<double> g = slice(p.g, c.HV), beta = slice(p.beta, c.HV);
    LinearReferenceInputs in = p.inputs();
    in.q = TensorRef::contiguous(q.data(), DType::kFloat64, {p.B, 1, c.H, c.K});
    in.k = TensorRef::contiguous(k.data(), DType::kFloat64, {p.B, 1, c.H, c.K});
    in.v = TensorRef::contiguous(v.data(), DType::kFloat64, {p.B, 1, c.HV, c.V});
    in.g = TensorRef::contiguous(g.data(), DType::kFloat64, {p.B, 1, c.HV});
    in.beta = TensorRef::contiguous(beta.data(), DType::kFloat64, {p.B, 1, c.HV});
    in.initial_state = p.state_view(state);
    const reference::LinearForwardResult step = reference::linear_decode_reference(in);
    for (std::int64_t b = 0; b < p.B; ++b) {
      for (std::int64_t e = 0; e < c.HV * c.V; ++e) {
        EXPECT_NEAR(step.out[b * c.HV * c.V + e], whole.out[(b * c.T + t) * c.HV * c.V + e], 1e-13);
      }
    }
    state = step.state;
  }
  for (std::size_t e = 0; e < state.size(); ++e) EXPECT_NEAR(state[e], whole.state[e], 1e-13);
}

TEST(LinearReference, NaiveTwinIsTheSameFormulaInLowPrecision) {
  Config c;
  c.T = 50, c.K = 16, c.V = 16, c.l2norm = true;
  Problem p(c);
  std::vector<float> q(p.q.begin(), p.q.end()), k(p.k.begin(), p.k.end()), v(p.v.begin(), p.v.end());
  std::vector<float> g(p.g.begin(), p.g.end()), beta(p.beta.begin(), p.beta.end()), h0(p.h0.begin(), p.h0.end());
  LinearReferenceInputs in = p.inputs();
  in.q = TensorRef::contiguous(q.data(), DType::kFloat32, {p.B, c.T, c.H, c.K});
  in.k = TensorRef::contiguous(k.data(), DType::kFloat32, {p.B, c.T, c.H, c.K});
  in.v = TensorRef::contiguous(v.data(), DType::kFloat32, {p.B, c.T, c.HV, c.V});
  in.g = TensorRef::contiguous(g.data(), DType::kFloat32, {p.B, c.T, c.HV});
  in.beta = TensorRef::contiguous(beta.data(), DType::kFloat32, {p.B, c.T, c.HV});
  in.initial_state = TensorRef::contiguous(h0.data(), DType::kFloat32, {p.N, c.HV, c.K, c.V});
  const reference::LinearForwardResult ref = reference::linear_forward_reference(in);
  const reference::LinearForwardResult naive = reference::linear_forward_naive_lowp(in);
  double err = 0.0, norm = 0.0;
  for (std::size_t e = 0; e < ref.out.size(); ++e) {
    err = std::max(err, std::abs(naive.out[e] - ref.out[e]));
    norm = std::max(norm, std::abs(ref.out[e]));
  }
  // fp32 arithmetic over 50 steps of K = 16: a few fp32 ulps of the largest output, and not exact.
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 1e-5 * norm);
}

}  // namespace
}  // namespace attnkit::testing
