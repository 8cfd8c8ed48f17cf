// The parts of the chunked GDN and KDA output kernels (linear_gdn_chunked_sm80_kernel.cuh,
// linear_kda_chunked_sm80_kernel.cuh) that do not depend on the decay's form. Both compute, per chunk slot,
// value head and block of 128 value columns, O = diag(d) Q S + P v_new with 8 warps (warp w: rows 16 (w % 4)
// .. + 15 of the chunk, columns 64 (w / 4) .. + 63 of the block); GDN forms P and d from q, k and its
// scalar decay in the kernel, KDA reads P's pair and the decayed q from its prep. What they share, once:
// the loads of S and of the v_new pair, P v_new from P's pair (three MMAs a product), and O's stores.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_mma_sm80.cuh"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"

namespace attnkit::sm80::linear_detail {

constexpr int kOutputColumns = 128;
constexpr int kOutputThreads = 256;

// cp.async copies of S at the chunk's start (this block's columns, [kKeyPad] rows) and of the v_new pair
// ([kChunk] rows) of chunk slot x value head `sh` into Element tiles whose rows are `ld` apart; columns
// past value_pad (V <= 64: the block's second half) are zero. The caller commits the group.
template <typename Element>
__device__ __forceinline__ void load_state_and_v_new(Element* state, Element* v_new, Element* v_new_lo, int ld,
                                                     const LinearChunkWorkspace& ws, std::int64_t sh, int col0) {
  constexpr int kPieces = kOutputColumns / 8;  // 16-byte pieces of a row of S or v_new
  const int tid = threadIdx.x;
  const int width = ws.value_pad - col0 < kOutputColumns ? ws.value_pad - col0 : kOutputColumns;
  const Element* h_ws = static_cast<const Element*>(ws.h) + sh * kKeyPad * ws.value_pad + col0;
  for (int e = tid; e < kKeyPad * kPieces; e += kOutputThreads) {
    const int r = e / kPieces;
    const int j = (e % kPieces) * 8;
    Element* d = &state[r * ld + j];
    if (j < width) cp_async_16(d, h_ws + r * ws.value_pad + j);
    else *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
  }
  const std::int64_t v_at = sh * kChunk * ws.value_pad + col0;
  const Element* v_hi = static_cast<const Element*>(ws.v_new) + v_at;
  const Element* v_lo = static_cast<const Element*>(ws.v_new_lo) + v_at;
  for (int e = tid; e < kChunk * kPieces; e += kOutputThreads) {
    const int r = e / kPieces;
    const int j = (e % kPieces) * 8;
    Element* d_hi = &v_new[r * ld + j];
    Element* d_lo = &v_new_lo[r * ld + j];
    if (j < width) {
      cp_async_16(d_hi, v_hi + r * ws.value_pad + j);
      cp_async_16(d_lo, v_lo + r * ws.value_pad + j);
    } else {
      *reinterpret_cast<uint4*>(d_hi) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(d_lo) = make_uint4(0, 0, 0, 0);
    }
  }
}

// o += P v_new over k-step kk (the chunk's tokens 16 kk .. + 15) for the warp's 64 columns from column0:
// P_hi v_hi + P_lo v_hi + P_hi v_lo, P's pair as the A fragments of k-step kk (the lo x lo term is below
// Element's rounding of O).
template <typename Element>
__device__ __forceinline__ void add_p_times_v_new(float (&o)[8][4], const unsigned (&p_hi)[4], const unsigned (&p_lo)[4],
                                                  const Element* v_new, const Element* v_new_lo, int ld, int kk,
                                                  int column0) {
#pragma unroll
  for (int np = 0; np < 4; ++np) {
    const int at = kk * kTile * ld + column0 + np * kTile;
    unsigned b[4], b_lo[4];
    load_b_kn(b, v_new + at, ld);
    load_b_kn(b_lo, v_new_lo + at, ld);
    mma_16x8x16<Element>(o[2 * np], p_hi, b[0], b[1]);
    mma_16x8x16<Element>(o[2 * np], p_lo, b[0], b[1]);
    mma_16x8x16<Element>(o[2 * np], p_hi, b_lo[0], b_lo[1]);
    mma_16x8x16<Element>(o[2 * np + 1], p_hi, b[2], b[3]);
    mma_16x8x16<Element>(o[2 * np + 1], p_lo, b[2], b[3]);
    mma_16x8x16<Element>(o[2 * np + 1], p_hi, b_lo[2], b_lo[3]);
  }
}

// Stores O, the warp's accumulators (rows row0 and row0 + 8, columns column0 + 8 j + t2 ..), through
// `stage` ([kChunk] rows `ld` apart, over the q tile: the first barrier waits until every warp has read
// it) so that the global stores are 16-byte row pieces; `out` points at the chunk's first token, value
// column 0 of the head, and only its `rows` tokens and value_dim columns are written.
template <typename Element>
__device__ __forceinline__ void store_output(const float (&o)[8][4], Element* stage, int ld, Element* out,
                                             std::int64_t token_stride, int value_dim, int rows, int col0, int row0,
                                             int column0, int t2) {
  constexpr int kPieces = kOutputColumns / 8;
  __syncthreads();  // every warp has read q
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int col = column0 + j * 8 + t2;
    *reinterpret_cast<unsigned*>(stage + row0 * ld + col) = pack_pair<Element>(o[j][0], o[j][1]);
    *reinterpret_cast<unsigned*>(stage + (row0 + 8) * ld + col) = pack_pair<Element>(o[j][2], o[j][3]);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kChunk * kPieces; e += kOutputThreads) {
    const int t = e / kPieces;
    const int j = (e % kPieces) * 8;
    const int col = col0 + j;
    if (t >= rows || col >= value_dim) continue;
    Element* dst = out + t * token_stride + col;
    const Element* src = stage + t * ld + j;
    if (col + 8 <= value_dim && reinterpret_cast<std::uintptr_t>(dst) % 16 == 0) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int u = 0; u < 8 && col + u < value_dim; ++u) dst[u] = src[u];
    }
  }
}

}  // namespace attnkit::sm80::linear_detail
