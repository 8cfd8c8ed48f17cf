// Compile-time configuration of one sm80 dense forward instantiation: tile sizes, shared-memory
// layouts, the tiled MMA and the copies, derived from one entry of kForwardTileShapes and a dtype.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>

#include "device/tile_copy_sm80.cuh"
#include "kernels/dense/sm80/forward/forward_params.h"

namespace attnkit::sm80 {

template <DType kDType>
using CuteElement = std::conditional_t<kDType == DType::kBFloat16, cute::bfloat16_t, cute::half_t>;

template <int kShapeIndex, DType kDType>
struct ForwardConfig {
  static_assert(kDType == DType::kFloat16 || kDType == DType::kBFloat16);
  static constexpr ForwardTileShape kShape = kForwardTileShapes[kShapeIndex];
  using Element = CuteElement<kDType>;

  static constexpr int kHeadDim = kShape.head_dim;
  static constexpr int kHeadDimV = kShape.head_dim_v;
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kWarps = kShape.warps;
  static constexpr int kThreads = kWarps * 32;
  static_assert(kHeadDim % 64 == 0 && kHeadDimV % 64 == 0, "padded head dims are multiples of the swizzle atom");
  static_assert(kBlockM % (16 * kWarps) == 0 && kBlockN % 16 == 0);
  // Interior key tiles take a body of their own without mask, softcap or load predicates
  // (forward_mainloop_sm80.cuh). Against one body, on the H100 (NOTES.md, second round): D = 64 +3.0-10.6%,
  // D = 256 +0.9-7.7% over the issue-3 cases. D = 128 and D = 192 keep one body: not measured with two.
  static constexpr bool kPlainInteriorStep =
      (kHeadDim == 64 && kHeadDimV == 64) || (kHeadDim == 256 && kHeadDimV == 256);

  // Warps stacked along M: warp w owns rows 16w .. 16w + 15 of every 16 * kWarps rows, so each warp's
  // softmax rows are its own and P never leaves registers. The 16-wide N/K tile lets ldmatrix load
  // B operands four 8x8 matrices at a time (x4).
  using MmaAtom = std::conditional_t<kDType == DType::kBFloat16, cute::SM80_16x8x16_F32BF16BF16F32_TN,
                                     cute::SM80_16x8x16_F32F16F16F32_TN>;
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<MmaAtom>,
                                  cute::Layout<cute::Shape<cute::Int<kWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kWarps>, cute::_16, cute::_16>>;

  using SmemLayoutQ = decltype(device::swizzled_smem_layout<Element, kBlockM, kHeadDim>());   // (kBlockM, D)
  using SmemLayoutK = decltype(device::swizzled_smem_layout<Element, kBlockN, kHeadDim>());   // (kBlockN, D)
  using SmemLayoutV = decltype(device::swizzled_smem_layout<Element, kBlockN, kHeadDimV>());  // (kBlockN, Dv)
  // V seen as (Dv, kBlockN): the B operand of O += P V is V^T, read by ldmatrix.trans.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutV{}, cute::make_layout(cute::Shape<cute::Int<kHeadDimV>, cute::Int<kBlockN>>{}, cute::GenRowMajor{})));
  using SmemLayoutO = decltype(device::swizzled_smem_layout<Element, kBlockM, kHeadDimV>());  // (kBlockM, Dv)

  static constexpr int kSmemElementsQ = cute::cosize_v<SmemLayoutQ>;
  static constexpr int kSmemElementsK = cute::cosize_v<SmemLayoutK>;
  static constexpr int kSmemElementsV = cute::cosize_v<SmemLayoutV>;
  // O reuses Q's space once the last Q K^T is done.
  static_assert(cute::cosize_v<SmemLayoutO> <= kSmemElementsQ);
  static constexpr int kSmemBytes = (kSmemElementsQ + kSmemElementsK + kSmemElementsV) * int(sizeof(Element));
  static_assert(kSmemBytes == kShape.shared_memory_bytes());

  using GmemTileCopy = decltype(device::make_async_tile_copy<Element, kThreads>());
  using GmemStoreCopy = decltype(device::make_vector_tile_copy<Element, kThreads>());
  using SmemCopyAtomA = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, Element>;    // Q, and K as B (k-major)
  using SmemCopyAtomVt = cute::Copy_Atom<cute::SM75_U16x8_LDSM_T, Element>;   // V^T via transposing ldmatrix
  using SmemCopyAtomO = cute::Copy_Atom<cute::AutoVectorizingCopyWithAssumedAlignment<32>, Element>;
};

}  // namespace attnkit::sm80
