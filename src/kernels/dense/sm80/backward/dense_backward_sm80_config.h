// Tile shapes of the sm_80+ dense backward kernel, one per head-dim tier and Q/dO buffer count, readable
// from host code (the support check and the stage choice compare their shared-memory need with the
// device's limit). A head dim D (and Dv) that
// is a multiple of 8 runs on the smallest tier >= max(D, Dv); the kernel zero-fills the padding.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attnkit::sm80::backward {

// One CTA of kWarps warps owns kBlockN keys of one kv head and walks the query tiles of kBlockM rows
// of every query head of its group. Three GEMM shapes, each with its own warp grid:
//   S, dP (kBlockM x kBlockN, k = D):    kWarpsMForSdP x (kWarps / kWarpsMForSdP) warps
//   dK, dV (kBlockN x D, k = kBlockM):   kWarpsNForDkv x (kWarps / kWarpsNForDkv) warps
//   dQ (kBlockM x D, k = kBlockN):       kWarpsMForDq x (kWarps / kWarpsMForDq) warps, in kDqPasses
//                                         column slices to bound the live accumulator registers
// kStages: 2 double-buffers Q and dO (the next tile loads during the whole step); 1 issues the next
// Q after the last reader of Q and the next dO after the last reader of dO (less shared memory).
// kMinCtasPerSm: the __launch_bounds__ minimum (2 caps the registers at 128 per thread).
// kCopyAddressesOnce: each tile copy (cp.async) forms its thread's source and shared addresses and its
// column test once and steps them by constants, instead of per 16-byte chunk (backward/README.md, round
// 10, call 5: D = 128 +1.3-2.6%, D = 256 +0.6-2.7% on the H100; D = 64 -1.3% to +0.6%, where its
// mask-free kernel spilled 120 bytes with it, against 56).
// kMaskFreeKernel: launches that need no element mask (no window, no varlen, whole tiles) get a kernel
// without the mask loops (backward/README.md, round 7c: D = 64 non-causal +2-4% on the H100, spills
// 16 -> 0 bytes; D = 128 within noise, D = 256 -4%).
template <int kHeadDimTier, int kStages>
struct BackwardTile;

// D <= 64: 128 x 128 tiles. Shared memory: Q, dO 2 x 16 KiB each, K, V 16 KiB each, P, dS 32 KiB each,
// lse and delta 2 KiB = 162 KiB (fits the A100's 163 KiB opt-in limit, not the 99 KiB of sm_86/sm_89).
// S/dP warps 4 x 2 (32 x 64 each; FlashAttention-2 uses 2 x 4): each lane holds 4 rows' lse and delta
// instead of 8, which with their lane-order loads took the sm_90 spills from 92 to 72 bytes and the
// whole backward +2-6% on the H100 (backward/README.md, round 4c).
template <>
struct BackwardTile<64, 2> {
  static constexpr int kHeadDim = 64, kBlockM = 128, kBlockN = 128, kWarps = 8, kMinCtasPerSm = 1;
  static constexpr bool kMaskFreeKernel = true, kCopyAddressesOnce = false;
  static constexpr int kWarpsMForSdP = 4, kWarpsNForDkv = 4, kWarpsMForDq = 4, kDqPasses = 1, kStages = 2;
};

// D <= 128: 64 x 128 tiles. Q, dO 2 x 16 KiB each, K, V 32 KiB each, P, dS 16 KiB each, lse and delta
// 1 KiB = 161 KiB.
template <>
struct BackwardTile<128, 2> {
  static constexpr int kHeadDim = 128, kBlockM = 64, kBlockN = 128, kWarps = 8, kMinCtasPerSm = 1;
  static constexpr bool kMaskFreeKernel = false, kCopyAddressesOnce = true;
  static constexpr int kWarpsMForSdP = 2, kWarpsNForDkv = 4, kWarpsMForDq = 2, kDqPasses = 1, kStages = 2;
};

// D <= 256: 64 x 64 tiles. dQ in two 128-column passes keeps its accumulator at 32 registers beside the
// 128 of dK and dV. Q, dO single-buffered: Q, dO, K, V 32 KiB each, P, dS 8 KiB each, lse and delta
// 0.5 KiB = 144.5 KiB, for the A100 (163 KiB).
template <>
struct BackwardTile<256, 1> {
  static constexpr int kHeadDim = 256, kBlockM = 64, kBlockN = 64, kWarps = 8, kMinCtasPerSm = 1;
  static constexpr bool kMaskFreeKernel = false, kCopyAddressesOnce = true;
  static constexpr int kWarpsMForSdP = 4, kWarpsNForDkv = 2, kWarpsMForDq = 2, kDqPasses = 2, kStages = 1;
};

// The same with Q and dO double-buffered, where the device allows 209 KiB per block (H100: 227 KiB).
// With one buffer the 64 KiB of the next Q and dO can only fly during the dV and dQ GEMMs (a fifth of
// the step), which at D = 256 is shorter than their latency from L2.
template <>
struct BackwardTile<256, 2> {
  static constexpr int kHeadDim = 256, kBlockM = 64, kBlockN = 64, kWarps = 8, kMinCtasPerSm = 1;
  static constexpr bool kMaskFreeKernel = false, kCopyAddressesOnce = true;
  static constexpr int kWarpsMForSdP = 4, kWarpsNForDkv = 2, kWarpsMForDq = 2, kDqPasses = 2, kStages = 2;
};

// dq_accum (fp32 dQ / scale) is kept in the order of the main kernel's dQ accumulators, not in dQ's
// own row-major order, so that one warp's atomic adds cover contiguous memory: one 128-value group per
// warp and 16 x 8 accumulator tile (512 bytes: with sm_90's red.global.add.v4.f32 one request per warp
// and tile, against 16 rows x 32 bytes in row-major order). The postprocess reads the order back.
//
// Blocks: every (query tile of kBlockM rows, query head) owns kBlockM x kHeadDim values (the tier's
// width, whatever D is; columns >= D stay zero and are never read). The tiles of sequence b start at
// accum row R_b (dq_accum_row0), and the block of the tile at accum row R, head h begins at value
// (R * Hq + h * kBlockM) * kHeadDim: kBlockM accum rows hold the blocks of all Hq heads of one tile.
// Inside a block, group ((pass * kWarps + warp) * kTilesM + tm) * kTilesN + tn of 128 values holds the
// accumulator tile (tm, tn) of `warp` in column pass `pass`; value e (0..3, the mma C fragment order:
// (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)) of lane l sits at l * 4 + e where the adds are
// 4-wide (sm_90), at e * 32 + l where they are scalar (sm_80: one contiguous 128-byte line per request).
template <typename Tile>
struct DqAccumLayout {
  static constexpr int kBlockM = Tile::kBlockM;
  static constexpr int kHeadDim = Tile::kHeadDim;
  static constexpr int kWarps = Tile::kWarps;
  static constexpr int kWarpsM = Tile::kWarpsMForDq;
  static constexpr int kWarpsD = kWarps / kWarpsM;
  static constexpr int kPasses = Tile::kDqPasses;
  static constexpr int kPassCols = kHeadDim / kPasses;
  static constexpr int kWarpRows = kBlockM / kWarpsM;
  static constexpr int kWarpCols = kPassCols / kWarpsD;
  static constexpr int kTilesM = kWarpRows / 16;
  static constexpr int kTilesN = kWarpCols / 8;
  static constexpr int kBlockValues = kBlockM * kHeadDim;
  static_assert(kPasses * kWarps * kTilesM * kTilesN * 128 == kBlockValues, "the groups tile the block");

  // First value of the group of (pass, warp, tm, tn) inside a block.
  static constexpr int group_offset(int pass, int warp, int tm, int tn) {
    return (((pass * kWarps + warp) * kTilesM + tm) * kTilesN + tn) * 128;
  }
};

// Whether the dQ adds are 4-wide (sm_90's red.global.add.v4.f32; value order l * 4 + e) or scalar
// (e * 32 + l). Device code only: the main kernel and the postprocess are compiled for the same targets
// (the backward sources of src/kernels/dense/sm80/CMakeLists.txt), so both see the same value.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
inline constexpr bool kDqAccumVectorAdds = true;
#else
inline constexpr bool kDqAccumVectorAdds = false;
#endif

// First accum row of sequence b's tiles: BSHD b * num_m_blocks * kBlockM; varlen (q_begin = its first
// token) q_begin + b * kBlockM, which leaves each sequence room for its last, partial tile.
constexpr std::int64_t dq_accum_row0(bool varlen, std::int64_t batch_index, std::int64_t q_begin, std::int64_t num_m_blocks,
                                     int block_m) {
  return varlen ? q_begin + batch_index * block_m : batch_index * num_m_blocks * block_m;
}

// Accum rows of the whole dq_accum (each holds Hq * kHeadDim values).
constexpr std::int64_t dq_accum_rows(bool varlen, std::int64_t batch, std::int64_t total_q, std::int64_t num_m_blocks,
                                     int block_m) {
  return varlen ? total_q + batch * block_m : batch * num_m_blocks * block_m;
}

template <typename Tile>
constexpr std::size_t backward_smem_bytes() {
  constexpr std::size_t element = 2;  // fp16 / bf16
  return element * (2 * Tile::kBlockN * Tile::kHeadDim                   // K, V
                    + 2 * Tile::kStages * Tile::kBlockM * Tile::kHeadDim  // Q, dO
                    + 2 * Tile::kBlockM * Tile::kBlockN)                  // P, dS
         + sizeof(float) * 2 * Tile::kStages * Tile::kBlockM;             // lse, delta of the Q rows
}

// The tier that runs head dims (D, Dv), and its shared-memory need.
constexpr int backward_head_dim_tier(long long head_dim, long long head_dim_v) {
  const long long widest = head_dim > head_dim_v ? head_dim : head_dim_v;
  return widest <= 64 ? 64 : widest <= 128 ? 128 : 256;
}

// Q/dO buffers of a tier's tiles: 2 where the device's per-block shared-memory limit allows, else 1
// (only the 256 tier has a single-buffered tile; 64 and 128 need no more than the A100 has).
constexpr int backward_stages_for_tier(int tier, std::size_t smem_per_block_limit) {
  return tier != 256 || backward_smem_bytes<BackwardTile<256, 2>>() <= smem_per_block_limit ? 2 : 1;
}

// Tail split. The main kernel runs one CTA per SM (162-209 KiB of shared memory each), so a launch of
// C equal key tiles on P SMs takes ceil(C / P) waves where C / P would do: the bench shapes have C =
// 2048 (D = 128, 256) or 4096 (D = 64) on the H100's 132 SMs, 15.5 or 31.03 waves run as 16 or 32,
// 3% of the kernel idle. Where every key tile takes the same steps (no causal mask or window, no
// varlen) and the launch is non-deterministic, the first C - R tiles (R = C mod P) stay whole, filling
// whole waves, and the R * steps steps of the last R tiles are shared out evenly over min(P, R *
// steps) CTAs; the CTA that completes a split tile sums its parts of dK, dV in a fixed order
// (backward/README.md, round 8). It pays from 32 steps per tile on (H100: +0.3% at 32 steps, +1.5-2.6%
// at 64-256) and costs at 8-16 (-0.3% to -1%: its second launch, and the first one's last CTAs no
// longer overlapping the split ones), so shorter tiles stay whole.
inline constexpr std::int64_t kBackwardTailMinSteps = 32;

struct BackwardTailPlan {
  int first_cta = 0;  // CTAs (= key tiles) before the split ones
  int tiles = 0;      // key tiles split by steps; 0: no split
  int ctas = 0;       // CTAs that share their steps
};

constexpr BackwardTailPlan backward_tail_plan(std::int64_t key_tiles, std::int64_t steps_per_tile, int sm_count) {
  BackwardTailPlan plan;
  if (sm_count <= 0 || key_tiles <= 0 || steps_per_tile < kBackwardTailMinSteps) return plan;
  const std::int64_t rest = key_tiles % sm_count;
  if (rest == 0) return plan;
  const std::int64_t steps = rest * steps_per_tile;
  plan.first_cta = static_cast<int>(key_tiles - rest);
  plan.tiles = static_cast<int>(rest);
  plan.ctas = static_cast<int>(steps < sm_count ? steps : sm_count);
  return plan;
}

// Whether a launch may split its tail: non-deterministic, no softcap (the tail kernels are built without
// it), every key tile seeing every query tile (no window, no varlen), and at tier 64 whole tiles (its
// tail kernel is the mask-free one).
constexpr bool backward_tail_allowed(int tier, bool deterministic, bool softcap, bool varlen, bool windowed,
                                     std::int64_t seqlen_q, std::int64_t seqlen_k) {
  if (deterministic || softcap || varlen || windowed) return false;
  return tier != 64 || (seqlen_q % BackwardTile<64, 2>::kBlockM == 0 && seqlen_k % BackwardTile<64, 2>::kBlockN == 0);
}

// fp32 values of one part of a split tile (its dK and dV); a plan stores at most ctas + tiles - 1 parts.
constexpr std::size_t backward_tail_part_floats(int tier) {
  const std::size_t block_n = tier == 64 ? BackwardTile<64, 2>::kBlockN
                              : tier == 128 ? BackwardTile<128, 2>::kBlockN
                                            : BackwardTile<256, 2>::kBlockN;
  return 2 * block_n * static_cast<std::size_t>(tier);
}

// Key-tile order of causal and windowed launches (round 9). Their key tiles take unequal steps (causal:
// key tile n of a pair is seen by the query tiles from about n on), and with n_block fastest the last
// pair's largest tiles start when little work is left: a greedy model of 132 SMs puts the bench shapes'
// causal makespan 3-7% above the work's at S = 1024 and 4096. Ordering the (batch, kv head) pairs in
// groups, n_block slowest inside a group, starts the largest tiles first and leaves the smallest for the
// last wave (model: 0-2% above). A group's Q, dO (bf16) and dq_accum (fp32), 8 bytes per query element
// and head, stay within kBackwardTileGroupBytes, a third of the H100's 50 MB L2, so its CTAs still
// share them in L2. 0: the plain order (a group of one pair is the same order).
inline constexpr std::int64_t kBackwardTileGroupBytes = std::int64_t{16} << 20;

constexpr int backward_tile_group(int tier, bool deterministic, bool varlen, bool windowed, std::int64_t seqlen_q,
                                  std::int64_t group, std::int64_t kv_pairs) {
  if (deterministic || varlen || !windowed || kv_pairs <= 1) return 0;
  const std::int64_t pair_bytes = seqlen_q * group * tier * 8;
  std::int64_t pairs = pair_bytes > 0 ? kBackwardTileGroupBytes / pair_bytes : kv_pairs;
  if (pairs > kv_pairs) pairs = kv_pairs;
  return pairs > 1 ? static_cast<int>(pairs) : 0;
}

// The least shared memory any tile of the tier needs.
constexpr std::size_t backward_min_smem_bytes_for_tier(int tier) {
  return tier == 64 ? backward_smem_bytes<BackwardTile<64, 2>>()
         : tier == 128 ? backward_smem_bytes<BackwardTile<128, 2>>()
                       : backward_smem_bytes<BackwardTile<256, 1>>();
}

// Query and key rows per tile; the same for every stage count of a tier.
constexpr int backward_block_m_for_tier(int tier) {
  return tier == 64 ? BackwardTile<64, 2>::kBlockM : tier == 128 ? BackwardTile<128, 2>::kBlockM : BackwardTile<256, 1>::kBlockM;
}

constexpr int backward_block_n_for_tier(int tier) {
  return tier == 64 ? BackwardTile<64, 2>::kBlockN : tier == 128 ? BackwardTile<128, 2>::kBlockN : BackwardTile<256, 1>::kBlockN;
}
static_assert(BackwardTile<256, 1>::kBlockM == BackwardTile<256, 2>::kBlockM &&
              BackwardTile<256, 1>::kBlockN == BackwardTile<256, 2>::kBlockN);
// ... and so does the dq_accum layout (one postprocess per tier).
static_assert(BackwardTile<256, 1>::kWarps == BackwardTile<256, 2>::kWarps &&
              BackwardTile<256, 1>::kWarpsMForDq == BackwardTile<256, 2>::kWarpsMForDq &&
              BackwardTile<256, 1>::kDqPasses == BackwardTile<256, 2>::kDqPasses);

}  // namespace attnkit::sm80::backward
