// The accuracy rule of quality.md, with a report a person can act on:
//   max|out - ref| <= factor * max|naive_lowp - ref| + atol     (factor 2 for outputs, 3 for gradients)
// over the elements where the reference is finite; where the reference is not finite (the -inf lse of
// an empty row) the value must be exactly the same; a NaN or infinity where the reference is finite fails.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/types.h"

namespace attnkit::testing {

constexpr double kOutputFactor = 2.0;
constexpr double kGradientFactor = 3.0;

// atol: rounding noise at the values' magnitude,
//   atol = 2 u_stored max(1, max|ref|)  +  16 u_fp32 max(1, max|s|) max(1, term_magnitude)
//   2 u_stored:  one ulp of the stored dtype (u = 2^-8 bf16, 2^-11 fp16, 2^-24 fp32) at the tensor's own
//                magnitude; rounding the result into its dtype alone costs up to half of that.
//   16 u_fp32:   fp32 accumulation noise of sums of a few hundred terms (about sqrt(256) roundoffs),
//                which the naive formula can miss: a row with one visible key has p = 1 exactly in the
//                naive formula and dq = 0 exactly, while an exp2-based kernel gets p = 1 - 2^-24 and
//                dq ~ 1e-7 per row, summed into dk over every row that sees the key.
//   max|s|:      the largest visible score; rounding a score of magnitude |s| (or |s| log2 e) moves
//                p = exp(s - lse) by about u |s| relative, so that noise grows with the scores.
//   term_magnitude: the magnitude of the terms that meet in the sums, where the result can cancel far
//                below them: for dq, dk and dv the largest of the three references (default: max|ref|).
//   The floors 1: inputs are drawn with unit variance, so 1 is the magnitude of the terms in every sum.
double default_atol(DType stored_dtype, const std::vector<double>& reference, double max_abs_score = 1.0,
                    double term_magnitude = 0.0);

// max |x| over the finite elements (0 when there are none).
double max_abs_finite(const std::vector<double>& values);

struct ToleranceReport {
  std::string name;
  bool passed = true;
  std::int64_t elements = 0;
  double max_error = 0.0;       // max |actual - ref| over finite reference elements
  double naive_error = 0.0;     // max |naive - ref| over the same elements
  double factor = 0.0;
  double atol = 0.0;
  double bound = 0.0;           // factor * naive_error + atol
  std::int64_t worst_index = -1;  // row-major index of max_error
  double worst_actual = 0.0;
  double worst_reference = 0.0;
  std::int64_t nonfinite_mismatches = 0;  // NaN/inf where the reference is finite, or a wrong non-finite
  std::int64_t first_nonfinite_mismatch = -1;
  std::vector<std::int64_t> shape;  // logical shape, to print indices as (b, s, h, d)
  std::string text() const;         // one line (two on failure) with every number above
};

// `actual`, `reference` and `naive` hold the same logical tensor in row-major order of `shape`.
ToleranceReport check_tolerance(const std::string& name, const std::vector<std::int64_t>& shape,
                                const std::vector<double>& actual, const std::vector<double>& reference,
                                const std::vector<double>& naive, double factor, double atol);

// "(1, 16, 3, 40)" for row-major `index` in `shape`.
std::string format_index(std::int64_t index, const std::vector<std::int64_t>& shape);

}  // namespace attnkit::testing
