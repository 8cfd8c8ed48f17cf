#include "tests/cpp/support/tolerance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace attnkit::testing {

double max_abs_finite(const std::vector<double>& values) {
  double magnitude = 0.0;
  for (double value : values) {
    if (std::isfinite(value)) magnitude = std::max(magnitude, std::abs(value));
  }
  return magnitude;
}

double default_atol(DType stored_dtype, const std::vector<double>& reference, double max_abs_score,
                    double term_magnitude) {
  double unit_roundoff = 0.0;
  switch (stored_dtype) {
    case DType::kBFloat16: unit_roundoff = std::ldexp(1.0, -8); break;
    case DType::kFloat16: unit_roundoff = std::ldexp(1.0, -11); break;
    case DType::kFloat32: unit_roundoff = std::ldexp(1.0, -24); break;
    case DType::kFloat64: unit_roundoff = std::ldexp(1.0, -53); break;
    case DType::kInt32: throw std::invalid_argument("default_atol: int32 has no roundoff");
  }
  const double own_magnitude = std::max(1.0, max_abs_finite(reference));
  const double terms = std::max({1.0, own_magnitude, term_magnitude});
  return 2.0 * unit_roundoff * own_magnitude + 16.0 * std::ldexp(1.0, -24) * std::max(1.0, max_abs_score) * terms;
}

std::string format_index(std::int64_t index, const std::vector<std::int64_t>& shape) {
  if (index < 0) return "-";
  std::vector<std::int64_t> coordinates(shape.size());
  for (std::size_t axis = shape.size(); axis-- > 0;) {
    const std::int64_t extent = shape[axis] > 0 ? shape[axis] : 1;
    coordinates[axis] = index % extent;
    index /= extent;
  }
  std::string text = "(";
  for (std::size_t axis = 0; axis < coordinates.size(); ++axis) {
    if (axis > 0) text += ", ";
    text += std::to_string(coordinates[axis]);
  }
  return text + ")";
}

ToleranceReport check_tolerance(const std::string& name, const std::vector<std::int64_t>& shape,
                                const std::vector<double>& actual, const std::vector<double>& reference,
                                const std::vector<double>& naive, double factor, double atol) {
  if (actual.size() != reference.size() || naive.size() != reference.size()) {
    throw std::invalid_argument("check_tolerance(" + name + "): sizes differ: actual " + std::to_string(actual.size()) +
                                ", reference " + std::to_string(reference.size()) + ", naive " +
                                std::to_string(naive.size()));
  }
  ToleranceReport r;
  r.name = name;
  r.shape = shape;
  r.factor = factor;
  r.atol = atol;
  r.elements = static_cast<std::int64_t>(reference.size());
  for (std::size_t e = 0; e < reference.size(); ++e) {
    const double ref = reference[e];
    const double value = actual[e];
    if (!std::isfinite(ref)) {
      // Only -inf lse of empty rows is expected here; it must come back exactly.
      if (!(value == ref)) {
        if (r.nonfinite_mismatches++ == 0) r.first_nonfinite_mismatch = static_cast<std::int64_t>(e);
      }
      continue;
    }
    if (!std::isfinite(value)) {
      if (r.nonfinite_mismatches++ == 0) r.first_nonfinite_mismatch = static_cast<std::int64_t>(e);
      continue;
    }
    const double error = std::abs(value - ref);
    if (error > r.max_error || r.worst_index < 0) {
      r.max_error = error;
      r.worst_index = static_cast<std::int64_t>(e);
      r.worst_actual = value;
      r.worst_reference = ref;
    }
    if (std::isfinite(naive[e])) r.naive_error = std::max(r.naive_error, std::abs(naive[e] - ref));
  }
  r.bound = factor * r.naive_error + atol;
  r.passed = r.nonfinite_mismatches == 0 && r.max_error <= r.bound;
  return r;
}

std::string ToleranceReport::text() const {
  char line[512];
  std::snprintf(line, sizeof(line),
                "%-6s %s: max|err| %.3e %s bound %.3e (= %.0f x naive %.3e + atol %.3e) over %lld elements",
                name.c_str(), passed ? "ok  " : "FAIL", max_error, max_error <= bound ? "<=" : ">", bound, factor,
                naive_error, atol,
                static_cast<long long>(elements));
  std::string text = line;
  if (!passed || max_error > 0.0) {
    std::snprintf(line, sizeof(line), "; worst at %s: got %.9g, reference %.9g", format_index(worst_index, shape).c_str(),
                  worst_actual, worst_reference);
    text += line;
  }
  if (nonfinite_mismatches > 0) {
    text += "\n       " + std::to_string(nonfinite_mismatches) +
            " non-finite mismatches (NaN/inf where the reference is finite, or a wrong -inf), first at " +
            format_index(first_nonfinite_mismatch, shape);
  }
  return text;
}

}  // namespace attnkit::testing
