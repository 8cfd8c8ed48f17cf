// Checks results of the tool's calls against the float64 reference with quality.md's tolerance rule,
// through the test suite's own implementation of it (tests/cpp/support/tolerance.h: factor 2 for o and
// lse, 3 for gradients; atol one ulp of the stored dtype at the reference's magnitude; non-finite values
// must match exactly).
//
// Big problems are checked on a random sample of rows (b, i, h). Each sampled row is computed by the
// reference on an equivalent one-row problem: q row i alone, its kv head alone, and the keys cut to the
// last visible one, so that the bottom-right mask of the one-row problem lands where the full problem's
// does (see row_problem() in the .cpp). A row's o, lse and dq depend on that row's problem only, so all
// three can be sampled; dk and dv sum over every query and are checked only when the problem is checked
// whole. Small problems are checked whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dense_workload.h"
#include "reference/dense_reference.h"
#include "tests/cases/dense_cases.h"
#include "tests/cpp/support/tolerance.h"

namespace attnkit::cli {

struct ForwardCheck {
  std::int64_t rows_total = 0;  // B * Sq * Hq
  std::int64_t rows_checked = 0;
  bool whole_problem = false;  // one reference call on the whole problem, not a row sample
  // Sampled: shapes (rows_checked, Dv) and (rows_checked); worst_row names the row of the worst o error.
  testing::ToleranceReport out;
  testing::ToleranceReport lse;
  std::string worst_row;  // "(b, i, h)" of the largest o error, for a sample
  bool passed = false;
  std::string summary() const;  // the two reports, one line each (more on failure)
};

// `out` is [B, Sq, Hq, Dv] in the case's dtype, `lse` [B, Hq, Sq] fp32, both downloaded from the call.
// `sample_rows` <= 0 or >= B * Sq * Hq checks every row; otherwise that many rows, drawn with `seed`,
// plus the first and last row of the first and last head of the first and last batch (mask edges).
ForwardCheck check_forward(const cases::DenseCase& c, const HostInputs& inputs, const std::vector<std::uint16_t>& out,
                           const std::vector<float>& lse, std::int64_t sample_rows, std::uint64_t seed);

struct BackwardCheck {
  std::int64_t rows_total = 0;
  std::int64_t rows_checked = 0;
  bool whole_problem = false;           // dq, dk and dv checked in full; otherwise dq of the sampled rows only
  testing::ToleranceReport dq, dk, dv;  // dk and dv: only when whole_problem
  bool passed = false;
  std::string summary() const;
};

// `dq` [B, Sq, Hq, D], `dk` [B, Sk, Hkv, D], `dv` [B, Sk, Hkv, Dv] in the case's dtype, downloaded after a
// backward of the loss sum(dout * o) with inputs.dout; rows as check_forward().
BackwardCheck check_backward(const cases::DenseCase& c, const HostInputs& inputs, const std::vector<std::uint16_t>& dq,
                             const std::vector<std::uint16_t>& dk, const std::vector<std::uint16_t>& dv,
                             std::int64_t sample_rows, std::uint64_t seed);

// The one-row problem of row (b, i, h) of `c` over `inputs`: its single output row and lse equal row
// (b, i, h) of the full problem. Exposed for its test.
// The whole case as reference inputs over the host buffers (BSHD, contiguous), with the case's options.
reference::DenseReferenceInputs reference_problem(const cases::DenseCase& c, const HostInputs& inputs);

reference::DenseReferenceInputs one_row_problem(const cases::DenseCase& c, const HostInputs& inputs, std::int64_t b,
                                                std::int64_t i, std::int64_t h);

}  // namespace attnkit::cli
