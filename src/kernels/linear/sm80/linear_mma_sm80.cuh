// mma.sync m16n8k16 building blocks (sm80+) for the linear-attention kernels that keep their tiles in
// registers: the A and B fragment loads of their operand layouts and the bf16 / fp16 hi + lo split, on the
// project's ldmatrix, MMA and packing primitives (device/backward_mma_sm80.cuh).
//
// Fragment layout of m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4 g + t:
//   A (16 x 16, 4 registers): a0 = (row g, cols 2t, 2t + 1), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..),
//                              a3 = (g + 8, 2t + 8..)
//   B (16 x 8, 2 registers):  b0 = (rows 2t, 2t + 1, col g), b1 = (rows 2t + 8, 2t + 9, col g)
//   C (16 x 8, 4 floats):     c0, c1 = (row g, cols 2t, 2t + 1), c2, c3 = (row g + 8, cols 2t, 2t + 1)
// So the C tiles of columns 16 kk .. 16 kk + 15 (two n-tiles) are, packed in pairs, the A fragment of
// k-step kk: a product's result feeds the next MMA without a trip through shared memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "device/backward_mma_sm80.cuh"

namespace attnkit::sm80::linear_detail {

using device::backward::ldmatrix_x4;
using device::backward::ldmatrix_x4_trans;
using device::backward::mma_16x8x16;  // c += a b, one m16n8k16 MMA
using device::backward::smem_address;

// A fragment of the 16 x 16 block at `block` of a row-major matrix (ld in elements).
template <typename Element>
__device__ __forceinline__ void load_a(unsigned (&a)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(a, smem_address(block + (lane & 15) * ld + (lane >> 4) * 8));
}

// A fragment of the 16 x 16 block of X^T whose transpose X is stored row-major [k][m] at `block` (as k
// [token][channel] for k^T in the state update): transposing loads.
template <typename Element>
__device__ __forceinline__ void load_a_trans(unsigned (&a)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4_trans(a, smem_address(block + ((lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8));
}

// B fragments of two n-tiles (n0 .. n0 + 15) for k-step rows k0 .. k0 + 15 where B^T is stored row-major
// [n][k] (B = X^T for a row-major X, as K in Q K^T): b[0], b[1] for n-tile 0, b[2], b[3] for n-tile 1.
template <typename Element>
__device__ __forceinline__ void load_b_nk(unsigned (&b)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(b, smem_address(block + ((lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8));
}

// The same two n-tiles where B is stored row-major [k][n] (as S or v_new): transposing loads.
template <typename Element>
__device__ __forceinline__ void load_b_kn(unsigned (&b)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4_trans(b, smem_address(block + ((lane & 7) + (((lane >> 3) & 1) << 3)) * ld + (lane >> 4) * 8));
}

// Two floats as a packed Element pair (x in the low half), rounded to nearest.
template <typename Element>
__device__ __forceinline__ unsigned pack_pair(float x, float y) {
  return device::backward::MmaElement<Element>::pack(x, y);
}

// The pair of split_element (hi = round(x), lo = round(x - hi)) for two floats, packed.
// `hi` and `lo` may point to shared or global memory.
template <typename Element>
__device__ __forceinline__ void split_pair(float x, float y, unsigned* hi, unsigned* lo) {
  const unsigned packed = pack_pair<Element>(x, y);
  float2 rounded;
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    rounded = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&packed));
  } else {
    rounded = __half22float2(*reinterpret_cast<const __half2*>(&packed));
  }
  *hi = packed;
  *lo = pack_pair<Element>(x - rounded.x, y - rounded.y);
}

}  // namespace attnkit::sm80::linear_detail
