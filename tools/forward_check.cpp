#include "forward_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
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

// Unit roundoff of the input dtype: 2^-8 for bf16 (8 significand bits), 2^-11 for fp16 (11 bits).
double unit_roundoff(DType dtype) { return dtype == DType::kBFloat16 ? 0x1.0p-8 : 0x1.0p-11; }

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
reference::DenseReferenceInputs one_row_problem(const cases::DenseCase& c, const HostInputs& inputs, const Row& row) {
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
  sub.options.softcap = c.softcap;
  sub.options.window_left = (left_bounded && kept_keys > 0) ? kept_keys - 1 - lo : -1;
  sub.options.window_right = -1;
  return sub;
}

reference::DenseReferenceInputs whole_problem(const cases::DenseCase& c, const HostInputs& inputs) {
  reference::DenseReferenceInputs whole;
  whole.q = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.q.data()), c.dtype,
                                  {c.batch, c.seqlen_q, c.heads_q, c.head_dim});
  whole.k = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.k.data()), c.dtype,
                                  {c.batch, c.seqlen_k, c.heads_kv, c.head_dim});
  whole.v = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.v.data()), c.dtype,
                                  {c.batch, c.seqlen_k, c.heads_kv, c.head_dim_v});
  if (c.sinks) whole.sinks = TensorRef::contiguous(const_cast<float*>(inputs.sinks.data()), DType::kFloat32, {c.heads_q});
  whole.options = case_options(c, Backend::kAuto);
  return whole;
}

std::set<Row> sample(const cases::DenseCase& c, std::int64_t count, std::uint64_t seed) {
  std::set<Row> rows;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> pick_b(0, c.batch - 1), pick_i(0, c.seqlen_q - 1),
      pick_h(0, c.heads_q - 1);
  const std::int64_t total = c.batch * c.seqlen_q * c.heads_q;
  while (static_cast<std::int64_t>(rows.size()) < std::min(count, total)) rows.insert({pick_b(rng), pick_i(rng), pick_h(rng)});
  for (const std::int64_t b : {std::int64_t{0}, c.batch - 1}) {
    for (const std::int64_t i : {std::int64_t{0}, c.seqlen_q - 1}) {
      for (const std::int64_t h : {std::int64_t{0}, c.heads_q - 1}) rows.insert({b, i, h});
    }
  }
  return rows;
}

// Running maxima of |x - ref| over compared values; NaN in exactly one of them is a mismatch.
struct ErrorTally {
  double error = 0.0;
  double naive_error = 0.0;
  double ref_magnitude = 0.0;
  std::int64_t nan_mismatches = 0;

  void add(double result, double naive, double ref) {
    if (std::isnan(result) != std::isnan(ref)) {
      ++nan_mismatches;
      return;
    }
    if (std::isnan(ref)) return;
    // Infinities (the -inf lse of an empty row) must match exactly; any other pairing is an unbounded
    // error, counted for the result and the naive formula each on its own.
    error = std::max(error, distance(result, ref));
    naive_error = std::max(naive_error, distance(naive, ref));
    if (std::isfinite(ref)) ref_magnitude = std::max(ref_magnitude, std::abs(ref));
  }

  static double distance(double x, double ref) {
    if (std::isinf(x) || std::isinf(ref)) return x == ref ? 0.0 : std::numeric_limits<double>::infinity();
    return std::abs(x - ref);
  }
};

}  // namespace

std::string ForwardCheck::summary() const {
  char text[512];
  std::snprintf(text, sizeof(text),
                "o:   max|err| %.3e  tolerance %.3e (2 x naive %.3e + atol)  %s\n"
                "lse: max|err| %.3e  tolerance %.3e (2 x naive %.3e + atol)  %s",
                out_error, out_tolerance, out_naive_error, out_error <= out_tolerance ? "ok" : "FAIL",
                lse_error, lse_tolerance, lse_naive_error, lse_error <= lse_tolerance ? "ok" : "FAIL");
  std::string result = text;
  if (nan_mismatches > 0) result += "\nNaN where the reference has none (or the reverse): " + std::to_string(nan_mismatches);
  return result;
}

ForwardCheck check_forward(const cases::DenseCase& c, const HostInputs& inputs, const std::vector<std::uint16_t>& out,
                           const std::vector<float>& lse, std::int64_t sample_rows, std::uint64_t seed) {
  ForwardCheck check;
  check.rows_total = c.batch * c.seqlen_q * c.heads_q;
  check.whole_problem = sample_rows <= 0 || sample_rows >= check.rows_total;
  if (check.rows_total == 0) {
    check.passed = true;  // nothing was computed, so nothing can be wrong
    return check;
  }
  ErrorTally out_tally;
  ErrorTally lse_tally;
  const std::int64_t dv = c.head_dim_v;
  auto out_at = [&](const Row& r, std::int64_t e) {
    return static_cast<double>(to_float(out[static_cast<std::size_t>(((r.b * c.seqlen_q + r.i) * c.heads_q + r.h) * dv + e)], c.dtype));
  };
  auto lse_at = [&](const Row& r) {
    return static_cast<double>(lse[static_cast<std::size_t>((r.b * c.heads_q + r.h) * c.seqlen_q + r.i)]);
  };

  if (check.whole_problem) {
    const reference::DenseReferenceInputs whole = whole_problem(c, inputs);
    const reference::DenseForwardResult ref = reference::dense_forward_reference(whole);
    const reference::DenseForwardResult naive = reference::dense_forward_naive_lowp(whole);
    for (std::int64_t b = 0; b < c.batch; ++b) {
      for (std::int64_t i = 0; i < c.seqlen_q; ++i) {
        for (std::int64_t h = 0; h < c.heads_q; ++h) {
          const Row r{b, i, h};
          const std::size_t row_base = static_cast<std::size_t>(((b * c.seqlen_q + i) * c.heads_q + h) * dv);
          for (std::int64_t e = 0; e < dv; ++e) out_tally.add(out_at(r, e), naive.out[row_base + e], ref.out[row_base + e]);
          const std::size_t lse_index = static_cast<std::size_t>((b * c.heads_q + h) * c.seqlen_q + i);
          lse_tally.add(lse_at(r), naive.lse[lse_index], ref.lse[lse_index]);
        }
      }
    }
    check.rows_checked = check.rows_total;
  } else {
    for (const Row& r : sample(c, sample_rows, seed)) {
      const reference::DenseReferenceInputs sub = one_row_problem(c, inputs, r);
      const reference::DenseForwardResult ref = reference::dense_forward_reference(sub);
      const reference::DenseForwardResult naive = reference::dense_forward_naive_lowp(sub);
      for (std::int64_t e = 0; e < dv; ++e) out_tally.add(out_at(r, e), naive.out[e], ref.out[e]);
      lse_tally.add(lse_at(r), naive.lse[0], ref.lse[0]);
      ++check.rows_checked;
    }
  }

  // atol: one unit roundoff of the dtype at the output's magnitude (the rounding of o itself), and for
  // the fp32 lse one fp32 unit roundoff at its magnitude; both only matter where the naive error is ~0.
  const double out_atol = unit_roundoff(c.dtype) * std::max(1.0, out_tally.ref_magnitude);
  const double lse_atol = 0x1.0p-24 * std::max(1.0, lse_tally.ref_magnitude);
  check.out_error = out_tally.error;
  check.out_naive_error = out_tally.naive_error;
  check.out_tolerance = 2.0 * out_tally.naive_error + out_atol;
  check.lse_error = lse_tally.error;
  check.lse_naive_error = lse_tally.naive_error;
  check.lse_tolerance = 2.0 * lse_tally.naive_error + lse_atol;
  check.nan_mismatches = out_tally.nan_mismatches + lse_tally.nan_mismatches;
  check.passed = check.nan_mismatches == 0 && check.out_error <= check.out_tolerance &&
                 check.lse_error <= check.lse_tolerance;
  return check;
}

}  // namespace attnkit::cli
