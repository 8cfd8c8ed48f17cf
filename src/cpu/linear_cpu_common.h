// Shared pieces of the CPU linear-attention backend: typed access to the strided input tensors, the
// fusions (l2 norm, gate, beta) in fp32, and the chunk of tokens one (sequence, value head) works on.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/linear.h"
#include "host/linear_problem.h"

namespace attnkit::cpu::linear {

// The chunk size of the chunked algorithm: 64 tokens, as the GPU kernels use (a 64 x 64 triangular
// system per chunk; the state is read and written once per chunk).
constexpr std::int64_t kChunk = 64;

// A token-major tensor [B, T, heads, width] (width 1 for the GDN gate and beta) of any float dtype.
struct TokenTensor {
  const void* data = nullptr;
  DType dtype = DType::kFloat32;
  host::TokenStrides strides;
  std::int64_t width = 1;

  std::int64_t offset(std::int64_t b, std::int64_t t, std::int64_t head) const {
    return b * strides.batch + t * strides.token + head * strides.head;
  }
  void load(std::int64_t b, std::int64_t t, std::int64_t head, float* dst) const;  // `width` elements
};

// The same for outputs.
struct TokenOutput {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  host::TokenStrides strides;
  std::int64_t width = 1;

  void store(std::int64_t b, std::int64_t t, std::int64_t head, const float* src) const;  // rounds to dtype
};

// A state tensor [N or P, HV, K, V] (kKV) or [.., V, K] (kVK) in fp32, moved to and from a row-major
// [K, V] buffer.
struct StateTensor {
  float* data = nullptr;  // null: absent (the zero state; nothing stored)
  host::StateStrides strides;
  LinearStateLayout layout = LinearStateLayout::kKV;

  void load(std::int64_t slot, std::int64_t head, std::int64_t key_dim, std::int64_t value_dim, float* S) const;
  void store(std::int64_t slot, std::int64_t head, std::int64_t key_dim, std::int64_t value_dim, const float* S) const;
};

// Everything the forward, backward and decode read, over the tensors of one call.
struct LinearInputs {
  TokenTensor q, k, v, g, beta;
  const float* A_log = nullptr;    // [HV] (element stride a_log_stride), fused gate only
  std::int64_t a_log_stride = 0;
  const float* dt_bias = nullptr;  // [HV] or [HV, K], fused gate with dt_bias only
  std::int64_t dt_bias_strides[2] = {0, 0};
};

LinearInputs make_inputs(const host::LinearProblem& p, const TensorRef& q, const TensorRef& k, const TensorRef& v,
                         const TensorRef& g, const TensorRef& beta, const TensorRef& A_log, const TensorRef& dt_bias);
TokenOutput make_output(const TensorRef& t, const host::TokenStrides& strides);
StateTensor make_state(const TensorRef& t, const host::StateStrides& strides, LinearStateLayout layout);

// The token range of one sequence: tokens [begin, begin + length) of batch row `batch_row`.
struct SequenceRange {
  std::int64_t batch_row = 0;
  std::int64_t begin = 0;
  std::int64_t length = 0;
};
// Every sequence of the call (varlen: from the host cu_seqlens).
std::vector<SequenceRange> sequence_ranges(const host::LinearProblem& p, const TensorRef& cu_seqlens);

// Up to kChunk tokens of one (sequence, value head) after the fusions, row-major:
//   q, k [L, K] (l2-normalised when asked), v [L, V], gate [L, gate_width] (the log decay),
//   beta [L] (after sigmoid when fused).
struct Chunk {
  std::int64_t length = 0;
  std::vector<float> q, k, v, gate, beta;
  void resize(std::int64_t key_dim, std::int64_t value_dim, std::int64_t gate_width);
};

// Loads tokens [first, first + length) of `range` for value head `head` (q/k head head / G).
void load_chunk(const host::LinearProblem& p, const LinearInputs& in, const SequenceRange& range, std::int64_t head,
                std::int64_t first, std::int64_t length, Chunk* chunk);

// The fused gate and beta, and their derivatives with respect to their raw inputs (the tensors as
// passed) and, for the gate, A_log: d gate / d raw (= d gate / d dt_bias) and d gate / d A_log.
struct GateDerivatives {
  float gate = 0.0f;
  float d_raw = 1.0f;
  float d_a_log = 0.0f;
};
GateDerivatives fused_gate(const host::LinearProblem& p, float raw, float a_log, float bias);
float fused_beta(const host::LinearProblem& p, float raw, float* d_raw);

}  // namespace attnkit::cpu::linear
