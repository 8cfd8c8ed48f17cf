// float64 references of dense attention; see dense_reference.h for every formula. The code is written for
// reading, not speed: one loop per formula, sequences, heads and rows in the obvious order.
#include "reference/dense_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "attnkit/numeric.h"
#include "reference/tensor_load.h"

namespace attnkit::reference {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument("dense reference: " + message); }

// One element of a host tensor as double (see tensor_load.h).
double load(const TensorRef& t, std::int64_t offset) {
  if (const std::optional<double> value = load_element(t, offset)) return *value;
  fail("unknown dtype");
}

bool is_float_dtype(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32 ||
         dtype == DType::kFloat64;
}

void require_host_float(const char* name, const TensorRef& t, int rank) {
  if (t.rank != rank) fail(std::string(name) + ": expected rank " + std::to_string(rank) + ", got " + t.describe());
  if (t.device.kind != DeviceKind::kCPU) fail(std::string(name) + ": must be a host tensor, got " + t.describe());
  if (!is_float_dtype(t.dtype)) fail(std::string(name) + ": must be fp16, bf16, fp32 or fp64, got " + t.describe());
  if (t.numel() > 0 && t.data == nullptr) fail(std::string(name) + ": null data");
}

// The sizes of a problem, with BSHD seen as varlen with equal lengths: sequence n owns query rows
// [q_begin[n], q_begin[n] + q_len[n]) and key rows [k_begin[n], k_begin[n] + k_len[n]) of the
// flattened token dimension (BSHD: row = b * S + position).
struct Shape {
  bool varlen = false;
  std::int64_t sequences = 0;  // B or N
  std::int64_t rows_q = 0;     // B * Sq or Tq
  std::int64_t rows_k = 0;     // B * Sk or Tk
  std::int64_t seqlen_q = 0;   // BSHD only: Sq (for the lse layout)
  std::int64_t heads_q = 0;
  std::int64_t heads_kv = 0;
  std::int64_t group = 1;
  std::int64_t head_dim = 0;
  std::int64_t head_dim_v = 0;
  std::vector<std::int64_t> q_begin, q_len, k_begin, k_len;  // [sequences]
  double scale = 0.0;
  double softcap = 0.0;
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  bool causal = false;
  bool has_sinks = false;

  // Row-major index of lse for (sequence n, head h, position i).
  std::int64_t lse_index(std::int64_t n, std::int64_t h, std::int64_t i) const {
    return varlen ? h * rows_q + q_begin[n] + i : (n * heads_q + h) * seqlen_q + i;
  }
};

std::vector<std::int64_t> read_offsets(const char* name, const TensorRef& cu) {
  if (cu.rank != 1 || cu.dtype != DType::kInt32 || cu.device.kind != DeviceKind::kCPU) {
    fail(std::string(name) + ": must be a host int32 [N + 1] tensor, got " + cu.describe());
  }
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(cu.shape[0]));
  for (std::int64_t n = 0; n < cu.shape[0]; ++n) {
    offsets[static_cast<std::size_t>(n)] = static_cast<std::int64_t>(load(cu, n * cu.strides[0]));
  }
  if (offsets.empty() || offsets[0] != 0) fail(std::string(name) + ": must start at 0");
  for (std::size_t n = 1; n < offsets.size(); ++n) {
    if (offsets[n] < offsets[n - 1]) fail(std::string(name) + ": must be non-decreasing");
  }
  return offsets;
}

Shape resolve_shape(const DenseReferenceInputs& in) {
  Shape s;
  s.varlen = in.cu_seqlens_q.defined();
  if (s.varlen != in.cu_seqlens_k.defined()) fail("varlen needs both cu_seqlens_q and cu_seqlens_k");
  const int rank = s.varlen ? 3 : 4;
  require_host_float("q", in.q, rank);
  require_host_float("k", in.k, rank);
  require_host_float("v", in.v, rank);
  const int axis0 = s.varlen ? 0 : 1;  // the token axis after the batch axis
  s.heads_q = in.q.shape[axis0 + 1];
  s.heads_kv = in.k.shape[axis0 + 1];
  s.head_dim = in.q.shape[axis0 + 2];
  s.head_dim_v = in.v.shape[axis0 + 2];
  if (in.k.shape[axis0 + 2] != s.head_dim) fail("k and q head dims differ");
  if (in.v.shape[axis0] != in.k.shape[axis0] || in.v.shape[axis0 + 1] != s.heads_kv) fail("v and k shapes differ");
  if (s.heads_q > 0 && (s.heads_kv == 0 || s.heads_q % s.heads_kv != 0)) fail("Hq must be a multiple of Hkv");
  s.group = s.heads_kv > 0 ? s.heads_q / s.heads_kv : 1;
  if (s.varlen) {
    const std::vector<std::int64_t> cu_q = read_offsets("cu_seqlens_q", in.cu_seqlens_q);
    const std::vector<std::int64_t> cu_k = read_offsets("cu_seqlens_k", in.cu_seqlens_k);
    if (cu_q.size() != cu_k.size()) fail("cu_seqlens_q and cu_seqlens_k differ in length");
    s.sequences = static_cast<std::int64_t>(cu_q.size()) - 1;
    s.rows_q = in.q.shape[0];
    s.rows_k = in.k.shape[0];
    if (cu_q.back() != s.rows_q || cu_k.back() != s.rows_k) fail("cu_seqlens do not end at the token counts");
    for (std::int64_t n = 0; n < s.sequences; ++n) {
      s.q_begin.push_back(cu_q[n]);
      s.q_len.push_back(cu_q[n + 1] - cu_q[n]);
      s.k_begin.push_back(cu_k[n]);
      s.k_len.push_back(cu_k[n + 1] - cu_k[n]);
    }
  } else {
    s.sequences = in.q.shape[0];
    if (in.k.shape[0] != s.sequences || in.v.shape[0] != s.sequences) fail("batch sizes of q, k, v differ");
    s.seqlen_q = in.q.shape[1];
    const std::int64_t seqlen_k = in.k.shape[1];
    s.rows_q = s.sequences * s.seqlen_q;
    s.rows_k = s.sequences * seqlen_k;
    for (std::int64_t b = 0; b < s.sequences; ++b) {
      s.q_begin.push_back(b * s.seqlen_q);
      s.q_len.push_back(s.seqlen_q);
      s.k_begin.push_back(b * seqlen_k);
      s.k_len.push_back(seqlen_k);
    }
  }
  const DenseOptions& o = in.options;
  s.scale = o.scale.has_value() ? static_cast<double>(*o.scale) : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  s.softcap = o.softcap;
  s.window_left = o.window_left;
  s.window_right = o.window_right;
  s.causal = o.causal;
  s.has_sinks = in.sinks.defined();
  if (s.has_sinks) {
    require_host_float("sinks", in.sinks, 1);
    if (in.sinks.shape[0] != s.heads_q) fail("sinks must be [Hq]");
  }
  return s;
}

// A tensor gathered into a contiguous [rows, heads, dim] array (row = flattened token).
template <typename Value>
std::vector<Value> gather(const TensorRef& t, bool varlen) {
  const std::int64_t batch = varlen ? 1 : t.shape[0];
  const int a = varlen ? 0 : 1;
  const std::int64_t tokens = t.shape[a], heads = t.shape[a + 1], dim = t.shape[a + 2];
  const std::int64_t batch_stride = varlen ? 0 : t.strides[0];
  std::vector<Value> values(static_cast<std::size_t>(batch * tokens * heads * dim));
  std::size_t next = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t row = 0; row < tokens; ++row) {
      for (std::int64_t h = 0; h < heads; ++h) {
        for (std::int64_t d = 0; d < dim; ++d) {
          const std::int64_t offset = b * batch_stride + row * t.strides[a] + h * t.strides[a + 1] + d * t.strides[a + 2];
          values[next++] = static_cast<Value>(load(t, offset));
        }
      }
    }
  }
  return values;
}

template <typename Value>
std::vector<Value> gather_sinks(const TensorRef& sinks) {
  std::vector<Value> values;
  if (!sinks.defined()) return values;
  for (std::int64_t h = 0; h < sinks.shape[0]; ++h) values.push_back(static_cast<Value>(load(sinks, h * sinks.strides[0])));
  return values;
}

void require_dout_like(const TensorRef& dout, const TensorRef& q, const Shape& s) {
  require_host_float("dout", dout, q.rank);
  const int a = s.varlen ? 0 : 1;
  if ((!s.varlen && dout.shape[0] != s.sequences) || dout.shape[a] != q.shape[a] || dout.shape[a + 1] != s.heads_q ||
      dout.shape[a + 2] != s.head_dim_v) {
    fail("dout must have the shape of out, got " + dout.describe());
  }
}

// Threads pay off above about 2^20 multiply-adds (a millisecond); below, the fork and join cost more than
// the work, badly so on a loaded machine (finite-difference tests call the reference thousands of times).
bool worth_threads(const Shape& s) {
  const double work = double(s.rows_q) * double(s.heads_q) * double(s.rows_k) * double(s.head_dim + s.head_dim_v) /
                      double(std::max<std::int64_t>(s.sequences, 1));
  return work > double(1 << 20);
}

bool visible(const Shape& s, std::int64_t n, std::int64_t i, std::int64_t j) {
  return reference_key_visible(i, j, s.q_len[n], s.k_len[n], s.window_left, s.window_right, s.causal);
}

// ------------------------------------------------------------------------------------------------
// float64

// The score row of one (sequence n, query head h, query position i): x_ij before softcap and s_ij after,
// for every key position j (entries of invisible keys are left at -inf).
struct ScoreRow {
  std::vector<double> pre_cap;  // x_ij = scale * <q_i, k_j>
  std::vector<double> score;    // s_ij
  double lse = kNegInf;
};

ScoreRow score_row_f64(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
                       const std::vector<double>& sinks, std::int64_t n, std::int64_t h, std::int64_t i) {
  const std::int64_t kv_head = h / s.group;
  const std::int64_t row = s.q_begin[n] + i;
  const double* q_i = &q[static_cast<std::size_t>((row * s.heads_q + h) * s.head_dim)];
  ScoreRow r;
  r.pre_cap.assign(static_cast<std::size_t>(s.k_len[n]), kNegInf);
  r.score.assign(static_cast<std::size_t>(s.k_len[n]), kNegInf);
  double row_max = s.has_sinks ? sinks[static_cast<std::size_t>(h)] : kNegInf;
  for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
    if (!visible(s, n, i, j)) continue;
    const double* k_j = &k[static_cast<std::size_t>(((s.k_begin[n] + j) * s.heads_kv + kv_head) * s.head_dim)];
    double dot = 0.0;
    for (std::int64_t d = 0; d < s.head_dim; ++d) dot += q_i[d] * k_j[d];
    const double x = s.scale * dot;
    const double score = s.softcap > 0.0 ? s.softcap * std::tanh(x / s.softcap) : x;
    r.pre_cap[static_cast<std::size_t>(j)] = x;
    r.score[static_cast<std::size_t>(j)] = score;
    row_max = std::max(row_max, score);
  }
  if (row_max == kNegInf) return r;  // nothing visible and no sink: lse = -inf
  double sum = s.has_sinks ? std::exp(sinks[static_cast<std::size_t>(h)] - row_max) : 0.0;
  for (double score : r.score) {
    if (score != kNegInf) sum += std::exp(score - row_max);
  }
  r.lse = row_max + std::log(sum);
  return r;
}

struct Gathered64 {
  std::vector<double> q, k, v, sinks;
};

Gathered64 gather_f64(const DenseReferenceInputs& in, const Shape& s) {
  return {gather<double>(in.q, s.varlen), gather<double>(in.k, s.varlen), gather<double>(in.v, s.varlen),
          gather_sinks<double>(in.sinks)};
}

// ------------------------------------------------------------------------------------------------
// input precision (fp32 arithmetic, rounded to T at the points listed in the header)

float round_to(DType dtype, float x) {
  switch (dtype) {
    case DType::kFloat16: return fp16_to_float(float_to_fp16(x));
    case DType::kBFloat16: return bf16_to_float(float_to_bf16(x));
    default: return x;
  }
}

struct ScoreRowLowp {
  std::vector<float> pre_cap;  // round_T(scale * fp32_dot)
  std::vector<float> score;    // after softcap (rounded), -inf where invisible
  std::vector<float> prob;     // round_T(e / l), 0 where invisible
  float row_max = -std::numeric_limits<float>::infinity();
  float denominator = 0.0f;    // l_i, sink included
  float lse = -std::numeric_limits<float>::infinity();  // fp32 logsumexp of the unrounded fp32 scores
  bool empty = true;           // no visible key and no sink
};

ScoreRowLowp score_row_lowp(const Shape& s, DType dtype, const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<float>& sinks, std::int64_t n, std::int64_t h, std::int64_t i) {
  constexpr float kNegInfF = -std::numeric_limits<float>::infinity();
  const std::int64_t kv_head = h / s.group;
  const std::int64_t row = s.q_begin[n] + i;
  const float* q_i = &q[static_cast<std::size_t>((row * s.heads_q + h) * s.head_dim)];
  const float scale = static_cast<float>(s.scale);
  const float cap = static_cast<float>(s.softcap);
  ScoreRowLowp r;
  r.pre_cap.assign(static_cast<std::size_t>(s.k_len[n]), 0.0f);
  r.score.assign(static_cast<std::size_t>(s.k_len[n]), kNegInfF);
  r.prob.assign(static_cast<std::size_t>(s.k_len[n]), 0.0f);
  r.row_max = s.has_sinks ? sinks[static_cast<std::size_t>(h)] : kNegInfF;
  std::vector<float> score_fp32(static_cast<std::size_t>(s.k_len[n]), kNegInfF);  // before rounding to T
  float max_fp32 = r.row_max;
  for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
    if (!visible(s, n, i, j)) continue;
    const float* k_j = &k[static_cast<std::size_t>(((s.k_begin[n] + j) * s.heads_kv + kv_head) * s.head_dim)];
    float dot = 0.0f;
    for (std::int64_t d = 0; d < s.head_dim; ++d) dot += q_i[d] * k_j[d];
    const float x_fp32 = scale * dot;
    score_fp32[static_cast<std::size_t>(j)] = cap > 0.0f ? cap * std::tanh(x_fp32 / cap) : x_fp32;
    max_fp32 = std::max(max_fp32, score_fp32[static_cast<std::size_t>(j)]);
    const float x = round_to(dtype, x_fp32);
    const float score = cap > 0.0f ? round_to(dtype, cap * std::tanh(x / cap)) : x;
    r.pre_cap[static_cast<std::size_t>(j)] = x;
    r.score[static_cast<std::size_t>(j)] = score;
    r.row_max = std::max(r.row_max, score);
  }
  if (r.row_max == kNegInfF) return r;
  r.empty = false;
  float sum_fp32 = s.has_sinks ? std::exp(sinks[static_cast<std::size_t>(h)] - max_fp32) : 0.0f;
  for (float score : score_fp32) {
    if (score != kNegInfF) sum_fp32 += std::exp(score - max_fp32);
  }
  r.lse = max_fp32 + std::log(sum_fp32);
  float sum = s.has_sinks ? std::exp(sinks[static_cast<std::size_t>(h)] - r.row_max) : 0.0f;
  std::vector<float> unnormalised(r.score.size(), 0.0f);
  for (std::size_t j = 0; j < r.score.size(); ++j) {
    if (r.score[j] == kNegInfF) continue;
    unnormalised[j] = std::exp(r.score[j] - r.row_max);
    sum += unnormalised[j];
  }
  r.denominator = sum;
  for (std::size_t j = 0; j < r.score.size(); ++j) {
    if (r.score[j] != kNegInfF) r.prob[j] = round_to(dtype, unnormalised[j] / sum);
  }
  return r;
}

struct GatheredLowp {
  std::vector<float> q, k, v, sinks;
};

GatheredLowp gather_lowp(const DenseReferenceInputs& in, const Shape& s) {
  return {gather<float>(in.q, s.varlen), gather<float>(in.k, s.varlen), gather<float>(in.v, s.varlen),
          gather_sinks<float>(in.sinks)};
}

void require_one_dtype(const DenseReferenceInputs& in) {
  if (in.k.dtype != in.q.dtype || in.v.dtype != in.q.dtype) fail("q, k and v must share one dtype");
}

}  // namespace

bool reference_key_visible(std::int64_t i, std::int64_t j, std::int64_t seqlen_q, std::int64_t seqlen_k,
                           std::int64_t window_left, std::int64_t window_right, bool causal) {
  if (i < 0 || i >= seqlen_q || j < 0 || j >= seqlen_k) return false;
  const std::int64_t diagonal = i + (seqlen_k - seqlen_q);  // the key aligned with query i (bottom right)
  const std::int64_t right = causal ? 0 : window_right;
  if (window_left >= 0 && j < diagonal - window_left) return false;
  if (right >= 0 && j > diagonal + right) return false;
  return true;
}

DenseForwardResult dense_forward_reference(const DenseReferenceInputs& inputs) {
  const Shape s = resolve_shape(inputs);
  const Gathered64 g = gather_f64(inputs, s);
  DenseForwardResult result;
  result.out.assign(static_cast<std::size_t>(s.rows_q * s.heads_q * s.head_dim_v), 0.0);
  result.lse.assign(static_cast<std::size_t>(s.rows_q * s.heads_q), kNegInf);
  double max_abs_score = 0.0;
  // Every (sequence, query head) writes its own rows: one task each.
#pragma omp parallel for collapse(2) schedule(dynamic) if (worth_threads(s)) reduction(max : max_abs_score)
  for (std::int64_t n = 0; n < s.sequences; ++n) {
    for (std::int64_t h = 0; h < s.heads_q; ++h) {
      const std::int64_t kv_head = h / s.group;
      for (std::int64_t i = 0; i < s.q_len[n]; ++i) {
        const ScoreRow r = score_row_f64(s, g.q, g.k, g.sinks, n, h, i);
        result.lse[static_cast<std::size_t>(s.lse_index(n, h, i))] = r.lse;
        for (double score : r.score) {
          if (score != kNegInf) max_abs_score = std::max(max_abs_score, std::abs(score));
        }
        if (r.lse == kNegInf) continue;  // empty row: o = 0
        double* o_i = &result.out[static_cast<std::size_t>(((s.q_begin[n] + i) * s.heads_q + h) * s.head_dim_v)];
        for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
          const double score = r.score[static_cast<std::size_t>(j)];
          if (score == kNegInf) continue;
          const double p = std::exp(score - r.lse);
          const double* v_j = &g.v[static_cast<std::size_t>(((s.k_begin[n] + j) * s.heads_kv + kv_head) * s.head_dim_v)];
          for (std::int64_t d = 0; d < s.head_dim_v; ++d) o_i[d] += p * v_j[d];
        }
      }
    }
  }
  result.max_abs_score = max_abs_score;
  return result;
}

DenseBackwardResult dense_backward_reference(const DenseReferenceInputs& inputs, const TensorRef& dout) {
  const Shape s = resolve_shape(inputs);
  require_dout_like(dout, inputs.q, s);
  const Gathered64 g = gather_f64(inputs, s);
  const std::vector<double> dout64 = gather<double>(dout, s.varlen);
  const std::int64_t D = s.head_dim, Dv = s.head_dim_v;
  DenseBackwardResult result;
  result.dq.assign(g.q.size(), 0.0);
  result.dk.assign(g.k.size(), 0.0);
  result.dv.assign(g.v.size(), 0.0);
  std::vector<double> dsinks_per_sequence(static_cast<std::size_t>(s.has_sinks ? s.sequences * s.heads_q : 0), 0.0);
  // Every (sequence, kv head) owns its keys' dk and dv, its query heads' dq rows and its partial dsinks:
  // one task each, and every sum keeps its sequential order, so the result does not depend on threads.
#pragma omp parallel for collapse(2) schedule(dynamic) if (worth_threads(s))
  for (std::int64_t n = 0; n < s.sequences; ++n) {
    for (std::int64_t kv_head = 0; kv_head < s.heads_kv; ++kv_head) {
      for (std::int64_t h = kv_head * s.group; h < (kv_head + 1) * s.group; ++h) {
        for (std::int64_t i = 0; i < s.q_len[n]; ++i) {
          const ScoreRow r = score_row_f64(s, g.q, g.k, g.sinks, n, h, i);
          if (r.lse == kNegInf) continue;  // empty row: contributes nothing
          const std::int64_t row = s.q_begin[n] + i;
          const double* q_i = &g.q[static_cast<std::size_t>((row * s.heads_q + h) * D)];
          const double* do_i = &dout64[static_cast<std::size_t>((row * s.heads_q + h) * Dv)];
          auto key_offset = [&](std::int64_t j, std::int64_t dim) {
            return static_cast<std::size_t>(((s.k_begin[n] + j) * s.heads_kv + kv_head) * dim);
          };
          // o_i and delta_i = <dout_i, o_i>
          std::vector<double> o_i(static_cast<std::size_t>(Dv), 0.0);
          for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
            const double score = r.score[static_cast<std::size_t>(j)];
            if (score == kNegInf) continue;
            const double p = std::exp(score - r.lse);
            for (std::int64_t d = 0; d < Dv; ++d) o_i[static_cast<std::size_t>(d)] += p * g.v[key_offset(j, Dv) + d];
          }
          double delta = 0.0;
          for (std::int64_t d = 0; d < Dv; ++d) delta += do_i[d] * o_i[static_cast<std::size_t>(d)];
          if (s.has_sinks) {
            const double sink_probability = std::exp(g.sinks[static_cast<std::size_t>(h)] - r.lse);
            dsinks_per_sequence[static_cast<std::size_t>(n * s.heads_q + h)] -= sink_probability * delta;
          }
          double* dq_i = &result.dq[static_cast<std::size_t>((row * s.heads_q + h) * D)];
          for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
            const double score = r.score[static_cast<std::size_t>(j)];
            if (score == kNegInf) continue;
            const double p = std::exp(score - r.lse);
            const double* v_j = &g.v[key_offset(j, Dv)];
            const double* k_j = &g.k[key_offset(j, D)];
            double dp = 0.0;
            for (std::int64_t d = 0; d < Dv; ++d) dp += do_i[d] * v_j[d];
            double dx = p * (dp - delta);
            if (s.softcap > 0.0) dx *= 1.0 - (score / s.softcap) * (score / s.softcap);
            double* dk_j = &result.dk[key_offset(j, D)];
            double* dv_j = &result.dv[key_offset(j, Dv)];
            for (std::int64_t d = 0; d < D; ++d) {
              dq_i[d] += s.scale * dx * k_j[d];
              dk_j[d] += s.scale * dx * q_i[d];
            }
            for (std::int64_t d = 0; d < Dv; ++d) dv_j[d] += p * do_i[d];
          }
        }
      }
    }
  }
  if (s.has_sinks) {  // [N, Hq] partial sums, added in sequence order
    result.dsinks.assign(static_cast<std::size_t>(s.heads_q), 0.0);
    for (std::int64_t n = 0; n < s.sequences; ++n) {
      for (std::int64_t h = 0; h < s.heads_q; ++h) {
        result.dsinks[static_cast<std::size_t>(h)] += dsinks_per_sequence[static_cast<std::size_t>(n * s.heads_q + h)];
      }
    }
  }
  return result;
}

DenseForwardResult dense_forward_naive_lowp(const DenseReferenceInputs& inputs) {
  require_one_dtype(inputs);
  const DType dtype = inputs.q.dtype;
  if (dtype == DType::kFloat64) return dense_forward_reference(inputs);
  const Shape s = resolve_shape(inputs);
  const GatheredLowp g = gather_lowp(inputs, s);
  DenseForwardResult result;
  result.out.assign(static_cast<std::size_t>(s.rows_q * s.heads_q * s.head_dim_v), 0.0);
  result.lse.assign(static_cast<std::size_t>(s.rows_q * s.heads_q), kNegInf);
  // Every (sequence, query head) writes its own rows: one task each.
#pragma omp parallel for collapse(2) schedule(dynamic) if (worth_threads(s))
  for (std::int64_t n = 0; n < s.sequences; ++n) {
    for (std::int64_t h = 0; h < s.heads_q; ++h) {
      const std::int64_t kv_head = h / s.group;
      for (std::int64_t i = 0; i < s.q_len[n]; ++i) {
        const ScoreRowLowp r = score_row_lowp(s, dtype, g.q, g.k, g.sinks, n, h, i);
        if (r.empty) continue;
        result.lse[static_cast<std::size_t>(s.lse_index(n, h, i))] = r.lse;
        std::vector<float> o_i(static_cast<std::size_t>(s.head_dim_v), 0.0f);
        for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
          if (r.score[static_cast<std::size_t>(j)] == -std::numeric_limits<float>::infinity()) continue;
          const float p = r.prob[static_cast<std::size_t>(j)];
          const float* v_j = &g.v[static_cast<std::size_t>(((s.k_begin[n] + j) * s.heads_kv + kv_head) * s.head_dim_v)];
          for (std::int64_t d = 0; d < s.head_dim_v; ++d) o_i[static_cast<std::size_t>(d)] += p * v_j[d];
        }
        const std::int64_t base = ((s.q_begin[n] + i) * s.heads_q + h) * s.head_dim_v;
        for (std::int64_t d = 0; d < s.head_dim_v; ++d) {
          result.out[static_cast<std::size_t>(base + d)] = round_to(dtype, o_i[static_cast<std::size_t>(d)]);
        }
      }
    }
  }
  return result;
}

DenseBackwardResult dense_backward_naive_lowp(const DenseReferenceInputs& inputs, const TensorRef& dout,
                                              const TensorRef& out) {
  require_one_dtype(inputs);
  const DType dtype = inputs.q.dtype;
  if (dtype == DType::kFloat64) return dense_backward_reference(inputs, dout);
  const Shape s = resolve_shape(inputs);
  require_dout_like(dout, inputs.q, s);
  require_dout_like(out, inputs.q, s);
  const GatheredLowp g = gather_lowp(inputs, s);
  // dout and o in the input precision, as the backward API receives them.
  std::vector<float> dout_t = gather<float>(dout, s.varlen);
  for (float& value : dout_t) value = round_to(dtype, value);
  std::vector<float> out_t = gather<float>(out, s.varlen);
  for (float& value : out_t) value = round_to(dtype, value);
  const std::int64_t D = s.head_dim, Dv = s.head_dim_v;
  const float scale = static_cast<float>(s.scale);
  const float cap = static_cast<float>(s.softcap);
  std::vector<float> dq_acc(g.q.size(), 0.0f), dk_acc(g.k.size(), 0.0f), dv_acc(g.v.size(), 0.0f);
  std::vector<float> dsinks_per_sequence(static_cast<std::size_t>(s.has_sinks ? s.sequences * s.heads_q : 0), 0.0f);
  // Every (sequence, kv head) owns its keys' dk and dv, its query heads' dq rows and its partial dsinks:
  // one task each, and every sum keeps its sequential order, so the result does not depend on threads.
#pragma omp parallel for collapse(2) schedule(dynamic) if (worth_threads(s))
  for (std::int64_t n = 0; n < s.sequences; ++n) {
    for (std::int64_t kv_head = 0; kv_head < s.heads_kv; ++kv_head) {
      for (std::int64_t h = kv_head * s.group; h < (kv_head + 1) * s.group; ++h) {
        for (std::int64_t i = 0; i < s.q_len[n]; ++i) {
          const ScoreRowLowp r = score_row_lowp(s, dtype, g.q, g.k, g.sinks, n, h, i);
          if (r.empty) continue;
          const std::int64_t row = s.q_begin[n] + i;
          const float* q_i = &g.q[static_cast<std::size_t>((row * s.heads_q + h) * D)];
          const float* do_i = &dout_t[static_cast<std::size_t>((row * s.heads_q + h) * Dv)];
          const float* o_i = &out_t[static_cast<std::size_t>((row * s.heads_q + h) * Dv)];
          auto key_offset = [&](std::int64_t j, std::int64_t dim) {
            return static_cast<std::size_t>(((s.k_begin[n] + j) * s.heads_kv + kv_head) * dim);
          };
          std::vector<float> dp(static_cast<std::size_t>(s.k_len[n]), 0.0f);
          for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
            if (r.score[static_cast<std::size_t>(j)] == -std::numeric_limits<float>::infinity()) continue;
            const float* v_j = &g.v[key_offset(j, Dv)];
            float dot = 0.0f;
            for (std::int64_t d = 0; d < Dv; ++d) dot += do_i[d] * v_j[d];
            dp[static_cast<std::size_t>(j)] = round_to(dtype, dot);
          }
          float delta = 0.0f;
          for (std::int64_t d = 0; d < Dv; ++d) delta += do_i[d] * o_i[d];
          if (s.has_sinks) {
            const float sink_prob = std::exp(g.sinks[static_cast<std::size_t>(h)] - r.lse);
            dsinks_per_sequence[static_cast<std::size_t>(n * s.heads_q + h)] -= sink_prob * delta;
          }
          float* dq_i = &dq_acc[static_cast<std::size_t>((row * s.heads_q + h) * D)];
          for (std::int64_t j = 0; j < s.k_len[n]; ++j) {
            if (r.score[static_cast<std::size_t>(j)] == -std::numeric_limits<float>::infinity()) continue;
            const float p = r.prob[static_cast<std::size_t>(j)];
            float dx = round_to(dtype, p * (dp[static_cast<std::size_t>(j)] - delta));
            if (cap > 0.0f) {
              const float t = std::tanh(r.pre_cap[static_cast<std::size_t>(j)] / cap);
              dx = round_to(dtype, dx * (1.0f - t * t));
            }
            const float* k_j = &g.k[key_offset(j, D)];
            float* dk_j = &dk_acc[key_offset(j, D)];
            float* dv_j = &dv_acc[key_offset(j, Dv)];
            for (std::int64_t d = 0; d < D; ++d) {
              dq_i[d] += dx * k_j[d];
              dk_j[d] += dx * q_i[d];
            }
            for (std::int64_t d = 0; d < Dv; ++d) dv_j[d] += p * do_i[d];
          }
        }
      }
    }
  }
  DenseBackwardResult result;
  auto finish = [&](const std::vector<float>& acc, float factor) {
    std::vector<double> rounded(acc.size());
    for (std::size_t e = 0; e < acc.size(); ++e) rounded[e] = round_to(dtype, factor * acc[e]);
    return rounded;
  };
  result.dq = finish(dq_acc, scale);
  result.dk = finish(dk_acc, scale);
  result.dv = finish(dv_acc, 1.0f);
  if (s.has_sinks) {  // [N, Hq] fp32 partial sums, added in sequence order
    std::vector<float> dsinks(static_cast<std::size_t>(s.heads_q), 0.0f);
    for (std::int64_t n = 0; n < s.sequences; ++n) {
      for (std::int64_t h = 0; h < s.heads_q; ++h) {
        dsinks[static_cast<std::size_t>(h)] += dsinks_per_sequence[static_cast<std::size_t>(n * s.heads_q + h)];
      }
    }
    result.dsinks.assign(dsinks.begin(), dsinks.end());
  }
  return result;
}

void merge_states_reference(const std::vector<double>& o_a, const std::vector<double>& lse_a,
                            const std::vector<double>& o_b, const std::vector<double>& lse_b, std::int64_t dv,
                            std::vector<double>* o, std::vector<double>* lse) {
  const std::size_t rows = lse_a.size();
  const std::size_t width = static_cast<std::size_t>(dv);
  if (lse_b.size() != rows || o_a.size() != rows * width || o_b.size() != rows * width) {
    fail("merge: state sizes differ");
  }
  o->assign(rows * width, 0.0);
  lse->assign(rows, kNegInf);
  for (std::size_t r = 0; r < rows; ++r) {
    if (lse_a[r] == kNegInf && lse_b[r] == kNegInf) continue;  // both empty: o = 0, lse = -inf
    const double m = std::max(lse_a[r], lse_b[r]);
    const double w_a = std::exp(lse_a[r] - m);
    const double w_b = std::exp(lse_b[r] - m);
    for (std::size_t d = 0; d < width; ++d) {
      (*o)[r * width + d] = (w_a * o_a[r * width + d] + w_b * o_b[r * width + d]) / (w_a + w_b);
    }
    (*lse)[r] = m + std::log(w_a + w_b);
  }
}

}  // namespace attnkit::reference
