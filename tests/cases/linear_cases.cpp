#include "tests/cases/linear_cases.h"

#include <cstdio>
#include <numeric>

#include "tests/cases/splitmix64.h"

namespace attnkit::cases {

std::int64_t LinearCase::tensor_seqlen() const {
  if (!is_varlen()) return seqlen;
  return std::accumulate(varlen.begin(), varlen.end(), std::int64_t{0});
}

LinearOptions LinearCase::options(Backend backend) const {
  LinearOptions o;
  o.variant = variant;
  if (scale > 0.0f) o.scale = scale;
  o.l2norm_qk = l2norm_qk;
  o.gate_form = gate_form;
  o.gate_lower_bound = gate_lower_bound;
  o.beta_form = beta_form;
  o.state_layout = state_layout;
  o.backend = backend;
  return o;
}

double LinearCase::forward_flops() const {
  const double tokens = static_cast<double>(tensor_batch() * tensor_seqlen());
  const double K = static_cast<double>(key_dim), V = static_cast<double>(value_dim);
  return 2.0 * tokens * static_cast<double>(heads_v) * (2.0 * K * V + 64.0 * (K + V));
}

std::string LinearCase::describe() const {
  std::string text = name + ": " + linear_variant_name(variant);
  auto add = [&text](const std::string& part) { text += " " + part; };
  if (is_varlen()) {
    std::string lengths;
    for (std::size_t i = 0; i < varlen.size(); ++i) lengths += (i ? "," : "") + std::to_string(varlen[i]);
    add("varlen=[" + lengths + "]");
  } else {
    add("B=" + std::to_string(batch) + " T=" + std::to_string(seqlen));
  }
  add("H=" + std::to_string(heads_qk) + " HV=" + std::to_string(heads_v) + " K=" + std::to_string(key_dim) +
      " V=" + std::to_string(value_dim) + " " + dtype_name(dtype));
  if (gate_dtype != DType::kFloat32) add(std::string("g:") + dtype_name(gate_dtype));
  if (beta_dtype != DType::kFloat32) add(std::string("beta:") + dtype_name(beta_dtype));
  if (scale > 0.0f) add("scale=" + std::to_string(scale));
  if (l2norm_qk) add("l2norm");
  if (gate_form == LinearGateForm::kSoftplus) add("gate=softplus");
  if (gate_form == LinearGateForm::kLowerBoundSigmoid) add("gate=lb-sigmoid(" + std::to_string(gate_lower_bound) + ")");
  if (gate_form != LinearGateForm::kLogDecay && !dt_bias) add("no-dt_bias");
  if (beta_form == LinearBetaForm::kSigmoid) add("beta=sigmoid");
  if (beta_form == LinearBetaForm::kTwoSigmoid) add("beta=2sigmoid");
  char strength[32];
  std::snprintf(strength, sizeof(strength), "decay=x%g", gate_scale);
  add(strength);
  if (initial_state) add("h0");
  if (!final_state) add("no-final-state");
  if (dfinal_state) add("dht");
  if (state_layout == LinearStateLayout::kVK) add("state=VK");
  if (padded) add("padded");
  if (state_pool > 0) add("pool=" + std::to_string(state_pool));
  if (padding_slots) add("padding-slots");
  return text;
}

namespace {

LinearCase base(const std::string& name, LinearVariant variant, DType dtype) {
  LinearCase c;
  c.name = name;
  c.variant = variant;
  c.dtype = dtype;
  return c;
}

}  // namespace

std::vector<LinearCase> linear_adversarial_cases(LinearVariant variant, DType dtype) {
  std::vector<LinearCase> cases;
  auto add = [&](LinearCase c) { cases.push_back(std::move(c)); };
  {
    LinearCase c = base("T1", variant, dtype);
    add(c);
  }
  {
    LinearCase c = base("T75_B2_H2_h0", variant, dtype);
    c.batch = 2, c.seqlen = 75, c.heads_qk = 2, c.heads_v = 2, c.initial_state = true;
    add(c);
  }
  {
    LinearCase c = base("T500_K100_V64_G2_h0_dht", variant, dtype);
    c.seqlen = 500, c.heads_v = 2, c.key_dim = 100, c.initial_state = true, c.dfinal_state = true;
    add(c);
  }
  {
    LinearCase c = base("T1000_K128_l2norm_softplus", variant, dtype);
    c.seqlen = 1000, c.key_dim = 128, c.value_dim = 128, c.l2norm_qk = true;
    c.gate_form = LinearGateForm::kSoftplus;
    add(c);
  }
  {
    LinearCase c = base("T130_K256_V256_h0", variant, dtype);
    c.seqlen = 130, c.key_dim = 256, c.value_dim = 256, c.initial_state = true;
    add(c);
  }
  {
    LinearCase c = base("T100_K128_V64", variant, dtype);
    c.seqlen = 100, c.key_dim = 128, c.value_dim = 64;
    add(c);
  }
  {
    LinearCase c = base("T100_K64_V128_VK_h0", variant, dtype);
    c.seqlen = 100, c.key_dim = 64, c.value_dim = 128, c.initial_state = true;
    c.state_layout = LinearStateLayout::kVK;
    add(c);
  }
  {
    LinearCase c = base("varlen_empty_and_one_G2_h0_dht", variant, dtype);
    c.varlen = {0, 1, 64, 0, 65, 130}, c.heads_qk = 2, c.heads_v = 4, c.initial_state = true, c.dfinal_state = true;
    add(c);
  }
  {
    LinearCase c = base("grouped_G4_T90", variant, dtype);
    c.seqlen = 90, c.heads_qk = 1, c.heads_v = 4;
    add(c);
  }
  {
    LinearCase c = base("l2norm_sigmoid_beta", variant, dtype);
    c.seqlen = 150, c.l2norm_qk = true, c.beta_form = LinearBetaForm::kSigmoid;
    add(c);
  }
  {
    LinearCase c = base("two_sigmoid_beta_negative_eigenvalues", variant, dtype);
    c.seqlen = 150, c.l2norm_qk = true, c.beta_form = LinearBetaForm::kTwoSigmoid, c.initial_state = true;
    add(c);
  }
  {
    LinearCase c = base("softplus_gate_dt_bias_G2", variant, dtype);
    c.seqlen = 120, c.heads_v = 2, c.gate_form = LinearGateForm::kSoftplus, c.initial_state = true;
    add(c);
  }
  {
    LinearCase c = base("lower_bound_gate", variant, dtype);
    c.seqlen = 120, c.gate_form = LinearGateForm::kLowerBoundSigmoid, c.gate_lower_bound = -5.0f;
    add(c);
  }
  {
    LinearCase c = base("lower_bound_gate_weak_lb", variant, dtype);
    c.seqlen = 120, c.gate_form = LinearGateForm::kLowerBoundSigmoid, c.gate_lower_bound = -0.25f;
    c.l2norm_qk = true, c.beta_form = LinearBetaForm::kSigmoid, c.dt_bias = false;
    add(c);
  }
  for (double strength : {0.01, 0.1, 1.0, 10.0}) {
    char name[48];
    std::snprintf(name, sizeof(name), "decay_x%g_T300_h0", strength);
    for (char* ch = name; *ch; ++ch) *ch = *ch == '.' ? 'p' : *ch;
    LinearCase c = base(name, variant, dtype);
    c.seqlen = 300, c.gate_scale = strength, c.initial_state = true, c.dfinal_state = true;
    add(c);
  }
  {
    LinearCase c = base("fused_decay_x10", variant, dtype);
    c.seqlen = 200, c.gate_scale = 10.0, c.gate_form = LinearGateForm::kSoftplus, c.l2norm_qk = true;
    c.beta_form = LinearBetaForm::kSigmoid;
    add(c);
  }
  {
    LinearCase c = base("padded_strides_G2_h0", variant, dtype);
    c.batch = 2, c.seqlen = 70, c.heads_v = 2, c.padded = true, c.initial_state = true;
    add(c);
  }
  if (dtype != DType::kFloat32) {
    LinearCase c = base("gate_and_beta_in_input_dtype", variant, dtype);
    c.seqlen = 100, c.gate_dtype = dtype, c.beta_dtype = dtype, c.beta_form = LinearBetaForm::kSigmoid;
    add(c);
  }
  {
    LinearCase c = base("custom_scale_no_final_state", variant, dtype);
    c.seqlen = 80, c.scale = 0.5f, c.final_state = false;
    add(c);
  }
  {
    LinearCase c = base("T0_h0_final_state_is_initial", variant, dtype);
    c.batch = 2, c.seqlen = 0, c.initial_state = true, c.dfinal_state = true;
    add(c);
  }
  {
    LinearCase c = base("T0_fused_gate_parameter_gradients_are_zero", variant, dtype);
    c.batch = 2, c.seqlen = 0, c.gate_form = LinearGateForm::kSoftplus, c.final_state = false;
    add(c);
  }
  {
    // Enough (sequence, value head) pairs for the sm80 forward's state pass to take slices of 64 value
    // columns on an H100 (2 x 66 x 128 / 64 = 264 CTAs >= 132 SMs; linear_gdn_plan.h, linear_kda_plan.h):
    // the only catalogue case that reaches them, so that they run in fp16 too. T = 70: a partial last chunk.
    LinearCase c = base("wide_grid_B2_H33_HV66_T70_h0", variant, dtype);
    c.batch = 2, c.seqlen = 70, c.heads_qk = 33, c.heads_v = 66, c.key_dim = 128, c.value_dim = 128;
    c.initial_state = true;
    add(c);
  }
  return cases;
}

std::vector<LinearCase> linear_random_cases(std::uint64_t seed, int count, std::int64_t max_seqlen,
                                            std::int64_t max_head_dim, LinearVariant variant, DType dtype) {
  SplitMix64 rng(seed ^ hash_name(linear_variant_name(variant)) ^ hash_name(dtype_name(dtype)));
  std::vector<std::int64_t> dims;
  for (std::int64_t dim : {16, 32, 64, 100, 128, 256}) {
    if (dim <= max_head_dim) dims.push_back(dim);
  }
  if (dims.empty()) dims.push_back(max_head_dim);
  const auto last_dim = static_cast<std::int64_t>(dims.size()) - 1;
  constexpr double kStrengths[] = {0.01, 0.1, 1.0, 10.0};
  std::vector<LinearCase> cases;
  for (int i = 0; i < count; ++i) {
    LinearCase c = base("random_" + std::to_string(i), variant, dtype);
    if (rng.chance(30)) {
      const std::int64_t sequences = rng.uniform(1, 4);
      for (std::int64_t n = 0; n < sequences; ++n) c.varlen.push_back(static_cast<std::int32_t>(rng.uniform(0, max_seqlen)));
    } else {
      c.batch = rng.uniform(1, 3);
      c.seqlen = rng.uniform(1, max_seqlen);
    }
    c.heads_qk = rng.uniform(1, 2);
    c.heads_v = c.heads_qk * (std::int64_t{1} << rng.uniform(0, 2));
    c.key_dim = dims[rng.uniform(0, last_dim)];
    c.value_dim = dims[rng.uniform(0, last_dim)];
    c.l2norm_qk = rng.chance(50);
    c.gate_form = static_cast<LinearGateForm>(rng.uniform(0, 2));
    c.gate_lower_bound = -static_cast<float>(rng.uniform(1, 20)) / 4.0f;
    c.dt_bias = rng.chance(75);
    c.beta_form = static_cast<LinearBetaForm>(rng.uniform(0, 2));
    if (c.beta_form == LinearBetaForm::kTwoSigmoid && !c.l2norm_qk) c.beta_form = LinearBetaForm::kSigmoid;
    c.gate_scale = kStrengths[rng.uniform(0, 3)];
    c.initial_state = rng.chance(50);
    c.dfinal_state = rng.chance(30);
    c.state_layout = rng.chance(50) ? LinearStateLayout::kKV : LinearStateLayout::kVK;
    c.padded = rng.chance(20);
    if (dtype != DType::kFloat32 && rng.chance(25)) c.gate_dtype = c.beta_dtype = dtype;
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<LinearCase> linear_decode_cases(LinearVariant variant, DType dtype) {
  std::vector<LinearCase> cases;
  {
    LinearCase c = base("decode_T1_N3_G2", variant, dtype);
    c.batch = 3, c.heads_v = 2, c.initial_state = true;
    cases.push_back(c);
  }
  {
    LinearCase c = base("decode_T1_pool_padding_VK", variant, dtype);
    c.batch = 5, c.heads_qk = 2, c.heads_v = 4, c.state_pool = 9, c.padding_slots = true;
    c.state_layout = LinearStateLayout::kVK, c.initial_state = true;
    cases.push_back(c);
  }
  {
    LinearCase c = base("decode_T4_mtp_fused_K128_V64", variant, dtype);
    c.batch = 2, c.seqlen = 4, c.key_dim = 128, c.value_dim = 64, c.l2norm_qk = true;
    c.gate_form = LinearGateForm::kSoftplus, c.beta_form = LinearBetaForm::kSigmoid, c.initial_state = true;
    cases.push_back(c);
  }
  {
    LinearCase c = base("decode_T2_pool_K256_padded", variant, dtype);
    c.batch = 2, c.seqlen = 2, c.key_dim = 256, c.value_dim = 256, c.state_pool = 3, c.padded = true;
    c.initial_state = true, c.gate_scale = 10.0;
    cases.push_back(c);
  }
  return cases;
}

std::vector<LinearCase> linear_bench_cases(LinearVariant variant) {
  std::vector<LinearCase> cases;
  struct Shape {
    std::int64_t B, T, H, HV;
  };
  for (const Shape& s : {Shape{4, 8192, 32, 32}, Shape{1, 32768, 16, 32}, Shape{8, 4096, 16, 64},
                         Shape{1, 65536, 2, 8}}) {
    LinearCase c = base(std::string(linear_variant_name(variant)) + "_B" + std::to_string(s.B) + "_T" +
                            std::to_string(s.T) + "_H" + std::to_string(s.H) + "_HV" + std::to_string(s.HV),
                        variant, DType::kBFloat16);
    c.batch = s.B, c.seqlen = s.T, c.heads_qk = s.H, c.heads_v = s.HV, c.key_dim = 128, c.value_dim = 128;
    c.l2norm_qk = true, c.gate_form = LinearGateForm::kSoftplus, c.beta_form = LinearBetaForm::kSigmoid;
    cases.push_back(c);
  }
  return cases;
}

}  // namespace attnkit::cases
