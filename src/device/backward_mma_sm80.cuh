// Warp-level tensor-core building blocks for sm_80+ (also valid on sm_90): cp.async with zero fill,
// ldmatrix (plain and transposed), mma.sync m16n8k16 with fp32 accumulators, and the XOR-swizzled
// shared-memory tile layout they read without bank conflicts. Used by the dense backward kernels; the
// linear-attention kernels build their fragment loads on the same primitives (linear_mma_sm80.cuh).
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4), PTX ISA "Matrix fragments for mma":
//   A (16 x 16, row major): a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B (16 x 8, k x n):      b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8.., n g)
//   C (16 x 8, fp32):       c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace attnkit::device::backward {

// ---- Element types ---------------------------------------------------------------------------------

template <typename Element>
struct MmaElement;

template <>
struct MmaElement<__nv_bfloat16> {
  static constexpr const char* kPtxType = "bf16";
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&pair);
  }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

template <>
struct MmaElement<__half> {
  static constexpr const char* kPtxType = "f16";
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&pair);
  }
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
};

// D = A * B + D, m16n8k16, fp32 accumulate.
template <typename Element>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                            std::uint32_t b1) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// ---- Shared memory ---------------------------------------------------------------------------------

__device__ __forceinline__ std::uint32_t smem_address(const void* pointer) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(pointer));
}

// Four 8x8 b16 matrices; lane l gives the row address of matrix l / 8, row l % 8.
// Register j receives matrix j: lane holds (row lane / 4, cols 2 (lane % 4) ..+1), or with .trans the
// transposed matrix (row = original column).
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// The inverse of ldmatrix_x4 (sm_90): lane l gives the row address of matrix l / 8, row l % 8, and
// register j holds the lane's pair (row lane / 4, cols 2 (lane % 4) ..+1) of matrix j. One instruction
// stores what four st.shared.b32 store.
__device__ __forceinline__ void stmatrix_x4(std::uint32_t address, std::uint32_t r0, std::uint32_t r1, std::uint32_t r2,
                                            std::uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
}
#endif

// 16-byte global -> shared copy; `source_bytes` = 0 writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(std::uint32_t shared_address, const void* global_pointer,
                                            bool valid) {
  const int source_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address), "l"(global_pointer),
               "r"(source_bytes));
}

// 4-byte global -> shared copy (fp32 row statistics); invalid writes 4 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_4(std::uint32_t shared_address, const void* global_pointer, bool valid) {
  const int source_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address), "l"(global_pointer),
               "r"(source_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPendingGroups>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPendingGroups));
}

// A tile of kRows x kCols 16-bit elements, rows contiguous, with the 16-byte chunks of each 128-byte
// row segment permuted by XOR with (row % 8). The 8 row addresses of one ldmatrix matrix (8 rows, one
// chunk column) then fall in 8 different bank groups, and so do the 16-byte cp.async writes of a warp.
// kCols must be a multiple of 64 (one 128-byte segment).
template <int kRows, int kCols>
struct SwizzledTile {
  static_assert(kCols % 64 == 0, "a swizzled row holds whole 128-byte segments");
  static constexpr int kElements = kRows * kCols;
  static constexpr int kBytes = kElements * 2;
  static constexpr int kChunksPerRow = kCols / 8;

  // Element offset of (row, col); col must be a multiple of 8 (a chunk start) or lie inside one.
  static __device__ __forceinline__ int offset(int row, int col) {
    const int chunk = col >> 3;
    return row * kCols + ((chunk ^ (row & 7)) << 3) + (col & 7);
  }

  // Byte address of (row + drow, col + dcol) from the byte address `base` of (row, col), without
  // recomputing the swizzle: one XOR with a constant plus an add that folds into the load's immediate.
  // Valid when drow is a multiple of 8 (row % 8 unchanged) and the chunk bits of dcol (a multiple of 8)
  // are disjoint from those of col; then (col + dcol) / 8 = (col / 8) | (dcol / 8), whose low three bits
  // are XOR-ed with row % 8 and whose higher bits select a 128-byte segment. Callers satisfy it by
  // keeping col = (warp offset, a multiple of the power-of-two warp tile) + (lane offset, < 16) and
  // dcol < the warp tile, a multiple of the lane offsets' span.
  static __device__ __forceinline__ std::uint32_t advance(std::uint32_t base, int drow, int dcol) {
    return (base ^ static_cast<std::uint32_t>(((dcol >> 3) & 7) << 4)) +
           static_cast<std::uint32_t>(drow * kCols * 2 + (dcol >> 6) * 128);
  }
};

}  // namespace attnkit::device::backward
