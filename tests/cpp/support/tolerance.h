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

// atol: two units of roundoff of the stored dtype at the largest reference magnitude, i.e. one ulp;
// rounding the result into its dtype alone costs up to half of that. u = 2^-8 (bf16), 2^-11 (fp16),
// 2^-24 (fp32), 2^-53 (fp64). A reference that is all zeros gets atol = 0: the result must be exact.
double default_atol(DType stored_dtype, const std::vector<double>& reference);

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
