#include "reference_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <array>
#include <random>
#include <set>
#include <stdexcept>
#include <tuple>

#include "attnkit/numeric.h"
#include "reference/dense_reference.h"

namespace attnkit::cli {
namespace {

struct Row {
  std::int64_t b, i, h;
  friend bool operator<(const Row& x, const Row& y) { return std::tie(x.b, x.i, x.h) < std::tie(y.b, y.i, y.h); }
};

float to_float(std::uint16_t bits, DType dtype) {
  return dtype == DType::kBFloat16 ? bf16_to_float(bits) : fp16_to_float(bits);
}

TensorRef host_view(const void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                    std::initializer_list<std::int64_t> strides) {
  // The reference only reads its inputs; TensorRef carries a mutable pointer.
  return TensorRef::strided(const_cast<void*>(data), dtype, shape, strides);
}

// The one-row problem of row (b, i, h). In the full problem key j is visible to query i iff
//   lo <= j <= hi,  lo = i + (Sk - Sq) - left,  hi = i + (Sk - Sq) + right   (causal: right = 0),
// each side unbounded when -1, and 0 <= j < Sk. The one-row problem keeps keys 0 .. last, last =
// min(Sk - 1, hi), so Sk' = last + 1 and its single query sits at offset Sk' - 1: its upper bound
// (Sk' - 1) + right' with right' unbounded keeps exactly j <= last, and its lower bound
// (Sk' - 1) - left' equals lo when left' = Sk' - 1 - lo. A row with lo > last sees nothing: Sk' = 0.
reference::DenseReferenceInputs row_problem(const cases::DenseCase& c, const HostInputs& inputs, const Row& row) {
  const std::int64_t offset = row.i + (c.seqlen_k - c.seqlen_q);
  const std::int64_t right = c.causal ? 0 : c.window_right;
  const std::int64_t hi = right < 0 ? c.seqlen_k - 1 : offset + right;
  const std::int64_t last = std::min(c.seqlen_k - 1, hi);
  const bool left_bounded = c.window_left >= 0;
  const std::int64_t lo = left_bounded ? offset - c.window_left : 0;
  const std::int64_t kept_keys = (last < 0 || lo > last) ? 0 : last + 1;

  const std::int64_t kv_head = row.h / (c.heads_q / c.heads_kv);
  const std::size_t element = dtype_size(c.dtype);
  const auto* q = reinterpret_cast<const char*>(inputs.q.data());
  const auto* k = reinterpret_cast<const char*>(inputs.k.data());
  const auto* v = reinterpret_cast<const char*>(inputs.v.data());
  const std::int64_t q_offset = ((row.b * c.seqlen_q + row.i) * c.heads_q + row.h) * c.head_dim;
  const std::int64_t k_offset = (row.b * c.seqlen_k * c.heads_kv + kv_head) * c.head_dim;
  const std::int64_t v_offset = (row.b * c.seqlen_k * c.heads_kv + kv_head) * c.head_dim_v;

  reference::DenseReferenceInputs sub;
  // q (1, 1, 1, D); k (1, kept_keys, 1, D) and v (1, kept_keys, 1, Dv) strided over the full tensors.
  sub.q = host_view(q + q_offset * element, c.dtype, {1, 1, 1, c.head_dim}, {c.head_dim, c.head_dim, c.head_dim, 1});
  sub.k = host_view(k + k_offset * element, c.dtype, {1, kept_keys, 1, c.head_dim},
                    {c.seqlen_k * c.heads_kv * c.head_dim, c.heads_kv * c.head_dim, c.head_dim, 1});
  sub.v = host_view(v + v_offset * element, c.dtype, {1, kept_keys, 1, c.head_dim_v},
                    {c.seqlen_k * c.heads_kv * c.head_dim_v, c.heads_kv * c.head_dim_v, c.head_dim_v, 1});
  if (c.sinks) sub.sinks = host_view(inputs.sinks.data() + row.h, DType::kFloat32, {1}, {1});
  sub.options = case_options(c, Backend::kAuto);  // scale and softcap; the mask is set below
  sub.options.causal = false;
  sub.options.window_left = (left_bounded && kept_keys > 0) ? kept_keys - 1 - lo : -1;
  sub.options.window_right = -1;
  return sub;
}


std::vector<double> to_doubles(const std::vector<std::uint16_t>& values, DType dtype) {
  std::vector<double> result(values.size());
  for (std::size_t e = 0; e < values.size(); ++e) result[e] = to_float(values[e], dtype);
  return result;
}

// The o the naive backward's delta reads: the naive forward's own o, rounded to the input dtype like the
// o a backend receives (the bench does not keep the backend's o on the host). Its values are exact in
// float64, which the reference accepts. `shape` is (B, Sq, Hq) of the problem the result belongs to.
// The view points into per-thread storage that lives until the thread's next call.
TensorRef naive_out_view(const cases::DenseCase& c, reference::DenseForwardResult&& naive,
                         std::array<std::int64_t, 3> shape) {
  thread_local std::vector<double> storage;
  storage = std::move(naive.out);
  return TensorRef::contiguous(storage.data(), DType::kFloat64, {shape[0], shape[1], shape[2], c.head_dim_v});
}

// dout (1, 1, 1, Dv) of row (b, i, h).
TensorRef dout_row(const cases::DenseCase& c, const HostInputs& inputs, const Row& r) {
  const std::int64_t offset = ((r.b * c.seqlen_q + r.i) * c.heads_q + r.h) * c.head_dim_v;
  return host_view(inputs.dout.data() + offset, c.dtype, {1, 1, 1, c.head_dim_v},
                   {c.head_dim_v, c.head_dim_v, c.head_dim_v, 1});
}

// Runs `per_row(n)` for every n in parallel: the rows' one-row problems are independent. An exception
// must not leave an OpenMP region: the first message is rethrown after it.
template <typename PerRow>
void for_each_row_parallel(std::int64_t count, PerRow per_row) {
  std::string error_message;
#pragma omp parallel for schedule(dynamic)
  for (std::int64_t n = 0; n < count; ++n) {
    try {
      per_row(n);
    } catch (const std::exception& error) {
#pragma omp critical(attnkit_reference_check_error)
      if (error_message.empty()) error_message = error.what();
    }
  }
  if (!error_message.empty()) throw std::runtime_error("the float64 reference refused a row: " + error_message);
}

std::set<Row> sample(const cases::DenseCase& c, std::int64_t count, std::uint64_t seed) {
  std::set<Row> rows;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> pick_b(0, c.batch - 1), pick_i(0, c.seqlen_q - 1),
      pick_h(0, c.heads_q - 1);
  const std::int64_t total = c.batch * c.seqlen_q * c.heads_q;
  while (static_cast<std::int64_t>(rows.size()) < std::min(count, total))
    rows.insert({pick_b(rng), pick_i(rng), pick_h(rng)});
  for (const std::int64_t b : {std::int64_t{0}, c.batch - 1}) {
    for (const std::int64_t i : {std::int64_t{0}, c.seqlen_q - 1}) {
      for (const std::int64_t h : {std::int64_t{0}, c.heads_q - 1}) rows.insert({b, i, h});
    }
  }
  return rows;
}

}  // namespace

reference::DenseReferenceInputs reference_problem(const cases::DenseCase& c, const HostInputs& inputs) {
  reference::DenseReferenceInputs whole;
  whole.q = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.q.data()), c.dtype,
                                  {c.batch, c.seqlen_q, c.heads_q, c.head_dim});
  whole.k = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.k.data()), c.dtype,
                                  {c.batch, c.seqlen_k, c.heads_kv, c.head_dim});
  whole.v = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.v.data()), c.dtype,
                                  {c.batch, c.seqlen_k, c.heads_kv, c.head_dim_v});
  if (c.sinks)
    whole.sinks = TensorRef::contiguous(const_cast<float*>(inputs.sinks.data()), DType::kFloat32, {c.heads_q});
  whole.options = case_options(c, Backend::kAuto);
  return whole;
}

reference::DenseReferenceInputs one_row_problem(const cases::DenseCase& c, const HostInputs& inputs, std::int64_t b,
                                                std::int64_t i, std::int64_t h) {
  return row_problem(c, inputs, {b, i, h});
}

std::string ForwardCheck::summary() const {
  std::string text = out.text();
  text += '\n';
  text += lse.text();
  if (!worst_row.empty() && out.max_error > 0.0) text += "\n(worst o error in row (b, i, h) = " + worst_row + ")";
  return text;
}

ForwardCheck check_forward(const cases::DenseCase& c, const HostInputs& inputs, const std::vector<std::uint16_t>& out,
                           const std::vector<float>& lse, std::int64_t sample_rows, std::uint64_t seed) {
  ForwardCheck check;
  check.rows_total = c.batch * c.seqlen_q * c.heads_q;
  check.whole_problem = sample_rows <= 0 || sample_rows >= check.rows_total;
  const std::int64_t dv = c.head_dim_v;
  auto out_at = [&](const Row& r, std::int64_t e) {
    return static_cast<double>(
        to_float(out[static_cast<std::size_t>(((r.b * c.seqlen_q + r.i) * c.heads_q + r.h) * dv + e)], c.dtype));
  };
  auto lse_at = [&](const Row& r) {
    return static_cast<double>(lse[static_cast<std::size_t>((r.b * c.heads_q + r.h) * c.seqlen_q + r.i)]);
  };

  // Values compared, in the order of the reports' shapes.
  std::vector<double> out_actual, out_ref, out_naive, lse_actual, lse_ref, lse_naive;
  std::vector<std::int64_t> out_shape, lse_shape;
  std::vector<Row> rows;
  if (check.whole_problem) {
    const reference::DenseReferenceInputs whole = reference_problem(c, inputs);
    reference::DenseForwardResult ref = reference::dense_forward_reference(whole);
    reference::DenseForwardResult naive = reference::dense_forward_naive_lowp(whole);
    out_actual = to_doubles(out, c.dtype);
    lse_actual.assign(lse.begin(), lse.end());
    out_ref = std::move(ref.out);
    out_naive = std::move(naive.out);
    lse_ref = std::move(ref.lse);
    lse_naive = std::move(naive.lse);
    out_shape = {c.batch, c.seqlen_q, c.heads_q, dv};
    lse_shape = {c.batch, c.heads_q, c.seqlen_q};
    check.rows_checked = check.rows_total;
  } else {
    const std::set<Row> drawn = sample(c, sample_rows, seed);
    rows.assign(drawn.begin(), drawn.end());
    const std::int64_t count = static_cast<std::int64_t>(rows.size());
    std::vector<reference::DenseForwardResult> refs(rows.size()), naives(rows.size());
    for_each_row_parallel(count, [&](std::int64_t n) {
      const reference::DenseReferenceInputs sub = row_problem(c, inputs, rows[n]);
      refs[n] = reference::dense_forward_reference(sub);
      naives[n] = reference::dense_forward_naive_lowp(sub);
    });
    for (std::size_t n = 0; n < rows.size(); ++n) {
      for (std::int64_t e = 0; e < dv; ++e) {
        out_actual.push_back(out_at(rows[n], e));
        out_ref.push_back(refs[n].out[e]);
        out_naive.push_back(naives[n].out[e]);
      }
      lse_actual.push_back(lse_at(rows[n]));
      lse_ref.push_back(refs[n].lse[0]);
      lse_naive.push_back(naives[n].lse[0]);
    }
    out_shape = {count, dv};
    lse_shape = {count};
    check.rows_checked = count;
  }
  check.out = testing::check_tolerance("o", out_shape, out_actual, out_ref, out_naive, testing::kOutputFactor,
                                       testing::default_atol(c.dtype, out_ref));
  check.lse = testing::check_tolerance("lse", lse_shape, lse_actual, lse_ref, lse_naive, testing::kOutputFactor,
                                       testing::default_atol(DType::kFloat32, lse_ref));
  if (!rows.empty() && check.out.worst_index >= 0) {
    const Row& r = rows[static_cast<std::size_t>(check.out.worst_index / std::max<std::int64_t>(dv, 1))];
    check.worst_row = "(" + std::to_string(r.b) + ", " + std::to_string(r.i) + ", " + std::to_string(r.h) + ")";
  }
  check.passed = check.out.passed && check.lse.passed;
  return check;
}

std::string BackwardCheck::summary() const {
  std::string text = dq.text();
  if (whole_problem) {
    for (const testing::ToleranceReport* report : {&dk, &dv}) {
      text += '\n';
      text += report->text();
    }
  }
  return text;
}

BackwardCheck check_backward(const cases::DenseCase& c, const HostInputs& inputs, const std::vector<std::uint16_t>& dq,
                             const std::vector<std::uint16_t>& dk, const std::vector<std::uint16_t>& dv,
                             std::int64_t sample_rows, std::uint64_t seed) {
  if (inputs.dout.empty() && !dq.empty()) throw std::logic_error("check_backward: the host inputs have no dout");
  BackwardCheck check;
  check.rows_total = c.batch * c.seqlen_q * c.heads_q;
  check.whole_problem = sample_rows <= 0 || sample_rows >= check.rows_total;
  const std::int64_t d = c.head_dim;
  if (check.whole_problem) {
    const reference::DenseReferenceInputs whole = reference_problem(c, inputs);
    const TensorRef dout = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.dout.data()), c.dtype,
                                                 {c.batch, c.seqlen_q, c.heads_q, c.head_dim_v});
    const reference::DenseBackwardResult ref = reference::dense_backward_reference(whole, dout);
    const reference::DenseBackwardResult naive = reference::dense_backward_naive_lowp(
        whole, dout, naive_out_view(c, reference::dense_forward_naive_lowp(whole), {c.batch, c.seqlen_q, c.heads_q}));
    auto report = [&](const char* name, const std::vector<std::int64_t>& shape,
                      const std::vector<std::uint16_t>& actual, const std::vector<double>& reference_values,
                      const std::vector<double>& naive_values) {
      return testing::check_tolerance(name, shape, to_doubles(actual, c.dtype), reference_values, naive_values,
                                      testing::kGradientFactor, testing::default_atol(c.dtype, reference_values));
    };
    check.dq = report("dq", {c.batch, c.seqlen_q, c.heads_q, d}, dq, ref.dq, naive.dq);
    check.dk = report("dk", {c.batch, c.seqlen_k, c.heads_kv, d}, dk, ref.dk, naive.dk);
    check.dv = report("dv", {c.batch, c.seqlen_k, c.heads_kv, c.head_dim_v}, dv, ref.dv, naive.dv);
    check.rows_checked = check.rows_total;
    check.passed = check.dq.passed && check.dk.passed && check.dv.passed;
    return check;
  }
  const std::set<Row> drawn = sample(c, sample_rows, seed);
  const std::vector<Row> rows(drawn.begin(), drawn.end());
  const std::int64_t count = static_cast<std::int64_t>(rows.size());
  std::vector<reference::DenseBackwardResult> refs(rows.size()), naives(rows.size());
  for_each_row_parallel(count, [&](std::int64_t n) {
    const reference::DenseReferenceInputs sub = row_problem(c, inputs, rows[n]);
    const TensorRef dout = dout_row(c, inputs, rows[n]);
    refs[n] = reference::dense_backward_reference(sub, dout);
    naives[n] = reference::dense_backward_naive_lowp(sub, dout,
                                                     naive_out_view(c, reference::dense_forward_naive_lowp(sub), {1, 1, 1}));
  });
  std::vector<double> actual, reference_values, naive_values;
  for (std::size_t n = 0; n < rows.size(); ++n) {
    const Row& r = rows[n];
    const std::size_t base = static_cast<std::size_t>(((r.b * c.seqlen_q + r.i) * c.heads_q + r.h) * d);
    for (std::int64_t e = 0; e < d; ++e) {
      actual.push_back(to_float(dq[base + static_cast<std::size_t>(e)], c.dtype));
      reference_values.push_back(refs[n].dq[static_cast<std::size_t>(e)]);
      naive_values.push_back(naives[n].dq[static_cast<std::size_t>(e)]);
    }
  }
  check.dq = testing::check_tolerance("dq", {count, d}, actual, reference_values, naive_values,
                                      testing::kGradientFactor, testing::default_atol(c.dtype, reference_values));
  check.rows_checked = count;
  check.passed = check.dq.passed;
  return check;
}

}  // namespace attnkit::cli
