// Bad input (quality.md): every class that applies to dense attention gets a typed Status before any
// write. Each case starts from a valid call, breaks one thing, and checks the code, that the message
// names the culprit, and that no output byte changed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attnkit.h"

namespace attnkit {
namespace {

constexpr std::int64_t kBatch = 2, kSeqQ = 5, kSeqK = 7, kHeadsQ = 4, kHeadsKv = 2, kDim = 16;
constexpr std::uint8_t kOutputPattern = 0xA5;  // what every output byte holds before the call

// Owns valid host buffers for one forward and one backward call; tests break one thing at a time.
struct ValidCall {
  std::vector<std::uint16_t> q, k, v, out, dout, dq, dk, dv;
  std::vector<float> lse, sinks, dsinks;
  std::vector<std::int32_t> cu_q, cu_k;
  DenseForwardArgs fwd;
  DenseBackwardArgs bwd;

  ValidCall()
      : q(kBatch * kSeqQ * kHeadsQ * kDim), k(kBatch * kSeqK * kHeadsKv * kDim), v(k.size()), out(q.size()),
        dout(q.size()), dq(q.size()), dk(k.size()), dv(v.size()), lse(kBatch * kHeadsQ * kSeqQ),
        sinks(kHeadsQ, 0.5f), dsinks(kHeadsQ) {
    std::uint32_t state = 12345;
    for (auto* buffer : {&q, &k, &v, &dout}) {
      for (std::uint16_t& x : *buffer) {
        state = state * 1664525u + 1013904223u;
        x = float_to_bf16(static_cast<float>(state >> 8) / 16777216.0f - 0.5f);
      }
    }
    for (float& x : lse) x = 1.0f;
    fwd.q = TensorRef::contiguous(q.data(), DType::kBFloat16, {kBatch, kSeqQ, kHeadsQ, kDim});
    fwd.k = TensorRef::contiguous(k.data(), DType::kBFloat16, {kBatch, kSeqK, kHeadsKv, kDim});
    fwd.v = TensorRef::contiguous(v.data(), DType::kBFloat16, {kBatch, kSeqK, kHeadsKv, kDim});
    fwd.out = TensorRef::contiguous(out.data(), DType::kBFloat16, {kBatch, kSeqQ, kHeadsQ, kDim});
    fwd.lse = TensorRef::contiguous(lse.data(), DType::kFloat32, {kBatch, kHeadsQ, kSeqQ});
    fwd.options.backend = Backend::kCPU;
    bwd.q = fwd.q;
    bwd.k = fwd.k;
    bwd.v = fwd.v;
    bwd.out = fwd.out;
    bwd.lse = fwd.lse;
    bwd.dout = TensorRef::contiguous(dout.data(), DType::kBFloat16, {kBatch, kSeqQ, kHeadsQ, kDim});
    bwd.dq = TensorRef::contiguous(dq.data(), DType::kBFloat16, {kBatch, kSeqQ, kHeadsQ, kDim});
    bwd.dk = TensorRef::contiguous(dk.data(), DType::kBFloat16, {kBatch, kSeqK, kHeadsKv, kDim});
    bwd.dv = TensorRef::contiguous(dv.data(), DType::kBFloat16, {kBatch, kSeqK, kHeadsKv, kDim});
    bwd.options.backend = Backend::kCPU;
  }

  // Turns the forward call into a varlen call over the same buffers: 2 sequences of lengths (5, 5)
  // and (7, 7) packed as [10, Hq, D] and [14, Hkv, D].
  void make_varlen() {
    cu_q = {0, 5, 10};
    cu_k = {0, 7, 14};
    fwd.q = TensorRef::contiguous(q.data(), DType::kBFloat16, {kBatch * kSeqQ, kHeadsQ, kDim});
    fwd.k = TensorRef::contiguous(k.data(), DType::kBFloat16, {kBatch * kSeqK, kHeadsKv, kDim});
    fwd.v = TensorRef::contiguous(v.data(), DType::kBFloat16, {kBatch * kSeqK, kHeadsKv, kDim});
    fwd.out = TensorRef::contiguous(out.data(), DType::kBFloat16, {kBatch * kSeqQ, kHeadsQ, kDim});
    fwd.lse = TensorRef::contiguous(lse.data(), DType::kFloat32, {kHeadsQ, kBatch * kSeqQ});
    fwd.cu_seqlens_q = TensorRef::contiguous(cu_q.data(), DType::kInt32, {kBatch + 1});
    fwd.cu_seqlens_k = TensorRef::contiguous(cu_k.data(), DType::kInt32, {kBatch + 1});
    fwd.max_seqlen_q = kSeqQ;
    fwd.max_seqlen_k = kSeqK;
  }

  void poison_outputs() {
    for (auto* buffer : {&out, &dq, &dk, &dv}) std::memset(buffer->data(), kOutputPattern, buffer->size() * 2);
    std::memset(dsinks.data(), kOutputPattern, dsinks.size() * sizeof(float));
  }

  bool outputs_untouched() const {
    auto untouched = [](const void* data, std::size_t bytes) {
      const auto* p = static_cast<const std::uint8_t*>(data);
      for (std::size_t i = 0; i < bytes; ++i)
        if (p[i] != kOutputPattern) return false;
      return true;
    };
    return untouched(out.data(), out.size() * 2) && untouched(dq.data(), dq.size() * 2) &&
           untouched(dk.data(), dk.size() * 2) && untouched(dv.data(), dv.size() * 2) &&
           untouched(dsinks.data(), dsinks.size() * sizeof(float));
  }
};

struct BadInput {
  const char* name;
  std::function<void(ValidCall&)> mutate;  // breaks one thing
  StatusCode expected;
  const char* message_mentions;  // a substring the message must contain
  bool backward = false;         // exercise backward() instead of forward()
};

// lse of the forward call is an output and is poisoned too, but it is also a backward input; it is
// checked through `out` and the gradients, which cover every output buffer of both calls.
std::vector<BadInput> bad_inputs() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  return {
      {"null_q", [](ValidCall& c) { c.fwd.q.data = nullptr; }, StatusCode::kInvalidArgument, "q: null"},
      {"missing_v", [](ValidCall& c) { c.fwd.v = TensorRef{}; }, StatusCode::kInvalidArgument, "v is required"},
      {"null_dq", [](ValidCall& c) { c.bwd.dq.data = nullptr; }, StatusCode::kInvalidArgument, "dq: null", true},
      {"wrong_device", [](ValidCall& c) { c.fwd.k.device = Device::cuda(0); }, StatusCode::kInvalidArgument,
       "k: is on cuda:0"},
      {"mixed_dtypes", [](ValidCall& c) { c.fwd.k.dtype = DType::kFloat16; }, StatusCode::kInvalidArgument,
       "k: expected dtype bf16"},
      {"int_q", [](ValidCall& c) { c.fwd.q.dtype = DType::kInt32; }, StatusCode::kInvalidArgument,
       "q: dtype must be"},
      {"lse_not_fp32", [](ValidCall& c) { c.fwd.lse.dtype = DType::kBFloat16; }, StatusCode::kInvalidArgument,
       "lse: expected dtype fp32"},
      {"wrong_rank", [](ValidCall& c) { c.fwd.q.rank = 3; }, StatusCode::kInvalidArgument,
       "q: expected rank 4"},
      {"batch_mismatch", [](ValidCall& c) { c.fwd.k.shape[0] = 1; }, StatusCode::kInvalidArgument,
       "k: expected shape [2, 7, 2, 16]"},
      {"head_dim_mismatch", [](ValidCall& c) { c.fwd.k.shape[3] = 8; }, StatusCode::kInvalidArgument, "k: expected"},
      {"v_length_mismatch", [](ValidCall& c) { c.fwd.v.shape[1] = 6; }, StatusCode::kInvalidArgument,
       "v: expected"},
      {"out_heads_mismatch", [](ValidCall& c) { c.fwd.out.shape[2] = 2; }, StatusCode::kInvalidArgument,
       "out: expected"},
      {"lse_shape_mismatch", [](ValidCall& c) { c.fwd.lse.shape[2] = 4; }, StatusCode::kInvalidArgument,
       "lse: expected shape [2, 4, 5]"},
      {"dout_shape_mismatch", [](ValidCall& c) { c.bwd.dout.shape[1] = 4; }, StatusCode::kInvalidArgument,
       "dout: expected", true},
      {"dk_shape_mismatch", [](ValidCall& c) { c.bwd.dk.shape[2] = 4; }, StatusCode::kInvalidArgument,
       "dk: expected", true},
      {"backward_without_lse", [](ValidCall& c) { c.bwd.lse = TensorRef{}; }, StatusCode::kInvalidArgument,
       "lse: backward needs", true},
      {"hq_not_multiple_of_hkv",
       [](ValidCall& c) {
         c.fwd.k.shape[2] = 3;
         c.fwd.v.shape[2] = 3;
       },
       StatusCode::kInvalidArgument, "not a multiple of Hkv"},
      {"unsupported_head_dim",
       [](ValidCall& c) {
         for (TensorRef* t : {&c.fwd.q, &c.fwd.k, &c.fwd.v, &c.fwd.out}) t->shape[3] = 12;
       },
       StatusCode::kNotImplemented, "multiples of 8 from 8 to 256"},
      {"head_dim_too_large",
       [](ValidCall& c) {
         for (TensorRef* t : {&c.fwd.q, &c.fwd.k}) t->shape[3] = 264;
       },
       StatusCode::kNotImplemented, "D (head dim of q and k) = 264"},
      {"last_dim_not_contiguous", [](ValidCall& c) { c.fwd.v.strides[3] = 2; }, StatusCode::kInvalidArgument,
       "v: the last dimension must be contiguous"},
      {"misaligned_pointer",
       [](ValidCall& c) { c.fwd.q.data = static_cast<char*>(c.fwd.q.data) + 1; }, StatusCode::kInvalidArgument,
       "q: data pointer is not aligned"},
      {"negative_stride", [](ValidCall& c) { c.fwd.k.strides[1] = -32; }, StatusCode::kInvalidArgument,
       "k: negative stride"},
      {"out_aliases_q", [](ValidCall& c) { c.fwd.out.data = c.fwd.q.data; }, StatusCode::kInvalidArgument,
       "output out overlaps input q"},
      {"lse_aliases_out", [](ValidCall& c) { c.fwd.lse.data = c.fwd.out.data; }, StatusCode::kInvalidArgument,
       "outputs out and lse overlap"},
      {"dq_aliases_dout", [](ValidCall& c) { c.bwd.dq.data = c.bwd.dout.data; }, StatusCode::kInvalidArgument,
       "output dq overlaps input dout", true},
      {"index_overflow", [](ValidCall& c) { c.fwd.k.strides[0] = std::int64_t{1} << 62; },
       StatusCode::kInvalidArgument, "k: index overflow"},
      {"window_below_minus_one", [](ValidCall& c) { c.fwd.options.window_left = -2; },
       StatusCode::kInvalidArgument, "window: bounds must be >= -1"},
      {"causal_with_right_window",
       [](ValidCall& c) {
         c.fwd.options.causal = true;
         c.fwd.options.window_right = 3;
       },
       StatusCode::kInvalidArgument, "causal means window_right = 0"},
      {"scale_nan", [nan](ValidCall& c) { c.fwd.options.scale = nan; }, StatusCode::kInvalidArgument,
       "scale: must be finite"},
      {"scale_inf", [inf](ValidCall& c) { c.fwd.options.scale = inf; }, StatusCode::kInvalidArgument,
       "scale: must be finite"},
      {"scale_zero", [](ValidCall& c) { c.fwd.options.scale = 0.0f; }, StatusCode::kInvalidArgument,
       "scale: must be finite and > 0"},
      {"softcap_negative", [](ValidCall& c) { c.fwd.options.softcap = -1.0f; }, StatusCode::kInvalidArgument,
       "softcap"},
      {"softcap_nan", [nan](ValidCall& c) { c.fwd.options.softcap = nan; }, StatusCode::kInvalidArgument,
       "softcap"},
      {"sinks_wrong_shape",
       [](ValidCall& c) { c.fwd.sinks = TensorRef::contiguous(c.sinks.data(), DType::kFloat32, {kHeadsQ - 1}); },
       StatusCode::kInvalidArgument, "sinks: expected shape [4]"},
      {"sinks_wrong_dtype",
       [](ValidCall& c) { c.fwd.sinks = TensorRef::contiguous(c.sinks.data(), DType::kBFloat16, {kHeadsQ}); },
       StatusCode::kInvalidArgument, "sinks: expected dtype fp32"},
      {"sinks_without_dsinks",
       [](ValidCall& c) { c.bwd.sinks = TensorRef::contiguous(c.sinks.data(), DType::kFloat32, {kHeadsQ}); },
       StatusCode::kInvalidArgument, "dsinks: required", true},
      {"varlen_only_q_offsets",
       [](ValidCall& c) {
         c.make_varlen();
         c.fwd.cu_seqlens_k = TensorRef{};
       },
       StatusCode::kInvalidArgument, "varlen needs both"},
      {"cu_seqlens_not_int32",
       [](ValidCall& c) {
         c.make_varlen();
         c.fwd.cu_seqlens_q.dtype = DType::kFloat32;
       },
       StatusCode::kInvalidArgument, "cu_seqlens_q: expected dtype int32"},
      {"cu_seqlens_wrong_length",
       [](ValidCall& c) {
         c.make_varlen();
         c.fwd.cu_seqlens_k.shape[0] = 2;
       },
       StatusCode::kInvalidArgument, "cu_seqlens_k: expected length 3"},
      {"cu_seqlens_not_starting_at_zero",
       [](ValidCall& c) {
         c.make_varlen();
         c.cu_q[0] = 1;
       },
       StatusCode::kInvalidArgument, "cu_seqlens_q: must start at 0"},
      {"cu_seqlens_decreasing",
       [](ValidCall& c) {
         c.make_varlen();
         c.cu_k[2] = 6;
       },
       StatusCode::kInvalidArgument, "cu_seqlens_k: must be non-decreasing"},
      {"cu_seqlens_inconsistent_with_tokens",
       [](ValidCall& c) {
         c.make_varlen();
         c.cu_q[2] = 9;
       },
       StatusCode::kInvalidArgument, "inconsistent with the token count 10"},
      {"sequence_longer_than_max_seqlen",
       [](ValidCall& c) {
         c.make_varlen();
         c.fwd.max_seqlen_k = 6;
       },
       StatusCode::kInvalidArgument, "> max_seqlen_k = 6"},
      {"varlen_lse_in_bshd_shape",
       [](ValidCall& c) {
         c.make_varlen();
         c.fwd.lse = TensorRef::contiguous(c.lse.data(), DType::kFloat32, {kBatch, kHeadsQ, kSeqQ});
       },
       StatusCode::kInvalidArgument, "lse: expected rank 2"},
#if ATTNKIT_HAVE_DENSE_SM90_FORWARD
      // Compiled: the explicit sm90 forward and backward refuse host tensors, naming the reason.
      {"sm90_on_cpu_tensors", [](ValidCall& c) { c.fwd.options.backend = Backend::kSm90; },
       StatusCode::kNotImplemented, "backend sm90 cannot run this call: tensors are on the CPU"},
      {"sm90_backward_on_cpu_tensors", [](ValidCall& c) { c.bwd.options.backend = Backend::kSm90; },
       StatusCode::kNotImplemented, "backend sm90 cannot run this call: tensors are on the CPU", true},
#else
      {"sm90_not_compiled", [](ValidCall& c) { c.fwd.options.backend = Backend::kSm90; },
       StatusCode::kNotCompiled, "backend sm90 cannot run this call"},
      {"sm90_backward_not_compiled", [](ValidCall& c) { c.bwd.options.backend = Backend::kSm90; },
       StatusCode::kNotCompiled, "backend sm90 cannot run this call", true},
#endif
  };
}

class DenseBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(DenseBadInput, RejectedBeforeAnyWrite) {
  const BadInput& bad = GetParam();
  ValidCall call;
  call.poison_outputs();
  bad.mutate(call);
  const Status checked = bad.backward ? can_implement(call.bwd) : can_implement(call.fwd);
  const Status ran = bad.backward ? backward(call.bwd) : forward(call.fwd);
  for (const Status* status : {&checked, &ran}) {
    EXPECT_EQ(status->code(), bad.expected) << status->to_string();
    EXPECT_NE(status->message().find(bad.message_mentions), std::string::npos)
        << "message should mention \"" << bad.message_mentions << "\": " << status->message();
  }
  EXPECT_TRUE(call.outputs_untouched()) << "an output byte changed although the call was rejected";
}

INSTANTIATE_TEST_SUITE_P(AllClasses, DenseBadInput, ::testing::ValuesIn(bad_inputs()),
                         [](const auto& info) { return std::string(info.param.name); });

// The GPU backend verdicts depend on the build: without sm80 kernels the message names the build
// option; with them, CPU tensors are refused because they are not on a CUDA device.
TEST(DenseBackendChoice, ExplicitGpuBackendOnCpuTensorsIsRefusedWithReason) {
  ValidCall call;
  call.fwd.options.backend = Backend::kSm80;
  const Status status = forward(call.fwd);
  ASSERT_FALSE(status.is_ok());
  const bool named_reason = status.message().find("not compiled: needs") != std::string::npos ||
                            status.message().find("not a CUDA device") != std::string::npos;
  EXPECT_TRUE(named_reason) << status.to_string();
}

TEST(DenseBackendChoice, ExplainNamesEveryBackend) {
  ValidCall call;
  call.fwd.options.backend = Backend::kAuto;
  const Explanation explanation = explain(call.fwd);
  ASSERT_TRUE(explanation.validation.is_ok()) << explanation.validation.to_string();
  ASSERT_EQ(explanation.verdicts.size(), 3u);
  EXPECT_EQ(explanation.chosen, Backend::kCPU);
  const std::string text = explanation.to_string();
  for (const char* name : {"sm90:", "sm80:", "cpu: chosen"}) {
    EXPECT_NE(text.find(name), std::string::npos) << text;
  }
}

TEST(DenseBackendChoice, ExplainReportsInvalidArguments) {
  ValidCall call;
  call.fwd.options.scale = -1.0f;
  const Explanation explanation = explain(call.fwd);
  EXPECT_EQ(explanation.validation.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(explanation.to_string().find("the arguments are invalid"), std::string::npos);
}

TEST(DenseZeroSize, EmptyBatchIsANoOp) {
  ValidCall call;
  call.poison_outputs();
  for (TensorRef* t : {&call.fwd.q, &call.fwd.k, &call.fwd.v, &call.fwd.out, &call.fwd.lse}) t->shape[0] = 0;
  EXPECT_TRUE(forward(call.fwd).is_ok());
  EXPECT_TRUE(call.outputs_untouched());
}

TEST(DenseZeroSize, NoQueryRowsIsANoOpInForward) {
  ValidCall call;
  call.poison_outputs();
  call.fwd.q.shape[1] = 0;
  call.fwd.out.shape[1] = 0;
  call.fwd.lse.shape[2] = 0;
  EXPECT_TRUE(forward(call.fwd).is_ok());
  EXPECT_TRUE(call.outputs_untouched());
}

TEST(DenseZeroSize, ZeroHeadsIsANoOp) {
  ValidCall call;
  call.poison_outputs();
  for (TensorRef* t : {&call.fwd.q, &call.fwd.k, &call.fwd.v, &call.fwd.out}) t->shape[2] = 0;
  call.fwd.lse.shape[1] = 0;
  EXPECT_TRUE(forward(call.fwd).is_ok());
  EXPECT_TRUE(call.outputs_untouched());
}

TEST(DenseZeroSize, NullPointersAreFineForEmptyTensors) {
  ValidCall call;
  for (TensorRef* t : {&call.fwd.q, &call.fwd.k, &call.fwd.v, &call.fwd.out, &call.fwd.lse}) {
    t->shape[0] = 0;
    t->data = nullptr;
  }
  EXPECT_TRUE(forward(call.fwd).is_ok());
}

TEST(DenseWorkspace, SizeQueryValidatesAndNeedsNoWorkspaceOnTheCpu) {
  ValidCall call;
  std::size_t bytes = 1;
  ASSERT_TRUE(workspace_size(call.fwd, &bytes).is_ok());
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(workspace_size(call.fwd, nullptr).code(), StatusCode::kInvalidArgument);
  call.fwd.options.scale = 0.0f;
  EXPECT_EQ(workspace_size(call.fwd, &bytes).code(), StatusCode::kInvalidArgument);
}

TEST(StatusAndErrors, CheckThrowsTypedError) {
  const Status bad{StatusCode::kInvalidArgument, "q: null data pointer"};
  try {
    check(bad);
    FAIL() << "check() did not throw";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), StatusCode::kInvalidArgument);
    EXPECT_STREQ(error.what(), "invalid argument: q: null data pointer");
  }
  EXPECT_NO_THROW(check(Status::ok()));
}

}  // namespace
}  // namespace attnkit
