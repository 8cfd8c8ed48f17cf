// Checks a forward result against the float64 reference with quality.md's tolerance rule
//   max|out - ref| <= 2 * max|naive_lowp - ref| + atol
// (naive_lowp: the naive formula in the input precision, reference/dense_reference.h), for o and lse,
// and requires NaN positions to match (the reference has none on finite inputs).
//
// Big problems are checked on a random sample of rows (b, i, h). Each sampled row is computed by the
// reference on an equivalent one-row problem: q row i alone, its kv head alone, and the keys cut to the
// last visible one, so that the bottom-right mask of the one-row problem lands where the full problem's
// does (see one_row_problem() in the .cpp). Small problems are checked whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dense_workload.h"
#include "tests/cases/dense_cases.h"

namespace attnkit::cli {

struct ForwardCheck {
  std::int64_t rows_total = 0;    // B * Sq * Hq
  std::int64_t rows_checked = 0;
  bool whole_problem = false;     // one reference call on the whole problem, not a row sample
  double out_error = 0.0;         // max |out - ref| over the checked rows
  double out_naive_error = 0.0;   // max |naive_lowp - ref|
  double out_tolerance = 0.0;     // 2 * out_naive_error + atol
  double lse_error = 0.0;
  double lse_naive_error = 0.0;
  double lse_tolerance = 0.0;
  std::int64_t nan_mismatches = 0;  // values where exactly one of the result and the reference is NaN
  bool passed = false;
  std::string summary() const;    // two lines: o and lse, each with error, tolerance and the verdict
};

// `out` is [B, Sq, Hq, Dv] in the case's dtype, `lse` [B, Hq, Sq] fp32, both downloaded from the call.
// `sample_rows` <= 0 or >= B * Sq * Hq checks every row; otherwise that many rows, drawn with `seed`,
// plus the first and last row of the first and last head (mask edges).
ForwardCheck check_forward(const cases::DenseCase& c, const HostInputs& inputs, const std::vector<std::uint16_t>& out,
                           const std::vector<float>& lse, std::int64_t sample_rows, std::uint64_t seed);

}  // namespace attnkit::cli
