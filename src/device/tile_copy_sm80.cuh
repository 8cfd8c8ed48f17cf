// Tile copies between global and shared memory for sm_80+ kernels: cp.async 16 bytes per instruction
// into shared memory, predicated on the tile's valid extent, and the predicated store back.
//
// Predication works per 16-byte chunk (8 fp16/bf16 values). A chunk is valid when its row is below
// `valid_rows` and its first column below `valid_cols`; callers keep every row length a multiple of 8
// elements (head dims are), so a chunk is never half valid. Invalid chunks of a load are zero-filled
// without reading global memory (cp.async with src-size 0): padded rows and head-dim columns hold
// zeros, which keeps NaN padding in the caller's buffers out of Q K^T and P V.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

namespace attnkit::device {

// Global -> shared tiled copy of 16-bit elements for a (rows, 64 * n) tile in kThreads threads: each
// thread moves 8 contiguous elements per instruction, 8 threads cover one 64-element (128-byte) row
// segment, the width of the 128-byte swizzle atom of swizzled_smem_layout().
template <class Element, int kThreads>
CUTE_HOST_DEVICE constexpr auto make_async_tile_copy() {
  using namespace cute;
  static_assert(sizeof(Element) == 2 && kThreads % 8 == 0);
  using Atom = Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<uint128_t>, Element>;
  return make_tiled_copy(Atom{}, Layout<Shape<Int<kThreads / 8>, _8>, Stride<_8, _1>>{},
                         Layout<Shape<_1, _8>>{});
}

// Shared -> global (or any 16-byte) tiled copy with the same thread arrangement.
template <class Element, int kThreads>
CUTE_HOST_DEVICE constexpr auto make_vector_tile_copy() {
  using namespace cute;
  static_assert(sizeof(Element) == 2 && kThreads % 8 == 0);
  using Atom = Copy_Atom<UniversalCopy<uint128_t>, Element>;
  return make_tiled_copy(Atom{}, Layout<Shape<Int<kThreads / 8>, _8>, Stride<_8, _1>>{},
                         Layout<Shape<_1, _8>>{});
}

// (rows, cols) row-major shared-memory layout of 16-bit elements, cols a multiple of 64, with the
// 128-byte XOR swizzle Swizzle<3, 3, 3>: the 8 16-byte chunks of a row segment land in 8 different
// bank groups for each of 8 consecutive rows, so both the 16-byte cp.async stores and the ldmatrix
// reads (8 rows x 16 bytes per phase) are conflict-free.
template <class Element, int kRows, int kCols>
CUTE_HOST_DEVICE constexpr auto swizzled_smem_layout() {
  using namespace cute;
  static_assert(sizeof(Element) == 2 && kCols % 64 == 0 && kRows % 8 == 0);
  auto atom = composition(Swizzle<3, 3, 3>{}, Layout<Shape<_8, _64>, Stride<_64, _1>>{});  // (8, 64)
  return tile_to_shape(atom, Shape<Int<kRows>, Int<kCols>>{});
}

// Issues the cp.async of one thread's share of a tile. src / dst: the thread's partition
// (CPY, CPY_M, CPY_K) of the global and shared tiles; coords: the same partition of an identity tensor
// of the tile. Does not commit: the caller groups copies with cp_async_fence().
template <class TiledCopy, class SrcTensor, class DstTensor, class CoordTensor>
__device__ __forceinline__ void copy_tile_async(const TiledCopy& tiled_copy, const SrcTensor& src, DstTensor&& dst,
                                                const CoordTensor& coords, int valid_rows, int valid_cols) {
  using namespace cute;
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    const bool row_ok = get<0>(coords(0, m, 0)) < valid_rows;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) {
      const bool ok = row_ok && get<1>(coords(0, m, k)) < valid_cols;
      copy(tiled_copy.with(ok), src(_, m, k), dst(_, m, k));
    }
  }
}

// Stores one thread's share of a tile, skipping chunks outside [valid_rows) x [valid_cols).
template <class TiledCopy, class SrcTensor, class DstTensor, class CoordTensor>
__device__ __forceinline__ void store_tile(const TiledCopy& tiled_copy, const SrcTensor& src, DstTensor&& dst,
                                           const CoordTensor& coords, int valid_rows, int valid_cols) {
  using namespace cute;
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    if (get<0>(coords(0, m, 0)) >= valid_rows) continue;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) {
      if (get<1>(coords(0, m, k)) < valid_cols) copy(tiled_copy, src(_, m, k), dst(_, m, k));
    }
  }
}

}  // namespace attnkit::device
