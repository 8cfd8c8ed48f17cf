// The two register-level GEMM loops of FlashAttention-style kernels on mma.sync (sm_80+):
//   gemm_smem_smem:  acc += A * B^T with both operands read from shared memory by ldmatrix
//   gemm_regs_smem:  acc += A * B^T with A already in registers (P = softmax(S)) and B from shared memory
// Both walk the k dimension one MMA_K slice at a time and issue the ldmatrix of slice k + 1 while the
// mma of slice k run, so shared-memory latency hides behind tensor-core work.
//
// Fragments come from the caller's ThrMMA (partition_fragment_A/B); the shared-memory sources are the
// thread's partition_S of the matching ldmatrix tiled copies (make_tiled_copy_A/B), which are passed
// too (cute::copy takes the TiledCopy, not its thread slice).
#pragma once

#include <cute/tensor.hpp>

namespace attnkit::device {

// An MMA fragment seen with the value grouping of a tiled copy (what ThrCopy::retile_D does, from the
// TiledCopy itself, since cute::copy needs the TiledCopy).
template <class TiledCopy, class Fragment>
__device__ __forceinline__ auto retiled(const TiledCopy&, Fragment& fragment) {
  return cute::make_tensor(fragment.data(), TiledCopy::retile(fragment.layout()));
}

// acc (MMA, MMA_M, MMA_N) += A (MMA, MMA_M, MMA_K) * B (MMA, MMA_N, MMA_K)^T.
// a_regs / b_regs: the MMA fragments; a_smem / b_smem: (CPY, CPY_M|N, CPY_K) ldmatrix sources;
// a_copy / b_copy: the TiledCopy objects whose thread slices produced them.
//
// B of slice k + 1 is loaded one ldmatrix (two n8 atoms) at a time, each right after the mma that
// consume the same columns of slice k: then only about one B slice is live at once instead of two. At
// a 128-key tile that is 32 registers per thread, the difference between fitting 255 and spilling
// (acc_s 128 + acc_o 64 + two B slices 64 + A slices 16 at D = 64).
template <class TiledMma, class Acc, class ARegs, class BRegs, class ASmem, class BSmem, class ACopy, class BCopy>
__device__ __forceinline__ void gemm_smem_smem(const TiledMma& mma, Acc& acc, ARegs& a_regs, BRegs& b_regs,
                                               const ASmem& a_smem, const BSmem& b_smem, const ACopy& a_copy,
                                               const BCopy& b_copy) {
  using namespace cute;
  auto a_view = retiled(a_copy, a_regs);  // (CPY, CPY_M, CPY_K) view of the A fragment
  auto b_view = retiled(b_copy, b_regs);  // (CPY, CPY_N, CPY_K) view of the B fragment
  constexpr int kSlices = decltype(size<2>(a_regs))::value;
  constexpr int kAtomsN = decltype(size<1>(b_regs))::value;    // n8 atoms
  constexpr int kCopiesN = decltype(size<1>(b_view))::value;   // ldmatrix per k slice
  static_assert(kSlices == decltype(size<2>(b_regs))::value && kAtomsN % kCopiesN == 0);
  copy(a_copy, a_smem(_, _, 0), a_view(_, _, 0));
  copy(b_copy, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < kSlices; ++k) {
    if (k + 1 < kSlices) copy(a_copy, a_smem(_, _, k + 1), a_view(_, _, k + 1));
    CUTE_UNROLL
    for (int n = 0; n < kAtomsN; ++n) {
      CUTE_UNROLL
      for (int m = 0; m < size<1>(a_regs); ++m) gemm(mma, a_regs(_, m, k), b_regs(_, n, k), acc(_, m, n));
      constexpr int kAtomsPerCopy = kAtomsN / kCopiesN;
      if (k + 1 < kSlices && n % kAtomsPerCopy == kAtomsPerCopy - 1) {
        copy(b_copy, b_smem(_, n / kAtomsPerCopy, k + 1), b_view(_, n / kAtomsPerCopy, k + 1));
      }
    }
  }
}

// acc (MMA, MMA_M, MMA_N) += A (MMA, MMA_M, MMA_K, in registers) * B (MMA, MMA_N, MMA_K)^T.
template <class TiledMma, class Acc, class ARegs, class BRegs, class BSmem, class BCopy>
__device__ __forceinline__ void gemm_regs_smem(const TiledMma& mma, Acc& acc, const ARegs& a_regs, BRegs& b_regs,
                                               const BSmem& b_smem, const BCopy& b_copy) {
  using namespace cute;
  auto b_view = retiled(b_copy, b_regs);  // (CPY, CPY_N, CPY_K) view of the B fragment
  static_assert(decltype(size<2>(a_regs))::value == decltype(size<2>(b_regs))::value);
  copy(b_copy, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(a_regs); ++k) {
    if (k + 1 < size<2>(a_regs)) copy(b_copy, b_smem(_, _, k + 1), b_view(_, _, k + 1));
    gemm(mma, a_regs(_, _, k), b_regs(_, _, k), acc);
  }
}

}  // namespace attnkit::device
