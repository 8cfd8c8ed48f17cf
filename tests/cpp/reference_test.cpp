// Tests of the float64 references themselves: numbers computed by hand, finite differences of the
// backward, and invariants that tie the pieces together (GQA, key splitting + merge, causal rows,
// empty rows, strides and dtypes, varlen vs BSHD). A reference is only as good as these tests.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "attnkit/numeric.h"
#include "reference/dense_reference.h"
#include "tests/cases/splitmix64.h"

namespace attnkit::reference {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A float64 problem on the host with contiguous storage, BSHD or varlen.
struct Problem {
  std::int64_t batch = 1, seqlen_q = 1, seqlen_k = 1, heads_q = 1, heads_kv = 1, dim = 1, dim_v = 1;
  std::vector<std::int32_t> varlen_q, varlen_k;  // varlen when non-empty
  std::vector<double> q, k, v, sinks, dout;
  std::vector<std::int32_t> cu_q, cu_k;
  DenseOptions options;

  bool varlen() const { return !varlen_q.empty(); }
  std::int64_t rows_q() const { return varlen() ? cu_q.back() : batch * seqlen_q; }
  std::int64_t rows_k() const { return varlen() ? cu_k.back() : batch * seqlen_k; }

  // Sizes the tensors; fills them with values from `seed` (normal-ish, never zero) when seed != 0.
  void allocate(std::uint64_t seed) {
    if (varlen()) {
      cu_q = {0};
      cu_k = {0};
      for (std::size_t n = 0; n < varlen_q.size(); ++n) {
        cu_q.push_back(cu_q.back() + varlen_q[n]);
        cu_k.push_back(cu_k.back() + varlen_k[n]);
      }
    }
    q.assign(static_cast<std::size_t>(rows_q() * heads_q * dim), 0.0);
    k.assign(static_cast<std::size_t>(rows_k() * heads_kv * dim), 0.0);
    v.assign(static_cast<std::size_t>(rows_k() * heads_kv * dim_v), 0.0);
    dout.assign(static_cast<std::size_t>(rows_q() * heads_q * dim_v), 0.0);
    if (seed == 0) return;
    cases::SplitMix64 rng(seed);
    for (auto* values : {&q, &k, &v, &dout, &sinks}) {
      for (double& x : *values) x = (rng.uniform01() + rng.uniform01() + rng.uniform01()) - 1.5 + 1e-3;
    }
  }

  TensorRef view(std::vector<double>& values, std::int64_t heads, std::int64_t width) {
    if (varlen()) {
      const std::int64_t rows = static_cast<std::int64_t>(values.size()) / (heads * width);
      return TensorRef::contiguous(values.data(), DType::kFloat64, {rows, heads, width});
    }
    const std::int64_t rows = static_cast<std::int64_t>(values.size()) / (batch * heads * width);
    return TensorRef::contiguous(values.data(), DType::kFloat64, {batch, rows, heads, width});
  }

  DenseReferenceInputs inputs() {
    DenseReferenceInputs in;
    in.q = view(q, heads_q, dim);
    in.k = view(k, heads_kv, dim);
    in.v = view(v, heads_kv, dim_v);
    if (!sinks.empty()) in.sinks = TensorRef::contiguous(sinks.data(), DType::kFloat64, {heads_q});
    if (varlen()) {
      in.cu_seqlens_q = TensorRef::contiguous(cu_q.data(), DType::kInt32, {static_cast<std::int64_t>(cu_q.size())});
      in.cu_seqlens_k = TensorRef::contiguous(cu_k.data(), DType::kInt32, {static_cast<std::int64_t>(cu_k.size())});
    }
    in.options = options;
    return in;
  }
  TensorRef dout_view() { return view(dout, heads_q, dim_v); }
};

Problem tiny(std::int64_t seqlen_q, std::int64_t seqlen_k) {
  Problem p;
  p.seqlen_q = seqlen_q;
  p.seqlen_k = seqlen_k;
  p.options.scale = 1.0f;
  p.allocate(0);
  return p;
}

// ---- the mask ------------------------------------------------------------------------------------

TEST(ReferenceMask, BottomRightCausalAndWindows) {
  // Sq = 2, Sk = 5, causal: the diagonal is j = i + 3, so row 0 sees keys 0..3 and row 1 sees 0..4.
  for (std::int64_t j = 0; j < 5; ++j) {
    EXPECT_EQ(reference_key_visible(0, j, 2, 5, -1, -1, true), j <= 3) << j;
    EXPECT_TRUE(reference_key_visible(1, j, 2, 5, -1, -1, true)) << j;
  }
  // Sq = 4, Sk = 2, causal: the diagonal is j = i - 2: rows 0 and 1 see nothing, row 2 sees key 0.
  for (std::int64_t j = 0; j < 2; ++j) {
    EXPECT_FALSE(reference_key_visible(0, j, 4, 2, -1, -1, true));
    EXPECT_FALSE(reference_key_visible(1, j, 4, 2, -1, -1, true));
    EXPECT_EQ(reference_key_visible(2, j, 4, 2, -1, -1, true), j == 0);
    EXPECT_TRUE(reference_key_visible(3, j, 4, 2, -1, -1, true));
  }
  // Window (1, 2) with Sq = Sk = 6: row 3 sees keys 2..5.
  for (std::int64_t j = 0; j < 6; ++j) EXPECT_EQ(reference_key_visible(3, j, 6, 6, 1, 2, false), j >= 2 && j <= 5) << j;
  // Window (0, 0): the diagonal only. Causal overrides window_right.
  for (std::int64_t j = 0; j < 6; ++j) {
    EXPECT_EQ(reference_key_visible(4, j, 6, 6, 0, 0, false), j == 4) << j;
    EXPECT_EQ(reference_key_visible(4, j, 6, 6, 2, -1, true), j >= 2 && j <= 4) << j;
  }
  // Out of range indices are never visible.
  EXPECT_FALSE(reference_key_visible(0, 5, 6, 5, -1, -1, false));
  EXPECT_FALSE(reference_key_visible(0, -1, 6, 5, -1, -1, false));
}

// ---- hand-computed numbers ----------------------------------------------------------------------

TEST(ReferenceForward, OneQueryOneKey) {
  Problem p = tiny(1, 1);
  p.q = {2.0};
  p.k = {3.0};
  p.v = {5.0};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  EXPECT_DOUBLE_EQ(r.out[0], 5.0);
  EXPECT_DOUBLE_EQ(r.lse[0], 6.0);  // log(exp(2 * 3))
}

TEST(ReferenceForward, TwoKeysKnownProbabilities) {
  // Scores 0 and log 3: probabilities 1/4 and 3/4; o = 4/4 + 3 * 8/4 = 7; lse = log 4.
  Problem p = tiny(1, 2);
  p.q = {1.0};
  p.k = {0.0, std::log(3.0)};
  p.v = {4.0, 8.0};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  EXPECT_NEAR(r.out[0], 7.0, 1e-14);
  EXPECT_NEAR(r.lse[0], std::log(4.0), 1e-14);
}

TEST(ReferenceForward, DefaultScaleIsInverseSqrtD) {
  // D = 4, q = k = (1, 1, 1, 1): <q, k> = 4, scale 1/2, so the score is 2 and lse = 2.
  Problem p;
  p.dim = 4;
  p.allocate(0);
  p.q = {1, 1, 1, 1};
  p.k = {1, 1, 1, 1};
  p.v = {9.0};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  EXPECT_DOUBLE_EQ(r.lse[0], 2.0);
  EXPECT_DOUBLE_EQ(r.out[0], 9.0);
}

TEST(ReferenceForward, CausalTwoByTwo) {
  // Row 0 sees key 0 only (o = 4, lse = 0); row 1 sees both keys (o = 7, lse = log 4).
  Problem p = tiny(2, 2);
  p.options.causal = true;
  p.q = {1.0, 1.0};
  p.k = {0.0, std::log(3.0)};
  p.v = {4.0, 8.0};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  EXPECT_NEAR(r.out[0], 4.0, 1e-14);
  EXPECT_NEAR(r.lse[0], 0.0, 1e-14);
  EXPECT_NEAR(r.out[1], 7.0, 1e-14);
  EXPECT_NEAR(r.lse[1], std::log(4.0), 1e-14);
}

TEST(ReferenceForward, SinkJoinsTheDenominatorOnly) {
  // One key with score 0 and a sink of log 3: denominator 1 + 3, o = 8 / 4, lse = log 4.
  Problem p = tiny(1, 1);
  p.q = {1.0};
  p.k = {0.0};
  p.v = {8.0};
  p.sinks = {std::log(3.0)};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  EXPECT_NEAR(r.out[0], 2.0, 1e-14);
  EXPECT_NEAR(r.lse[0], std::log(4.0), 1e-14);
}

TEST(ReferenceForward, SoftcapAfterScale) {
  // x = scale * <q, k> = 0.5 * 4 = 2 and 0, cap 1: s = tanh(2) and 0.
  Problem p = tiny(1, 2);
  p.options.scale = 0.5f;
  p.options.softcap = 1.0f;
  p.q = {2.0};
  p.k = {2.0, 0.0};
  p.v = {1.0, 3.0};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  const double e = std::exp(std::tanh(2.0));
  EXPECT_NEAR(r.lse[0], std::log(e + 1.0), 1e-14);
  EXPECT_NEAR(r.out[0], (e * 1.0 + 3.0) / (e + 1.0), 1e-14);
}

TEST(ReferenceForward, EmptyRowsAreZeroAndMinusInfinity) {
  // Causal with Sq = 3 > Sk = 1: rows 0 and 1 see no key.
  Problem p = tiny(3, 1);
  p.options.causal = true;
  p.q = {1.0, 1.0, 1.0};
  p.k = {0.5};
  p.v = {6.0};
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  for (int row : {0, 1}) {
    EXPECT_EQ(r.out[row], 0.0);
    EXPECT_EQ(r.lse[row], -kInf);
  }
  EXPECT_DOUBLE_EQ(r.out[2], 6.0);
  EXPECT_DOUBLE_EQ(r.lse[2], 0.5);
  // With a sink, an empty row still has o = 0 but lse = sink.
  p.sinks = {0.25};
  const DenseForwardResult s = dense_forward_reference(p.inputs());
  EXPECT_EQ(s.out[0], 0.0);
  EXPECT_DOUBLE_EQ(s.lse[0], 0.25);
}

TEST(ReferenceForward, NoKeysAtAll) {
  Problem p;
  p.seqlen_q = 4;
  p.seqlen_k = 0;
  p.heads_q = 2;
  p.dim = 3;
  p.dim_v = 2;
  p.allocate(7);
  const DenseForwardResult r = dense_forward_reference(p.inputs());
  ASSERT_EQ(r.out.size(), 16u);
  for (double x : r.out) EXPECT_EQ(x, 0.0);
  for (double x : r.lse) EXPECT_EQ(x, -kInf);
  const DenseBackwardResult g = dense_backward_reference(p.inputs(), p.dout_view());
  for (double x : g.dq) EXPECT_EQ(x, 0.0);
  EXPECT_TRUE(g.dk.empty());
  EXPECT_TRUE(g.dv.empty());
}

TEST(ReferenceMerge, KnownNumbersAndEmptyStates) {
  std::vector<double> o, lse;
  // Weights 1 and 3: o = (1 * 1 + 3 * 3) / 4 = 2.5, lse = log 4. Then one empty side, then both.
  merge_states_reference({1.0, 7.0, 0.0}, {0.0, -kInf, -kInf}, {3.0, 3.0, 0.0}, {std::log(3.0), 2.0, -kInf}, 1, &o, &lse);
  EXPECT_NEAR(o[0], 2.5, 1e-14);
  EXPECT_NEAR(lse[0], std::log(4.0), 1e-14);
  EXPECT_DOUBLE_EQ(o[1], 3.0);
  EXPECT_DOUBLE_EQ(lse[1], 2.0);
  EXPECT_EQ(o[2], 0.0);
  EXPECT_EQ(lse[2], -kInf);
}

// ---- finite differences of the backward ---------------------------------------------------------

// L = sum(dout * out); checks every component of dq, dk, dv, dsinks against central differences.
void expect_gradients_match_finite_differences(Problem p) {
  const DenseBackwardResult analytic = dense_backward_reference(p.inputs(), p.dout_view());
  auto loss = [&]() {
    const DenseForwardResult r = dense_forward_reference(p.inputs());
    double total = 0.0;
    for (std::size_t e = 0; e < r.out.size(); ++e) total += r.out[e] * p.dout[e];
    return total;
  };
  // h = 1e-5: truncation error ~h^2 * f''' ~ 1e-10, rounding ~eps / h ~ 1e-11.
  constexpr double h = 1e-5;
  auto check = [&](const char* name, std::vector<double>& values, const std::vector<double>& gradient) {
    ASSERT_EQ(values.size(), gradient.size()) << name;
    double scale = 1.0;
    for (double g : gradient) scale = std::max(scale, std::abs(g));
    for (std::size_t e = 0; e < values.size(); ++e) {
      const double saved = values[e];
      values[e] = saved + h;
      const double up = loss();
      values[e] = saved - h;
      const double down = loss();
      values[e] = saved;
      EXPECT_NEAR(gradient[e], (up - down) / (2 * h), 1e-7 * scale) << name << "[" << e << "]";
    }
  };
  check("dq", p.q, analytic.dq);
  check("dk", p.k, analytic.dk);
  check("dv", p.v, analytic.dv);
  if (!p.sinks.empty()) check("dsinks", p.sinks, analytic.dsinks);
  double magnitude = 0.0;
  for (double g : analytic.dq) magnitude = std::max(magnitude, std::abs(g));
  EXPECT_GT(magnitude, 1e-3) << "the gradient must not be trivially zero";
}

TEST(ReferenceBackward, FiniteDifferencesPlain) {
  Problem p;
  p.seqlen_q = 3;
  p.seqlen_k = 4;
  p.heads_q = 2;
  p.heads_kv = 2;
  p.dim = 3;
  p.dim_v = 2;
  p.allocate(11);
  expect_gradients_match_finite_differences(p);
}

TEST(ReferenceBackward, FiniteDifferencesGqaCausalSqGreaterThanSk) {
  Problem p;
  p.batch = 2;
  p.seqlen_q = 5;
  p.seqlen_k = 3;
  p.heads_q = 4;
  p.heads_kv = 2;
  p.dim = 2;
  p.dim_v = 3;
  p.options.causal = true;  // rows 0 and 1 see nothing
  p.allocate(12);
  expect_gradients_match_finite_differences(p);
}

TEST(ReferenceBackward, FiniteDifferencesSoftcapWindowScale) {
  Problem p;
  p.seqlen_q = 5;
  p.seqlen_k = 6;
  p.heads_q = 2;
  p.heads_kv = 1;
  p.dim = 3;
  p.dim_v = 3;
  p.options.softcap = 0.7f;  // strong: most scores are in the curved part of tanh
  p.options.scale = 1.3f;
  p.options.window_left = 2;
  p.options.window_right = 1;
  p.allocate(13);
  expect_gradients_match_finite_differences(p);
}

TEST(ReferenceBackward, FiniteDifferencesSinksVarlenWithEmptySequences) {
  Problem p;
  p.varlen_q = {3, 0, 2, 2};
  p.varlen_k = {4, 2, 0, 3};
  p.heads_q = 2;
  p.heads_kv = 1;
  p.dim = 2;
  p.dim_v = 2;
  p.sinks.assign(2, 0.0);
  p.options.causal = true;
  p.allocate(14);
  expect_gradients_match_finite_differences(p);
}

// ---- invariants ---------------------------------------------------------------------------------

void expect_near_all(const std::vector<double>& a, const std::vector<double>& b, double tolerance, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t e = 0; e < a.size(); ++e) {
    if (std::isinf(a[e]) || std::isinf(b[e])) {
      EXPECT_EQ(a[e], b[e]) << what << "[" << e << "]";
    } else {
      EXPECT_NEAR(a[e], b[e], tolerance) << what << "[" << e << "]";
    }
  }
}

TEST(ReferenceInvariants, GqaEqualsRepeatedKvHeads) {
  Problem gqa;
  gqa.batch = 2;
  gqa.seqlen_q = 5;
  gqa.seqlen_k = 7;
  gqa.heads_q = 6;
  gqa.heads_kv = 2;  // G = 3
  gqa.dim = 4;
  gqa.dim_v = 3;
  gqa.options.causal = true;
  gqa.allocate(21);
  Problem mha = gqa;
  mha.heads_kv = 6;
  mha.allocate(0);
  mha.dout = gqa.dout;
  mha.q = gqa.q;
  const std::int64_t rows = gqa.batch * gqa.seqlen_k;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t h = 0; h < 6; ++h) {
      for (std::int64_t d = 0; d < 4; ++d) mha.k[(r * 6 + h) * 4 + d] = gqa.k[(r * 2 + h / 3) * 4 + d];
      for (std::int64_t d = 0; d < 3; ++d) mha.v[(r * 6 + h) * 3 + d] = gqa.v[(r * 2 + h / 3) * 3 + d];
    }
  }
  const DenseForwardResult a = dense_forward_reference(gqa.inputs());
  const DenseForwardResult b = dense_forward_reference(mha.inputs());
  expect_near_all(a.out, b.out, 1e-14, "out");
  expect_near_all(a.lse, b.lse, 1e-14, "lse");
  // dk/dv of a kv head are the sums over its query heads of the repeated heads' gradients.
  const DenseBackwardResult ga = dense_backward_reference(gqa.inputs(), gqa.dout_view());
  const DenseBackwardResult gb = dense_backward_reference(mha.inputs(), mha.dout_view());
  expect_near_all(ga.dq, gb.dq, 1e-13, "dq");
  std::vector<double> summed_dk(ga.dk.size(), 0.0), summed_dv(ga.dv.size(), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t h = 0; h < 6; ++h) {
      for (std::int64_t d = 0; d < 4; ++d) summed_dk[(r * 2 + h / 3) * 4 + d] += gb.dk[(r * 6 + h) * 4 + d];
      for (std::int64_t d = 0; d < 3; ++d) summed_dv[(r * 2 + h / 3) * 3 + d] += gb.dv[(r * 6 + h) * 3 + d];
    }
  }
  expect_near_all(ga.dk, summed_dk, 1e-13, "dk");
  expect_near_all(ga.dv, summed_dv, 1e-13, "dv");
}

// Attention over all keys = merge of attention over the first `split` keys and over the rest.
TEST(ReferenceInvariants, SplittingKeysAndMergingEqualsTheWhole) {
  Problem whole;
  whole.seqlen_q = 4;
  whole.seqlen_k = 9;
  whole.heads_q = 2;
  whole.dim = 3;
  whole.dim_v = 5;
  whole.heads_kv = 2;
  whole.options.softcap = 2.0f;
  whole.allocate(31);
  const DenseForwardResult all = dense_forward_reference(whole.inputs());
  for (std::int64_t split : {0, 4, 9}) {  // 0 and 9: one side is an empty state (lse = -inf)
    auto part = [&](std::int64_t first, std::int64_t count) {
      Problem p = whole;
      p.seqlen_k = count;
      p.allocate(0);
      p.q = whole.q;
      for (std::int64_t j = 0; j < count; ++j) {
        for (std::int64_t e = 0; e < 2 * 3; ++e) p.k[j * 6 + e] = whole.k[(first + j) * 6 + e];
        for (std::int64_t e = 0; e < 2 * 5; ++e) p.v[j * 10 + e] = whole.v[(first + j) * 10 + e];
      }
      return dense_forward_reference(p.inputs());
    };
    const DenseForwardResult a = part(0, split);
    const DenseForwardResult b = part(split, 9 - split);
    // The merge works on rows of [rows, Dv] with lse [rows]; lse here is [B, Hq, Sq], out [B, Sq, Hq, Dv].
    auto to_rows = [&](const DenseForwardResult& r, std::vector<double>* lse_rows) {
      lse_rows->assign(8, 0.0);
      for (std::int64_t i = 0; i < 4; ++i) {
        for (std::int64_t h = 0; h < 2; ++h) (*lse_rows)[i * 2 + h] = r.lse[h * 4 + i];
      }
    };
    std::vector<double> lse_a, lse_b, lse_all, merged_o, merged_lse;
    to_rows(a, &lse_a);
    to_rows(b, &lse_b);
    to_rows(all, &lse_all);
    merge_states_reference(a.out, lse_a, b.out, lse_b, 5, &merged_o, &merged_lse);
    expect_near_all(merged_o, all.out, 1e-13, "merged out");
    expect_near_all(merged_lse, lse_all, 1e-13, "merged lse");
  }
}

// Causal with Sq = Sk: row i is the non-causal attention of query i over keys 0..i, i.e. a problem
// with one query and i + 1 keys (bottom-right alignment puts that query on the last key).
TEST(ReferenceInvariants, CausalRowEqualsPrefixAttention) {
  Problem p;
  p.seqlen_q = 6;
  p.seqlen_k = 6;
  p.heads_q = 1;
  p.heads_kv = 1;
  p.dim = 3;
  p.dim_v = 2;
  p.options.causal = true;
  p.allocate(41);
  const DenseForwardResult causal = dense_forward_reference(p.inputs());
  for (std::int64_t i = 0; i < 6; ++i) {
    Problem row = p;
    row.seqlen_q = 1;
    row.seqlen_k = i + 1;
    row.options.causal = (i % 2 == 0);  // with one query and bottom-right alignment causal changes nothing
    row.allocate(0);
    for (std::int64_t d = 0; d < 3; ++d) row.q[d] = p.q[i * 3 + d];
    for (std::int64_t e = 0; e < (i + 1) * 3; ++e) row.k[e] = p.k[e];
    for (std::int64_t e = 0; e < (i + 1) * 2; ++e) row.v[e] = p.v[e];
    const DenseForwardResult r = dense_forward_reference(row.inputs());
    EXPECT_NEAR(r.lse[0], causal.lse[i], 1e-14) << i;
    for (std::int64_t d = 0; d < 2; ++d) EXPECT_NEAR(r.out[d], causal.out[i * 2 + d], 1e-14) << i;
  }
}

TEST(ReferenceInvariants, VarlenEqualsSeparateBatches) {
  Problem packed;
  packed.varlen_q = {3, 5};
  packed.varlen_k = {4, 2};
  packed.heads_q = 2;
  packed.heads_kv = 1;
  packed.dim = 2;
  packed.dim_v = 3;
  packed.options.window_left = 1;
  packed.allocate(51);
  const DenseForwardResult all = dense_forward_reference(packed.inputs());
  std::int64_t q_row = 0, k_row = 0;
  for (std::size_t n = 0; n < 2; ++n) {
    Problem one;
    one.seqlen_q = packed.varlen_q[n];
    one.seqlen_k = packed.varlen_k[n];
    one.heads_q = 2;
    one.heads_kv = 1;
    one.dim = 2;
    one.dim_v = 3;
    one.options = packed.options;
    one.allocate(0);
    std::copy_n(packed.q.begin() + q_row * 4, one.q.size(), one.q.begin());
    std::copy_n(packed.k.begin() + k_row * 2, one.k.size(), one.k.begin());
    std::copy_n(packed.v.begin() + k_row * 3, one.v.size(), one.v.begin());
    const DenseForwardResult r = dense_forward_reference(one.inputs());
    for (std::int64_t i = 0; i < one.seqlen_q; ++i) {
      for (std::int64_t h = 0; h < 2; ++h) {
        // BSHD lse is [1, Hq, Sq]; varlen lse is [Hq, Tq].
        EXPECT_DOUBLE_EQ(r.lse[h * one.seqlen_q + i], all.lse[h * 8 + q_row + i]);
        for (std::int64_t d = 0; d < 3; ++d) EXPECT_DOUBLE_EQ(r.out[(i * 2 + h) * 3 + d], all.out[((q_row + i) * 2 + h) * 3 + d]);
      }
    }
    q_row += one.seqlen_q;
    k_row += one.seqlen_k;
  }
}

// The references run on OpenMP threads; one thread and many must give bit-identical results.
TEST(ReferenceInvariants, ThreadCountDoesNotChangeTheResult) {
  Problem p;
  // Large enough (about 4 million multiply-adds) that the references do use threads.
  p.varlen_q = {60, 0, 90, 33};
  p.varlen_k = {70, 5, 90, 0};
  p.heads_q = 8;
  p.heads_kv = 2;
  p.dim = 32;
  p.dim_v = 32;
  p.sinks.assign(8, 0.0);
  p.options.causal = true;
  p.allocate(81);
  std::vector<std::vector<double>> results[2];
  const int saved = omp_get_max_threads();
  for (int threads : {1, 4}) {
    omp_set_num_threads(threads);
    DenseForwardResult f = dense_forward_reference(p.inputs());
    const DenseBackwardResult b = dense_backward_reference(p.inputs(), p.dout_view());
    const DenseBackwardResult n = dense_backward_naive_lowp(p.inputs(), p.dout_view(), p.view(f.out, 8, 32));
    results[threads == 1 ? 0 : 1] = {f.out, f.lse, b.dq, b.dk, b.dv, b.dsinks, n.dq, n.dk, n.dv, n.dsinks};
  }
  omp_set_num_threads(saved);
  for (std::size_t r = 0; r < results[0].size(); ++r) {
    ASSERT_EQ(results[0][r].size(), results[1][r].size());
    EXPECT_EQ(std::memcmp(results[0][r].data(), results[1][r].data(), results[0][r].size() * sizeof(double)), 0) << r;
  }
}

// The same values given as fp32, fp16 or bf16 in padded, permuted strides give the same result as
// fp64 contiguous: the reference reads dtype and strides correctly.
TEST(ReferenceInvariants, DtypesAndStridesAreReadCorrectly) {
  Problem p;
  p.batch = 2;
  p.seqlen_q = 3;
  p.seqlen_k = 4;
  p.heads_q = 2;
  p.heads_kv = 2;
  p.dim = 8;
  p.dim_v = 8;
  p.allocate(61);
  // Values exactly representable in bf16 (and so in fp16 and fp32): 8 significant bits, small exponents.
  for (auto* values : {&p.q, &p.k, &p.v}) {
    for (double& x : *values) x = bf16_to_float(float_to_bf16(static_cast<float>(x)));
  }
  const DenseForwardResult expected = dense_forward_reference(p.inputs());
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    // Storage [S, B, H, D + 4] per tensor, viewed as [B, S, H, D]: batch and sequence axes swapped.
    auto restride = [&](const std::vector<double>& values, std::int64_t seqlen, std::vector<std::uint8_t>* storage) {
      const std::int64_t B = 2, H = 2, D = 8, padded = D + 4;
      const std::size_t size = dtype_size(dtype);
      storage->assign(static_cast<std::size_t>(seqlen * B * H * padded) * size, 0xFF);
      const std::int64_t stride_b = H * padded, stride_s = B * H * padded, stride_h = padded;
      for (std::int64_t b = 0; b < B; ++b) {
        for (std::int64_t s = 0; s < seqlen; ++s) {
          for (std::int64_t h = 0; h < H; ++h) {
            for (std::int64_t d = 0; d < D; ++d) {
              const float value = static_cast<float>(values[((b * seqlen + s) * H + h) * D + d]);
              std::uint8_t* where = storage->data() + static_cast<std::size_t>(b * stride_b + s * stride_s + h * stride_h + d) * size;
              if (dtype == DType::kFloat32) {
                std::memcpy(where, &value, 4);
              } else {
                const std::uint16_t bits = dtype == DType::kFloat16 ? float_to_fp16(value) : float_to_bf16(value);
                std::memcpy(where, &bits, 2);
              }
            }
          }
        }
      }
      return TensorRef::strided(storage->data(), dtype, {B, seqlen, H, D}, {stride_b, stride_s, stride_h, 1});
    };
    std::vector<std::uint8_t> q_storage, k_storage, v_storage;
    DenseReferenceInputs in = p.inputs();
    in.q = restride(p.q, 3, &q_storage);
    in.k = restride(p.k, 4, &k_storage);
    in.v = restride(p.v, 4, &v_storage);
    const DenseForwardResult r = dense_forward_reference(in);
    expect_near_all(r.out, expected.out, 1e-15, dtype_name(dtype));
    expect_near_all(r.lse, expected.lse, 1e-15, dtype_name(dtype));
  }
}

// The naive formula rounds at the documented points. Scores: q = 3, keys 3.015625 and 3 (all bf16
// values), scale 1: the scores 9.046875 and 9 become 9.0625 and 9 in bf16 (ulp 1/16), so with v = (1, 0)
// o = bf16(p0) = bf16(1 / (1 + e^-0.0625)) = 0.515625, where unrounded scores would give 0.51171875.
// The lse is taken from the unrounded fp32 scores.
TEST(ReferenceNaiveLowp, RoundsScoresProbabilitiesAndOutputsToTheInputDtype) {
  std::vector<std::uint16_t> q = {float_to_bf16(3.0f)};
  std::vector<std::uint16_t> k = {float_to_bf16(3.015625f), float_to_bf16(3.0f)};
  std::vector<std::uint16_t> v = {float_to_bf16(1.0f), float_to_bf16(0.0f)};
  DenseReferenceInputs in;
  in.q = TensorRef::contiguous(q.data(), DType::kBFloat16, {1, 1, 1, 1});
  in.k = TensorRef::contiguous(k.data(), DType::kBFloat16, {1, 2, 1, 1});
  in.v = TensorRef::contiguous(v.data(), DType::kBFloat16, {1, 2, 1, 1});
  in.options.scale = 1.0f;
  const DenseForwardResult naive = dense_forward_naive_lowp(in);
  EXPECT_EQ(naive.out[0], 0.515625);
  EXPECT_NEAR(naive.lse[0], 9.0 + std::log1p(std::exp(0.046875)), 2e-6);
  EXPECT_NEAR(dense_forward_reference(in).out[0], 1.0 / (1.0 + std::exp(-0.046875)), 1e-15);

  // Scores 0 and s = 5/64 (q = 1, keys 0 and s, v = (3, 0)): p0 = 1 / (1 + e^s) = 0.4804787 rounds to
  // 0.48046875 in bf16, and o = round(3 * 0.48046875) = 1.4375, where an unrounded p0 would give 1.4453125.
  std::vector<std::uint16_t> q2 = {float_to_bf16(1.0f)};
  std::vector<std::uint16_t> k2 = {float_to_bf16(0.0f), float_to_bf16(0.078125f)};
  std::vector<std::uint16_t> v2 = {float_to_bf16(3.0f), float_to_bf16(0.0f)};
  in.q = TensorRef::contiguous(q2.data(), DType::kBFloat16, {1, 1, 1, 1});
  in.k = TensorRef::contiguous(k2.data(), DType::kBFloat16, {1, 2, 1, 1});
  in.v = TensorRef::contiguous(v2.data(), DType::kBFloat16, {1, 2, 1, 1});
  EXPECT_EQ(dense_forward_naive_lowp(in).out[0], 1.4375);
  EXPECT_NEAR(dense_forward_reference(in).out[0], 3.0 / (1.0 + std::exp(0.078125)), 1e-15);
}

// The naive low-precision formula: exact in fp64, close in fp32, visibly rounded in bf16, and its
// outputs are values of the input dtype.
TEST(ReferenceNaiveLowp, ErrorGrowsAsPrecisionDrops) {
  Problem p;
  p.seqlen_q = 17;
  p.seqlen_k = 23;
  p.heads_q = 2;
  p.heads_kv = 1;
  p.dim = 16;
  p.dim_v = 16;
  p.sinks.assign(2, 0.0);
  p.options.softcap = 3.0f;
  p.allocate(71);
  for (auto* values : {&p.q, &p.k, &p.v, &p.dout}) {
    for (double& x : *values) x = bf16_to_float(float_to_bf16(static_cast<float>(x)));
  }
  DenseForwardResult ref = dense_forward_reference(p.inputs());
  const DenseBackwardResult ref_grad = dense_backward_reference(p.inputs(), p.dout_view());
  const TensorRef out = p.view(ref.out, 2, 16);  // the o a backward call receives (rounded to T inside)
  auto max_error = [](const std::vector<double>& a, const std::vector<double>& b) {
    double error = 0.0;
    for (std::size_t e = 0; e < a.size(); ++e) error = std::max(error, std::abs(a[e] - b[e]));
    return error;
  };
  std::vector<double> errors;
  for (DType dtype : {DType::kFloat64, DType::kFloat32, DType::kBFloat16}) {
    std::vector<std::vector<float>> storage;
    auto convert = [&](const std::vector<double>& values, const TensorRef& like) {
      storage.emplace_back(values.begin(), values.end());
      TensorRef ref = like;
      if (dtype == DType::kFloat64) return ref;
      ref.data = storage.back().data();
      ref.dtype = DType::kFloat32;
      return ref;
    };
    DenseReferenceInputs in = p.inputs();
    storage.reserve(4);
    in.q = convert(p.q, in.q);
    in.k = convert(p.k, in.k);
    in.v = convert(p.v, in.v);
    TensorRef dout = convert(p.dout, p.dout_view());
    std::vector<std::uint16_t> q16, k16, v16;
    if (dtype == DType::kBFloat16) {
      for (auto [values, bits, ref] : {std::tuple{&p.q, &q16, &in.q}, std::tuple{&p.k, &k16, &in.k}, std::tuple{&p.v, &v16, &in.v}}) {
        for (double x : *values) bits->push_back(float_to_bf16(static_cast<float>(x)));
        ref->data = bits->data();
        ref->dtype = DType::kBFloat16;
      }
    }
    const DenseForwardResult naive = dense_forward_naive_lowp(in);
    const DenseBackwardResult naive_grad = dense_backward_naive_lowp(in, dout, out);
    if (dtype == DType::kBFloat16) {
      for (double x : naive.out) EXPECT_EQ(x, bf16_to_float(float_to_bf16(static_cast<float>(x))));
      for (double x : naive_grad.dq) EXPECT_EQ(x, bf16_to_float(float_to_bf16(static_cast<float>(x))));
    }
    errors.push_back(max_error(naive.out, ref.out) + max_error(naive.lse, ref.lse) + max_error(naive_grad.dq, ref_grad.dq) +
                     max_error(naive_grad.dk, ref_grad.dk) + max_error(naive_grad.dv, ref_grad.dv) +
                     max_error(naive_grad.dsinks, ref_grad.dsinks));
  }
  EXPECT_EQ(errors[0], 0.0);   // fp64: the reference itself
  EXPECT_GT(errors[1], 0.0);   // fp32: rounding, but small
  EXPECT_LT(errors[1], 1e-4);
  EXPECT_GT(errors[2], 1e-4);  // bf16: 8 significant bits show
  EXPECT_LT(errors[2], 0.5);
  EXPECT_GT(errors[2], 10 * errors[1]);
}

}  // namespace
}  // namespace attnkit::reference
