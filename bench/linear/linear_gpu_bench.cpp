// GPU check and benchmark of linear attention (GDN, KDA) through the public API (attnkit/linear.h).
//
//   linear_gpu_bench check            forward and decode on the GPU against a float64 recurrence of
//                                      semantics.md section 5, on fresh random inputs with the outputs
//                                      poisoned (NaN) first; exit status 1 on any failure
//   linear_gpu_bench bench FILE.json [gdn | decode]
//                                      times the issue-6 shapes (bf16, K = V = 128) and decode at batch 64
//                                      and 256 beside a device-to-device copy of the state bytes; writes the
//                                      rows (gpu-workflow.md format, impl "attnkit") to FILE.json. Each
//                                      forward also prints its kernels timed apart (time_kernels).
//                                      Decode and its copy are timed twice: per call (median_ms) and
//                                      queued back to back (queued_ms, fields queued_*).
//                                      With `gdn`, only the GDN forward rows; with `decode`, only the
//                                      decode rows (for quick A/B calls).
//
// The float64 recurrence here is the driver's own, written from the formulas, so that this check does
// not share code with the kernels or depend on reference/.
#include <cuda_runtime.h>

#include <cxxabi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attnkit/linear.h"
#include "attnkit/numeric.h"
#include "bench_cuda_util.h"

namespace {

using attnkit::DType;
using attnkit::TensorRef;

// A device buffer with its host mirror of the values it holds (bf16 tensors hold rounded values).
struct Buffer {
  void* device = nullptr;
  std::vector<float> host;
  DType dtype = DType::kFloat32;
  std::int64_t count = 0;

  Buffer() = default;
  Buffer(std::int64_t n, DType type) : host(n, 0.0f), dtype(type), count(n) {
    CUDA_OK(cudaMalloc(&device, std::max<std::int64_t>(n, 1) * bytes_per()));
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(device, o.device);
    std::swap(host, o.host);
    dtype = o.dtype;
    count = o.count;
    return *this;
  }
  ~Buffer() {
    if (device != nullptr) cudaFree(device);
  }
  std::size_t bytes_per() const { return dtype == DType::kBFloat16 ? 2 : (dtype == DType::kInt32 ? 4 : 4); }
  void upload() {
    if (dtype == DType::kBFloat16) {
      std::vector<std::uint16_t> bits(count);
      for (std::int64_t i = 0; i < count; ++i) {
        bits[i] = attnkit::float_to_bf16(host[i]);
        host[i] = attnkit::bf16_to_float(bits[i]);
      }
      CUDA_OK(cudaMemcpy(device, bits.data(), count * 2, cudaMemcpyHostToDevice));
    } else if (dtype == DType::kInt32) {
      std::vector<std::int32_t> ints(host.begin(), host.end());
      CUDA_OK(cudaMemcpy(device, ints.data(), count * 4, cudaMemcpyHostToDevice));
    } else {
      CUDA_OK(cudaMemcpy(device, host.data(), count * 4, cudaMemcpyHostToDevice));
    }
  }
  std::vector<float> download() const {
    std::vector<float> out(count);
    if (dtype == DType::kBFloat16) {
      std::vector<std::uint16_t> bits(count);
      CUDA_OK(cudaMemcpy(bits.data(), device, count * 2, cudaMemcpyDeviceToHost));
      for (std::int64_t i = 0; i < count; ++i) out[i] = attnkit::bf16_to_float(bits[i]);
    } else {
      CUDA_OK(cudaMemcpy(out.data(), device, count * 4, cudaMemcpyDeviceToHost));
    }
    return out;
  }
  void poison() { CUDA_OK(cudaMemset(device, 0xff, count * bytes_per())); }  // NaN in bf16 and fp32
  TensorRef ref(std::initializer_list<std::int64_t> shape) const {
    return TensorRef::contiguous(device, dtype, shape, attnkit::Device::cuda());
  }
};

struct Case {
  const char* name;
  attnkit::LinearVariant variant;
  int batch, seqlen, heads, heads_v, key_dim, value_dim;
  float gate_scale;
  bool l2norm = false;
  attnkit::LinearGateForm gate_form = attnkit::LinearGateForm::kLogDecay;
  attnkit::LinearBetaForm beta_form = attnkit::LinearBetaForm::kValue;
  attnkit::LinearStateLayout layout = attnkit::LinearStateLayout::kKV;
  std::vector<int> varlen;  // sequence lengths (B = 1 packed) when not empty
};

bool kda(const Case& c) { return c.variant == attnkit::LinearVariant::kKimiDelta; }

// The inputs of one forward or decode call, with their host values.
struct Inputs {
  Buffer q, k, v, g, beta, A_log, dt_bias;
  int tokens_total = 0;
};

// Normal samples: fresh ones for the check; for the benchmark's 10^8-element inputs, a pool of 2^20 fresh
// samples read with an odd stride (the timing does not depend on the values, the host's RNG would
// take seconds of device time per shape).
struct NormalSource {
  std::mt19937& rng;
  bool pooled = false;
  std::vector<float> pool;
  std::uint64_t next = 0;
  std::normal_distribution<float> normal{0.0f, 1.0f};

  NormalSource(std::mt19937& r, bool use_pool) : rng(r), pooled(use_pool) {
    if (pooled) {
      pool.resize(1u << 20);
      for (float& x : pool) x = normal(rng);
    }
  }
  float operator()() {
    if (!pooled) return normal(rng);
    next += 7919;
    return pool[next & (pool.size() - 1)];
  }
};

Inputs make_inputs(const Case& c, int batch, int seqlen, std::mt19937& rng, bool pooled = false) {
  NormalSource normal(rng, pooled);
  Inputs in;
  const std::int64_t bt = static_cast<std::int64_t>(batch) * seqlen;
  in.q = Buffer(bt * c.heads * c.key_dim, DType::kBFloat16);
  in.k = Buffer(bt * c.heads * c.key_dim, DType::kBFloat16);
  in.v = Buffer(bt * c.heads_v * c.value_dim, DType::kBFloat16);
  in.g = Buffer(bt * c.heads_v * (kda(c) ? c.key_dim : 1), DType::kFloat32);
  in.beta = Buffer(bt * c.heads_v, DType::kBFloat16);
  for (auto* buffer : {&in.q, &in.k}) {
    for (std::int64_t row = 0; row < bt * c.heads; ++row) {
      float* x = buffer->host.data() + row * c.key_dim;
      double sum = 0;
      for (int i = 0; i < c.key_dim; ++i) {
        x[i] = normal();
        sum += x[i] * x[i];
      }
      // Unnormalised keys make the delta rule diverge; without the fused norm the caller normalises.
      if (!c.l2norm) {
        for (int i = 0; i < c.key_dim; ++i) x[i] = static_cast<float>(x[i] / std::sqrt(sum));
      }
    }
  }
  for (float& x : in.v.host) x = normal();
  const bool fused = c.gate_form != attnkit::LinearGateForm::kLogDecay;
  for (float& x : in.g.host) {
    const float z = normal();
    x = fused ? z : -c.gate_scale * std::log1p(std::exp(z)) / (kda(c) ? 4.0f : 1.0f);
  }
  for (float& x : in.beta.host) {
    const float z = normal();
    x = c.beta_form == attnkit::LinearBetaForm::kValue ? 1.0f / (1.0f + std::exp(-z)) : z;
  }
  if (fused) {
    in.A_log = Buffer(c.heads_v, DType::kFloat32);
    in.dt_bias = Buffer(c.heads_v * (kda(c) ? c.key_dim : 1), DType::kFloat32);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    for (float& x : in.A_log.host) x = std::log(c.gate_scale * (1.0f + 15.0f * uniform(rng)) / 8.0f);
    for (float& x : in.dt_bias.host) x = 0.5f * normal();
    in.A_log.upload();
    in.dt_bias.upload();
  }
  for (auto* buffer : {&in.q, &in.k, &in.v, &in.g, &in.beta}) buffer->upload();
  in.tokens_total = static_cast<int>(bt);
  return in;
}

double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// float64 recurrence of one (sequence, value head) over tokens [t_begin, t_end) of batch row b.
void reference_recurrence(const Case& c, const Inputs& in, int b, int seqlen, int t_begin, int t_end, int hv,
                          std::vector<double>& S /* [K][V] */, std::vector<double>& out /* [T][HV][V] of b */) {
  const int K = c.key_dim, V = c.value_dim, h = hv / (c.heads_v / c.heads);
  const double scale = 1.0 / std::sqrt(static_cast<double>(K));
  std::vector<double> q(K), k(K), decay(K);
  for (int t = t_begin; t < t_end; ++t) {
    const std::int64_t tok = static_cast<std::int64_t>(b) * seqlen + t;
    double qq = 0, kk = 0;
    for (int i = 0; i < K; ++i) {
      q[i] = in.q.host[(tok * c.heads + h) * K + i];
      k[i] = in.k.host[(tok * c.heads + h) * K + i];
      qq += q[i] * q[i];
      kk += k[i] * k[i];
    }
    if (c.l2norm) {
      for (int i = 0; i < K; ++i) {
        q[i] /= std::sqrt(qq + 1e-6);
        k[i] /= std::sqrt(kk + 1e-6);
      }
    }
    for (int i = 0; i < K; ++i) {
      const int gi = kda(c) ? i : 0;
      double g = in.g.host[(tok * c.heads_v + hv) * (kda(c) ? K : 1) + gi];
      if (c.gate_form != attnkit::LinearGateForm::kLogDecay) {
        const double a = in.A_log.host[hv];
        const double bias = in.dt_bias.host[hv * (kda(c) ? K : 1) + gi];
        g = c.gate_form == attnkit::LinearGateForm::kSoftplus ? -std::exp(a) * softplus(g + bias)
                                                               : -5.0 * sigmoid(std::exp(a) * (g + bias));
      }
      decay[i] = std::exp(g);
    }
    double beta = in.beta.host[tok * c.heads_v + hv];
    if (c.beta_form == attnkit::LinearBetaForm::kSigmoid) beta = sigmoid(beta);
    if (c.beta_form == attnkit::LinearBetaForm::kTwoSigmoid) beta = 2 * sigmoid(beta);
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < V; ++j) S[i * V + j] *= decay[i];
    for (int j = 0; j < V; ++j) {
      double pred = 0;
      for (int i = 0; i < K; ++i) pred += k[i] * S[i * V + j];
      const double delta = beta * (in.v.host[(tok * c.heads_v + hv) * V + j] - pred);
      for (int i = 0; i < K; ++i) S[i * V + j] += k[i] * delta;
    }
    for (int j = 0; j < V; ++j) {
      double o = 0;
      for (int i = 0; i < K; ++i) o += scale * q[i] * S[i * V + j];
      out[(static_cast<std::int64_t>(t) * c.heads_v + hv) * V + j] = o;
    }
  }
}

struct ErrorStats {
  double max_abs = 0, rms_ratio = 0;
  bool nan = false;
};
ErrorStats compare(const std::vector<float>& got, const std::vector<double>& ref) {
  ErrorStats e;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) e.nan = true;
    const double d = got[i] - ref[i];
    e.max_abs = std::max(e.max_abs, std::fabs(d));
    num += d * d;
    den += ref[i] * ref[i];
  }
  e.rms_ratio = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return e;
}

attnkit::LinearOptions options_of(const Case& c) {
  attnkit::LinearOptions o;
  o.variant = c.variant;
  o.l2norm_qk = c.l2norm;
  o.gate_form = c.gate_form;
  o.beta_form = c.beta_form;
  o.state_layout = c.layout;
  o.backend = attnkit::Backend::kSm80;
  return o;
}

std::int64_t state_index(const Case& c, int i, int j) {
  return c.layout == attnkit::LinearStateLayout::kKV ? static_cast<std::int64_t>(i) * c.value_dim + j
                                                     : static_cast<std::int64_t>(j) * c.key_dim + i;
}

// 0.005 relative RMS for outputs and states (semantics.md section 6).
constexpr double kRmsBound = 0.005;

bool report(const char* what, const Case& c, const ErrorStats& e) {
  const bool ok = !e.nan && e.rms_ratio <= kRmsBound;
  std::printf("%-5s %-4s %-34s rms %.2e max %.2e %s%s\n", ok ? "ok" : "FAIL", what, c.name, e.rms_ratio, e.max_abs,
              e.nan ? "NaN " : "", ok ? "" : "<-- outside the bound");
  return ok;
}

// The device workspace a forward call asks for (workspace_size), attached to its arguments.
struct Workspace {
  void* device = nullptr;
  explicit Workspace(attnkit::LinearForwardArgs& args) {
    std::size_t bytes = 0;
    const attnkit::Status status = attnkit::workspace_size(args, &bytes);
    if (!status) {
      std::fprintf(stderr, "workspace_size: %s\n", status.to_string().c_str());
      std::exit(2);
    }
    if (bytes == 0) return;
    CUDA_OK(cudaMalloc(&device, bytes));
    args.workspace = device;
    args.workspace_bytes = bytes;
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    if (device != nullptr) cudaFree(device);
  }
};

bool check_forward(const Case& c, std::mt19937& rng) {
  const bool varlen = !c.varlen.empty();
  const int batch = varlen ? 1 : c.batch;
  int seqlen = c.seqlen;
  std::vector<int> offsets{0};
  if (varlen) {
    for (int len : c.varlen) offsets.push_back(offsets.back() + len);
    seqlen = offsets.back();
  } else {
    for (int b = 0; b < batch; ++b) offsets.push_back(offsets.back() + seqlen);
  }
  const int N = static_cast<int>(offsets.size()) - 1;
  Inputs in = make_inputs(c, batch, seqlen, rng);
  const std::int64_t state_elems = static_cast<std::int64_t>(N) * c.heads_v * c.key_dim * c.value_dim;
  Buffer h0(state_elems, DType::kFloat32), ht(state_elems, DType::kFloat32);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : h0.host) x = 0.5f * normal(rng);
  h0.upload();
  Buffer out(static_cast<std::int64_t>(batch) * seqlen * c.heads_v * c.value_dim, DType::kBFloat16);
  out.poison();
  ht.poison();
  Buffer cu(N + 1, DType::kInt32);
  for (int n = 0; n <= N; ++n) cu.host[n] = static_cast<float>(offsets[n]);
  cu.upload();

  attnkit::LinearForwardArgs args;
  const std::int64_t B = batch, T = seqlen;
  args.q = in.q.ref({B, T, c.heads, c.key_dim});
  args.k = in.k.ref({B, T, c.heads, c.key_dim});
  args.v = in.v.ref({B, T, c.heads_v, c.value_dim});
  args.g = kda(c) ? in.g.ref({B, T, c.heads_v, c.key_dim}) : in.g.ref({B, T, c.heads_v});
  args.beta = in.beta.ref({B, T, c.heads_v});
  if (in.A_log.count > 0) {
    args.A_log = in.A_log.ref({c.heads_v});
    args.dt_bias = kda(c) ? in.dt_bias.ref({c.heads_v, c.key_dim}) : in.dt_bias.ref({c.heads_v});
  }
  args.out = out.ref({B, T, c.heads_v, c.value_dim});
  const bool kv = c.layout == attnkit::LinearStateLayout::kKV;
  const std::int64_t rows = kv ? c.key_dim : c.value_dim, cols = kv ? c.value_dim : c.key_dim;
  args.initial_state = h0.ref({N, c.heads_v, rows, cols});
  args.final_state = ht.ref({N, c.heads_v, rows, cols});
  if (varlen) args.cu_seqlens = cu.ref({N + 1});
  args.options = options_of(c);
  const Workspace workspace(args);
  const attnkit::Status status = attnkit::forward(args);
  if (!status) {
    std::printf("FAIL fwd  %-34s %s\n", c.name, status.to_string().c_str());
    return false;
  }
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<double> ref_out(static_cast<std::size_t>(B) * T * c.heads_v * c.value_dim, 0.0);
  std::vector<double> ref_state(state_elems, 0.0);
  for (int n = 0; n < N; ++n) {
    const int b = varlen ? 0 : n;
    for (int hv = 0; hv < c.heads_v; ++hv) {
      std::vector<double> S(static_cast<std::size_t>(c.key_dim) * c.value_dim);
      const std::int64_t base = (static_cast<std::int64_t>(n) * c.heads_v + hv) * c.key_dim * c.value_dim;
      for (int i = 0; i < c.key_dim; ++i)
        for (int j = 0; j < c.value_dim; ++j) S[i * c.value_dim + j] = h0.host[base + state_index(c, i, j)];
      std::vector<double> out_b(static_cast<std::size_t>(T) * c.heads_v * c.value_dim);
      const int t_begin = varlen ? offsets[n] : 0, t_end = varlen ? offsets[n + 1] : seqlen;
      reference_recurrence(c, in, b, seqlen, t_begin, t_end, hv, S, out_b);
      for (int t = t_begin; t < t_end; ++t)
        for (int j = 0; j < c.value_dim; ++j) {
          const std::int64_t o = ((static_cast<std::int64_t>(b) * T + t) * c.heads_v + hv) * c.value_dim + j;
          ref_out[o] = out_b[(static_cast<std::int64_t>(t) * c.heads_v + hv) * c.value_dim + j];
        }
      for (int i = 0; i < c.key_dim; ++i)
        for (int j = 0; j < c.value_dim; ++j) ref_state[base + state_index(c, i, j)] = S[i * c.value_dim + j];
    }
  }
  const bool ok_out = report("fwd", c, compare(out.download(), ref_out));
  const bool ok_state = report("ht", c, compare(ht.download(), ref_state));
  return ok_out && ok_state;
}

// Decode over a pool of 2N + 1 states addressed through state_indices, one sequence a padding slot (-1).
bool check_decode(const Case& c, std::mt19937& rng) {
  const int N = c.batch, T = c.seqlen, P = 2 * N + 1;
  Inputs in = make_inputs(c, N, T, rng);
  const std::int64_t per_state = static_cast<std::int64_t>(c.heads_v) * c.key_dim * c.value_dim;
  Buffer state(P * per_state, DType::kFloat32);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : state.host) x = 0.5f * normal(rng);
  state.upload();
  const std::vector<float> initial = state.host;
  Buffer indices(N, DType::kInt32);
  for (int n = 0; n < N; ++n) indices.host[n] = static_cast<float>(n == N / 2 ? -1 : 2 * n + 1);  // distinct, odd slots of the pool
  indices.upload();
  Buffer out(static_cast<std::int64_t>(N) * T * c.heads_v * c.value_dim, DType::kBFloat16);
  out.poison();

  attnkit::LinearDecodeArgs args;
  args.q = in.q.ref({N, T, c.heads, c.key_dim});
  args.k = in.k.ref({N, T, c.heads, c.key_dim});
  args.v = in.v.ref({N, T, c.heads_v, c.value_dim});
  args.g = kda(c) ? in.g.ref({N, T, c.heads_v, c.key_dim}) : in.g.ref({N, T, c.heads_v});
  args.beta = in.beta.ref({N, T, c.heads_v});
  if (in.A_log.count > 0) {
    args.A_log = in.A_log.ref({c.heads_v});
    args.dt_bias = kda(c) ? in.dt_bias.ref({c.heads_v, c.key_dim}) : in.dt_bias.ref({c.heads_v});
  }
  args.out = out.ref({N, T, c.heads_v, c.value_dim});
  const bool kv = c.layout == attnkit::LinearStateLayout::kKV;
  args.state = state.ref({P, c.heads_v, kv ? c.key_dim : c.value_dim, kv ? c.value_dim : c.key_dim});
  args.state_indices = indices.ref({N});
  args.options = options_of(c);
  const attnkit::Status status = attnkit::decode(args);
  if (!status) {
    std::printf("FAIL dec  %-34s %s\n", c.name, status.to_string().c_str());
    return false;
  }
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<double> ref_out(static_cast<std::size_t>(N) * T * c.heads_v * c.value_dim, 0.0);
  std::vector<double> ref_state(initial.begin(), initial.end());
  for (int n = 0; n < N; ++n) {
    const int slot = static_cast<int>(indices.host[n]);
    if (slot < 0) continue;  // padding: zero output rows, no state touched
    for (int hv = 0; hv < c.heads_v; ++hv) {
      const std::int64_t base = slot * per_state + static_cast<std::int64_t>(hv) * c.key_dim * c.value_dim;
      std::vector<double> S(static_cast<std::size_t>(c.key_dim) * c.value_dim);
      for (int i = 0; i < c.key_dim; ++i)
        for (int j = 0; j < c.value_dim; ++j) S[i * c.value_dim + j] = initial[base + state_index(c, i, j)];
      std::vector<double> out_n(static_cast<std::size_t>(T) * c.heads_v * c.value_dim);
      reference_recurrence(c, in, n, T, 0, T, hv, S, out_n);
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < c.value_dim; ++j)
          ref_out[((static_cast<std::int64_t>(n) * T + t) * c.heads_v + hv) * c.value_dim + j] =
              out_n[(static_cast<std::int64_t>(t) * c.heads_v + hv) * c.value_dim + j];
      for (int i = 0; i < c.key_dim; ++i)
        for (int j = 0; j < c.value_dim; ++j) ref_state[base + state_index(c, i, j)] = S[i * c.value_dim + j];
    }
  }
  const bool ok_out = report("dec", c, compare(out.download(), ref_out));
  const bool ok_state = report("dst", c, compare(state.download(), ref_state));
  return ok_out && ok_state;
}

int run_check() {
  using attnkit::LinearBetaForm;
  using attnkit::LinearGateForm;
  using attnkit::LinearStateLayout;
  using attnkit::LinearVariant;
  constexpr auto GDN = LinearVariant::kGatedDeltaNet;
  constexpr auto KDA = LinearVariant::kKimiDelta;
  std::mt19937 rng(20261125);
  bool ok = true;
  std::vector<Case> forward_cases = {
      {"gdn T=75 K=V=128 g*1", GDN, 2, 75, 2, 4, 128, 128, 1.0f},
      {"gdn T=500 K=64 V=128 g*0.01", GDN, 1, 500, 1, 2, 64, 128, 0.01f},
      {"gdn T=1000 K=100 V=96 g*10", GDN, 1, 1000, 2, 2, 100, 96, 10.0f},
      {"gdn T=300 K=128 V=200 g*0.1", GDN, 1, 300, 1, 2, 128, 200, 0.1f},
      {"gdn B=4 T=130 H=8 HV=40", GDN, 4, 130, 8, 40, 128, 128, 1.0f},
      {"gdn T=256 K=V=128 l2 softplus sig", GDN, 2, 256, 2, 2, 128, 128, 1.0f, true, LinearGateForm::kSoftplus,
       LinearBetaForm::kSigmoid},
      {"gdn T=200 vk 2sig", GDN, 1, 200, 1, 2, 128, 64, 1.0f, false, LinearGateForm::kLogDecay,
       LinearBetaForm::kTwoSigmoid, LinearStateLayout::kVK},
      {"gdn varlen 1,64,0,130 G=2", GDN, 1, 0, 2, 4, 128, 128, 1.0f, false, LinearGateForm::kLogDecay,
       LinearBetaForm::kValue, LinearStateLayout::kKV, {1, 64, 0, 130}},
      // Grids of >= 132 CTAs of 64 value columns: the state pass's slices of 64 (linear_gdn_plan.h; the
      // gtest catalogue's cases are too small to reach them): three slices, weak decay; varlen with an
      // empty sequence, [V, K] states; V = 100 (the second slice's columns past V).
      {"gdn B=3 HV=48 V=192 T=200 g*0.01", GDN, 3, 200, 16, 48, 128, 192, 0.01f},
      {"gdn varlen 131,0,64,1 HV=40 vk s64", GDN, 1, 0, 10, 40, 128, 128, 1.0f, true, LinearGateForm::kSoftplus,
       LinearBetaForm::kSigmoid, LinearStateLayout::kVK, {131, 0, 64, 1}},
      {"gdn B=2 HV=72 V=100 T=150 g*10", GDN, 2, 150, 24, 72, 128, 100, 10.0f},
      // The state pass's slices of 32 (> 66 CTAs of 32 columns and < 132 of 64, or V not a multiple of
      // 64), which no GDN case above reaches: weak decay over 5 chunks; varlen with an empty sequence, [V, K]
      // states, V = 96 (three slices) and the fused L2 norm / softplus gate.
      {"gdn T=300 HV=40 g*0.01 s32", GDN, 1, 300, 8, 40, 128, 128, 0.01f},
      {"gdn varlen 70,0,129 HV=36 V=96 vk s32", GDN, 1, 0, 12, 36, 128, 96, 1.0f, true, LinearGateForm::kSoftplus,
       LinearBetaForm::kSigmoid, LinearStateLayout::kVK, {70, 0, 129}},
      {"kda T=75 K=V=128 g*1", KDA, 2, 75, 2, 2, 128, 128, 1.0f},
      {"kda T=500 K=64 g*0.01", KDA, 1, 500, 1, 1, 64, 64, 0.01f},
      {"kda T=1000 K=128 V=100 g*10", KDA, 1, 1000, 1, 2, 128, 100, 10.0f},
      {"kda T=300 l2 lowerbound sig vk", KDA, 1, 300, 1, 2, 128, 128, 1.0f, true, LinearGateForm::kLowerBoundSigmoid,
       LinearBetaForm::kSigmoid, LinearStateLayout::kVK},
      {"kda varlen 17,100,64", KDA, 1, 0, 1, 2, 128, 128, 1.0f, false, LinearGateForm::kLogDecay,
       LinearBetaForm::kValue, LinearStateLayout::kKV, {17, 100, 64}},
      // KDA's state pass in slices of 64 (linear_kda_plan.h, sm_90 only: >= 132 CTAs of 64 columns), as
      // GDN's three above: three slices with weak decay; varlen with an empty sequence, [V, K] states and
      // the fused gate form; V = 100 (the second slice's columns past V) with strong decay.
      {"kda B=3 HV=48 V=192 T=200 g*0.01", KDA, 3, 200, 16, 48, 128, 192, 0.01f},
      {"kda varlen 131,0,64,1 HV=40 vk s64", KDA, 1, 0, 10, 40, 128, 128, 1.0f, true, LinearGateForm::kLowerBoundSigmoid,
       LinearBetaForm::kSigmoid, LinearStateLayout::kVK, {131, 0, 64, 1}},
      {"kda B=2 HV=72 V=100 T=150 g*10", KDA, 2, 150, 24, 72, 128, 100, 10.0f},
  };
  for (const Case& c : forward_cases) ok = check_forward(c, rng) && ok;
  std::vector<Case> decode_cases = {
      {"gdn decode T=1 kv", GDN, 5, 1, 2, 4, 128, 128, 1.0f},
      {"gdn decode T=3 vk l2 softplus", GDN, 4, 3, 1, 2, 128, 96, 1.0f, true, LinearGateForm::kSoftplus,
       LinearBetaForm::kSigmoid, LinearStateLayout::kVK},
      {"gdn decode K=256 V=64 kv", GDN, 3, 2, 1, 1, 256, 64, 1.0f},
      {"kda decode T=1 kv g*10", KDA, 5, 1, 2, 2, 128, 128, 10.0f},
      {"kda decode T=2 vk K=100 lowerbound", KDA, 3, 2, 1, 2, 100, 128, 1.0f, true,
       LinearGateForm::kLowerBoundSigmoid, LinearBetaForm::kTwoSigmoid, LinearStateLayout::kVK},
      {"kda decode K=256 vk", KDA, 3, 1, 1, 1, 256, 128, 1.0f, false, LinearGateForm::kLogDecay,
       LinearBetaForm::kValue, LinearStateLayout::kVK},
  };
  for (const Case& c : decode_cases) ok = check_decode(c, rng) && ok;
  std::printf("%s\n", ok ? "ALL OK" : "FAILURES");
  return ok ? 0 : 1;
}

// ---- Benchmark --------------------------------------------------------------------------------------

template <typename Fn>
float median_ms(Fn&& fn, int warmup, int iters, cudaStream_t stream = nullptr) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    CUDA_OK(cudaEventRecord(start, stream));
    fn();
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Milliseconds per call of `fn` issued `per_sample` times back to back between two events (median of
// `samples` such means). The host enqueues ahead of the GPU, so its per-call cost (argument checks,
// launch) stays off the GPU timeline, as in a serving loop or a CUDA graph; median_ms instead waits for
// each call, so at ~0.1 ms a few microseconds of host work before the launch count as GPU time.
template <typename Fn>
float queued_ms(Fn&& fn, int warmup, int samples, int per_sample) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < samples; ++i) {
    CUDA_OK(cudaEventRecord(start));
    for (int r = 0; r < per_sample; ++r) fn();
    CUDA_OK(cudaEventRecord(stop));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms / per_sample);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The kernels of one forward call timed apart: the call is captured into a CUDA graph and each kernel
// node replayed alone in a one-node graph (the workspace holds the intermediates of the full calls timed
// before, so each kernel reads what it would in sequence). Prints "name ms" per kernel in launch order.
void time_kernels(attnkit::LinearForwardArgs args) {
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  args.options.stream = stream;
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const attnkit::Status status = attnkit::forward(args);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  if (!status.is_ok()) {
    std::printf("  kernels: forward refused capture: %s\n", status.message().c_str());
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));
    return;
  }
  std::size_t count = 0;
  CUDA_OK(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  CUDA_OK(cudaGraphGetNodes(graph, nodes.data(), &count));
  std::printf("  kernels:");
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    CUDA_OK(cudaGraphNodeGetType(node, &type));
    if (type != cudaGraphNodeTypeKernel) continue;
    cudaKernelNodeParams params{};
    CUDA_OK(cudaGraphKernelNodeGetParams(node, &params));
    cudaGraph_t one = nullptr;
    cudaGraphNode_t copy = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaGraphCreate(&one, 0));
    CUDA_OK(cudaGraphAddKernelNode(&copy, one, nullptr, 0, &params));
    CUDA_OK(cudaGraphInstantiate(&exec, one, 0));
    const float ms = median_ms([&] { CUDA_OK(cudaGraphLaunch(exec, stream)); }, 2, 10, stream);
    const char* mangled = nullptr;
    CUDA_OK(cudaFuncGetName(&mangled, params.func));
    int demangle_status = 0;
    char* name = abi::__cxa_demangle(mangled, nullptr, nullptr, &demangle_status);
    std::string shown = demangle_status == 0 ? name : mangled;
    std::free(name);
    shown = shown.substr(0, shown.find('('));  // no parameter list
    const std::size_t colon = shown.rfind("::", shown.find('<'));
    if (colon != std::string::npos) shown = shown.substr(colon + 2);  // no namespaces
    std::printf(" %s %.3f ms;", shown.c_str(), ms);
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(one));
  }
  std::printf("\n");
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

// `only`: "gdn" / "kda" keeps that variant's forward rows, "decode" the decode rows (quick A/B calls);
// null keeps all.
int run_bench(const char* path, const char* only) {
  const bool gdn_only = only != nullptr && std::strcmp(only, "gdn") == 0;
  const bool kda_only = only != nullptr && std::strcmp(only, "kda") == 0;
  const bool decode_only = only != nullptr && std::strcmp(only, "decode") == 0;
  std::mt19937 rng(7);
  std::string rows;
  auto add_row = [&](const std::string& row) { rows += (rows.empty() ? "    " : ",\n    ") + row; };
  struct Shape {
    int b, t, h, hv;
  };
  const Shape shapes[] = {{4, 8192, 32, 32}, {1, 32768, 16, 32}, {8, 4096, 16, 64}, {1, 65536, 2, 8}};
  for (const auto variant : {attnkit::LinearVariant::kGatedDeltaNet, attnkit::LinearVariant::kKimiDelta}) {
    if (decode_only || (gdn_only && variant != attnkit::LinearVariant::kGatedDeltaNet) ||
        (kda_only && variant != attnkit::LinearVariant::kKimiDelta)) {
      continue;
    }
    for (const Shape& s : shapes) {
      Case c{"bench", variant, s.b, s.t, s.h, s.hv, 128, 128, 1.0f};
      Inputs in = make_inputs(c, s.b, s.t, rng, true);
      Buffer out(static_cast<std::int64_t>(s.b) * s.t * s.hv * 128, DType::kBFloat16);
      attnkit::LinearForwardArgs args;
      args.q = in.q.ref({s.b, s.t, s.h, 128});
      args.k = in.k.ref({s.b, s.t, s.h, 128});
      args.v = in.v.ref({s.b, s.t, s.hv, 128});
      args.g = kda(c) ? in.g.ref({s.b, s.t, s.hv, 128}) : in.g.ref({s.b, s.t, s.hv});
      args.beta = in.beta.ref({s.b, s.t, s.hv});
      args.out = out.ref({s.b, s.t, s.hv, 128});
      args.options = options_of(c);
      const Workspace workspace(args);
      bool failed = false;
      const float ms = median_ms([&] { failed |= !attnkit::forward(args).is_ok(); }, 3, 10);
      CUDA_OK(cudaDeviceSynchronize());
      if (failed) {
        std::printf("bench forward %s failed\n", attnkit::linear_variant_name(variant));
        return 1;
      }
      const double flops = 4.0 * s.b * s.t * s.hv * 128.0 * 128.0;
      char row[512];
      std::snprintf(row, sizeof row,
                    "{\"op\": \"linear_fwd\", \"impl\": \"attnkit\", \"variant\": \"%s\", \"b\": %d, \"t\": %d, "
                    "\"h\": %d, \"hv\": %d, \"k\": 128, \"v\": 128, \"dtype\": \"bf16\", \"ms\": %.4f, \"tflops\": %.2f}",
                    attnkit::linear_variant_name(variant), s.b, s.t, s.h, s.hv, ms, flops / ms * 1e-9);
      add_row(row);
      std::printf("fwd %s B=%d T=%d H=%d HV=%d: %.3f ms\n", attnkit::linear_variant_name(variant), s.b, s.t, s.h, s.hv, ms);
      time_kernels(args);
    }
  }
  // Decode: HV = 32 value heads (H = 16), K = V = 128, one token, kv and vk layouts.
  for (const int batch : {64, 256}) {
    if (gdn_only || kda_only) break;
    const int H = 16, HV = 32;
    const std::int64_t state_bytes = static_cast<std::int64_t>(batch) * HV * 128 * 128 * 4;
    void* copy_src = nullptr;
    void* copy_dst = nullptr;
    CUDA_OK(cudaMalloc(&copy_src, state_bytes));
    CUDA_OK(cudaMalloc(&copy_dst, state_bytes));
    // The copy reads and writes state_bytes each: the same traffic as the decode step.
    const auto copy = [&] { cudaMemcpyAsync(copy_dst, copy_src, state_bytes, cudaMemcpyDeviceToDevice); };
    const float copy_ms = median_ms(copy, 5, 30);
    const double copy_gbps = 2.0 * state_bytes / copy_ms * 1e-6;
    const double copy_queued_gbps = 2.0 * state_bytes / queued_ms(copy, 5, 15, 10) * 1e-6;
    CUDA_OK(cudaFree(copy_src));
    CUDA_OK(cudaFree(copy_dst));
    for (const auto variant : {attnkit::LinearVariant::kGatedDeltaNet, attnkit::LinearVariant::kKimiDelta}) {
      for (const auto layout : {attnkit::LinearStateLayout::kKV, attnkit::LinearStateLayout::kVK}) {
        Case c{"decode", variant, batch, 1, H, HV, 128, 128, 1.0f};
        c.layout = layout;
        Inputs in = make_inputs(c, batch, 1, rng, true);
        Buffer state(state_bytes / 4, DType::kFloat32);
        CUDA_OK(cudaMemset(state.device, 0, state_bytes));
        Buffer out(static_cast<std::int64_t>(batch) * HV * 128, DType::kBFloat16);
        attnkit::LinearDecodeArgs args;
        args.q = in.q.ref({batch, 1, H, 128});
        args.k = in.k.ref({batch, 1, H, 128});
        args.v = in.v.ref({batch, 1, HV, 128});
        args.g = kda(c) ? in.g.ref({batch, 1, HV, 128}) : in.g.ref({batch, 1, HV});
        args.beta = in.beta.ref({batch, 1, HV});
        args.out = out.ref({batch, 1, HV, 128});
        args.state = state.ref({batch, HV, 128, 128});
        args.options = options_of(c);
        bool failed = false;
        const auto step = [&] { failed |= !attnkit::decode(args).is_ok(); };
        const float ms = median_ms(step, 5, 30);
        const float queued = queued_ms(step, 5, 15, 10);
        CUDA_OK(cudaDeviceSynchronize());
        if (failed) {
          std::printf("bench decode failed\n");
          return 1;
        }
        const double gbps = 2.0 * state_bytes / ms * 1e-6;
        const double queued_gbps = 2.0 * state_bytes / queued * 1e-6;
        const char* layout_name = layout == attnkit::LinearStateLayout::kKV ? "kv" : "vk";
        char row[800];
        std::snprintf(row, sizeof row,
                      "{\"op\": \"linear_decode\", \"impl\": \"attnkit\", \"variant\": \"%s\", \"b\": %d, \"t\": 1, "
                      "\"h\": %d, \"hv\": %d, \"k\": 128, \"v\": 128, \"dtype\": \"bf16\", \"state_layout\": \"%s\", "
                      "\"ms\": %.4f, \"gbps\": %.1f, \"copy_gbps\": %.1f, \"fraction_of_copy\": %.3f, "
                      "\"queued_ms\": %.4f, \"queued_gbps\": %.1f, \"copy_queued_gbps\": %.1f, "
                      "\"queued_fraction_of_copy\": %.3f}",
                      attnkit::linear_variant_name(variant), batch, H, HV, layout_name, ms, gbps, copy_gbps,
                      gbps / copy_gbps, queued, queued_gbps, copy_queued_gbps, queued_gbps / copy_queued_gbps);
        add_row(row);
        std::printf("decode %s %s B=%d: %.4f ms, %.0f GB/s (copy %.0f GB/s, %.1f%%)\n",
                    attnkit::linear_variant_name(variant), layout_name, batch, ms, gbps, copy_gbps, 100 * gbps / copy_gbps);
        std::printf("decode-queued %s %s B=%d: %.4f ms, %.0f GB/s (copy %.0f GB/s, %.1f%%)\n",
                    attnkit::linear_variant_name(variant), layout_name, batch, queued, queued_gbps, copy_queued_gbps,
                    100 * queued_gbps / copy_queued_gbps);
      }
    }
  }
  std::FILE* f = std::fopen(path, "w");
  if (f == nullptr) {
    std::perror(path);
    return 1;
  }
  std::fprintf(f, "{\"rows\": [\n%s\n]}\n", rows.c_str());
  std::fclose(f);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "check") == 0) return run_check();
  if (argc >= 3 && std::strcmp(argv[1], "bench") == 0) {
    return run_bench(argv[2], argc >= 4 ? argv[3] : nullptr);
  }
  std::fprintf(stderr, "usage: %s check | bench FILE.json [gdn | kda | decode]\n", argv[0]);
  return 2;
}
