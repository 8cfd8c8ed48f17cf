// Views and conversions of the register fragments of the sm_80 tensor-core MMA m16n8k16
// (CuTe's SM80_16x8x16_F32{F16F16,BF16BF16}F32_TN atoms, also valid on sm_90).
//
// In one m16n8 accumulator atom a thread holds four fp32 values (PTX ISA, "mma.m16n8k16"):
//   c0, c1: row lane/4,     columns 2*(lane%4) + {0, 1}
//   c2, c3: row lane/4 + 8, the same columns
// CuTe names this value mode (_2, _2): mode 0 is the column pair, mode 1 the row pair.
// An A operand atom (16 x 16) holds eight 16-bit values: (_2, _2, _2) = (column pair, row pair, k half).
// So the accumulators of two neighbouring n8 atoms are, value for value, one A operand atom: that is
// what lets P = softmax(S) feed the second GEMM straight from registers (FlashAttention-2's trick).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>

namespace attnkit::device {

// Accumulator layout ((2, 2), MMA_M, MMA_N) -> ((2, MMA_M), (2, MMA_N)), i.e. (rows, cols) of the thread.
template <class AccumulatorLayout>
CUTE_HOST_DEVICE constexpr auto accumulator_rows_cols(AccumulatorLayout layout) {
  using namespace cute;
  static_assert(rank(AccumulatorLayout{}) == 3, "expected an accumulator layout ((2, 2), MMA_M, MMA_N)");
  static_assert(rank<0>(AccumulatorLayout{}) == 2 && size<0>(AccumulatorLayout{}) == 4,
                "expected the m16n8 value mode (_2, _2)");
  return make_layout(make_layout(get<0, 1>(layout), get<1>(layout)),   // rows: (row pair, MMA_M)
                     make_layout(get<0, 0>(layout), get<2>(layout)));  // cols: (column pair, MMA_N)
}

// The same tensor seen as (rows, cols).
template <class Tensor>
CUTE_HOST_DEVICE auto rows_cols_view(Tensor&& accumulators) {
  return cute::make_tensor(accumulators.data(), accumulator_rows_cols(accumulators.layout()));
}

// Accumulator layout ((2, 2), MMA_M, MMA_N) of an m16n8 GEMM -> A-operand layout
// (((2, 2), 2), MMA_M, MMA_N / 2) of an m16n8k16 GEMM whose k runs over the first GEMM's n.
template <class AccumulatorLayout>
CUTE_HOST_DEVICE constexpr auto accumulator_as_operand_a(AccumulatorLayout layout) {
  using namespace cute;
  static_assert(size<2>(AccumulatorLayout{}) % 2 == 0, "MMA_N must be even to pair n8 atoms into k16");
  auto split = logical_divide(layout, Shape<Underscore, Underscore, _2>{});  // ((2, 2), MMA_M, (2, MMA_N / 2))
  return make_layout(make_layout(get<0>(split), get<2, 0>(split)), get<1>(split), get<2, 1>(split));
}

// Round an fp32 register fragment to a 16-bit element type (round to nearest even), two values per
// cvt instruction. Returns a register tensor with the same (compact) layout; storage order is kept.
template <class Element, class Tensor>
__device__ __forceinline__ auto convert_fragment(const Tensor& source) {
  using namespace cute;
  static_assert(is_same_v<typename Tensor::value_type, float>);
  static_assert(cosize_v<typename Tensor::layout_type> == size_v<typename Tensor::layout_type> &&
                    size_v<typename Tensor::layout_type> % 2 == 0,
                "a compact register fragment of even size");
  auto result = make_tensor<Element>(source.layout());
  const float* in = raw_pointer_cast(source.data());
  auto* out_pairs = reinterpret_cast<std::uint32_t*>(raw_pointer_cast(result.data()));
  CUTE_UNROLL
  for (int i = 0; i < size(source) / 2; ++i) {
    if constexpr (is_same_v<Element, cute::bfloat16_t>) {
      const __nv_bfloat162 pair = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
      out_pairs[i] = reinterpret_cast<const std::uint32_t&>(pair);
    } else {
      static_assert(is_same_v<Element, cute::half_t>, "fp16 or bf16 only");
      const __half2 pair = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
      out_pairs[i] = reinterpret_cast<const std::uint32_t&>(pair);
    }
  }
  return result;
}

}  // namespace attnkit::device
