// The row sampling of `attnkit run` and `attnkit bench` is only as good as its one-row problems: each
// must give exactly the row of the full problem (o, lse, and dq for the same row of dout). Checked here against the
// float64 reference run on the whole problem, for every row, on shapes that move the mask: Sq < Sk and Sq > Sk (rows
// with no key), causal, windows on either side, softcap, sinks, GQA.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "reference_check.h"

namespace attnkit::cli {
namespace {

cases::DenseCase make_case(std::int64_t sq, std::int64_t sk, bool causal, std::int64_t left, std::int64_t right) {
  cases::DenseCase c;
  c.batch = 2;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.head_dim = 16;
  c.head_dim_v = 24;
  c.causal = causal;
  c.window_left = left;
  c.window_right = right;
  c.name = "sq" + std::to_string(sq) + "_sk" + std::to_string(sk) + (causal ? "_causal" : "") + "_w" +
           std::to_string(left) + "," + std::to_string(right);
  return c;
}

// Same value, or both the same infinity (the -inf lse of an empty row).
bool same(double a, double b) { return a == b || std::abs(a - b) <= 1e-12 * std::max(1.0, std::abs(b)); }

void expect_rows_match(const cases::DenseCase& c) {
  SCOPED_TRACE(c.name + (c.sinks ? " sinks" : "") + (c.softcap > 0 ? " softcap" : ""));
  const HostInputs inputs = make_host_inputs(c, 11, true);
  const reference::DenseReferenceInputs whole = reference_problem(c, inputs);
  const reference::DenseForwardResult full = reference::dense_forward_reference(whole);
  const TensorRef dout = TensorRef::contiguous(const_cast<std::uint16_t*>(inputs.dout.data()), c.dtype,
                                               {c.batch, c.seqlen_q, c.heads_q, c.head_dim_v});
  const reference::DenseBackwardResult full_grads = reference::dense_backward_reference(whole, dout);

  int empty_rows = 0;
  for (std::int64_t b = 0; b < c.batch; ++b) {
    for (std::int64_t i = 0; i < c.seqlen_q; ++i) {
      for (std::int64_t h = 0; h < c.heads_q; ++h) {
        const reference::DenseReferenceInputs sub = one_row_problem(c, inputs, b, i, h);
        const reference::DenseForwardResult row = reference::dense_forward_reference(sub);
        const double full_lse = full.lse[static_cast<std::size_t>((b * c.heads_q + h) * c.seqlen_q + i)];
        ASSERT_TRUE(same(row.lse[0], full_lse)) << "lse of row (b, i, h) = (" << b << ", " << i << ", " << h
                                                << "): one-row " << row.lse[0] << ", full " << full_lse;
        empty_rows += std::isinf(full_lse) ? 1 : 0;
        for (std::int64_t e = 0; e < c.head_dim_v; ++e) {
          const double full_out =
              full.out[static_cast<std::size_t>(((b * c.seqlen_q + i) * c.heads_q + h) * c.head_dim_v + e)];
          ASSERT_TRUE(same(row.out[static_cast<std::size_t>(e)], full_out))
              << "o of row (" << b << ", " << i << ", " << h << ") element " << e;
        }
        const std::int64_t row_offset = (b * c.seqlen_q + i) * c.heads_q + h;
        const TensorRef dout_row =
            TensorRef::strided(const_cast<std::uint16_t*>(inputs.dout.data()) + row_offset * c.head_dim_v, c.dtype,
                               {1, 1, 1, c.head_dim_v}, {c.head_dim_v, c.head_dim_v, c.head_dim_v, 1});
        const reference::DenseBackwardResult row_grads = reference::dense_backward_reference(sub, dout_row);
        for (std::int64_t e = 0; e < c.head_dim; ++e) {
          ASSERT_TRUE(same(row_grads.dq[static_cast<std::size_t>(e)],
                           full_grads.dq[static_cast<std::size_t>(row_offset * c.head_dim + e)]))
              << "dq of row (" << b << ", " << i << ", " << h << ") element " << e;
        }
      }
    }
  }
  // Sq > Sk under a causal mask leaves rows with no key: the case must exercise them.
  if (c.causal && c.seqlen_q > c.seqlen_k && !c.sinks) {
    EXPECT_GT(empty_rows, 0);
  }
}

TEST(OneRowProblem, MatchesTheWholeProblemRowByRow) {
  const std::vector<cases::DenseCase> shapes = {
      make_case(9, 9, false, -1, -1), make_case(9, 9, true, -1, -1),   make_case(7, 13, true, -1, -1),
      make_case(13, 7, true, -1, -1), make_case(11, 17, false, 3, 2),  make_case(17, 11, false, 0, 4),
      make_case(12, 12, true, 4, -1), make_case(10, 14, false, -1, 0), make_case(14, 10, false, 2, -1),
      make_case(5, 0, false, -1, -1),
  };
  for (cases::DenseCase c : shapes) {
    expect_rows_match(c);
    c.sinks = true;
    expect_rows_match(c);
    c.sinks = false;
    c.softcap = 5.0f;
    expect_rows_match(c);
  }
}

}  // namespace
}  // namespace attnkit::cli
