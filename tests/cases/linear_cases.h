// The linear-attention case catalogue (GDN, KDA): one list of named problems that drives the tests of
// every backend, the CLI and the benchmarks (architecture.md, convention 10).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/linear.h"

namespace attnkit::cases {

struct LinearCase {
  std::string name;
  LinearVariant variant = LinearVariant::kGatedDeltaNet;
  std::int64_t batch = 1;      // B; ignored for varlen (B = 1) and decode uses it as N
  std::int64_t seqlen = 1;     // T; ignored for varlen (the sum of the lengths); decode: tokens per step
  std::int64_t heads_qk = 1;   // H
  std::int64_t heads_v = 1;    // HV = G * H
  std::int64_t key_dim = 64;   // K
  std::int64_t value_dim = 64; // V
  DType dtype = DType::kBFloat16;       // q, k, v, out
  DType gate_dtype = DType::kFloat32;   // g (fp32 or dtype)
  DType beta_dtype = DType::kFloat32;   // beta (fp32 or dtype)
  float scale = 0.0f;                   // 0: the default K^-0.5
  bool l2norm_qk = false;               // without it the inputs' keys are drawn with unit norm
  LinearGateForm gate_form = LinearGateForm::kLogDecay;
  float gate_lower_bound = -5.0f;
  bool dt_bias = true;                  // with a fused gate: pass a dt_bias (otherwise none)
  LinearBetaForm beta_form = LinearBetaForm::kValue;
  // Decay strength: the log decays (or, fused, exp(A_log)) are scaled by it; 0.01 is weak (a token
  // survives ~100s of steps), 10 strong (a token is forgotten within a step or two).
  double gate_scale = 1.0;
  bool initial_state = false;
  bool final_state = true;              // forward: ask for the final state
  bool dfinal_state = false;            // backward: a gradient flows into the final state
  LinearStateLayout state_layout = LinearStateLayout::kKV;
  bool padded = false;                  // every token-major tensor with gaps after rows, heads and batches
  std::vector<std::int32_t> varlen;     // varlen when non-empty: per-sequence lengths (zeros allowed)
  // Decode only: a pool of this many states addressed through state_indices (0: no indices, P = N);
  // every third sequence is a padding slot (index -1) when padding_slots is set.
  std::int64_t state_pool = 0;
  bool padding_slots = false;

  bool is_varlen() const { return !varlen.empty(); }
  std::int64_t tensor_batch() const { return is_varlen() ? 1 : batch; }
  std::int64_t tensor_seqlen() const;  // T of the tensors: seqlen, or the sum of the varlen lengths
  std::int64_t num_sequences() const { return is_varlen() ? static_cast<std::int64_t>(varlen.size()) : batch; }
  std::int64_t gate_width() const { return variant == LinearVariant::kKimiDelta ? key_dim : 1; }
  LinearOptions options(Backend backend) const;
  // FLOPs of the chunked forward (chunk 64), counted as 2 tokens HV (2 K V + 64 (K + V)): per token the
  // state read and update (2 K V multiply-adds) and the intra-chunk products (64 (K + V)). A yardstick
  // for rates, not an exact count of any implementation.
  double forward_flops() const;
  std::string describe() const;  // one line with every field that differs from the defaults
};

// Named adversarial cases for forward and backward: T = 1, 75, 500, 1000; K = 64, 100, 128, 256 and
// K != V; varlen with empty and length-1 sequences; grouped heads; every fused option; decays from weak
// to strong; with and without initial state, both state layouts, padded strides. Small enough that the
// float64 reference runs them all in seconds on 2 cores.
std::vector<LinearCase> linear_adversarial_cases(LinearVariant variant, DType dtype);

// A seeded random sweep: `count` cases with up to `max_seqlen` tokens per sequence, every option drawn at
// random (varlen, grouped heads, K and V from {16, 32, 64, 100, 128, 256} up to `max_head_dim`, fused
// options, decay strength 0.01 to 10, initial state, state layout, padded strides). The same seed names
// the same cases everywhere.
std::vector<LinearCase> linear_random_cases(std::uint64_t seed, int count, std::int64_t max_seqlen,
                                            std::int64_t max_head_dim, LinearVariant variant, DType dtype);

// Decode cases: T = 1 to 4 tokens per step, state_indices into a pool with padding slots, both layouts.
std::vector<LinearCase> linear_decode_cases(LinearVariant variant, DType dtype);

// The benchmark grid of issue 6: bf16, K = V = 128, (B, T, H, HV) in {(4, 8192, 32, 32),
// (1, 32768, 16, 32), (8, 4096, 16, 64), (1, 65536, 2, 8)}, with the fused l2 norm and gate.
std::vector<LinearCase> linear_bench_cases(LinearVariant variant);

}  // namespace attnkit::cases
