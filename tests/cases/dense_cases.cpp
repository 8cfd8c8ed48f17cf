#include "tests/cases/dense_cases.h"

#include "tests/cases/splitmix64.h"

#include <algorithm>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace attnkit::cases {

const char* layout_name(DenseLayout layout) {
  switch (layout) {
    case DenseLayout::kContiguous: return "contiguous";
    case DenseLayout::kPackedQkv: return "packed_qkv";
    case DenseLayout::kPadded: return "padded";
  }
  return "unknown";
}

std::int64_t DenseCase::total_q() const {
  if (!varlen()) return batch * seqlen_q;
  return std::accumulate(varlen_q.begin(), varlen_q.end(), std::int64_t{0});
}

std::int64_t DenseCase::total_k() const {
  if (!varlen()) return batch * seqlen_k;
  return std::accumulate(varlen_k.begin(), varlen_k.end(), std::int64_t{0});
}

std::int64_t DenseCase::max_seqlen_q() const {
  if (!varlen()) return seqlen_q;
  return *std::max_element(varlen_q.begin(), varlen_q.end());
}

std::int64_t DenseCase::max_seqlen_k() const {
  if (!varlen()) return seqlen_k;
  return *std::max_element(varlen_k.begin(), varlen_k.end());
}

double DenseCase::forward_flops() const {
  double query_key_pairs = 0.0;  // sum over sequences of Sq * Sk
  if (varlen()) {
    for (std::size_t n = 0; n < varlen_q.size(); ++n) query_key_pairs += double(varlen_q[n]) * double(varlen_k[n]);
  } else {
    query_key_pairs = double(batch) * double(seqlen_q) * double(seqlen_k);
  }
  const double flops = 2.0 * query_key_pairs * double(heads_q) * double(head_dim + head_dim_v);
  return causal ? flops / 2.0 : flops;
}

namespace {

std::string join(const std::vector<std::int32_t>& values) {
  std::string text = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text += ',';
    text += std::to_string(values[i]);
  }
  return text + "}";
}

}  // namespace

std::string DenseCase::describe() const {
  const DenseCase defaults;
  std::ostringstream out;
  out << name << ": " << dtype_name(dtype);
  if (varlen()) {
    out << " varlen q=" << join(varlen_q) << " k=" << join(varlen_k);
  } else {
    out << " B=" << batch << " Sq=" << seqlen_q << " Sk=" << seqlen_k;
  }
  out << " Hq=" << heads_q << " Hkv=" << heads_kv << " D=" << head_dim;
  if (head_dim_v != head_dim) out << " Dv=" << head_dim_v;
  if (causal) out << " causal";
  if (window_left != -1 || window_right != -1) out << " window=(" << window_left << "," << window_right << ")";
  if (softcap != defaults.softcap) out << " softcap=" << softcap;
  if (sinks) out << " sinks";
  if (scale != defaults.scale) out << " scale=" << scale;
  if (layout != defaults.layout) out << " layout=" << layout_name(layout);
  return out.str();
}

namespace {

// A case with the common sizes; the catalogue below overrides what each case is about.
DenseCase make(const std::string& name, DType dtype, std::int64_t batch, std::int64_t seqlen_q, std::int64_t seqlen_k,
               std::int64_t heads_q, std::int64_t heads_kv, std::int64_t head_dim) {
  DenseCase c;
  c.name = name;
  c.dtype = dtype;
  c.batch = batch;
  c.seqlen_q = seqlen_q;
  c.seqlen_k = seqlen_k;
  c.heads_q = heads_q;
  c.heads_kv = heads_kv;
  c.head_dim = head_dim;
  c.head_dim_v = head_dim;
  return c;
}

DenseCase make_varlen(const std::string& name, DType dtype, std::vector<std::int32_t> lengths_q,
                      std::vector<std::int32_t> lengths_k, std::int64_t heads_q, std::int64_t heads_kv,
                      std::int64_t head_dim) {
  DenseCase c = make(name, dtype, 1, 1, 1, heads_q, heads_kv, head_dim);
  c.batch = static_cast<std::int64_t>(lengths_q.size());
  c.varlen_q = std::move(lengths_q);
  c.varlen_k = std::move(lengths_k);
  return c;
}

}  // namespace

std::vector<DenseCase> dense_adversarial_cases(DType dtype) {
  std::vector<DenseCase> cases;
  auto add = [&](DenseCase c) { cases.push_back(std::move(c)); };
  auto with = [](DenseCase c, auto&& change) {
    change(c);
    return c;
  };

  // Lengths 0 and 1, zero batch. Zero query rows is a no-op in forward; in backward with keys it writes
  // dk = dv = 0. Sk = 0 makes every row empty: o = 0, lse = -inf.
  add(make("len1", dtype, 1, 1, 1, 2, 2, 64));
  add(make("decode_sq1_sk77", dtype, 2, 1, 77, 4, 4, 64));
  add(with(make("decode_sq1_sk77_causal", dtype, 2, 1, 77, 4, 4, 64), [](DenseCase& c) { c.causal = true; }));
  add(make("sq0_sk17", dtype, 2, 0, 17, 2, 2, 64));
  add(make("sq17_sk0", dtype, 2, 17, 0, 2, 2, 64));
  add(make("sq0_sk0", dtype, 2, 0, 0, 2, 2, 64));
  add(make("batch0", dtype, 0, 16, 16, 2, 2, 64));
  add(make("sq1_sk1_batch5", dtype, 5, 1, 1, 3, 1, 32));

  // Odd lengths, Sq != Sk both ways, causal in each shape (Sq > Sk causal: the first Sq - Sk rows see
  // no key at all).
  add(make("odd_17", dtype, 2, 17, 17, 3, 3, 64));
  add(make("odd_33_127", dtype, 1, 33, 127, 2, 2, 64));
  add(make("odd_127_33", dtype, 1, 127, 33, 2, 2, 64));
  add(with(make("causal_17", dtype, 2, 17, 17, 2, 2, 64), [](DenseCase& c) { c.causal = true; }));
  add(with(make("causal_33_127", dtype, 1, 33, 127, 2, 2, 64), [](DenseCase& c) { c.causal = true; }));
  add(with(make("causal_127_33_masked_rows", dtype, 1, 127, 33, 2, 2, 64), [](DenseCase& c) { c.causal = true; }));
  add(with(make("causal_257_multi_tile", dtype, 1, 257, 257, 2, 2, 128), [](DenseCase& c) { c.causal = true; }));
  add(make("long_300_200", dtype, 2, 300, 200, 2, 1, 64));
  add(with(make("causal_129_300", dtype, 1, 129, 300, 2, 2, 64), [](DenseCase& c) { c.causal = true; }));

  // GQA ratios 1, 2, 4, 8 and MQA.
  add(make("gqa1", dtype, 2, 33, 40, 4, 4, 64));
  add(make("gqa2", dtype, 2, 33, 40, 4, 2, 64));
  add(with(make("gqa4_causal", dtype, 1, 65, 65, 8, 2, 64), [](DenseCase& c) { c.causal = true; }));
  add(make("gqa8", dtype, 1, 31, 47, 16, 2, 64));
  add(make("mqa", dtype, 2, 40, 33, 8, 1, 64));
  add(with(make("mqa_decode_causal", dtype, 3, 1, 90, 8, 1, 128), [](DenseCase& c) { c.causal = true; }));
  add(with(make("gqa4_causal_sq_gt_sk", dtype, 1, 50, 20, 8, 2, 64), [](DenseCase& c) { c.causal = true; }));

  // Head dims: not powers of two, the extremes, the fast paths, and D != Dv.
  add(make("d8", dtype, 1, 19, 23, 2, 2, 8));
  add(make("d40", dtype, 1, 33, 33, 2, 2, 40));
  add(with(make("d72_causal", dtype, 1, 33, 45, 2, 1, 72), [](DenseCase& c) { c.causal = true; }));
  add(make("d96", dtype, 2, 21, 37, 2, 2, 96));
  add(make("d128", dtype, 1, 70, 70, 2, 2, 128));
  add(make("d200", dtype, 1, 25, 31, 2, 2, 200));
  add(make("d256", dtype, 1, 40, 40, 2, 1, 256));
  add(with(make("d256_causal", dtype, 1, 70, 70, 2, 2, 256), [](DenseCase& c) { c.causal = true; }));
  add(with(make("d192_dv128", dtype, 1, 33, 47, 4, 2, 192), [](DenseCase& c) { c.head_dim_v = 128; }));
  add(with(make("d32_dv64", dtype, 1, 21, 30, 2, 2, 32), [](DenseCase& c) { c.head_dim_v = 64; }));

  // Sliding windows (bottom-right aligned), including rows that the window leaves empty.
  add(with(make("window_8_0", dtype, 1, 64, 64, 2, 2, 64), [](DenseCase& c) { c.window_left = 8; c.window_right = 0; }));
  add(with(make("window_16_16", dtype, 1, 70, 70, 2, 2, 64), [](DenseCase& c) { c.window_left = 16; c.window_right = 16; }));
  add(with(make("window_0_0_diagonal", dtype, 1, 33, 33, 2, 2, 64), [](DenseCase& c) { c.window_left = 0; c.window_right = 0; }));
  add(with(make("window_left_only", dtype, 1, 40, 60, 2, 2, 64), [](DenseCase& c) { c.window_left = 20; }));
  add(with(make("window_right_only", dtype, 1, 60, 40, 2, 2, 64), [](DenseCase& c) { c.window_right = 5; }));
  add(with(make("window_causal_left", dtype, 1, 45, 90, 2, 2, 64), [](DenseCase& c) { c.causal = true; c.window_left = 10; }));
  add(with(make("window_sq_gt_sk_masked_rows", dtype, 2, 40, 8, 2, 2, 64), [](DenseCase& c) { c.window_left = 2; c.window_right = 2; }));

  // Softcap, explicit scale (large scores), sinks (also on rows that see only the sink).
  add(with(make("softcap_5", dtype, 1, 33, 47, 2, 2, 64), [](DenseCase& c) { c.softcap = 5.0f; }));
  add(with(make("softcap_1_strong", dtype, 1, 33, 33, 2, 2, 64), [](DenseCase& c) { c.softcap = 1.0f; c.scale = 0.5f; }));
  add(with(make("softcap_30_causal_gqa", dtype, 1, 48, 48, 4, 2, 64), [](DenseCase& c) { c.softcap = 30.0f; c.causal = true; }));
  add(with(make("scale_0p5_large_scores", dtype, 1, 33, 33, 2, 2, 64), [](DenseCase& c) { c.scale = 0.5f; }));
  add(with(make("sinks", dtype, 2, 33, 33, 4, 2, 64), [](DenseCase& c) { c.sinks = true; }));
  add(with(make("sinks_causal_masked_rows", dtype, 1, 40, 15, 2, 2, 64), [](DenseCase& c) { c.sinks = true; c.causal = true; }));
  add(with(make("sinks_window", dtype, 1, 50, 50, 2, 2, 64), [](DenseCase& c) { c.sinks = true; c.window_left = 6; c.window_right = 0; }));
  add(with(make("sinks_sk0", dtype, 1, 9, 0, 2, 2, 64), [](DenseCase& c) { c.sinks = true; }));

  // Varlen: empty sequences in every position, Sq > Sk and Sq < Sk per sequence.
  add(make_varlen("varlen_mixed", dtype, {5, 0, 17, 1, 33}, {9, 3, 0, 1, 40}, 2, 2, 64));
  add(with(make_varlen("varlen_causal", dtype, {5, 0, 17, 1, 33}, {9, 3, 0, 1, 20}, 2, 1, 64), [](DenseCase& c) { c.causal = true; }));
  add(make_varlen("varlen_single", dtype, {37}, {37}, 2, 2, 64));
  add(make_varlen("varlen_queries_all_empty", dtype, {0, 0}, {5, 7}, 2, 2, 64));
  add(make_varlen("varlen_all_empty", dtype, {0, 0, 0}, {0, 0, 0}, 2, 2, 64));
  add(with(make_varlen("varlen_long_causal", dtype, {130, 64, 1}, {130, 200, 70}, 2, 2, 128), [](DenseCase& c) { c.causal = true; }));
  add(with(make_varlen("varlen_gqa4_window_softcap_sinks", dtype, {20, 0, 33, 7}, {25, 4, 33, 0}, 8, 2, 96),
           [](DenseCase& c) { c.window_left = 9; c.window_right = 3; c.softcap = 10.0f; c.sinks = true; }));

  // Key lengths of whole sm80 forward key tiles (128 keys at D = 64, 64 at D = 128 and 256) with D equal
  // to the tile's, so that every key tile is full: causal, window, GQA, sinks, split-KV and padded strides
  // over tiles that the sm80 forward loads without bounds predicates.
  add(make("full_tiles_d64", dtype, 2, 256, 256, 2, 2, 64));
  add(with(make("full_tiles_d64_causal_gqa2", dtype, 1, 200, 384, 4, 2, 64), [](DenseCase& c) { c.causal = true; }));
  add(with(make("full_tiles_d64_window_sinks", dtype, 1, 256, 256, 2, 2, 64),
           [](DenseCase& c) { c.window_left = 40; c.window_right = 8; c.sinks = true; }));
  add(make("full_tiles_d64_decode_sk1024", dtype, 1, 1, 1024, 2, 2, 64));
  add(with(make("full_tiles_d128_causal", dtype, 2, 192, 192, 2, 2, 128), [](DenseCase& c) { c.causal = true; }));
  add(with(make("full_tiles_d128_causal_masked_rows", dtype, 1, 300, 128, 2, 1, 128), [](DenseCase& c) { c.causal = true; }));
  add(with(make("full_tiles_d256_padded", dtype, 1, 100, 128, 2, 1, 256), [](DenseCase& c) { c.layout = DenseLayout::kPadded; }));

  // The sm80 backward's tail split (dense_backward_sm80_config.h, backward_tail_plan): a non-causal,
  // non-deterministic launch with at least 32 steps per key tile (query tiles x group) shares the steps of
  // its last key tiles (all of them, with fewer key tiles than SMs) over several CTAs and sums the parts in
  // a fixed order. Group 8 and 4 query tiles give the 32 steps: D = 64 (128-row query tiles, whole tiles
  // only), D = 128 and 256 (64-row query tiles, a partial last key tile).
  add(make("tail_split_d64_gqa8", dtype, 1, 512, 256, 16, 2, 64));
  add(make("tail_split_d128_gqa8", dtype, 1, 256, 200, 16, 2, 128));
  add(make("tail_split_d256_gqa8", dtype, 1, 256, 100, 16, 2, 256));

  // The sm80 forward's heavy-first order in L2-sized sections (forward_params.h): causal D = 256 with 128
  // keys carries 128 KiB of K/V per head, so 129 heads make two sections of 65 and 64 heads (16 MiB each at
  // most); every other case fits one section.
  add(with(make("sections_d256_causal_h129", dtype, 1, 128, 128, 129, 129, 256), [](DenseCase& c) { c.causal = true; }));

  // Memory layouts: packed QKV views and padded strides with NaN in every gap.
  add(with(make("packed_qkv_causal", dtype, 2, 33, 33, 4, 2, 64), [](DenseCase& c) { c.causal = true; c.layout = DenseLayout::kPackedQkv; }));
  add(with(make_varlen("packed_qkv_varlen", dtype, {7, 0, 20}, {7, 0, 20}, 4, 4, 64), [](DenseCase& c) { c.layout = DenseLayout::kPackedQkv; }));
  add(with(make("padded_gqa2", dtype, 2, 17, 40, 4, 2, 72), [](DenseCase& c) { c.layout = DenseLayout::kPadded; }));
  add(with(make_varlen("padded_varlen_causal", dtype, {9, 0, 30}, {12, 5, 30}, 2, 2, 64), [](DenseCase& c) { c.causal = true; c.layout = DenseLayout::kPadded; }));
  add(with(make_varlen("everything", dtype, {23, 0, 41, 1}, {30, 6, 41, 0}, 8, 2, 96), [](DenseCase& c) {
    c.window_left = 24;
    c.window_right = 8;
    c.softcap = 20.0f;
    c.sinks = true;
    c.layout = DenseLayout::kPadded;
  }));
  return cases;
}

namespace {

std::int64_t random_length(SplitMix64& rng, std::int64_t max_seqlen) {
  if (rng.chance(15)) return rng.uniform(0, std::min<std::int64_t>(3, max_seqlen));  // the edges: 0..3
  return rng.uniform(1, max_seqlen);
}

}  // namespace

std::vector<DenseCase> dense_random_cases(std::uint64_t seed, int count, std::int64_t max_seqlen, DType dtype) {
  if (max_seqlen < 1) throw std::invalid_argument("dense_random_cases: max_seqlen must be >= 1");
  SplitMix64 rng(seed);
  std::vector<DenseCase> cases;
  for (int index = 0; index < count; ++index) {
    DenseCase c;
    c.name = "random_" + std::to_string(index);
    c.dtype = dtype;
    c.heads_kv = rng.uniform(1, 3);
    const std::int64_t groups[] = {1, 2, 4, 8};
    c.heads_q = c.heads_kv * groups[rng.uniform(0, 3)];
    // Head dims: the fast paths half the time, otherwise any multiple of 8 up to 256.
    const std::int64_t fast[] = {64, 128, 256};
    c.head_dim = rng.chance(50) ? fast[rng.uniform(0, 2)] : 8 * rng.uniform(1, 32);
    c.head_dim_v = c.head_dim;
    if (rng.chance(15)) {
      c.head_dim_v = 8 * rng.uniform(1, 32);
    } else if (rng.chance(5)) {
      c.head_dim = 192;
      c.head_dim_v = 128;
    }
    // Keep the float64 reference fast: at most 1024 query-head channels (halving G keeps Hq = G * Hkv;
    // G = 1 gives at most 3 * 256 = 768).
    while (c.heads_q * std::max(c.head_dim, c.head_dim_v) > 1024 && c.heads_q > c.heads_kv) c.heads_q /= 2;
    const bool same_lengths = rng.chance(35);
    if (rng.chance(30)) {
      const std::int64_t sequences = rng.uniform(1, 4);
      for (std::int64_t n = 0; n < sequences; ++n) {
        const std::int64_t length_q = random_length(rng, max_seqlen);
        c.varlen_q.push_back(static_cast<std::int32_t>(length_q));
        c.varlen_k.push_back(static_cast<std::int32_t>(same_lengths ? length_q : random_length(rng, max_seqlen)));
      }
      c.batch = sequences;
    } else {
      c.batch = rng.uniform(1, 3);
      c.seqlen_q = random_length(rng, max_seqlen);
      c.seqlen_k = same_lengths ? c.seqlen_q : random_length(rng, max_seqlen);
    }
    c.causal = rng.chance(30);
    if (rng.chance(20)) {
      c.window_left = rng.chance(70) ? rng.uniform(0, max_seqlen) : -1;
      if (!c.causal) c.window_right = rng.chance(70) ? rng.uniform(0, max_seqlen) : -1;
    }
    if (rng.chance(20)) {
      const float caps[] = {1.0f, 5.0f, 30.0f};
      c.softcap = caps[rng.uniform(0, 2)];
    }
    c.sinks = rng.chance(20);
    if (rng.chance(10)) c.scale = 0.05f * static_cast<float>(rng.uniform(1, 10));
    const bool packable = same_lengths && c.head_dim == c.head_dim_v;
    if (packable && rng.chance(30)) {
      c.layout = DenseLayout::kPackedQkv;
    } else if (rng.chance(25)) {
      c.layout = DenseLayout::kPadded;
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<DenseCase> dense_bench_cases(const std::vector<std::int64_t>& head_dims,
                                         const std::vector<std::int64_t>& seqlens) {
  constexpr std::int64_t kTokens = 16384;       // B * S
  constexpr std::int64_t kModelChannels = 2048;  // H * D
  std::vector<DenseCase> cases;
  for (std::int64_t head_dim : head_dims) {
    if (head_dim <= 0 || kModelChannels % head_dim != 0) {
      throw std::invalid_argument("dense_bench_cases: D = " + std::to_string(head_dim) + " does not divide 2048");
    }
    for (std::int64_t seqlen : seqlens) {
      if (seqlen <= 0 || kTokens % seqlen != 0) {
        throw std::invalid_argument("dense_bench_cases: S = " + std::to_string(seqlen) + " does not divide 16384");
      }
      for (bool causal : {false, true}) {
        const std::int64_t heads = kModelChannels / head_dim;
        DenseCase c = make("bench_d" + std::to_string(head_dim) + "_s" + std::to_string(seqlen) + (causal ? "_causal" : ""),
                           DType::kBFloat16, kTokens / seqlen, seqlen, seqlen, heads, heads, head_dim);
        c.causal = causal;
        cases.push_back(std::move(c));
      }
    }
  }
  return cases;
}

}  // namespace attnkit::cases
