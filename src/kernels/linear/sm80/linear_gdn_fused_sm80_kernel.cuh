// The GDN forward's state pass with the output beside it (linear_gdn_chunked_sm80_kernel.cuh has the
// formulas): one CTA per (sequence, value head, kSlice value columns) runs the state kernel's chain warps
// and four output warps of its own. For chunk c the output warps compute, for the CTA's columns,
//   O_c = diag(scale f_q exp(G)) Q S_c + P v_new_c,  P[t][s] = scale f_q(t) exp(G_t - G_s) q_t . k_s (s <= t),
// from S_c and v_new_c as the chain leaves them in shared memory, while the chain goes on with chunk c + 1:
// neither S per chunk nor the v_new pair passes through the workspace (at (B, T, HV) = (4, 8192, 32),
// K = V = 128, 1.07 GB written by the state pass and read back by the output kernel), and the output
// kernel's launch goes. Q K^T does not depend on the state, so the output warps form P before S_c is
// published; only Q S_c (8 k-steps) lies between S_c's publication and the chain's next one.
//
// The two groups meet at named barriers (bar.arrive by the producer, bar.sync by the consumer), one
// chunk of slack each way:
//   kStateFull  chain -> output: S_c is in state_lowp (after the chain's publication of S_c);
//   kStateFree  output -> chain: Q S_c is done, the chain may publish S_{c+1} over it;
//   kValueFull  chain -> output: v_new_c (not decayed, as hi + lo) is in v_out / v_out_lo;
//   kValueFree  output -> chain: P v_new_{c-1} is done, the chain may write v_new_c.
// Each producer arrives only after its consumer has passed the previous generation (the opposite barrier
// orders them), so no barrier's arrivals run a generation ahead. Arrivals whose consumer would never wait
// (the last chunk's kStateFree and kValueFree) are not made.
//
// The output warps read q from the tensors (as the output kernel) and k and G from the workspace, where
// prep wrote them (k L2-normalised there: no k factor), into buffers of their own, so that the chain's
// cp.async stages are freed on the chain's schedule alone; q, k and G of chunk c + 1 are in flight while
// P v_new_c is computed and O_c stored. Warp w of the output owns the chunk's rows 16 w .. + 15 and all
// kSlice columns; O is stored as 8-byte pieces, a quad covering a row's 32-byte sector (the state
// kernel's shuffle).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/linear/sm80/linear_gdn_chunked_sm80_kernel.cuh"

namespace attnkit::sm80::linear_detail {

constexpr int kFusedOutputThreads = 128;

template <int kSlice>
constexpr int fused_threads() {
  return state_threads<kSlice>() + kFusedOutputThreads;
}

// Named barriers (0 is __syncthreads).
enum FusedBarrier : int {
  kChainBarrier = 1,   // the chain warps alone (the state kernel's __syncthreads)
  kOutputBarrier = 2,  // the output warps alone
  kStateFull = 3,
  kStateFree = 4,
  kValueFull = 5,
  kValueFree = 6,
};

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

template <typename Element, int kSlice>
struct FusedShared {
  static constexpr int kLdKey = kKeyPad + 8;
  static constexpr int kLdSlice = kSlice + 8;
  StateShared<Element, kSlice> chain;
  alignas(128) Element v_out[kChunk * kLdSlice];     // v_new_c: hi part
  alignas(128) Element v_out_lo[kChunk * kLdSlice];  // and lo part
  alignas(128) Element q[kChunk * kLdKey];           // the output warps' q, k and G of chunk c (then c + 1)
  alignas(128) Element k[kChunk * kLdKey];
  alignas(16) float gate[kChunk];
  alignas(16) float q_factor[kChunk];
};
static_assert(sizeof(FusedShared<__nv_bfloat16, 16>) == gdn_fused_shared_bytes(16), "linear_gdn_plan.h's size");
static_assert(sizeof(FusedShared<__half, 32>) == gdn_fused_shared_bytes(32), "linear_gdn_plan.h's size");
static_assert(sizeof(FusedShared<__nv_bfloat16, 64>) == gdn_fused_shared_bytes(64), "linear_gdn_plan.h's size");

// The chain warps: the state kernel's loop (same operands, same arithmetic), with S published to shared
// memory only and v_new to v_out / v_out_lo instead of the workspace.
template <typename Element, int kSlice>
__device__ __forceinline__ void fused_chain(FusedShared<Element, kSlice>& fs, const LinearForwardParams& params,
                                            const StateSlicePlace& place) {
  using Shared = StateShared<Element, kSlice>;
  constexpr int kThreads = state_threads<kSlice>();
  constexpr int kAll = fused_threads<kSlice>();
  constexpr int kStages = Shared::kStages;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdSlice = Shared::kLdSlice;
  constexpr int kLdSliceF = Shared::kLdSliceF;
  Shared& sm = fs.chain;
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row_block = warp & 3;
  const int column0 = (warp >> 2) * 16;
  const int n = place.n;
  const int col0 = place.col0;
  const int hv = place.hv;
  const std::int64_t chunks = place.chunks;
  const std::int64_t first_slot = sequence_first_slot(params, n);
  const Element* w_ws = static_cast<const Element*>(ws.w_neg);
  const Element* k_ws = static_cast<const Element*>(ws.key);

  auto prefetch = [&](std::int64_t chunk, int buf) {
    if (chunk >= chunks) {
      cp_async_commit();
      return;
    }
    const std::int64_t sh = (first_slot + chunk) * c.heads_v + hv;
    const Element* w = w_ws + sh * kChunk * kKeyPad;
    const Element* k = k_ws + sh * kChunk * kKeyPad;
    for (int e = tid; e < kChunk * (kKeyPad / 8); e += kThreads) {
      const int t = e / (kKeyPad / 8);
      const int i = (e % (kKeyPad / 8)) * 8;
      cp_async_16(&sm.w[buf][t * kLdKey + i], w + t * kKeyPad + i);
      cp_async_16(&sm.k[buf][t * kLdKey + i], k + t * kKeyPad + i);
    }
    const float* u = ws.u + sh * kChunk * ws.value_pad + col0;
    for (int e = tid; e < kChunk * (kSlice / 4); e += kThreads) {
      const int t = e / (kSlice / 4);
      const int j = (e % (kSlice / 4)) * 4;
      cp_async_16(&sm.u[buf][t * kLdSliceF + j], u + t * ws.value_pad + j);
    }
    if (tid < kChunk / 4) cp_async_16(&sm.gate[buf][tid * 4], ws.gate + sh * kChunk + tid * 4);
    cp_async_commit();
  };
  float s[2][2][4];
  load_initial_state(s, params, n, hv, row_block, col0 + column0, g, t2);

#pragma unroll
  for (int stage = 0; stage < kStages - 1; ++stage) prefetch(stage, stage);
  publish_state<Element, kLdSlice>(s, sm.state_lowp, params, -1, hv, row_block, column0, col0, g, t2);
  if (chunks > 0) named_barrier_arrive(kStateFull, kAll);

  int buf = 0;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    cp_async_wait_group<kStages - 2>();
    named_barrier_sync(kChainBarrier, kThreads);
    prefetch(chunk + kStages - 1, buf == 0 ? kStages - 1 : buf - 1);

    const int token0 = row_block * kTile + g;
    float v[2][2][4];
    u_plus_w_neg_state<Element, kLdKey, kLdSlice, kLdSliceF>(v, sm.u[buf], sm.w[buf], sm.state_lowp, row_block, column0, g, t2);
    const float g_last = sm.gate[buf][kChunk - 1];
    const float tail[2] = {__expf(g_last - sm.gate[buf][token0]), __expf(g_last - sm.gate[buf][token0 + 8])};
    named_barrier_sync(kValueFree, kAll);  // the output warps are done with v_new_{c-1}
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int token = token0 + half * 8;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int col = column0 + nt * 8 + t2;
        const float x0 = v[0][nt][half * 2] + v[1][nt][half * 2];
        const float x1 = v[0][nt][half * 2 + 1] + v[1][nt][half * 2 + 1];
        const int at = token * kLdSlice + col;
        split_pair<Element>(x0, x1, reinterpret_cast<unsigned*>(fs.v_out + at), reinterpret_cast<unsigned*>(fs.v_out_lo + at));
        split_pair<Element>(x0 * tail[half], x1 * tail[half], reinterpret_cast<unsigned*>(sm.v_new + at),
                            reinterpret_cast<unsigned*>(sm.v_new_lo + at));
      }
    }
    named_barrier_arrive(kValueFull, kAll);
    named_barrier_sync(kChainBarrier, kThreads);

    const float decay = __expf(g_last);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] *= decay;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kChunk / kTile; ++kk) {
      unsigned b[4], b_lo[4];
      load_b_kn(b, sm.v_new + kk * kTile * kLdSlice + column0, kLdSlice);
      load_b_kn(b_lo, sm.v_new_lo + kk * kTile * kLdSlice + column0, kLdSlice);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        unsigned a[4];
        load_a_trans(a, sm.k[buf] + kk * kTile * kLdKey + row_block * 32 + mt * kTile, kLdKey);
        mma_16x8x16<Element>(s[mt][0], a, b[0], b[1]);
        mma_16x8x16<Element>(s[mt][1], a, b[2], b[3]);
        mma_16x8x16<Element>(s[mt][0], a, b_lo[0], b_lo[1]);
        mma_16x8x16<Element>(s[mt][1], a, b_lo[2], b_lo[3]);
      }
    }
    if (chunk + 1 < chunks) {
      named_barrier_sync(kStateFree, kAll);  // the output warps are done with S_c
      publish_state<Element, kLdSlice>(s, sm.state_lowp, params, -1, hv, row_block, column0, col0, g, t2);
      named_barrier_arrive(kStateFull, kAll);
    }
    buf = buf + 1 == kStages ? 0 : buf + 1;
  }

  store_final_state(s, params, n, hv, row_block, col0 + column0, g, t2);
}

// The output warps (see the header comment).
template <typename Element, int kSlice>
__device__ __forceinline__ void fused_output(FusedShared<Element, kSlice>& fs, const LinearForwardParams& params,
                                             const StateSlicePlace& place) {
  using Shared = FusedShared<Element, kSlice>;
  constexpr int kThreads = kFusedOutputThreads;
  constexpr int kAll = fused_threads<kSlice>();
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdSlice = Shared::kLdSlice;
  constexpr int kTiles = kSlice / 8;  // n-tiles of O
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const std::int64_t chunks = place.chunks;
  if (chunks == 0) return;
  const int tid = static_cast<int>(threadIdx.x) - state_threads<kSlice>();
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row0 = warp * kTile + g;  // the thread's rows of the chunk: row0 and row0 + 8
  const int row1 = row0 + 8;
  const int n = place.n;
  const int hv = place.hv;
  const int h = hv / c.group;
  const std::int64_t first_slot = sequence_first_slot(params, n);
  const bool varlen = params.cu_seqlens != nullptr;
  const std::int64_t batch = varlen ? 0 : n;
  const std::int64_t bos = varlen ? params.cu_seqlens[n * params.cu_seqlens_stride] : 0;
  const std::int64_t length = varlen ? params.cu_seqlens[(n + 1) * params.cu_seqlens_stride] - bos : params.seqlen;
  const Element* k_ws = static_cast<const Element*>(ws.key);

  // q of the chunk (tensor) and its k and G (workspace), one cp.async group.
  auto load_chunk = [&](std::int64_t chunk) {
    const std::int64_t t0 = bos + chunk * kChunk;
    const int rows = static_cast<int>(length - chunk * kChunk < kChunk ? length - chunk * kChunk : kChunk);
    const Element* q_base = static_cast<const Element*>(c.q.data) + batch * c.q.batch_stride + t0 * c.q.token_stride + h * c.q.head_stride;
    load_rows<Element, kKeyPad, kThreads>(fs.q, kLdKey, q_base, c.q.token_stride, rows, 0, c.key_dim, params.vectorized_io, tid);
    const std::int64_t sh = (first_slot + chunk) * c.heads_v + hv;
    const Element* k = k_ws + sh * kChunk * kKeyPad;
    for (int e = tid; e < kChunk * (kKeyPad / 8); e += kThreads) {
      const int t = e / (kKeyPad / 8);
      const int i = (e % (kKeyPad / 8)) * 8;
      cp_async_16(&fs.k[t * kLdKey + i], k + t * kKeyPad + i);
    }
    if (tid < kChunk / 4) cp_async_16(&fs.gate[tid * 4], ws.gate + sh * kChunk + tid * 4);
    cp_async_commit();
  };

  named_barrier_arrive(kValueFree, kAll);  // v_out starts free
  load_chunk(0);
  const int quad = lane & 3;
  const int from = (lane & ~3) | ((quad & 1) << 1) | (quad >> 1);  // as in the state kernel's v_new stores
  const bool odd = (quad & 1) != 0;
  const bool swap = quad >= 2;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    cp_async_wait_all();
    named_barrier_sync(kOutputBarrier, kThreads);
    l2_row_factors<Element, kThreads>(fs.q, kLdKey, c.l2norm_qk, fs.q_factor, tid);
    named_barrier_sync(kOutputBarrier, kThreads);

    // Q K^T of the warp's rows against key tiles 0 .. warp, then P as the pair hi + lo in A fragments.
    const Element* q_rows = fs.q + warp * kTile * kLdKey;
    unsigned p_hi[4][4], p_lo[4][4];
    {
      float p[8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
        unsigned a[4];
        load_a(a, q_rows + kk * kTile, kLdKey);
#pragma unroll
        for (int np = 0; np < kChunk / kTile; ++np) {
          if (np > warp) continue;
          unsigned b[4];
          load_b_nk(b, fs.k + np * kTile * kLdKey + kk * kTile, kLdKey);
          mma_16x8x16<Element>(p[2 * np], a, b[0], b[1]);
          mma_16x8x16<Element>(p[2 * np + 1], a, b[2], b[3]);
        }
      }
      const float gate0 = fs.gate[row0];
      const float gate1 = fs.gate[row1];
      const float factor0 = c.scale * fs.q_factor[row0];
      const float factor1 = c.scale * fs.q_factor[row1];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (j / 2 > warp) continue;
        float x0[2], x1[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int s = j * 8 + t2 + e;
          const float gate_s = fs.gate[s];
          x0[e] = s <= row0 ? factor0 * __expf(gate0 - gate_s) * p[j][e] : 0.0f;
          x1[e] = s <= row1 ? factor1 * __expf(gate1 - gate_s) * p[j][2 + e] : 0.0f;
        }
        const int at = (j & 1) * 2;
        split_pair<Element>(x0[0], x0[1], &p_hi[j / 2][at], &p_lo[j / 2][at]);
        split_pair<Element>(x1[0], x1[1], &p_hi[j / 2][at + 1], &p_lo[j / 2][at + 1]);
      }
    }
    const float out0 = c.scale * fs.q_factor[row0] * __expf(fs.gate[row0]);
    const float out1 = c.scale * fs.q_factor[row1] * __expf(fs.gate[row1]);

    // Q S_c for the CTA's columns, as soon as the chain has published S_c.
    float o[kTiles][4] = {};
    named_barrier_sync(kStateFull, kAll);
#pragma unroll
    for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
      unsigned a[4];
      load_a(a, q_rows + kk * kTile, kLdKey);
#pragma unroll
      for (int np = 0; np < kSlice / kTile; ++np) {
        unsigned b[4];
        load_b_kn(b, fs.chain.state_lowp + kk * kTile * kLdSlice + np * kTile, kLdSlice);
        mma_16x8x16<Element>(o[2 * np], a, b[0], b[1]);
        mma_16x8x16<Element>(o[2 * np + 1], a, b[2], b[3]);
      }
    }
    if (chunk + 1 < chunks) named_barrier_arrive(kStateFree, kAll);
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      o[j][0] *= out0;
      o[j][1] *= out0;
      o[j][2] *= out1;
      o[j][3] *= out1;
    }
    named_barrier_sync(kOutputBarrier, kThreads);  // every output warp is done with q, k, G and the factors
    if (chunk + 1 < chunks) load_chunk(chunk + 1);

    // P v_new_c once the chain has written it.
    named_barrier_sync(kValueFull, kAll);
#pragma unroll
    for (int kk = 0; kk < kChunk / kTile; ++kk) {
      if (kk > warp) continue;  // P is lower triangular
#pragma unroll
      for (int np = 0; np < kSlice / kTile; ++np) {
        const int at = kk * kTile * kLdSlice + np * kTile;
        unsigned b[4], b_lo[4];
        load_b_kn(b, fs.v_out + at, kLdSlice);
        load_b_kn(b_lo, fs.v_out_lo + at, kLdSlice);
        mma_16x8x16<Element>(o[2 * np], p_hi[kk], b[0], b[1]);
        mma_16x8x16<Element>(o[2 * np], p_lo[kk], b[0], b[1]);
        mma_16x8x16<Element>(o[2 * np], p_hi[kk], b_lo[0], b_lo[1]);
        mma_16x8x16<Element>(o[2 * np + 1], p_hi[kk], b[2], b[3]);
        mma_16x8x16<Element>(o[2 * np + 1], p_lo[kk], b[2], b[3]);
        mma_16x8x16<Element>(o[2 * np + 1], p_hi[kk], b_lo[2], b_lo[3]);
      }
    }
    if (chunk + 1 < chunks) named_barrier_arrive(kValueFree, kAll);

    // O: a quad's lanes hold columns 2 t2.., 2 t2 + 8.. of each 16; two shuffles give lane t columns
    // 4 t .. 4 t + 3, stored as one 8-byte piece where the row allows it.
    const std::int64_t t0 = bos + chunk * kChunk;
    const int rows = static_cast<int>(length - chunk * kChunk < kChunk ? length - chunk * kChunk : kChunk);
    Element* out = static_cast<Element*>(c.out_data) + batch * c.out.batch_stride + t0 * c.out.token_stride + hv * c.out.head_stride;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = half == 0 ? row0 : row1;
#pragma unroll
      for (int jj = 0; jj < kSlice / 16; ++jj) {
        const unsigned even = pack_pair<Element>(o[2 * jj][half * 2], o[2 * jj][half * 2 + 1]);
        const unsigned next = pack_pair<Element>(o[2 * jj + 1][half * 2], o[2 * jj + 1][half * 2 + 1]);
        const unsigned first = __shfl_sync(0xffffffffu, odd ? next : even, from);
        const unsigned second = __shfl_sync(0xffffffffu, odd ? even : next, from ^ 1);
        const uint2 piece = swap ? make_uint2(second, first) : make_uint2(first, second);
        const int col = place.col0 + jj * 16 + 4 * quad;
        if (row >= rows || col >= c.value_dim) continue;
        Element* dst = out + row * c.out.token_stride + col;
        if (col + 4 <= c.value_dim && reinterpret_cast<std::uintptr_t>(dst) % 8 == 0) {
          *reinterpret_cast<uint2*>(dst) = piece;
        } else {
          const Element* values = reinterpret_cast<const Element*>(&piece);
          for (int u = 0; u < 4 && col + u < c.value_dim; ++u) dst[u] = values[u];
        }
      }
    }
  }
}

template <typename Element, int kSlice>
__global__ void __launch_bounds__(fused_threads<kSlice>(), 1) linear_gdn_fused_kernel(LinearForwardParams params) {
  extern __shared__ __align__(128) unsigned char shared_raw[];
  FusedShared<Element, kSlice>& fs = *reinterpret_cast<FusedShared<Element, kSlice>*>(shared_raw);
  const StateSlicePlace place = locate_state_slice<kSlice>(params);
  if (static_cast<int>(threadIdx.x) < state_threads<kSlice>()) {
    fused_chain<Element, kSlice>(fs, params, place);
  } else {
    fused_output<Element, kSlice>(fs, params, place);
  }
}

template <typename Element, int kSlice>
cudaError_t launch_linear_gdn_fused(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_gdn_fused_kernel<Element, kSlice>;
  const int bytes = static_cast<int>(sizeof(FusedShared<Element, kSlice>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const int slices = (params.common.value_dim + kSlice - 1) / kSlice;
  const dim3 grid(static_cast<unsigned>(params.num_sequences) * slices, params.common.heads_v);
  kernel<<<grid, fused_threads<kSlice>(), bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace attnkit::sm80::linear_detail
