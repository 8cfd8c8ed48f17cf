// Bad input (quality.md) for linear attention: every class that applies gets a typed Status before any
// write. Each case starts from a valid call (GDN with the fused gate, beta, initial and final state, on
// the CPU), breaks one thing, and checks the code, that the message names the culprit, and that no output
// byte changed. Also: zero-size work is a no-op, and what dispatch says about the GPU backends.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attnkit.h"

namespace attnkit {
namespace {

constexpr std::int64_t kB = 2, kT = 5, kH = 2, kHV = 4, kK = 8, kV = 16;
constexpr std::uint8_t kOutputPattern = 0xA5;

template <typename T>
std::vector<std::uint8_t> bytes_of(const std::vector<T>& x) {
  std::vector<std::uint8_t> b(x.size() * sizeof(T));
  std::memcpy(b.data(), x.data(), b.size());
  return b;
}

template <typename T>
void fill_pattern(std::vector<T>& x) {
  std::memset(x.data(), kOutputPattern, x.size() * sizeof(T));
}

// Valid host buffers for a forward, a backward and a decode call; tests break one thing at a time.
struct ValidCall {
  std::vector<std::uint16_t> q, k, v, out, dout, dq, dk, dv;
  std::vector<float> g, beta, A_log, dt_bias, h0, ht, dht, dg, dbeta, dh0, dA_log, ddt_bias, state;
  std::vector<std::int32_t> cu, indices;
  LinearForwardArgs fwd;
  LinearBackwardArgs bwd;
  LinearDecodeArgs dec;

  ValidCall()
      : q(kB * kT * kH * kK), k(q.size()), v(kB * kT * kHV * kV), out(v.size()), dout(v.size()), dq(q.size()),
        dk(q.size()), dv(v.size()), g(kB * kT * kHV), beta(g.size()), A_log(kHV, 0.1f), dt_bias(kHV, 0.2f),
        h0(kB * kHV * kK * kV), ht(h0.size()), dht(h0.size()), dg(g.size()), dbeta(g.size()), dh0(h0.size()),
        dA_log(kHV), ddt_bias(kHV), state(h0.size()), cu{0, 4, 10}, indices{1, 0} {
    std::uint32_t seed = 12345;
    auto next = [&seed] {
      seed = seed * 1664525u + 1013904223u;
      return static_cast<float>(seed >> 8) / 16777216.0f - 0.5f;
    };
    for (auto* buffer : {&q, &k, &v, &dout}) {
      for (std::uint16_t& x : *buffer) x = float_to_bf16(next());
    }
    for (auto* buffer : {&g, &beta, &h0, &dht, &state}) {
      for (float& x : *buffer) x = next();
    }
    const auto bf16 = DType::kBFloat16, f32 = DType::kFloat32;
    fwd.q = TensorRef::contiguous(q.data(), bf16, {kB, kT, kH, kK});
    fwd.k = TensorRef::contiguous(k.data(), bf16, {kB, kT, kH, kK});
    fwd.v = TensorRef::contiguous(v.data(), bf16, {kB, kT, kHV, kV});
    fwd.g = TensorRef::contiguous(g.data(), f32, {kB, kT, kHV});
    fwd.beta = TensorRef::contiguous(beta.data(), f32, {kB, kT, kHV});
    fwd.A_log = TensorRef::contiguous(A_log.data(), f32, {kHV});
    fwd.dt_bias = TensorRef::contiguous(dt_bias.data(), f32, {kHV});
    fwd.out = TensorRef::contiguous(out.data(), bf16, {kB, kT, kHV, kV});
    fwd.initial_state = TensorRef::contiguous(h0.data(), f32, {kB, kHV, kK, kV});
    fwd.final_state = TensorRef::contiguous(ht.data(), f32, {kB, kHV, kK, kV});
    fwd.options.gate_form = LinearGateForm::kSoftplus;
    fwd.options.beta_form = LinearBetaForm::kSigmoid;
    fwd.options.l2norm_qk = true;
    fwd.options.backend = Backend::kCPU;
    bwd.q = fwd.q, bwd.k = fwd.k, bwd.v = fwd.v, bwd.g = fwd.g, bwd.beta = fwd.beta;
    bwd.A_log = fwd.A_log, bwd.dt_bias = fwd.dt_bias, bwd.initial_state = fwd.initial_state;
    bwd.dout = TensorRef::contiguous(dout.data(), bf16, {kB, kT, kHV, kV});
    bwd.dfinal_state = TensorRef::contiguous(dht.data(), f32, {kB, kHV, kK, kV});
    bwd.dq = TensorRef::contiguous(dq.data(), bf16, {kB, kT, kH, kK});
    bwd.dk = TensorRef::contiguous(dk.data(), bf16, {kB, kT, kH, kK});
    bwd.dv = TensorRef::contiguous(dv.data(), bf16, {kB, kT, kHV, kV});
    bwd.dg = TensorRef::contiguous(dg.data(), f32, {kB, kT, kHV});
    bwd.dbeta = TensorRef::contiguous(dbeta.data(), f32, {kB, kT, kHV});
    bwd.d_initial_state = TensorRef::contiguous(dh0.data(), f32, {kB, kHV, kK, kV});
    bwd.dA_log = TensorRef::contiguous(dA_log.data(), f32, {kHV});
    bwd.ddt_bias = TensorRef::contiguous(ddt_bias.data(), f32, {kHV});
    bwd.options = fwd.options;
    dec.q = fwd.q, dec.k = fwd.k, dec.v = fwd.v, dec.g = fwd.g, dec.beta = fwd.beta;
    dec.A_log = fwd.A_log, dec.dt_bias = fwd.dt_bias, dec.out = fwd.out;
    dec.state = TensorRef::contiguous(state.data(), f32, {kB, kHV, kK, kV});
    dec.state_indices = TensorRef::contiguous(indices.data(), DType::kInt32, {kB});
    dec.options = fwd.options;
    reset_outputs();
  }

  // Varlen over the same buffers: B = 1, T = 10, two sequences (4, 6).
  void make_varlen() {
    for (TensorRef* t : {&fwd.q, &fwd.k, &fwd.v, &fwd.g, &fwd.beta, &fwd.out}) {
      const std::int64_t stride0 = t->strides[0];
      t->shape[0] = 1;
      t->shape[1] = kB * kT;
      t->strides[0] = stride0 * kB;
    }
    fwd.cu_seqlens = TensorRef::contiguous(cu.data(), DType::kInt32, {3});
  }

  void reset_outputs() {
    for (auto* buffer : {&out, &dq, &dk, &dv}) fill_pattern(*buffer);
    for (auto* buffer : {&ht, &dg, &dbeta, &dh0, &dA_log, &ddt_bias}) fill_pattern(*buffer);
  }

  // Every byte the calls may write, and the decode state, as they are now.
  std::vector<std::uint8_t> snapshot() const {
    std::vector<std::uint8_t> all;
    for (const auto* buffer : {&out, &dq, &dk, &dv}) {
      const auto b = bytes_of(*buffer);
      all.insert(all.end(), b.begin(), b.end());
    }
    for (const auto* buffer : {&ht, &dg, &dbeta, &dh0, &dA_log, &ddt_bias, &state}) {
      const auto b = bytes_of(*buffer);
      all.insert(all.end(), b.begin(), b.end());
    }
    return all;
  }
};

struct BadCase {
  const char* name;
  std::function<void(ValidCall&)> damage;
  StatusCode code;
  const char* message_part;  // the message must name the culprit
};

template <typename Args>
void expect_rejected(ValidCall& call, const Args& args, const BadCase& bad, Status (*run)(const Args&)) {
  const std::vector<std::uint8_t> before = call.snapshot();
  const Status implement = can_implement(args);
  const Status status = run(args);
  EXPECT_EQ(status.code(), bad.code) << bad.name << ": " << status.to_string();
  EXPECT_EQ(implement.code(), bad.code) << bad.name << ": can_implement said " << implement.to_string();
  EXPECT_NE(status.message().find(bad.message_part), std::string::npos)
      << bad.name << ": the message does not name '" << bad.message_part << "': " << status.message();
  EXPECT_TRUE(call.snapshot() == before) << bad.name << ": an output byte changed although the call was rejected";
}

Status run_forward(const LinearForwardArgs& a) { return forward(a); }
Status run_backward(const LinearBackwardArgs& a) { return backward(a); }
Status run_decode(const LinearDecodeArgs& a) { return decode(a); }

TEST(LinearValidation, ValidCallsRun) {
  ValidCall call;
  EXPECT_TRUE(forward(call.fwd).is_ok()) << forward(call.fwd).to_string();
  EXPECT_TRUE(backward(call.bwd).is_ok()) << backward(call.bwd).to_string();
  EXPECT_TRUE(decode(call.dec).is_ok()) << decode(call.dec).to_string();
  ValidCall varlen;
  varlen.make_varlen();
  EXPECT_TRUE(forward(varlen.fwd).is_ok()) << forward(varlen.fwd).to_string();
}

TEST(LinearValidation, ForwardBadInput) {
  const auto invalid = StatusCode::kInvalidArgument;
  const std::vector<BadCase> cases = {
      {"q missing", [](ValidCall& c) { c.fwd.q = {}; }, invalid, "q is required"},
      {"k of another shape", [](ValidCall& c) { c.fwd.k.shape[3] = 4; }, invalid, "k: expected shape"},
      {"k of another dtype", [](ValidCall& c) { c.fwd.k.dtype = DType::kFloat16; }, invalid, "k: expected dtype"},
      {"v of another batch", [](ValidCall& c) { c.fwd.v.shape[0] = 1; }, invalid, "v: expected shape"},
      {"HV not a multiple of H",
       [](ValidCall& c) {
         c.fwd.v.shape[2] = 3;
         c.fwd.out.shape[2] = 3;
       },
       invalid, "HV = 3"},
      {"K above 256",
       [](ValidCall& c) {
         c.fwd.q.shape[3] = 300;
         c.fwd.k.shape[3] = 300;
       },
       StatusCode::kNotImplemented, "K (head dim of q and k) = 300"},
      {"GDN gate of KDA's rank", [](ValidCall& c) { c.fwd.g.rank = 4; }, invalid, "g: expected rank 3"},
      {"KDA with a per-head gate", [](ValidCall& c) { c.fwd.options.variant = LinearVariant::kKimiDelta; }, invalid,
       "g: expected rank 4"},
      {"beta of another shape", [](ValidCall& c) { c.fwd.beta.shape[2] = 2; }, invalid, "beta: expected shape"},
      {"beta int32", [](ValidCall& c) { c.fwd.beta.dtype = DType::kInt32; }, invalid, "beta: dtype"},
      {"out of another dtype", [](ValidCall& c) { c.fwd.out.dtype = DType::kFloat32; }, invalid, "out: expected dtype"},
      {"last dim not contiguous", [](ValidCall& c) { c.fwd.v.strides[3] = 2; }, invalid, "v: the last dimension"},
      {"negative stride", [](ValidCall& c) { c.fwd.q.strides[1] = -1; }, invalid, "q: negative stride"},
      {"null pointer", [](ValidCall& c) { c.fwd.v.data = nullptr; }, invalid, "v: null data pointer"},
      {"index overflow",
       [](ValidCall& c) {
         c.fwd.q.strides[0] = std::int64_t{1} << 62;
       },
       invalid, "q: index overflow"},
      {"initial state of the other layout",
       [](ValidCall& c) { c.fwd.options.state_layout = LinearStateLayout::kVK; }, invalid, "initial_state: expected shape"},
      {"initial state bf16", [](ValidCall& c) { c.fwd.initial_state.dtype = DType::kBFloat16; }, invalid,
       "initial_state: expected dtype"},
      {"final state of another N", [](ValidCall& c) { c.fwd.final_state.shape[0] = 3; }, invalid, "final_state"},
      {"fused gate without A_log", [](ValidCall& c) { c.fwd.A_log = {}; }, invalid, "A_log: required"},
      {"A_log with a log-decay gate", [](ValidCall& c) { c.fwd.options.gate_form = LinearGateForm::kLogDecay; },
       invalid, "A_log: given"},
      {"dt_bias of KDA's shape", [](ValidCall& c) { c.fwd.dt_bias = TensorRef::contiguous(c.dt_bias.data(), DType::kFloat32, {kHV, 1}); },
       invalid, "dt_bias: expected rank 1"},
      {"lower bound below -5",
       [](ValidCall& c) {
         c.fwd.options.gate_form = LinearGateForm::kLowerBoundSigmoid;
         c.fwd.options.gate_lower_bound = -6.0f;
       },
       invalid, "gate_lower_bound"},
      {"lower bound 0",
       [](ValidCall& c) {
         c.fwd.options.gate_form = LinearGateForm::kLowerBoundSigmoid;
         c.fwd.options.gate_lower_bound = 0.0f;
       },
       invalid, "gate_lower_bound"},
      {"scale NaN", [](ValidCall& c) { c.fwd.options.scale = std::numeric_limits<float>::quiet_NaN(); }, invalid,
       "scale"},
      {"scale 0", [](ValidCall& c) { c.fwd.options.scale = 0.0f; }, invalid, "scale"},
      {"out aliases q", [](ValidCall& c) { c.fwd.out.data = c.q.data(); }, invalid, "out overlaps input q"},
      {"final state aliases initial state", [](ValidCall& c) { c.fwd.final_state.data = c.h0.data(); }, invalid,
       "final_state overlaps input initial_state"},
      {"out on another device", [](ValidCall& c) { c.fwd.out.device = Device::cuda(0); }, invalid, "out: is on cuda:0"},
      {"varlen with B = 2", [](ValidCall& c) { c.fwd.cu_seqlens = TensorRef::contiguous(c.cu.data(), DType::kInt32, {3}); },
       invalid, "B = 2"},
      {"cu_seqlens not from 0",
       [](ValidCall& c) {
         c.make_varlen();
         c.cu[0] = 1;
       },
       invalid, "cu_seqlens: must start at 0"},
      {"cu_seqlens decreasing",
       [](ValidCall& c) {
         c.make_varlen();
         c.cu[1] = 11;
       },
       invalid, "cu_seqlens: must be non-decreasing"},
      {"cu_seqlens past T",
       [](ValidCall& c) {
         c.make_varlen();
         c.cu[2] = 9;
       },
       invalid, "inconsistent with the token count"},
      {"cu_seqlens float",
       [](ValidCall& c) {
         c.make_varlen();
         c.fwd.cu_seqlens.dtype = DType::kFloat32;
       },
       invalid, "cu_seqlens: expected dtype int32"},
      {"varlen states of B", [](ValidCall& c) { c.make_varlen(); c.cu.assign({0, 10}); c.fwd.cu_seqlens.shape[0] = 2; c.fwd.initial_state.shape[0] = 2; c.fwd.final_state = {}; },
       invalid, "initial_state: expected shape [1,"},
  };
  for (const BadCase& bad : cases) {
    ValidCall call;
    bad.damage(call);
    expect_rejected(call, call.fwd, bad, run_forward);
  }
}

TEST(LinearValidation, BackwardBadInput) {
  const auto invalid = StatusCode::kInvalidArgument;
  const std::vector<BadCase> cases = {
      {"dout missing", [](ValidCall& c) { c.bwd.dout = {}; }, invalid, "dout is required"},
      {"dq of another shape", [](ValidCall& c) { c.bwd.dq.shape[2] = 4; }, invalid, "dq: expected shape"},
      {"dg of another dtype", [](ValidCall& c) { c.bwd.dg.dtype = DType::kBFloat16; }, invalid, "dg: expected dtype"},
      {"d_initial_state missing", [](ValidCall& c) { c.bwd.d_initial_state = {}; }, invalid, "d_initial_state: required"},
      {"d_initial_state without initial_state", [](ValidCall& c) { c.bwd.initial_state = {}; }, invalid,
       "d_initial_state: given without initial_state"},
      {"dA_log missing", [](ValidCall& c) { c.bwd.dA_log = {}; }, invalid, "dA_log: required"},
      {"ddt_bias without dt_bias", [](ValidCall& c) { c.bwd.dt_bias = {}; }, invalid, "ddt_bias: given without dt_bias"},
      {"dfinal_state of another shape", [](ValidCall& c) { c.bwd.dfinal_state.shape[1] = 2; }, invalid, "dfinal_state"},
      {"dk aliases dout", [](ValidCall& c) { c.bwd.dk.data = c.dout.data(); }, invalid, "dk overlaps input dout"},
      {"dq and dk overlap", [](ValidCall& c) { c.bwd.dk.data = c.dq.data(); }, invalid, "dq and dk overlap"},
  };
  for (const BadCase& bad : cases) {
    ValidCall call;
    bad.damage(call);
    expect_rejected(call, call.bwd, bad, run_backward);
  }
}

TEST(LinearValidation, DecodeBadInput) {
  const auto invalid = StatusCode::kInvalidArgument;
  const std::vector<BadCase> cases = {
      {"state missing", [](ValidCall& c) { c.dec.state = {}; }, invalid, "state is required"},
      {"pool larger than N without indices",
       [](ValidCall& c) {
         c.dec.state_indices = {};
         c.dec.state.shape[0] = 1;
       },
       invalid, "pass state_indices"},
      {"index past the pool", [](ValidCall& c) { c.indices[1] = 2; }, invalid, "state_indices: entry 1 = 2"},
      {"two sequences on one state", [](ValidCall& c) { c.indices[1] = 1; }, invalid, "named by two sequences"},
      {"indices of another length", [](ValidCall& c) { c.dec.state_indices.shape[0] = 1; }, invalid,
       "state_indices: expected shape"},
      {"state aliases v", [](ValidCall& c) { c.dec.state.data = c.v.data(); c.dec.state.dtype = DType::kFloat32; }, invalid,
       "state overlap"},  // "output state overlaps input v", or "outputs out and state overlap" where the heap
                          // put out inside the 4 KB the state view spans from v
      {"state of the other layout", [](ValidCall& c) { c.dec.options.state_layout = LinearStateLayout::kVK; }, invalid,
       "state: expected shape"},
  };
  for (const BadCase& bad : cases) {
    ValidCall call;
    bad.damage(call);
    expect_rejected(call, call.dec, bad, run_decode);
  }
}

TEST(LinearValidation, ZeroSizeIsANoOp) {
  // B = 0, T = 0 (no final state) and HV = H = 0: ok, nothing written, even with null data pointers.
  for (int which = 0; which < 3; ++which) {
    ValidCall call;
    call.fwd.final_state = {};
    std::vector<TensorRef*> token_tensors = {&call.fwd.q, &call.fwd.k, &call.fwd.v, &call.fwd.g, &call.fwd.beta,
                                             &call.fwd.out};
    for (TensorRef* t : token_tensors) {
      if (which == 0) t->shape[0] = 0;
      if (which == 1) t->shape[1] = 0;
      if (which == 2) t->shape[2] = 0;
      t->data = nullptr;
    }
    if (which == 0) call.fwd.initial_state.shape[0] = 0;
    if (which == 2) {
      call.fwd.A_log.shape[0] = call.fwd.dt_bias.shape[0] = 0;
      call.fwd.initial_state.shape[1] = 0;
    }
    const std::vector<std::uint8_t> before = call.snapshot();
    const Status status = forward(call.fwd);
    EXPECT_TRUE(status.is_ok()) << which << ": " << status.to_string();
    EXPECT_TRUE(call.snapshot() == before) << which;
    std::size_t bytes = 1;
    EXPECT_TRUE(workspace_size(call.fwd, &bytes).is_ok());
    EXPECT_EQ(bytes, 0u);
  }
}

TEST(LinearValidation, ExplainNamesEveryBackend) {
  ValidCall call;
  const Explanation explanation = explain(call.fwd);
  ASSERT_TRUE(explanation.validation.is_ok()) << explanation.to_string();
  EXPECT_EQ(explanation.chosen, Backend::kCPU);
  ASSERT_EQ(explanation.verdicts.size(), 3u);
  EXPECT_EQ(explanation.verdicts[0].backend, Backend::kSm90);
  EXPECT_EQ(explanation.verdicts[1].backend, Backend::kSm80);
  EXPECT_EQ(explanation.verdicts[2].backend, Backend::kCPU);
  // Host tensors on a GPU backend: an error that says why, never a silent fallback to the CPU.
  call.fwd.options.backend = Backend::kSm80;
  const Status status = forward(call.fwd);
  EXPECT_FALSE(status.is_ok());
  EXPECT_NE(status.message().find("sm80"), std::string::npos) << status.to_string();
}

}  // namespace
}  // namespace attnkit
