// Chunk-parallel forward of GDN on sm80+ tensor cores (mma.sync m16n8k16 on bf16/fp16 operands, fp32
// accumulation and state, fragments kept in registers), in three kernels so that only the state
// recurrence runs sequentially:
//
//   prep   (grid: every chunk slot x value head, in parallel) from k, g, beta, v of one 64-token chunk:
//          G = inclusive cumulative log decay, A[t][s] = beta_t exp(G_t - G_s) k_t . k_s (s < t),
//          T_beta = (I + A)^-1 diag(beta) (fp32 substitution), and writes
//          w_neg = -T_beta (k Gamma), the (L2-normalised) k, u = T_beta v (fp32), G.
//   state  (grid: sequence x value head x slice of 16, 32 or 64 value columns) walks the chunks in order
//          with its fp32 state slice S in accumulator registers: v_new = u + w_neg S, S <- exp(G_last) S +
//          k^T (exp(G_last - G) v_new); it writes S at each chunk's start (Element) and v_new (as the
//          pair hi + lo of Element values, below). Per chunk that is two small GEMMs and two barriers,
//          with the next chunks' operands in flight (cp.async, two or three buffers).
//   output (grid: every chunk slot x value head x 128 value columns, in parallel)
//          O = diag(scale Gamma) Q S_chunk + P v_new, P[t][s] = scale exp(G_t - G_s) q_t . k_s (s <= t).
//
// Every exp has a non-positive argument (G falls along the chunk). The state slice S [128, slice] of a
// (sequence, value head) is exact parallelism: value columns evolve independently.
//
// Precision. T_beta, v_new (times its decay) and P enter the tensor cores as a pair hi + lo of Element
// values (hi = round(x), lo = round(x - hi): 16 significant bits for bf16) and cost two or three MMAs
// instead of one; the state update multiplies the exact k, not a rounded k exp(G_last - G), by the
// decayed v_new. With all eight operands in bf16 (8b6ed0a) weak decays over long sequences missed the
// 0.005 bound of semantics.md section 6 on the H100 (out rms 5.5e-3 at K = 16, T ~ 1000, gates x0.01);
// bench/linear/gdn_rounding_study.py puts this scheme at 2.8e-3 there and 1.9e-3 at K = V = 128 x1
// (bf16 throughout: 5.7e-3 and 3.2e-3). The S copy, w_neg and k Gamma stay single Element values; the
// output kernel applies scale Gamma and the L2 factors of q and k in fp32 to the products' accumulators.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "device/kernel_attributes.cuh"
#include "kernels/linear/sm80/linear_chunk_output_sm80.cuh"
#include "kernels/linear/sm80/linear_chunk_state_sm80.cuh"
#include "kernels/linear/sm80/linear_gdn_plan.h"
#include "kernels/linear/sm80/linear_wmma_sm80.cuh"
#include "kernels/linear/sm80/linear_mma_sm80.cuh"

namespace attnkit::sm80::linear_detail {

constexpr int kChunkedThreads = 128;

// ---- Chunk slots ---------------------------------------------------------------------------------------

struct SlotPlace {
  std::int64_t chunk = 0;   // chunk index inside the sequence
  std::int64_t batch = 0;   // batch index into the token tensors (0 for varlen)
  std::int64_t bos = 0;     // the sequence's first token in the tensors' T dimension
  std::int64_t length = 0;  // the sequence's token count
};

__device__ __forceinline__ std::int64_t chunks_per_sequence(const LinearForwardParams& p) {
  return (p.seqlen + kChunk - 1) / kChunk;
}

// First slot of sequence n (see LinearChunkWorkspace): strictly increasing in n.
__device__ __forceinline__ std::int64_t sequence_first_slot(const LinearForwardParams& p, int n) {
  if (p.cu_seqlens == nullptr) return n * chunks_per_sequence(p);
  return static_cast<std::int64_t>(p.cu_seqlens[n * p.cu_seqlens_stride]) / kChunk + n;
}

// Resolves a slot to its sequence and chunk; false for a varlen slot that holds no chunk.
__device__ __forceinline__ bool locate_slot(const LinearForwardParams& p, std::int64_t slot, SlotPlace* place) {
  if (p.cu_seqlens == nullptr) {
    const std::int64_t per = chunks_per_sequence(p);
    place->batch = slot / per;
    place->chunk = slot % per;
    place->bos = 0;
    place->length = p.seqlen;
    return true;
  }
  int lo = 0, hi = p.num_sequences - 1;  // the last sequence whose first slot is <= slot
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (sequence_first_slot(p, mid) <= slot) lo = mid; else hi = mid - 1;
  }
  place->batch = 0;
  place->bos = p.cu_seqlens[lo * p.cu_seqlens_stride];
  place->length = p.cu_seqlens[(lo + 1) * p.cu_seqlens_stride] - place->bos;
  place->chunk = slot - sequence_first_slot(p, lo);
  return place->chunk >= 0 && place->chunk * kChunk < place->length;
}

// ---- prep ----------------------------------------------------------------------------------------------

// 4 warps; warp w owns the chunk's token rows 16 w .. 16 w + 15 in every product (A, w_neg, u), computed
// in mma.sync registers: T_beta is lower triangular, so row tile w needs only k-steps 0 .. w. Buffers
// are reused once dead: T_beta's pair lies over A (read by the solve), the v pieces over T_beta's pair
// (the warps hold its fragments by then; the first piece is in flight while w_neg is computed). k Gamma
// is formed in registers from k's B fragments, not stored. ~35.5 KB of shared memory, 96 registers: 5
// CTAs per SM (by registers; 53 KB with a k Gamma tile gave 4).
constexpr int kPrepValuePiece = 128;

template <typename Element>
struct PrepShared {
  static constexpr int kLdKey = kKeyPad + 8;    // rows 272 bytes apart: ldmatrix rows in distinct banks
  static constexpr int kLdChunk = kChunk + 8;   // 144 bytes
  static constexpr int kLdChunkF = kChunk + 8;  // fp32 A as large as T_beta's pair
  static constexpr int kLdValue = kPrepValuePiece + 8;
  Element k[kChunk * kLdKey];  // k (L2-normalised)
  union {
    float a[kChunk * kLdChunkF];            // A (fp32), until the solve has read it
    Element t_beta[2 * kChunk * kLdChunk];  // then T_beta: hi part [64][kLdChunk], then the lo part
    Element v[kChunk * kLdValue];           // then a piece of v
  };
  alignas(16) float gate[kChunk];
  alignas(16) float beta[kChunk];
  static_assert(sizeof(Element) * kLdValue <= 2 * sizeof(Element) * kLdChunk, "v fits in T_beta's space");
  static_assert(sizeof(float) * kLdChunkF == 2 * sizeof(Element) * kLdChunk, "T_beta's pair lies exactly over A");
};
static_assert(sizeof(PrepShared<__nv_bfloat16>) == gdn_prep_shared_bytes(), "linear_gdn_plan.h's size of prep");

// A packed Element pair times (x, y), rounded to Element again.
template <typename Element>
__device__ __forceinline__ unsigned scale_pair(unsigned packed, float x, float y) {
  float2 f;
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&packed));
  } else {
    f = __half22float2(*reinterpret_cast<const __half2*>(&packed));
  }
  return pack_pair<Element>(f.x * x, f.y * y);
}

// acc = T_beta times 64 columns of a [kChunk, ld] shared-memory operand starting at `b`: the warp's row tile
// as its hi + lo A fragments (two MMAs a product), k-steps 0 .. warp only (T_beta is lower triangular).
// kGammaRows (GDN's w_neg): the operand's rows (tokens) times exp(G) of the token (`gate`), applied to the
// B fragments in registers (rows 2 t, 2 t + 1 and 2 t + 8, 2 t + 9 of the k-step, t = lane % 4) and
// rounded to Element, the values a k Gamma tile rounded once would hold. KDA's prep calls the plain form.
template <typename Element, bool kGammaRows = false>
__device__ __forceinline__ void t_beta_times_64_columns(float (&acc)[8][4], const unsigned (&t_hi)[4][4],
                                                        const unsigned (&t_lo)[4][4], const Element* b, int ld,
                                                        int warp, const float* gate = nullptr) {
  const int t2 = (threadIdx.x & 3) * 2;
#pragma unroll
  for (int kk = 0; kk < kChunk / kTile; ++kk) {
    if (kk > warp) continue;
    float gamma[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    if constexpr (kGammaRows) {
      const int s = kk * kTile + t2;
      gamma[0] = __expf(gate[s]);
      gamma[1] = __expf(gate[s + 1]);
      gamma[2] = __expf(gate[s + 8]);
      gamma[3] = __expf(gate[s + 9]);
    }
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      unsigned frag[4];
      load_b_kn(frag, b + kk * kTile * ld + np * kTile, ld);
      if constexpr (kGammaRows) {
#pragma unroll
        for (int r = 0; r < 4; ++r) frag[r] = scale_pair<Element>(frag[r], gamma[(r & 1) * 2], gamma[(r & 1) * 2 + 1]);
      }
      mma_16x8x16<Element>(acc[2 * np], t_hi[kk], frag[0], frag[1]);
      mma_16x8x16<Element>(acc[2 * np], t_lo[kk], frag[0], frag[1]);
      mma_16x8x16<Element>(acc[2 * np + 1], t_hi[kk], frag[2], frag[3]);
      mma_16x8x16<Element>(acc[2 * np + 1], t_lo[kk], frag[2], frag[3]);
    }
  }
}

template <typename Element>
__global__ void __launch_bounds__(kChunkedThreads) linear_gdn_prep_kernel(LinearForwardParams params) {
  using Shared = PrepShared<Element>;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdChunk = Shared::kLdChunk;
  constexpr int kLdChunkF = Shared::kLdChunkF;
  constexpr int kLdValue = Shared::kLdValue;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row0 = warp * kTile + g;  // the thread's accumulator rows: row0 and row0 + 8

  SlotPlace place;
  const std::int64_t slot = blockIdx.x;
  if (!locate_slot(params, slot, &place)) return;
  const int hv = blockIdx.y;
  const int h = hv / c.group;
  const std::int64_t t0 = place.bos + place.chunk * kChunk;
  const int rows = static_cast<int>(place.length - place.chunk * kChunk < kChunk ? place.length - place.chunk * kChunk : kChunk);
  const std::int64_t sh = slot * c.heads_v + hv;

  const Element* k_base = static_cast<const Element*>(c.k.data) + place.batch * c.k.batch_stride + t0 * c.k.token_stride + h * c.k.head_stride;
  const Element* v_base = static_cast<const Element*>(c.v.data) + place.batch * c.v.batch_stride + t0 * c.v.token_stride + hv * c.v.head_stride;
  load_rows<Element, kKeyPad, kChunkedThreads>(sm.k, kLdKey, k_base, c.k.token_stride, rows, 0, c.key_dim, params.vectorized_io);
  cp_async_commit();
  if (tid < kChunk) {
    sm.gate[tid] = tid < rows ? gate_at(c, place.batch * c.g.batch_stride + (t0 + tid) * c.g.token_stride, hv, 0) : 0.0f;
  } else {
    const int t = tid - kChunk;
    const std::int64_t offset = place.batch * c.beta.batch_stride + (t0 + t) * c.beta.token_stride + hv * c.beta.head_stride;
    sm.beta[t] = t < rows ? beta_value(c, load_element(c.beta.data, offset, c.beta_element)) : 0.0f;
  }
  cp_async_wait_all();
  __syncthreads();
  if (c.l2norm_qk) l2_normalise_rows<Element, kChunkedThreads>(sm.k, kLdKey);
  if (warp == 0) {
    float lo = sm.gate[lane];
    float hi = sm.gate[lane + 32];
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const float lo_up = __shfl_up_sync(0xffffffffu, lo, offset);
      const float hi_up = __shfl_up_sync(0xffffffffu, hi, offset);
      if (lane >= offset) {
        lo += lo_up;
        hi += hi_up;
      }
    }
    hi += __shfl_sync(0xffffffffu, lo, 31);
    sm.gate[lane] = lo;
    sm.gate[lane + 32] = hi;
  }
  __syncthreads();

  // A[t][s] = beta_t exp(G_t - G_s) k_t . k_s for s < t: the warp's row tile against key tiles 0 .. warp,
  // scaled in registers and stored as fp32 for the solve (tiles past the diagonal are never read).
  {
    float acc[8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
      unsigned a[4];
      load_a(a, sm.k + warp * kTile * kLdKey + kk * kTile, kLdKey);
#pragma unroll
      for (int np = 0; np < kChunk / kTile; ++np) {
        if (np > warp) continue;
        unsigned b[4];
        load_b_nk(b, sm.k + np * kTile * kLdKey + kk * kTile, kLdKey);
        mma_16x8x16<Element>(acc[2 * np], a, b[0], b[1]);
        mma_16x8x16<Element>(acc[2 * np + 1], a, b[2], b[3]);
      }
    }
    const float gate0 = sm.gate[row0];
    const float gate1 = sm.gate[row0 + 8];
    const float beta0 = sm.beta[row0];
    const float beta1 = sm.beta[row0 + 8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (j / 2 > warp) continue;
      const int s = j * 8 + t2;
      float2 top, bottom;
      top.x = s < row0 ? beta0 * __expf(gate0 - sm.gate[s]) * acc[j][0] : 0.0f;
      top.y = s + 1 < row0 ? beta0 * __expf(gate0 - sm.gate[s + 1]) * acc[j][1] : 0.0f;
      bottom.x = s < row0 + 8 ? beta1 * __expf(gate1 - sm.gate[s]) * acc[j][2] : 0.0f;
      bottom.y = s + 1 < row0 + 8 ? beta1 * __expf(gate1 - sm.gate[s + 1]) * acc[j][3] : 0.0f;
      *reinterpret_cast<float2*>(&sm.a[row0 * kLdChunkF + s]) = top;
      *reinterpret_cast<float2*>(&sm.a[(row0 + 8) * kLdChunkF + s]) = bottom;
    }
  }
  __syncthreads();

  // Solve (threads 0-63, a column of T each) beside the k copy and G (threads 64-127).
  float x[kChunk];
  if (tid < kChunk) {
    // Column j of T = (I + A)^-1 by forward substitution; A is strictly lower, so rows above j are 0.
    // Four partial sums per row keep the dependent chain of a row short.
    const int j = tid;
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < i; ++s) sum[s & 3] += sm.a[i * kLdChunkF + s] * x[s];
      x[i] = i == j ? 1.0f : -((sum[0] + sum[1]) + (sum[2] + sum[3]));
    }
  } else {
    const int id = tid - kChunk;
    ws.gate[sh * kChunk + id] = sm.gate[id];
    Element* k_ws = static_cast<Element*>(ws.key) + sh * kChunk * kKeyPad;
    // 8 columns per step: 16-byte stores of k.
    for (int e = id; e < kChunk * kKeyPad / 8; e += kChunkedThreads - kChunk) {
      const int t = e / (kKeyPad / 8);
      const int i0 = (e % (kKeyPad / 8)) * 8;
      *reinterpret_cast<uint4*>(k_ws + t * kKeyPad + i0) = *reinterpret_cast<const uint4*>(sm.k + t * kLdKey + i0);
    }
  }
  __syncthreads();  // A is read: its space takes T_beta
  Element* t_beta_lo = sm.t_beta + kChunk * kLdChunk;
  if (tid < kChunk) {
    const float beta_j = sm.beta[tid];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) split_element(x[i] * beta_j, &sm.t_beta[i * kLdChunk + tid], &t_beta_lo[i * kLdChunk + tid]);
  }
  __syncthreads();

  // The warp's T_beta rows as A fragments (hi and lo) for k-steps 0 .. warp.
  unsigned t_hi[4][4], t_lo[4][4];
#pragma unroll
  for (int kk = 0; kk < kChunk / kTile; ++kk) {
    if (kk > warp) continue;
    load_a(t_hi[kk], sm.t_beta + warp * kTile * kLdChunk + kk * kTile, kLdChunk);
    load_a(t_lo[kk], t_beta_lo + warp * kTile * kLdChunk + kk * kTile, kLdChunk);
  }
  __syncthreads();  // every warp holds its T_beta fragments: the first v piece takes their space
  load_rows<Element, kPrepValuePiece, kChunkedThreads>(sm.v, kLdValue, v_base, c.v.token_stride, rows, 0, c.value_dim,
                                                       params.vectorized_io);
  cp_async_commit();

  // w_neg = -T_beta (k Gamma), in two halves of 64 key channels, straight to the workspace as Element.
  Element* w_neg = static_cast<Element*>(ws.w_neg) + sh * kChunk * kKeyPad;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float acc[8][4] = {};
    t_beta_times_64_columns<Element, true>(acc, t_hi, t_lo, sm.k + half * 64, kLdKey, warp, sm.gate);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = half * 64 + j * 8 + t2;
      *reinterpret_cast<unsigned*>(w_neg + row0 * kKeyPad + col) = pack_pair<Element>(-acc[j][0], -acc[j][1]);
      *reinterpret_cast<unsigned*>(w_neg + (row0 + 8) * kKeyPad + col) = pack_pair<Element>(-acc[j][2], -acc[j][3]);
    }
  }

  // u = T_beta v in pieces of 128 value columns (one for V <= 128), fp32 to the workspace.
  float* u_out = ws.u + sh * kChunk * ws.value_pad;
  for (int col0 = 0; col0 < ws.value_pad; col0 += kPrepValuePiece) {
    if (col0 > 0) {
      __syncthreads();  // the previous piece is read
      load_rows<Element, kPrepValuePiece, kChunkedThreads>(sm.v, kLdValue, v_base, c.v.token_stride, rows, col0, c.value_dim,
                                                           params.vectorized_io);
      cp_async_commit();
    }
    cp_async_wait_all();
    __syncthreads();
    const int width = ws.value_pad - col0 < kPrepValuePiece ? ws.value_pad - col0 : kPrepValuePiece;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (half * 64 >= width) continue;
      float acc[8][4] = {};
      t_beta_times_64_columns<Element>(acc, t_hi, t_lo, sm.v + half * 64, kLdValue, warp);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int col = col0 + half * 64 + j * 8 + t2;
        *reinterpret_cast<float2*>(u_out + static_cast<std::int64_t>(row0) * ws.value_pad + col) = make_float2(acc[j][0], acc[j][1]);
        *reinterpret_cast<float2*>(u_out + static_cast<std::int64_t>(row0 + 8) * ws.value_pad + col) = make_float2(acc[j][2], acc[j][3]);
      }
    }
  }
}

// ---- state ---------------------------------------------------------------------------------------------

// A CTA owns (sequence, value head, kSlice value columns) with 4 warps per 16 columns: warp w keeps S rows
// 32 (w % 4) .. + 31, columns 16 (w / 4) .. + 15 of the slice in mma.sync accumulators (16 floats a thread)
// across all chunks, and computes v_new for tokens 16 (w % 4) .. + 15 of the same 16 columns. Shared
// memory carries only the operands every warp needs: the chunk's w_neg, k, u and G (cp.async, kStages
// buffers), S as Element (v_new's B operand, written from registers) and the decayed v_new pair (the
// update's B operand). Per chunk: two barriers, 16 MMAs (v_new) and 32 (the update) per warp.
template <int kSlice>
constexpr int state_threads() {
  return kSlice / 16 * 128;
}
// Slices of 16 run one CTA per SM (linear_forward_sm80_launch.cu), so the shared memory of a third stage
// (~133 KB in all) costs no occupancy there and keeps two chunks' operands in flight; slices of 32 keep
// two stages (~107 KB) for 2 CTAs per SM; slices of 64 (16 warps, one CTA per SM by registers) two
// (~138.5 KB), which sm_80's 163 KB per block also allows.
template <int kSlice>
constexpr int state_stages() {
  return kSlice == 16 ? 3 : 2;
}

template <typename Element, int kSlice>
struct StateShared {
  static constexpr int kLdKey = kKeyPad + 8;
  static constexpr int kLdSlice = kSlice + 8;  // rows 48 / 80 / 144 bytes apart: ldmatrix rows in distinct banks
  static constexpr int kLdSliceF = kSlice + 4;
  static constexpr int kStages = state_stages<kSlice>();
  alignas(128) Element w[kStages][kChunk * kLdKey];  // w_neg, one buffer per stage
  alignas(128) Element k[kStages][kChunk * kLdKey];
  alignas(128) float u[kStages][kChunk * kLdSliceF];
  alignas(128) Element state_lowp[kKeyPad * kLdSlice];  // S at the chunk's start as Element
  alignas(128) Element v_new[kChunk * kLdSlice];     // exp(G_last - G) v_new: hi part
  alignas(128) Element v_new_lo[kChunk * kLdSlice];  // and lo part
  alignas(16) float gate[kStages][kChunk];  // G
};
static_assert(sizeof(StateShared<__nv_bfloat16, 16>) == gdn_state_shared_bytes(16), "linear_gdn_plan.h's size");
static_assert(sizeof(StateShared<__half, 32>) == gdn_state_shared_bytes(32), "linear_gdn_plan.h's size");
static_assert(sizeof(StateShared<__nv_bfloat16, 64>) == gdn_state_shared_bytes(64), "linear_gdn_plan.h's size");

template <typename Element, int kSlice>
__global__ void __launch_bounds__(state_threads<kSlice>()) linear_gdn_state_kernel(LinearForwardParams params) {
  using Shared = StateShared<Element, kSlice>;
  constexpr int kThreads = state_threads<kSlice>();
  constexpr int kStages = Shared::kStages;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdSlice = Shared::kLdSlice;
  constexpr int kLdSliceF = Shared::kLdSliceF;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row_block = warp & 3;        // S rows 32 row_block .., v_new tokens 16 row_block ..
  const int column0 = (warp >> 2) * 16;  // of the slice

  const StateSlicePlace place = locate_state_slice<kSlice>(params);
  const int n = place.n;
  const int col0 = place.col0;
  const int hv = place.hv;
  const std::int64_t chunks = place.chunks;
  const std::int64_t first_slot = sequence_first_slot(params, n);
  const Element* w_ws = static_cast<const Element*>(ws.w_neg);
  const Element* k_ws = static_cast<const Element*>(ws.key);

  // Copies chunk `chunk`'s operands into buffer `buf` (none past the last chunk) and commits a group, so
  // that every loop step commits exactly one.
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
  publish_state<Element, kLdSlice>(s, sm.state_lowp, params, chunks > 0 ? first_slot : -1, hv, row_block, column0, col0, g, t2);

  int buf = 0;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    cp_async_wait_group<kStages - 2>();  // this chunk's group; the later ones may still be in flight
    __syncthreads();  // its operands and the Element copy of S are visible; the previous chunk's buffer is free
    prefetch(chunk + kStages - 1, buf == 0 ? kStages - 1 : buf - 1);
    const std::int64_t sh = (first_slot + chunk) * c.heads_v + hv;

    // v_new = u + w_neg S, tokens 16 row_block + g (+ 8), in two accumulator sets (even and odd k-steps)
    // so that the dependent MMA chain is 4 long, not 8.
    const int token0 = row_block * kTile + g;
    float v[2][2][4];
    u_plus_w_neg_state<Element, kLdKey, kLdSlice, kLdSliceF>(v, sm.u[buf], sm.w[buf], sm.state_lowp, row_block, column0, g, t2);
    // v_new as hi + lo to the workspace (the output kernel's operand pair) and, times exp(G_last - G),
    // to shared memory (the update's). A quad's lanes hold columns 2 t2.., 2 t2 + 8.. of the warp's 16;
    // two shuffles per word give lane t columns 4 t .. 4 t + 3, so a quad stores a token row's 32 bytes
    // of hi (and of lo) as four 8-byte pieces, whole 32-byte sectors: as 4-byte pieces (two n-tiles, two
    // half sectors) these stores cost twice their bytes in L2 traffic (run 8's ncu: the pass moved 7.2 GB
    // through L2 at (4, 8192, 32, 32), 84% of its rate).
    const float g_last = sm.gate[buf][kChunk - 1];
    const float tail[2] = {__expf(g_last - sm.gate[buf][token0]), __expf(g_last - sm.gate[buf][token0 + 8])};
    Element* v_hi_ws = static_cast<Element*>(ws.v_new);
    Element* v_lo_ws = static_cast<Element*>(ws.v_new_lo);
    const int quad = lane & 3;
    const int from = (lane & ~3) | ((quad & 1) << 1) | (quad >> 1);  // lane t's first source in the quad
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int token = token0 + half * 8;
      unsigned hi[2], lo[2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int col = column0 + nt * 8 + t2;
        const float x0 = v[0][nt][half * 2] + v[1][nt][half * 2];
        const float x1 = v[0][nt][half * 2 + 1] + v[1][nt][half * 2 + 1];
        split_pair<Element>(x0, x1, &hi[nt], &lo[nt]);
        const int at = token * kLdSlice + col;
        split_pair<Element>(x0 * tail[half], x1 * tail[half], reinterpret_cast<unsigned*>(sm.v_new + at),
                            reinterpret_cast<unsigned*>(sm.v_new_lo + at));
      }
      // Lane s offers n-tile s & 1 to the first shuffle and the other to the second; lanes 2 and 3 of a
      // quad receive their pieces' words in the opposite order.
      const bool odd = (quad & 1) != 0;  // selects, not indexing: the arrays stay in registers
      const unsigned hi_a = __shfl_sync(0xffffffffu, odd ? hi[1] : hi[0], from);
      const unsigned hi_b = __shfl_sync(0xffffffffu, odd ? hi[0] : hi[1], from ^ 1);
      const unsigned lo_a = __shfl_sync(0xffffffffu, odd ? lo[1] : lo[0], from);
      const unsigned lo_b = __shfl_sync(0xffffffffu, odd ? lo[0] : lo[1], from ^ 1);
      const bool swap = quad >= 2;
      const std::int64_t global = (sh * kChunk + token) * ws.value_pad + col0 + column0 + 4 * quad;
      *reinterpret_cast<uint2*>(v_hi_ws + global) = swap ? make_uint2(hi_b, hi_a) : make_uint2(hi_a, hi_b);
      *reinterpret_cast<uint2*>(v_lo_ws + global) = swap ? make_uint2(lo_b, lo_a) : make_uint2(lo_a, lo_b);
    }
    __syncthreads();

    // S = exp(G_last) S + k^T (exp(G_last - G) v_new): A = k^T by transposing loads of k [token][channel].
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
    publish_state<Element, kLdSlice>(s, sm.state_lowp, params, chunk + 1 < chunks ? first_slot + chunk + 1 : -1, hv, row_block,
                                      column0, col0, g, t2);
    buf = buf + 1 == kStages ? 0 : buf + 1;
  }

  store_final_state(s, params, n, hv, row_block, col0 + column0, g, t2);
}

// ---- output --------------------------------------------------------------------------------------------

// One CTA per (chunk slot, value head, 128 value columns), 8 warps: warp w owns rows 16 (w % 4) .. + 15 of
// the chunk and value columns 64 (w / 4) .. + 63 of the CTA's 128. Everything after the loads stays in
// mma.sync registers: the warp's rows of Q K^T (the two warps of a row tile each compute them, 16-64
// MMAs, rather than share them through shared memory and a barrier), masked and decayed in fp32 and split
// into the P pair straight from the accumulators into A fragments; Q S in fp32 times scale exp(G_t) per
// row (q Gamma is not rounded to Element first); then P v_new with the pair from the state pass.
// ~103 KB of shared memory: 2 CTAs (16 warps) per SM. The parts it shares with KDA's output kernel are in
// linear_chunk_output_sm80.cuh.

template <typename Element>
struct OutputShared {
  static constexpr int kLdKey = kKeyPad + 8;  // rows 272 bytes apart: the 8 rows of an ldmatrix hit distinct banks
  static constexpr int kLdValue = kOutputColumns + 8;
  alignas(128) Element q[kChunk * kLdKey];  // q as it came; after the products, O staged for the stores
  alignas(128) Element k[kChunk * kLdKey];
  alignas(128) Element state[kKeyPad * kLdValue];    // S at the chunk's start, this CTA's columns
  alignas(128) Element v_new[kChunk * kLdValue];     // hi part
  alignas(128) Element v_new_lo[kChunk * kLdValue];  // and lo part
  alignas(16) float gate[kChunk];
  alignas(16) float q_factor[kChunk];  // L2 factors (1 without the fused norm), applied in fp32
  alignas(16) float k_factor[kChunk];
};
static_assert(sizeof(OutputShared<__nv_bfloat16>) == gdn_output_shared_bytes(), "linear_gdn_plan.h's size of output");

template <typename Element>
__global__ void __launch_bounds__(kOutputThreads, 2) linear_gdn_output_kernel(LinearForwardParams params) {
  using Shared = OutputShared<Element>;
  constexpr int kLdKey = Shared::kLdKey;
  constexpr int kLdValue = Shared::kLdValue;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  Shared& sm = *reinterpret_cast<Shared*>(shared_raw);
  const LinearCommonParams& c = params.common;
  const LinearChunkWorkspace& ws = params.chunk;
  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;

  const int blocks = (ws.value_pad + kOutputColumns - 1) / kOutputColumns;
  const std::int64_t slot = blockIdx.x / blocks;
  const int col0 = static_cast<int>(blockIdx.x % blocks) * kOutputColumns;
  SlotPlace place;
  if (!locate_slot(params, slot, &place)) return;
  const int hv = blockIdx.y;
  const int h = hv / c.group;
  const std::int64_t t0 = place.bos + place.chunk * kChunk;
  const int rows = static_cast<int>(place.length - place.chunk * kChunk < kChunk ? place.length - place.chunk * kChunk : kChunk);
  const std::int64_t sh = slot * c.heads_v + hv;

  // q and k (one cp.async group), then S and the v_new pair (a second group); columns past value_pad
  // (V <= 64: the CTA's second half) are zero.
  const Element* q_base = static_cast<const Element*>(c.q.data) + place.batch * c.q.batch_stride + t0 * c.q.token_stride + h * c.q.head_stride;
  const Element* k_base = static_cast<const Element*>(c.k.data) + place.batch * c.k.batch_stride + t0 * c.k.token_stride + h * c.k.head_stride;
  load_rows<Element, kKeyPad, kOutputThreads>(sm.q, kLdKey, q_base, c.q.token_stride, rows, 0, c.key_dim, params.vectorized_io);
  load_rows<Element, kKeyPad, kOutputThreads>(sm.k, kLdKey, k_base, c.k.token_stride, rows, 0, c.key_dim, params.vectorized_io);
  cp_async_commit();
  load_state_and_v_new<Element>(sm.state, sm.v_new, sm.v_new_lo, kLdValue, ws, sh, col0);
  cp_async_commit();
  if (tid < kChunk) sm.gate[tid] = ws.gate[sh * kChunk + tid];
  cp_async_wait_group<1>();  // q and k; S and v_new may still be in flight
  __syncthreads();
  l2_row_factors<Element, kOutputThreads>(sm.q, kLdKey, c.l2norm_qk, sm.q_factor);
  l2_row_factors<Element, kOutputThreads>(sm.k, kLdKey, c.l2norm_qk, sm.k_factor);
  cp_async_wait_all();
  __syncthreads();

  const int row_tile = warp & 3;
  const int column0 = (warp >> 2) * 64;  // of the CTA's 128
  const int g = lane >> 2;
  const int t2 = (lane & 3) * 2;
  const int row0 = row_tile * kTile + g;  // the thread's accumulator rows: row0 and row0 + 8
  const int row1 = row0 + 8;

  // Q K^T for key tokens 0 .. 16 row_tile + 15 (p, n-tiles of 8 keys) and Q S (o, n-tiles of 8 value
  // columns) over the 8 k-steps of K, sharing each A fragment of q.
  float p[8][4] = {};
  float o[8][4] = {};
  const Element* q_rows = sm.q + row_tile * kTile * kLdKey;
#pragma unroll
  for (int kk = 0; kk < kKeyPad / kTile; ++kk) {
    unsigned a[4];
    load_a(a, q_rows + kk * kTile, kLdKey);
#pragma unroll
    for (int np = 0; np < kChunk / kTile; ++np) {
      if (np <= row_tile) {  // key tiles past the diagonal are masked out
        unsigned b[4];
        load_b_nk(b, sm.k + np * kTile * kLdKey + kk * kTile, kLdKey);
        mma_16x8x16<Element>(p[2 * np], a, b[0], b[1]);
        mma_16x8x16<Element>(p[2 * np + 1], a, b[2], b[3]);
      }
      unsigned b[4];
      load_b_kn(b, sm.state + kk * kTile * kLdValue + column0 + np * kTile, kLdValue);
      mma_16x8x16<Element>(o[2 * np], a, b[0], b[1]);
      mma_16x8x16<Element>(o[2 * np + 1], a, b[2], b[3]);
    }
  }

  // P[t][s] = scale f_q(t) f_k(s) exp(G_t - G_s) (q_t . k_s) for s <= t, as the pair hi + lo in A
  // fragments: n-tiles 2 kk and 2 kk + 1 form k-step kk (see linear_mma_sm80.cuh).
  const float gate0 = sm.gate[row0];
  const float gate1 = sm.gate[row1];
  const float factor0 = c.scale * sm.q_factor[row0];
  const float factor1 = c.scale * sm.q_factor[row1];
  unsigned p_hi[4][4], p_lo[4][4];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (j / 2 > row_tile) continue;
    float x0[2], x1[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int s = j * 8 + t2 + e;
      const float key = sm.k_factor[s];
      const float gate_s = sm.gate[s];
      x0[e] = s <= row0 ? factor0 * key * __expf(gate0 - gate_s) * p[j][e] : 0.0f;
      x1[e] = s <= row1 ? factor1 * key * __expf(gate1 - gate_s) * p[j][2 + e] : 0.0f;
    }
    const int at = (j & 1) * 2;
    split_pair<Element>(x0[0], x0[1], &p_hi[j / 2][at], &p_lo[j / 2][at]);
    split_pair<Element>(x1[0], x1[1], &p_hi[j / 2][at + 1], &p_lo[j / 2][at + 1]);
  }

  // O = diag(scale f_q exp(G)) (Q S) + P v_new.
  const float out0 = factor0 * __expf(gate0);
  const float out1 = factor1 * __expf(gate1);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    o[j][0] *= out0;
    o[j][1] *= out0;
    o[j][2] *= out1;
    o[j][3] *= out1;
  }
#pragma unroll
  for (int kk = 0; kk < kChunk / kTile; ++kk) {
    if (kk > row_tile) continue;  // P is lower triangular
    add_p_times_v_new<Element>(o, p_hi[kk], p_lo[kk], sm.v_new, sm.v_new_lo, kLdValue, kk, column0);
  }

  // O through shared memory (over q) so that the global stores are 16-byte rows pieces.
  Element* o_base = static_cast<Element*>(c.out_data) + place.batch * c.out.batch_stride + t0 * c.out.token_stride + hv * c.out.head_stride;
  store_output<Element>(o, sm.q, kLdKey, o_base, c.out.token_stride, c.value_dim, rows, col0, row0, column0, t2);
}

// ---- launchers -----------------------------------------------------------------------------------------

template <typename Element>
cudaError_t launch_linear_gdn_prep(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_gdn_prep_kernel<Element>;
  const int bytes = static_cast<int>(sizeof(PrepShared<Element>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>(params.chunk.slots), params.common.heads_v);
  kernel<<<grid, kChunkedThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename Element, int kSlice>
cudaError_t launch_linear_gdn_state(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_gdn_state_kernel<Element, kSlice>;
  const int bytes = static_cast<int>(sizeof(StateShared<Element, kSlice>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const int slices = (params.common.value_dim + kSlice - 1) / kSlice;
  const dim3 grid(static_cast<unsigned>(params.num_sequences) * slices, params.common.heads_v);
  kernel<<<grid, state_threads<kSlice>(), bytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename Element>
cudaError_t launch_linear_gdn_output(const LinearForwardParams& params, cudaStream_t stream) {
  constexpr auto kernel = &linear_gdn_output_kernel<Element>;
  const int bytes = static_cast<int>(sizeof(OutputShared<Element>));
  if (cudaError_t status = device::ensure_dynamic_shared_memory<kernel>(bytes); status != cudaSuccess) return status;
  const std::int64_t blocks = (params.chunk.value_pad + kOutputColumns - 1) / kOutputColumns;
  const dim3 grid(static_cast<unsigned>(params.chunk.slots * blocks), params.common.heads_v);
  kernel<<<grid, kOutputThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace attnkit::sm80::linear_detail
