// Backward of GDN and KDA (semantics.md section 5) on the GPU. This file holds the prep and finish
// kernels both take, and the exact reverse mode through the token recurrence (the walk): the algorithm
// of the CPU backend (src/cpu/linear_backward_cpu.cpp) with the value columns spread over CTAs. GDN
// takes the chunked backward of linear_backward_chunked_sm80.cu between the same prep and finish kernels
// (the walk ran GDN too until that replaced it: 2.5x faster at (1, 65536, 2, 8) on the H200), KDA that of
// linear_backward_kda_chunked_sm80.cu; the walk runs KDA only on devices whose blocks cannot hold the
// chunked KDA kernels' shared memory (chunk_grad 215,552 bytes: every device but sm_90). Everything
// is fp32 after the bf16/fp16 inputs; no float atomics (every partial sum has one writer and is added in
// a fixed order), so the result is the same run to run.
//
// Why value slices: in the recurrence
//   S' = diag(e^g) S_{t-1},  kS = S'^T k,  u = beta (v - kS),  S_t = S' + k u^T,  o = scale S_t^T q
// and in its reverse (dS = dL/dS_t, carried backwards)
//   dS += scale q do^T,  du = dS^T k,  dv = beta du,  dkS = -beta du,  dS' = dS + k dkS^T,
//   dS_{t-1} = diag(e^g) dS'
// every value column of S and dS evolves on its own. Only the per-token gradients that sum over the
// value columns need the whole row: dq = scale S_t do, dk = dS u + S' dkS, dbeta = <du, v - kS>,
// dg = sum_c dS' .* S' (per key row). Each CTA owns (sequence, value head, 32 value columns),
// writes its share of those sums to the workspace, and small kernels add the shares (and the G value
// heads of a q/k head) in a fixed order, then apply the fused options' derivatives.
//
// Kernels, in launch order:
//   prep_qk      q, k -> fp32, L2-normalised when fused                 (warp per token and q/k head)
//   prep_gate    gate and beta fusions -> fp32 log decay and beta       (warp per token and KDA head)
//   walk         the recurrence and its reverse                          (CTA per sequence, head, slice)
//   (instead of the walk: chunk_prep, state_fwd, state_bwd, chunk_grad of linear_backward_chunked_sm80.cu
//   for GDN, of linear_backward_kda_chunked_sm80.cu for KDA where they fit the device)
//   finish_qk    dq, dk: sum of the shares, L2-norm derivative         (warp per token and q/k head)
//   finish_gate  dg, dbeta: sum of the shares, gate/beta derivatives   (warp per token and KDA head)
//   finish_param dA_log, ddt_bias: sums over tokens                    (CTA per head and key)
//
// The walk (128 threads: warp w holds key rows 32w..32w+31 of value column `lane`, 32 fp32 registers
// each of S and dS) visits a sequence twice. Pass 1 runs the recurrence and stores the state at each
// 64-token chunk's start. Pass 2 takes the chunks last to first: from the chunk's checkpoint it runs the
// 64 tokens again, storing each token's incoming state in the CTA's scratch (1 MB per CTA, so in HBM at
// 264 resident CTAs) and kS in shared memory, then differentiates the tokens last to first, loading each
// token's state one token ahead (H100: backward 1.7-1.8x faster than with the load in place).
// A token costs one barrier forward (the sum of kS over the 4 warps) and one backward (du); the sums
// over value columns are warp reduce-scatters (31 shuffles for 32 rows). Inputs are staged in shared
// memory 16 tokens at a time.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/linear/sm80/linear_backward_sm80.cuh"
#include "kernels/linear/sm80/linear_sm80_common.cuh"

namespace attnkit::sm80 {
namespace {

using linear_backward_detail::token_offset;
using linear_detail::load_element;
using linear_detail::store_element;
using linear_detail::warp_sum;

constexpr int kRowPad = kLinearBackwardMaxKeyDim;  // 128 key rows per state slice
constexpr int kCols = kLinearBackwardColumns;      // 32 value columns per CTA
constexpr int kWarps = kRowPad / 32;               // 4
constexpr int kThreads = 32 * kWarps;              // 128
constexpr int kChunk = 64;                         // tokens per checkpoint (the forward's chunk)
constexpr int kStage = 16;                         // tokens staged in shared memory at a time
constexpr std::int64_t kSliceFloats = static_cast<std::int64_t>(kRowPad) * kCols;  // 4096

// Fused gate and its derivatives in fp32 (the CPU backend's fused_gate, with the device's expf/log1pf).
struct GateValue {
  float gate;
  float d_raw;    // d gate / d raw (= d gate / d dt_bias)
  float d_a_log;  // d gate / d A_log
};

__device__ __forceinline__ GateValue fused_gate(const LinearCommonParams& p, float raw, float a_log, float bias) {
  GateValue d{raw, 1.0f, 0.0f};
  if (p.gate == LinearGate::kSoftplus) {
    const float a = raw + bias, a_exp = expf(a_log);
    const float softplus = a > 20.0f ? a : log1pf(expf(a));
    d.gate = -a_exp * softplus;
    d.d_raw = -a_exp / (1.0f + expf(-a));
    d.d_a_log = d.gate;
  } else if (p.gate == LinearGate::kLowerBoundSigmoid) {
    const float a = raw + bias, a_exp = expf(a_log), z = a_exp * a;
    const float s = 1.0f / (1.0f + expf(-z));
    d.gate = p.gate_lower_bound * s;
    const float d_z = p.gate_lower_bound * s * (1.0f - s);
    d.d_raw = d_z * a_exp;
    d.d_a_log = d_z * z;
  }
  return d;
}

__device__ __forceinline__ float fused_beta(const LinearCommonParams& p, float raw, float* d_raw) {
  if (p.beta_form == LinearBeta::kValue) {
    *d_raw = 1.0f;
    return raw;
  }
  const float factor = p.beta_form == LinearBeta::kTwoSigmoid ? 2.0f : 1.0f;
  const float s = 1.0f / (1.0f + expf(-raw));
  *d_raw = factor * s * (1.0f - s);
  return factor * s;
}

// One butterfly step of reduce_scatter: lanes with bit O set keep the upper half of the live values.
template <int O>
__device__ __forceinline__ void reduce_scatter_step(float (&x)[32], int lane) {
  const bool upper = (lane & O) != 0;
#pragma unroll
  for (int i = 0; i < O; ++i) {
    const float send = upper ? x[i] : x[i + O];
    const float keep = upper ? x[i + O] : x[i];
    x[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
  }
}

// 32 per-lane values x[r] (row 32w + r) summed over the warp's 32 lanes; lane l gets the sum of row l
// (31 shuffles instead of 32 warp sums of 5).
__device__ __forceinline__ float reduce_scatter(float (&x)[32], int lane) {
  reduce_scatter_step<16>(x, lane);
  reduce_scatter_step<8>(x, lane);
  reduce_scatter_step<4>(x, lane);
  reduce_scatter_step<2>(x, lane);
  reduce_scatter_step<1>(x, lane);
  return x[0];
}

// Grid-stride loop of the q/k prep and finish kernels: `body(item)` for every item in [0, count), one item
// per warp (the body's lanes work together).
template <typename Body>
__device__ __forceinline__ void warp_items(std::int64_t count, Body body) {
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  for (std::int64_t item = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; item < count; item += warps) body(item);
}

// ---- prep ------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(256) prep_qk_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  const int lane = threadIdx.x % 32;
  warp_items(p.tokens * p.heads_qk, [&](std::int64_t pair) {
    const std::int64_t token = pair / p.heads_qk;
    const int h = static_cast<int>(pair % p.heads_qk);
    for (int which = 0; which < 2; ++which) {
      const LinearTokenTensor& x = which == 0 ? c.q : c.k;
      const std::int64_t base = token_offset(p, token, x.batch_stride, x.token_stride) + h * x.head_stride;
      float v[kRowPad / 32];
      float sum_sq = 0.0f;
#pragma unroll
      for (int m = 0; m < kRowPad / 32; ++m) {
        const int e = lane + 32 * m;
        v[m] = e < c.key_dim ? load_element(x.data, base + e, c.io_element) : 0.0f;
        sum_sq += v[m] * v[m];
      }
      const float factor = c.l2norm_qk ? 1.0f / sqrtf(warp_sum(sum_sq) + 1e-6f) : 1.0f;
      float* dst = (which == 0 ? p.ws.qn : p.ws.kn) + pair * kRowPad;
#pragma unroll
      for (int m = 0; m < kRowPad / 32; ++m) dst[lane + 32 * m] = v[m] * factor;
    }
  });
}

// The gate kernels' rows: blockIdx.y = value head j, the x index runs over tokens. With a per-key gate
// (KDA, gate_pad = 128) a warp takes a row (token, j), lane l channels 4l..4l+3 as one float4 of the
// workspace; with a scalar gate (GDN, gate_pad = 1) a thread takes a row. The flat thread-per-element
// form divided the 64-bit element index by the runtime gate_pad and heads_v (and the token by seqlen)
// for every element: finish_gate 2.22 ms and prep_gate 1.40 ms at (4, 8192, 32, 32) (ncu, H100) where each
// moves ~1.07 GB (fp32 log decays, no fused options: 0.36 ms at 3 TB/s). Here the only division,
// token / seqlen, is once per row of 128 channels.
constexpr int kGateThreads = 256;
constexpr int kGateRowsKey = kGateThreads / 32;  // 8 rows (warps) per block with a per-key gate
static_assert(kRowPad == 32 * 4, "a warp's float4 per lane covers the per-key gate row");

template <typename Body>
__device__ __forceinline__ void gate_rows(const LinearBackwardParams& p, Body body) {
  const bool per_key = p.common.per_key_gate;
  const int rows = per_key ? kGateRowsKey : kGateThreads;
  const int row_in_block = per_key ? static_cast<int>(threadIdx.x / 32) : static_cast<int>(threadIdx.x);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * rows;
  for (std::int64_t token = static_cast<std::int64_t>(blockIdx.x) * rows + row_in_block; token < p.tokens;
       token += stride) {
    body(token, static_cast<int>(blockIdx.y));
  }
}

__global__ void __launch_bounds__(kGateThreads) prep_gate_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  const int lanes = c.per_key_gate ? 32 : 1, lane = c.per_key_gate ? static_cast<int>(threadIdx.x % 32) : 0;
  const int width = c.per_key_gate ? c.key_dim : 1;
  gate_rows(p, [&](std::int64_t token, int j) {
    const std::int64_t pair = token * c.heads_v + j;
    const std::int64_t g_base = token_offset(p, token, c.g.batch_stride, c.g.token_stride) + j * c.g.head_stride;
    const float a_log = c.gate == LinearGate::kLogDecay ? 0.0f : c.A_log[j * p.a_log_stride];
    float gate[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int e = 4 * lane + u;
      if (e < width) {
        const float raw = load_element(c.g.data, g_base + e, c.gate_element);
        const float bias = c.dt_bias == nullptr ? 0.0f : c.dt_bias[j * p.dt_bias_stride[0] + e * p.dt_bias_stride[1]];
        gate[u] = fused_gate(c, raw, a_log, bias).gate;
      }
    }
    if (lanes == 32) {
      reinterpret_cast<float4*>(p.ws.gate + pair * p.gate_pad)[lane] = make_float4(gate[0], gate[1], gate[2], gate[3]);
    } else {
      p.ws.gate[pair] = gate[0];
    }
    if (lane == 0) {
      const float raw = load_element(
          c.beta.data, token_offset(p, token, c.beta.batch_stride, c.beta.token_stride) + j * c.beta.head_stride,
          c.beta_element);
      float unused;
      p.ws.beta[pair] = fused_beta(c, raw, &unused);
    }
  });
}

// ---- walk ------------------------------------------------------------------------------------------

// Up to kStage tokens of the CTA's (sequence, value head, slice), fp32.
struct alignas(16) Stage {
  float k[kStage][kRowPad];
  float q[kStage][kRowPad];
  float decay[kStage][kRowPad];  // exp(g) per key row
  float v[kStage][kCols];
  float dout[kStage][kCols];
  float beta[kStage];
};

struct alignas(16) WalkShared {
  Stage stage;
  float kS[kChunk][kCols];       // S'^T k of every token of the chunk (pass 2)
  float red[2][kWarps][kCols];   // cross-warp sums, double-buffered so one barrier per token suffices
};

struct WalkContext {
  std::int64_t token0;     // flat token row of the sequence's first token
  std::int64_t length;
  int j, h, slice, lane, warp, column;
  bool column_valid;
};

// Loads tokens [first, first + count) of the sequence into the stage; with `backward` also q and dout.
__device__ void stage_tokens(const LinearBackwardParams& p, const WalkContext& w, WalkShared& s, std::int64_t first,
                             int count, bool backward) {
  const LinearCommonParams& c = p.common;
  __syncthreads();  // everyone is done with the previous stage
  // q, k and the decays as float4: 32 per 128-float row, so each thread's loads are independent.
  constexpr int kVec = kRowPad / 4;
  for (int idx = threadIdx.x; idx < count * kVec; idx += kThreads) {
    const int i = idx / kVec, e4 = idx % kVec;
    const std::int64_t token = w.token0 + first + i;
    const std::int64_t qk = (token * p.heads_qk + w.h) * kRowPad;
    const float4 kv = reinterpret_cast<const float4*>(p.ws.kn + qk)[e4];
    float4 qv = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (backward) qv = reinterpret_cast<const float4*>(p.ws.qn + qk)[e4];
    const float4 gv = reinterpret_cast<const float4*>(p.ws.gate + (token * c.heads_v + w.j) * p.gate_pad)[e4];
    reinterpret_cast<float4*>(s.stage.k[i])[e4] = kv;
    if (backward) reinterpret_cast<float4*>(s.stage.q[i])[e4] = qv;
    reinterpret_cast<float4*>(s.stage.decay[i])[e4] = make_float4(expf(gv.x), expf(gv.y), expf(gv.z), expf(gv.w));
  }
  for (int i = threadIdx.x; i < count; i += kThreads) {
    const std::int64_t token = w.token0 + first + i;
    s.stage.beta[i] = p.ws.beta[token * c.heads_v + w.j];
  }
  for (int idx = threadIdx.x; idx < count * kCols; idx += kThreads) {
    const int i = idx / kCols, col = idx % kCols, column = w.slice * kCols + col;
    const std::int64_t token = w.token0 + first + i;
    float v = 0.0f, d = 0.0f;
    if (column < c.value_dim) {
      v = load_element(c.v.data,
                       token_offset(p, token, c.v.batch_stride, c.v.token_stride) + w.j * c.v.head_stride + column,
                       c.io_element);
      if (backward) {
        d = load_element(p.dout.data,
                         token_offset(p, token, p.dout.batch_stride, p.dout.token_stride) + w.j * p.dout.head_stride +
                             column,
                         c.io_element);
      }
    }
    s.stage.v[i][col] = v;
    s.stage.dout[i][col] = d;
  }
  __syncthreads();
}

// One token of the recurrence on the thread's 32 rows of S; returns kS of the thread's column.
__device__ __forceinline__ float forward_token(const LinearCommonParams& c, const WalkContext& w, WalkShared& s,
                                               int i, int parity, float (&S)[32]) {
  float part = 0.0f;
  const float* k = &s.stage.k[i][w.warp * 32];
  const float* decay = &s.stage.decay[i][w.warp * 32];
#pragma unroll
  for (int r = 0; r < 32; ++r) {
    S[r] *= decay[r];
    part += k[r] * S[r];
  }
  s.red[parity][w.warp][w.lane] = part;
  __syncthreads();
  float kS = 0.0f;
#pragma unroll
  for (int q = 0; q < kWarps; ++q) kS += s.red[parity][q][w.lane];
  const float u = s.stage.beta[i] * (s.stage.v[i][w.lane] - kS);
#pragma unroll
  for (int r = 0; r < 32; ++r) S[r] += k[r] * u;
  return kS;
}

__device__ __forceinline__ float* state_at(float* base, int warp, int lane) { return base + warp * 32 * kCols + lane; }

__global__ void __launch_bounds__(kThreads, 2) walk_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  __shared__ WalkShared s;
  WalkContext w;
  const int n = blockIdx.x / p.slices;
  w.slice = blockIdx.x % p.slices;
  w.j = blockIdx.y;
  w.h = w.j / c.group;
  w.lane = threadIdx.x % 32;
  w.warp = threadIdx.x / 32;
  w.column = w.slice * kCols + w.lane;
  w.column_valid = w.column < c.value_dim;
  std::int64_t slot0;
  if (p.cu_seqlens != nullptr) {
    const std::int64_t begin = p.cu_seqlens[n * p.cu_seqlens_stride];
    w.token0 = begin;
    w.length = p.cu_seqlens[(n + 1) * p.cu_seqlens_stride] - begin;
    slot0 = begin / kChunk + n;
  } else {
    w.token0 = n * p.seqlen;
    w.length = p.seqlen;
    slot0 = n * ((p.seqlen + kChunk - 1) / kChunk);
  }
  const std::int64_t chunks = (w.length + kChunk - 1) / kChunk;
  const int row0 = w.warp * 32;
  auto state_offset = [&](const LinearStateTensor& t, int r) {
    const std::int64_t head = n * t.sequence_stride + w.j * t.head_stride;
    return c.state_vk ? head + w.column * t.row_stride + (row0 + r) : head + (row0 + r) * t.row_stride + w.column;
  };
  auto checkpoint = [&](std::int64_t chunk) {
    return p.ws.checkpoint + (((slot0 + chunk) * c.heads_v + w.j) * p.slices + w.slice) * kSliceFloats;
  };
  float* scratch =
      p.ws.scratch + (static_cast<std::int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * kChunk * kSliceFloats;

  float S[32];
#pragma unroll
  for (int r = 0; r < 32; ++r) {
    const bool valid = w.column_valid && row0 + r < c.key_dim && p.initial_state.data != nullptr;
    S[r] = valid ? p.initial_state.data[state_offset(p.initial_state, r)] : 0.0f;
  }
  int parity = 0;
  // Pass 1: checkpoints at every chunk's start (the last chunk's forward is not needed).
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    float* ck = state_at(checkpoint(chunk), w.warp, w.lane);
#pragma unroll
    for (int r = 0; r < 32; ++r) ck[r * kCols] = S[r];
    if (chunk + 1 == chunks) break;
    for (int sub = 0; sub < kChunk / kStage; ++sub) {
      const std::int64_t first = chunk * kChunk + sub * kStage;
      stage_tokens(p, w, s, first, kStage, false);
      for (int i = 0; i < kStage; ++i, parity ^= 1) forward_token(c, w, s, i, parity, S);
    }
  }

  float dS[32];
#pragma unroll
  for (int r = 0; r < 32; ++r) {
    const bool valid = w.column_valid && row0 + r < c.key_dim && p.dfinal_state.data != nullptr;
    dS[r] = valid ? p.dfinal_state.data[state_offset(p.dfinal_state, r)] : 0.0f;
  }
  // Pass 2: chunks last to first.
  for (std::int64_t chunk = chunks - 1; chunk >= 0; --chunk) {
    const std::int64_t chunk_first = chunk * kChunk;
    const int chunk_length = static_cast<int>(w.length - chunk_first < kChunk ? w.length - chunk_first : kChunk);
    const int stages = (chunk_length + kStage - 1) / kStage;
    {
      const float* ck = state_at(checkpoint(chunk), w.warp, w.lane);
#pragma unroll
      for (int r = 0; r < 32; ++r) S[r] = ck[r * kCols];
    }
    for (int sub = 0; sub < stages; ++sub) {
      const int count = min(kStage, chunk_length - sub * kStage);
      stage_tokens(p, w, s, chunk_first + sub * kStage, count, false);
      for (int i = 0; i < count; ++i, parity ^= 1) {
        float* st = state_at(scratch + (sub * kStage + i) * kSliceFloats, w.warp, w.lane);
#pragma unroll
        for (int r = 0; r < 32; ++r) st[r * kCols] = S[r];
        const float kS = forward_token(c, w, s, i, parity, S);
        if (w.warp == 0) s.kS[sub * kStage + i][w.lane] = kS;
      }
    }
    for (int sub = stages - 1; sub >= 0; --sub) {
      const int count = min(kStage, chunk_length - sub * kStage);
      // The incoming state of the token to differentiate next, loaded one token ahead so that its L2/HBM
      // latency overlaps the current token's work.
      float incoming[32];
      {
        const float* st = state_at(scratch + (sub * kStage + count - 1) * kSliceFloats, w.warp, w.lane);
#pragma unroll
        for (int r = 0; r < 32; ++r) incoming[r] = st[r * kCols];
      }
      stage_tokens(p, w, s, chunk_first + sub * kStage, count, true);
      for (int i = count - 1; i >= 0; --i, parity ^= 1) {
        const int ci = sub * kStage + i;
        const std::int64_t token = w.token0 + chunk_first + ci;
        const float* k = &s.stage.k[i][row0];
        const float* q = &s.stage.q[i][row0];
        const float beta = s.stage.beta[i];
        const float d_o = s.stage.dout[i][w.lane];
        const float r_value = s.stage.v[i][w.lane] - s.kS[ci][w.lane];  // v - S'^T k
        const float u = beta * r_value;
        // S' = diag(e^g) S_before, read back from the scratch.
        float Sp[32];
        const float* decay = &s.stage.decay[i][row0];
#pragma unroll
        for (int r = 0; r < 32; ++r) Sp[r] = decay[r] * incoming[r];
        if (i > 0) {
          const float* st = state_at(scratch + (ci - 1) * kSliceFloats, w.warp, w.lane);
#pragma unroll
          for (int r = 0; r < 32; ++r) incoming[r] = st[r * kCols];
        }
        // o = scale S_t^T q:  dS += scale q do^T;  du = dS^T k.
        float part = 0.0f;
#pragma unroll
        for (int r = 0; r < 32; ++r) {
          dS[r] += c.scale * q[r] * d_o;
          part += dS[r] * k[r];
        }
        s.red[parity][w.warp][w.lane] = part;
        __syncthreads();
        float du = 0.0f;
#pragma unroll
        for (int qq = 0; qq < kWarps; ++qq) du += s.red[parity][qq][w.lane];
        const float dkS = -beta * du;
        const std::int64_t share = ((static_cast<std::int64_t>(w.slice) * p.tokens + token) * c.heads_v + w.j);
        float x[32];
        // dq = scale S_t do, S_t = S' + k u^T
#pragma unroll
        for (int r = 0; r < 32; ++r) x[r] = (Sp[r] + k[r] * u) * d_o;
        p.ws.dq[share * kRowPad + row0 + w.lane] = c.scale * reduce_scatter(x, w.lane);
        // dk = dS u + S' dkS  (dS: the gradient of S_t)
#pragma unroll
        for (int r = 0; r < 32; ++r) x[r] = dS[r] * u + Sp[r] * dkS;
        p.ws.dk[share * kRowPad + row0 + w.lane] = reduce_scatter(x, w.lane);
        // dS' = dS + k dkS^T;  dg = <dS', S'> per row;  dS_{t-1} = diag(e^g) dS'.
#pragma unroll
        for (int r = 0; r < 32; ++r) dS[r] += k[r] * dkS;
#pragma unroll
        for (int r = 0; r < 32; ++r) x[r] = dS[r] * Sp[r];
        p.ws.dg[share * kRowPad + row0 + w.lane] = reduce_scatter(x, w.lane);
#pragma unroll
        for (int r = 0; r < 32; ++r) dS[r] *= decay[r];
        if (w.warp == 0) {
          const float dbeta = warp_sum(du * r_value);
          if (w.lane == 0) p.ws.dbeta[share] = dbeta;
          if (w.column_valid) {
            store_element(p.dv.data,
                          token_offset(p, token, p.dv.batch_stride, p.dv.token_stride) + w.j * p.dv.head_stride +
                              w.column,
                          c.io_element, beta * du);
          }
        }
      }
    }
  }
  if (p.d_initial_state.data != nullptr && w.column_valid) {
#pragma unroll
    for (int r = 0; r < 32; ++r) {
      if (row0 + r < c.key_dim) p.d_initial_state.data[state_offset(p.d_initial_state, r)] = dS[r];
    }
  }
}

// ---- finish ----------------------------------------------------------------------------------------

__global__ void __launch_bounds__(256) finish_qk_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  const int lane = threadIdx.x % 32;
  warp_items(p.tokens * p.heads_qk, [&](std::int64_t pair) {
    const std::int64_t token = pair / p.heads_qk;
    const int h = static_cast<int>(pair % p.heads_qk);
    for (int which = 0; which < 2; ++which) {
      const float* shares = which == 0 ? p.ws.dq : p.ws.dk;
      float grad[kRowPad / 32];
#pragma unroll
      for (int m = 0; m < kRowPad / 32; ++m) grad[m] = 0.0f;
      for (int j = h * c.group; j < (h + 1) * c.group; ++j) {
        for (int slice = 0; slice < p.share_slices; ++slice) {
          const float* row = shares + ((static_cast<std::int64_t>(slice) * p.tokens + token) * c.heads_v + j) * kRowPad;
#pragma unroll
          for (int m = 0; m < kRowPad / 32; ++m) grad[m] += row[lane + 32 * m];
        }
      }
      const LinearTokenTensor& x = which == 0 ? c.q : c.k;
      const LinearTokenOutput& out = which == 0 ? p.dq : p.dk;
      if (c.l2norm_qk) {
        // x_hat = x s, s = (|x|^2 + eps)^-1/2  =>  dx = s dx_hat - s^3 x <x, dx_hat>
        const std::int64_t base = token_offset(p, token, x.batch_stride, x.token_stride) + h * x.head_stride;
        float v[kRowPad / 32];
        float sum_sq = 0.0f, dot = 0.0f;
#pragma unroll
        for (int m = 0; m < kRowPad / 32; ++m) {
          const int e = lane + 32 * m;
          v[m] = e < c.key_dim ? load_element(x.data, base + e, c.io_element) : 0.0f;
          sum_sq += v[m] * v[m];
          dot += v[m] * grad[m];
        }
        const float inv = 1.0f / sqrtf(warp_sum(sum_sq) + 1e-6f);
        dot = warp_sum(dot);
#pragma unroll
        for (int m = 0; m < kRowPad / 32; ++m) grad[m] = inv * grad[m] - inv * inv * inv * v[m] * dot;
      }
      const std::int64_t base = token_offset(p, token, out.batch_stride, out.token_stride) + h * out.head_stride;
#pragma unroll
      for (int m = 0; m < kRowPad / 32; ++m) {
        const int e = lane + 32 * m;
        if (e < c.key_dim) store_element(out.data, base + e, c.io_element, grad[m]);
      }
    }
  });
}

__global__ void __launch_bounds__(kGateThreads) finish_gate_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  const int lanes = c.per_key_gate ? 32 : 1, lane = c.per_key_gate ? static_cast<int>(threadIdx.x % 32) : 0;
  const int width = c.per_key_gate ? c.key_dim : 1;
  const std::int64_t per_slice = p.tokens * c.heads_v * p.gate_pad;
  gate_rows(p, [&](std::int64_t token, int j) {
    const std::int64_t pair = token * c.heads_v + j, row = pair * p.gate_pad;
    // The shares summed in slice order, as one float4 per lane with a per-key gate.
    float dg[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int slice = 0; slice < p.share_slices; ++slice) {
      const float* share = p.ws.dg + slice * per_slice + row;
      if (lanes == 32) {
        const float4 d = reinterpret_cast<const float4*>(share)[lane];
        dg[0] += d.x;
        dg[1] += d.y;
        dg[2] += d.z;
        dg[3] += d.w;
      } else {
        dg[0] += share[0];
      }
    }
    const std::int64_t g_base = token_offset(p, token, c.g.batch_stride, c.g.token_stride) + j * c.g.head_stride;
    const std::int64_t dg_base =
        token_offset(p, token, p.dg.batch_stride, p.dg.token_stride) + j * p.dg.head_stride;
    float d_alog[4] = {0.0f, 0.0f, 0.0f, 0.0f}, d_raw[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int e = 4 * lane + u;
      if (e >= width) continue;
      if (c.gate != LinearGate::kLogDecay) {
        const float raw = load_element(c.g.data, g_base + e, c.gate_element);
        const float bias = c.dt_bias == nullptr ? 0.0f : c.dt_bias[j * p.dt_bias_stride[0] + e * p.dt_bias_stride[1]];
        const GateValue d = fused_gate(c, raw, c.A_log[j * p.a_log_stride], bias);
        d_alog[u] = dg[u] * d.d_a_log;
        dg[u] *= d.d_raw;
        d_raw[u] = dg[u];
      }
      store_element(p.dg.data, dg_base + e, p.gate_grad_element, dg[u]);
    }
    if (c.gate != LinearGate::kLogDecay) {
      if (lanes == 32) {
        reinterpret_cast<float4*>(p.ws.dg_alog + row)[lane] = make_float4(d_alog[0], d_alog[1], d_alog[2], d_alog[3]);
        reinterpret_cast<float4*>(p.ws.dg_raw + row)[lane] = make_float4(d_raw[0], d_raw[1], d_raw[2], d_raw[3]);
      } else {
        p.ws.dg_alog[row] = d_alog[0];
        p.ws.dg_raw[row] = d_raw[0];
      }
    }
    if (lane == 0) {
      float dbeta = 0.0f;
      for (int slice = 0; slice < p.share_slices; ++slice) dbeta += p.ws.dbeta[slice * p.tokens * c.heads_v + pair];
      const float raw = load_element(
          c.beta.data, token_offset(p, token, c.beta.batch_stride, c.beta.token_stride) + j * c.beta.head_stride,
          c.beta_element);
      float d_raw_beta;
      fused_beta(c, raw, &d_raw_beta);
      store_element(p.dbeta.data,
                    token_offset(p, token, p.dbeta.batch_stride, p.dbeta.token_stride) + j * p.dbeta.head_stride,
                    p.beta_grad_element, dbeta * d_raw_beta);
    }
  });
}

// blockIdx.x = value head j; blockIdx.y = e < gate width: ddt_bias[j][e]; blockIdx.y = width: dA_log[j].
// Fixed-order block sum over tokens (and, for dA_log, the key channels).
__global__ void __launch_bounds__(256) finish_param_kernel(const LinearBackwardParams p) {
  const LinearCommonParams& c = p.common;
  const int j = blockIdx.x, width = c.per_key_gate ? c.key_dim : 1;
  const bool a_log = static_cast<int>(blockIdx.y) == width;
  if (!a_log && p.ddt_bias == nullptr) return;
  float sum = 0.0f;
  for (std::int64_t token = threadIdx.x; token < p.tokens; token += blockDim.x) {
    const std::int64_t row = (token * c.heads_v + j) * p.gate_pad;
    if (a_log) {
      for (int e = 0; e < width; ++e) sum += p.ws.dg_alog[row + e];
    } else {
      sum += p.ws.dg_raw[row + blockIdx.y];
    }
  }
  __shared__ float warp_sums[8];
  sum = warp_sum(sum);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int q = 0; q < 8; ++q) total += warp_sums[q];
    if (a_log) {
      p.dA_log[j * p.dA_log_stride] = total;
    } else {
      p.ddt_bias[j * p.ddt_bias_stride[0] + blockIdx.y * p.ddt_bias_stride[1]] = total;
    }
  }
}

unsigned int grid_for(std::int64_t items, int per_block) {
  const std::int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned int>(std::min<std::int64_t>(std::max<std::int64_t>(blocks, 1), 1 << 20));
}

// blockIdx.y = value head (at most 65535, checked by linear_sm80.cpp), x: token rows (gate_rows).
dim3 gate_grid(const LinearBackwardParams& p) {
  return dim3(grid_for(p.tokens, p.common.per_key_gate ? kGateRowsKey : kGateThreads),
              static_cast<unsigned int>(p.common.heads_v));
}

}  // namespace

LinearBackwardLayout linear_backward_layout(std::int64_t tokens, std::int64_t num_sequences, std::int64_t seqlen,
                                            bool varlen, std::int64_t heads_qk, std::int64_t heads_v,
                                            std::int64_t value_dim, bool per_key_gate, bool chunked) {
  LinearBackwardLayout layout;
  const std::int64_t slices = (value_dim + kCols - 1) / kCols;
  const std::int64_t gate_pad = per_key_gate ? kRowPad : 1;
  layout.slots = varlen ? seqlen / kChunk + num_sequences : num_sequences * ((seqlen + kChunk - 1) / kChunk);
  auto take = [&](std::int64_t floats) {
    const std::size_t at = layout.total;
    layout.total += (static_cast<std::size_t>(floats) * sizeof(float) + 255) / 256 * 256;
    return at;
  };
  layout.qn = take(tokens * heads_qk * kRowPad);
  layout.kn = take(tokens * heads_qk * kRowPad);
  layout.gate = take(tokens * heads_v * gate_pad);
  layout.beta = take(tokens * heads_v);
  if (!chunked) {
    // KDA's walk: the checkpoints, per-CTA scratch and one share of dq, dk, dg, dbeta per value slice.
    layout.checkpoint = take(layout.slots * heads_v * slices * kSliceFloats);
    layout.scratch = take(num_sequences * slices * heads_v * kChunk * kSliceFloats);
    layout.dq = take(slices * tokens * heads_v * kRowPad);
    layout.dk = take(slices * tokens * heads_v * kRowPad);
    layout.dg = take(slices * tokens * heads_v * gate_pad);
    layout.dbeta = take(slices * tokens * heads_v);
  } else {
    // The chunked backward's per-chunk intermediates and one share of each gradient.
    const std::int64_t chunk_heads = layout.slots * heads_v, value_pad = slices * kCols;
    layout.dq = take(tokens * heads_v * kRowPad);
    layout.dk = take(tokens * heads_v * kRowPad);
    layout.dg = take(tokens * heads_v * gate_pad);
    layout.dbeta = take(tokens * heads_v);
    layout.gc = take(chunk_heads * kChunk * gate_pad);
    layout.tinv = take(chunk_heads * kChunk * kChunk);
    layout.w = take(chunk_heads * kChunk * kRowPad);
    layout.vnew = take(chunk_heads * kChunk * value_pad);
    layout.s0 = take(chunk_heads * kRowPad * value_pad);
    layout.pdo = take(chunk_heads * kChunk * value_pad);
    layout.dvnew = take(chunk_heads * kChunk * value_pad);
    layout.dh = take(chunk_heads * kRowPad * value_pad);
    if (!per_key_gate) layout.pmat = take(chunk_heads * kChunk * kChunk);
    layout.bmat = take(chunk_heads * kChunk * kChunk);
    if (per_key_gate) layout.kd = take(chunk_heads * kChunk * kRowPad);
  }
  layout.dg_raw = take(tokens * heads_v * gate_pad);
  layout.dg_alog = take(tokens * heads_v * gate_pad);
  return layout;
}

cudaError_t launch_linear_backward(const LinearBackwardParams& p, cudaStream_t stream) {
  const LinearCommonParams& c = p.common;
  if (p.tokens > 0) {
    prep_qk_kernel<<<grid_for(p.tokens * p.heads_qk, 8), 256, 0, stream>>>(p);
    prep_gate_kernel<<<gate_grid(p), kGateThreads, 0, stream>>>(p);
  }
  if (!c.per_key_gate) {
    if (const cudaError_t e = launch_gdn_backward_chunked(p, stream); e != cudaSuccess) return e;
  } else if (p.chunked) {
    if (const cudaError_t e = launch_kda_backward_chunked(p, stream); e != cudaSuccess) return e;
  } else if (p.num_sequences > 0) {
    walk_kernel<<<dim3(static_cast<unsigned int>(p.num_sequences * p.slices), static_cast<unsigned int>(c.heads_v)),
                  kThreads, 0, stream>>>(p);
  }
  if (p.tokens > 0) {
    finish_qk_kernel<<<grid_for(p.tokens * p.heads_qk, 8), 256, 0, stream>>>(p);
    finish_gate_kernel<<<gate_grid(p), kGateThreads, 0, stream>>>(p);
  }
  if (c.gate != LinearGate::kLogDecay) {
    const int width = c.per_key_gate ? c.key_dim : 1;
    finish_param_kernel<<<dim3(static_cast<unsigned int>(c.heads_v), static_cast<unsigned int>(width + 1)), 256, 0,
                          stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace attnkit::sm80
