// mma.sync m16n8k16 building blocks (sm80+) for the linear-attention kernels that keep their tiles in
// registers: ldmatrix loads of A and B fragments from shared memory, the MMA itself for bf16 / fp16
// operands with fp32 accumulation, and Element pairs packed into 32-bit fragment registers.
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

#include <cstdint>
#include <type_traits>

namespace attnkit::sm80::linear_detail {

__device__ __forceinline__ unsigned shared_address(const void* pointer) {
  return static_cast<unsigned>(__cvta_generic_to_shared(pointer));
}

// Four 8 x 8 matrices of 16-bit elements; lane l gives the row address of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

// A fragment of the 16 x 16 block at `block` of a row-major matrix (ld in elements).
template <typename Element>
__device__ __forceinline__ void load_a(unsigned (&a)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(a, block + (lane & 15) * ld + (lane >> 4) * 8);
}

// A fragment of the 16 x 16 block of X^T whose transpose X is stored row-major [k][m] at `block` (as k
// [token][channel] for k^T in the state update): transposing loads.
template <typename Element>
__device__ __forceinline__ void load_a_trans(unsigned (&a)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4_trans(a, block + ((lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8);
}

// B fragments of two n-tiles (n0 .. n0 + 15) for k-step rows k0 .. k0 + 15 where B^T is stored row-major
// [n][k] (B = X^T for a row-major X, as K in Q K^T): b[0], b[1] for n-tile 0, b[2], b[3] for n-tile 1.
template <typename Element>
__device__ __forceinline__ void load_b_nk(unsigned (&b)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(b, block + ((lane & 7) + ((lane >> 4) << 3)) * ld + ((lane >> 3) & 1) * 8);
}

// The same two n-tiles where B is stored row-major [k][n] (as S or v_new): transposing loads.
template <typename Element>
__device__ __forceinline__ void load_b_kn(unsigned (&b)[4], const Element* block, int ld) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4_trans(b, block + ((lane & 7) + (((lane >> 3) & 1) << 3)) * ld + (lane >> 4) * 8);
}

// c += a b, one m16n8k16 MMA.
template <typename Element>
__device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats as a packed Element pair (x in the low half), rounded to nearest.
template <typename Element>
__device__ __forceinline__ unsigned pack_pair(float x, float y) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<const unsigned*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(x, y);
    return *reinterpret_cast<const unsigned*>(&v);
  }
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
