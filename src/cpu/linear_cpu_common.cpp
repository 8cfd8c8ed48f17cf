#include "cpu/linear_cpu_common.h"

#include <cmath>
#include <cstring>

#include "attnkit/numeric.h"

namespace attnkit::cpu::linear {

void TokenTensor::load(std::int64_t b, std::int64_t t, std::int64_t head, float* dst) const {
  const std::int64_t base = offset(b, t, head);
  switch (dtype) {
    case DType::kFloat32: std::memcpy(dst, static_cast<const float*>(data) + base, sizeof(float) * width); return;
    case DType::kBFloat16: {
      const auto* src = static_cast<const std::uint16_t*>(data) + base;
      for (std::int64_t i = 0; i < width; ++i) dst[i] = bf16_to_float(src[i]);
      return;
    }
    case DType::kFloat16: {
      const auto* src = static_cast<const std::uint16_t*>(data) + base;
      for (std::int64_t i = 0; i < width; ++i) dst[i] = fp16_to_float(src[i]);
      return;
    }
    default: return;  // validation admits only the three float dtypes
  }
}

void TokenOutput::store(std::int64_t b, std::int64_t t, std::int64_t head, const float* src) const {
  const std::int64_t base = b * strides.batch + t * strides.token + head * strides.head;
  switch (dtype) {
    case DType::kFloat32: std::memcpy(static_cast<float*>(data) + base, src, sizeof(float) * width); return;
    case DType::kBFloat16: {
      auto* dst = static_cast<std::uint16_t*>(data) + base;
      for (std::int64_t i = 0; i < width; ++i) dst[i] = float_to_bf16(src[i]);
      return;
    }
    case DType::kFloat16: {
      auto* dst = static_cast<std::uint16_t*>(data) + base;
      for (std::int64_t i = 0; i < width; ++i) dst[i] = float_to_fp16(src[i]);
      return;
    }
    default: return;
  }
}

void StateTensor::load(std::int64_t slot, std::int64_t head, std::int64_t key_dim, std::int64_t value_dim,
                       float* S) const {
  if (data == nullptr) {
    std::memset(S, 0, sizeof(float) * key_dim * value_dim);
    return;
  }
  const float* base = data + slot * strides.sequence + head * strides.head;
  if (layout == LinearStateLayout::kKV) {
    for (std::int64_t a = 0; a < key_dim; ++a) std::memcpy(S + a * value_dim, base + a * strides.row, sizeof(float) * value_dim);
  } else {
    for (std::int64_t c = 0; c < value_dim; ++c)
      for (std::int64_t a = 0; a < key_dim; ++a) S[a * value_dim + c] = base[c * strides.row + a];
  }
}

void StateTensor::store(std::int64_t slot, std::int64_t head, std::int64_t key_dim, std::int64_t value_dim,
                        const float* S) const {
  if (data == nullptr) return;
  float* base = data + slot * strides.sequence + head * strides.head;
  if (layout == LinearStateLayout::kKV) {
    for (std::int64_t a = 0; a < key_dim; ++a) std::memcpy(base + a * strides.row, S + a * value_dim, sizeof(float) * value_dim);
  } else {
    for (std::int64_t c = 0; c < value_dim; ++c)
      for (std::int64_t a = 0; a < key_dim; ++a) base[c * strides.row + a] = S[a * value_dim + c];
  }
}

LinearInputs make_inputs(const host::LinearProblem& p, const TensorRef& q, const TensorRef& k, const TensorRef& v,
                         const TensorRef& g, const TensorRef& beta, const TensorRef& A_log, const TensorRef& dt_bias) {
  LinearInputs in;
  in.q = {q.data, q.dtype, p.q, p.key_dim};
  in.k = {k.data, k.dtype, p.k, p.key_dim};
  in.v = {v.data, v.dtype, p.v, p.value_dim};
  in.g = {g.data, g.dtype, p.g, p.per_key_gate() ? p.key_dim : 1};
  in.beta = {beta.data, beta.dtype, p.beta, 1};
  if (p.gate_fused()) {
    in.A_log = static_cast<const float*>(A_log.data);
    in.a_log_stride = A_log.strides[0];
    if (p.has_dt_bias) {
      in.dt_bias = static_cast<const float*>(dt_bias.data);
      in.dt_bias_strides[0] = dt_bias.strides[0];
      in.dt_bias_strides[1] = dt_bias.rank > 1 ? dt_bias.strides[1] : 0;
    }
  }
  return in;
}

TokenOutput make_output(const TensorRef& t, const host::TokenStrides& strides) {
  return {t.data, t.dtype, strides, t.rank == 4 ? t.shape[3] : 1};
}

StateTensor make_state(const TensorRef& t, const host::StateStrides& strides, LinearStateLayout layout) {
  return {static_cast<float*>(t.data), strides, layout};
}

std::vector<SequenceRange> sequence_ranges(const host::LinearProblem& p, const TensorRef& cu_seqlens) {
  std::vector<SequenceRange> ranges(static_cast<std::size_t>(p.num_sequences));
  for (std::int64_t n = 0; n < p.num_sequences; ++n) {
    if (p.varlen) {
      const auto* offsets = static_cast<const std::int32_t*>(cu_seqlens.data);
      const std::int64_t begin = offsets[n * cu_seqlens.strides[0]];
      ranges[n] = {0, begin, offsets[(n + 1) * cu_seqlens.strides[0]] - begin};
    } else {
      ranges[n] = {n, 0, p.seqlen};
    }
  }
  return ranges;
}

void Chunk::resize(std::int64_t key_dim, std::int64_t value_dim, std::int64_t gate_width) {
  q.resize(kChunk * key_dim);
  k.resize(kChunk * key_dim);
  v.resize(kChunk * value_dim);
  gate.resize(kChunk * gate_width);
  beta.resize(kChunk);
}

GateDerivatives fused_gate(const host::LinearProblem& p, float raw, float a_log, float bias) {
  GateDerivatives d;
  switch (p.gate_form) {
    case LinearGateForm::kLogDecay: d.gate = raw; return d;
    case LinearGateForm::kSoftplus: {
      // g = -exp(A_log) softplus(a), a = raw + bias; softplus(a) = a beyond 20 (log1p(e^-20) < 2^-28 a).
      const float a = raw + bias, a_exp = std::exp(a_log);
      const float softplus = a > 20.0f ? a : std::log1p(std::exp(a));
      d.gate = -a_exp * softplus;
      d.d_raw = -a_exp / (1.0f + std::exp(-a));
      d.d_a_log = d.gate;
      return d;
    }
    case LinearGateForm::kLowerBoundSigmoid: {
      // g = lb sigmoid(z), z = exp(A_log) a
      const float a = raw + bias, a_exp = std::exp(a_log), z = a_exp * a;
      const float s = 1.0f / (1.0f + std::exp(-z));
      d.gate = p.gate_lower_bound * s;
      const float d_z = p.gate_lower_bound * s * (1.0f - s);
      d.d_raw = d_z * a_exp;
      d.d_a_log = d_z * z;
      return d;
    }
  }
  return d;
}

float fused_beta(const host::LinearProblem& p, float raw, float* d_raw) {
  if (p.beta_form == LinearBetaForm::kValue) {
    if (d_raw != nullptr) *d_raw = 1.0f;
    return raw;
  }
  const float factor = p.beta_form == LinearBetaForm::kTwoSigmoid ? 2.0f : 1.0f;
  const float s = 1.0f / (1.0f + std::exp(-raw));
  if (d_raw != nullptr) *d_raw = factor * s * (1.0f - s);
  return factor * s;
}

void load_chunk(const host::LinearProblem& p, const LinearInputs& in, const SequenceRange& range, std::int64_t head,
                std::int64_t first, std::int64_t length, Chunk* chunk) {
  const std::int64_t K = p.key_dim, V = p.value_dim, gw = in.g.width;
  const std::int64_t qk_head = head / p.group;
  chunk->length = length;
  const float a_log = in.A_log != nullptr ? in.A_log[head * in.a_log_stride] : 0.0f;
  for (std::int64_t i = 0; i < length; ++i) {
    const std::int64_t t = range.begin + first + i;
    float* q = &chunk->q[i * K];
    float* k = &chunk->k[i * K];
    in.q.load(range.batch_row, t, qk_head, q);
    in.k.load(range.batch_row, t, qk_head, k);
    if (p.l2norm_qk) {
      for (float* x : {q, k}) {
        float sum_sq = 0.0f;
        for (std::int64_t d = 0; d < K; ++d) sum_sq += x[d] * x[d];
        const float inv_norm = 1.0f / std::sqrt(sum_sq + 1e-6f);
        for (std::int64_t d = 0; d < K; ++d) x[d] *= inv_norm;
      }
    }
    in.v.load(range.batch_row, t, head, &chunk->v[i * V]);
    float* gate = &chunk->gate[i * gw];
    in.g.load(range.batch_row, t, head, gate);
    if (p.gate_fused()) {
      for (std::int64_t c = 0; c < gw; ++c) {
        const float bias =
            in.dt_bias != nullptr ? in.dt_bias[head * in.dt_bias_strides[0] + c * in.dt_bias_strides[1]] : 0.0f;
        gate[c] = fused_gate(p, gate[c], a_log, bias).gate;
      }
    }
    float beta = 0.0f;
    in.beta.load(range.batch_row, t, head, &beta);
    chunk->beta[i] = fused_beta(p, beta, nullptr);
  }
}

}  // namespace attnkit::cpu::linear
