// The parts of the chunked GDN and KDA state passes (linear_gdn_chunked_sm80_kernel.cuh,
// linear_kda_chunked_sm80_kernel.cuh) that do not depend on the decay's form. Both walk one (sequence,
// value head, kSlice value columns) through its chunks with 4 warps per 16 columns: warp w keeps S rows
// 32 (w % 4) .. + 31, columns 16 (w / 4) .. + 15 of the slice in mma.sync accumulators s[mt][nt][e] = S[32
// (w % 4) + 16 mt + g + 8 (e / 2)][16 (w / 4) + 8 nt + t2 + e % 2] (C fragment layout). What they share,
// once: the CTA's place, the initial and final state, S published as Element (shared memory and the
// workspace), and v_new = u + w_neg S. What differs (a decay per chunk or per key; the stage's operands;
// the decayed v_new copy or the k pair in the update) stays in each kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_mma_sm80.cuh"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"

namespace attnkit::sm80::linear_detail {

// The (sequence, value head, slice) of a state CTA: grid.x = sequences x slices, grid.y = value heads.
struct StateSlicePlace {
  int n = 0;                // sequence
  int col0 = 0;             // the slice's first value column
  int hv = 0;               // value head
  std::int64_t chunks = 0;  // the sequence's chunks
};

template <int kSlice>
__device__ __forceinline__ StateSlicePlace locate_state_slice(const LinearForwardParams& params) {
  const int slices = (params.common.value_dim + kSlice - 1) / kSlice;
  StateSlicePlace place;
  place.n = blockIdx.x / slices;
  place.col0 = (blockIdx.x % slices) * kSlice;
  place.hv = blockIdx.y;
  const int n = place.n;
  const std::int64_t length = params.cu_seqlens == nullptr
                                  ? params.seqlen
                                  : params.cu_seqlens[(n + 1) * params.cu_seqlens_stride] - params.cu_seqlens[n * params.cu_seqlens_stride];
  place.chunks = (length + kChunk - 1) / kChunk;
  return place;
}

// Offset of S[i][j] (key i, value j) of sequence n, value head hv in a state tensor of either layout.
__device__ __forceinline__ std::int64_t state_element_offset(const LinearStateTensor& s, bool vk, int n, int hv, int i,
                                                             int j) {
  return n * s.sequence_stride + hv * s.head_stride + (vk ? j * s.row_stride + i : i * s.row_stride + j);
}

// The warp's fragment of the initial state (zero without one, and past K or V); `col` = the slice's first
// column plus the warp's.
__device__ __forceinline__ void load_initial_state(float (&s)[2][2][4], const LinearForwardParams& params, int n, int hv,
                                                   int row_block, int col, int g, int t2) {
  const LinearCommonParams& c = params.common;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = row_block * 32 + mt * kTile + g + (e >> 1) * 8;
        const int j = col + nt * 8 + t2 + (e & 1);
        const bool present = params.initial_state.data != nullptr && i < c.key_dim && j < c.value_dim;
        s[mt][nt][e] = present ? params.initial_state.data[state_element_offset(params.initial_state, c.state_vk, n, hv, i, j)] : 0.0f;
      }
    }
  }
}

// The warp's fragment of the final state, where one is asked for.
__device__ __forceinline__ void store_final_state(const float (&s)[2][2][4], const LinearForwardParams& params, int n, int hv,
                                                  int row_block, int col, int g, int t2) {
  const LinearCommonParams& c = params.common;
  if (params.final_state.data == nullptr) return;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = row_block * 32 + mt * kTile + g + (e >> 1) * 8;
        const int j = col + nt * 8 + t2 + (e & 1);
        if (i < c.key_dim && j < c.value_dim) params.final_state.data[state_element_offset(params.final_state, c.state_vk, n, hv, i, j)] = s[mt][nt][e];
      }
    }
  }
}

// The warp's S as Element: to `state_lowp` [kKeyPad][kLdSlice] (the next v_new's operand) and, for chunk
// slot `slot` >= 0, to the workspace in 16-byte pieces read back from shared memory.
template <typename Element, int kLdSlice>
__device__ __forceinline__ void publish_state(const float (&s)[2][2][4], Element* state_lowp, const LinearForwardParams& params,
                                              std::int64_t slot, int hv, int row_block, int column0, int col0, int g,
                                              int t2) {
  const LinearChunkWorkspace& ws = params.chunk;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      Element* at = state_lowp + (row_block * 32 + mt * kTile + g) * kLdSlice + column0 + nt * 8 + t2;
      *reinterpret_cast<unsigned*>(at) = pack_pair<Element>(s[mt][nt][0], s[mt][nt][1]);
      *reinterpret_cast<unsigned*>(at + 8 * kLdSlice) = pack_pair<Element>(s[mt][nt][2], s[mt][nt][3]);
    }
  }
  if (slot < 0) return;
  __syncwarp();
  Element* h = static_cast<Element*>(ws.h) + ((slot * params.common.heads_v + hv) * kKeyPad + row_block * 32) * ws.value_pad +
               col0 + column0;
#pragma unroll
  for (int e = lane; e < 64; e += 32) {  // 32 rows x 2 pieces of 8 columns
    const int r = e >> 1;
    const int j = (e & 1) * 8;
    *reinterpret_cast<uint4*>(h + r * ws.value_pad + j) =
        *reinterpret_cast<const uint4*>(state_lowp + (row_block * 32 + r) * kLdSlice + column0 + j);
  }
}

// v = u + w_neg S for the warp's tokens 16 row_block + g (+ 8) and 16 columns from column0, in two
// accumulator sets (even and odd k-steps, v[0] starting from u) so that the dependent MMA chain is 4
// long, not 8; the caller adds v[0] + v[1]. u: [kChunk][kLdSliceF] fp32, w: [kChunk][kLdKey],
// state_lowp: [kKeyPad][kLdSlice].
template <typename Element, int kLdKey, int kLdSlice, int kLdSliceF>
__device__ __forceinline__ void u_plus_w_neg_state(float (&v)[2][2][4], const float* u, const Element* w, const Element* state_lowp,
                                                   int row_block, int column0, int g, int t2) {
  const int token0 = row_block * kTile + g;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    const int col = column0 + nt * 8 + t2;
    const float2 top = *reinterpret_cast<const float2*>(&u[token0 * kLdSliceF + col]);
    const float2 bottom = *reinterpret_cast<const float2*>(&u[(token0 + 8) * kLdSliceF + col]);
    v[0][nt][0] = top.x;
    v[0][nt][1] = top.y;
    v[0][nt][2] = bottom.x;
    v[0][nt][3] = bottom.y;
#pragma unroll
    for (int e = 0; e < 4; ++e) v[1][nt][e] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
    unsigned a[4], b[4];
    load_a(a, w + row_block * kTile * kLdKey + kk * kTile, kLdKey);
    load_b_kn(b, state_lowp + kk * kTile * kLdSlice + column0, kLdSlice);
    mma_16x8x16<Element>(v[kk & 1][0], a, b[0], b[1]);
    mma_16x8x16<Element>(v[kk & 1][1], a, b[2], b[3]);
  }
}

}  // namespace attnkit::sm80::linear_detail
