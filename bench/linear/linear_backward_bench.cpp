// Timing of the linear-attention backward (GDN, KDA) through the public API, on the issue-6 shapes
// (bf16, K = V = 128), with the inputs of bench/peers/fla_linear.py so that FLA's forward+backward can be
// timed on the same rows:
//   q, k ~ N(0, 1) rows L2-normalised on the host; v, dout ~ N(0, 1); g fp32 = -softplus(z) (KDA: / 4);
//   beta = sigmoid(z) in bf16; no fused options, no states.
// Per shape: the forward alone, forward+backward as one timed call (FLA's "linear_bwd" row), and the
// backward alone; CUDA events, median of --iters calls after --warmup calls. Rows (gpu-workflow.md
// format, impl "attnkit") go to FILE.json; the linear_fwd rows drive fla_linear.py.
// Each row also carries a 64-bit FNV-1a hash (over 8-byte words) of the gradients' bytes (dq, dk, dv, dg, dbeta) after the
// last forward+backward call and after the last backward-alone call: the two must agree (the backward is
// deterministic: no float atomics, fixed summation orders), and two builds whose kernels compute the same
// sums in the same order print the same hash for the same shape (the inputs depend only on the shape list).
//
//   linear_backward_bench FILE.json [--variants gdn,kda] [--shapes 0,1,2,3] [--warmup N] [--iters N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/linear.h"
#include "attnkit/numeric.h"
#include "bench_cuda_util.h"

namespace {

using attnkit::DType;

attnkit::TensorRef ref(void* data, DType dtype, std::vector<std::int64_t> shape) {
  attnkit::TensorRef r;
  r.data = data;
  r.dtype = dtype;
  r.device = attnkit::Device::cuda(0);
  r.rank = static_cast<int>(shape.size());
  std::int64_t stride = 1;
  for (int d = r.rank - 1; d >= 0; --d) {
    r.shape[d] = shape[d];
    r.strides[d] = stride;
    stride *= shape[d];
  }
  return r;
}

// Fills `count` bf16 values from a pool of 2^20 fresh normal samples read with an odd stride (the
// timing does not depend on the values; the host RNG would take seconds per shape), optionally with
// rows of `row` elements L2-normalised. Element e reads pool[(*next + 7919 (e + 1)) mod 2^20]; rows are
// filled in parallel (OpenMP), the same values as in order (~2 G elements over the four shapes).
void fill_bf16(void* device, std::int64_t count, const std::vector<float>& pool, std::uint64_t* next, int row,
               float scale, bool sigmoid) {
  std::vector<std::uint16_t> host(count);
  const std::uint64_t first = *next, mask = pool.size() - 1;
  const std::int64_t rows = count / row;  // count is a multiple of row
#pragma omp parallel
  {
    std::vector<float> values(row);
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t at = r * row;
      double sum = 0.0;
      for (int i = 0; i < row; ++i) {
        values[i] = pool[(first + 7919ull * static_cast<std::uint64_t>(at + i + 1)) & mask];
        sum += values[i] * values[i];
      }
      for (int i = 0; i < row; ++i) {
        float x = row > 1 && scale == 0.0f ? static_cast<float>(values[i] / std::sqrt(sum)) : values[i];
        if (sigmoid) x = 1.0f / (1.0f + std::exp(-x));
        host[at + i] = attnkit::float_to_bf16(x);
      }
    }
  }
  *next = first + 7919ull * static_cast<std::uint64_t>(count);
  CUDA_OK(cudaMemcpy(device, host.data(), count * 2, cudaMemcpyHostToDevice));
}

template <typename Fn>
float median_ms(Fn&& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  CUDA_OK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    CUDA_OK(cudaEventRecord(start));
    fn();
    CUDA_OK(cudaEventRecord(stop));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// FNV-1a over the device buffers' contents, in order, taken 8 bytes at a time (then the tail bytes):
// ~1 GB of gradients per shape, so a byte-wise loop would add seconds of host time per shape.
std::uint64_t hash_device(const std::vector<std::pair<const void*, std::size_t>>& buffers) {
  std::uint64_t h = 1469598103934665603ull;
  std::vector<unsigned char> host;
  for (const auto& [data, bytes] : buffers) {
    host.resize(bytes);
    CUDA_OK(cudaMemcpy(host.data(), data, bytes, cudaMemcpyDeviceToHost));
    std::size_t at = 0;
    for (; at + 8 <= bytes; at += 8) {
      std::uint64_t word;
      std::memcpy(&word, host.data() + at, 8);
      h = (h ^ word) * 1099511628211ull;
    }
    for (; at < bytes; ++at) h = (h ^ host[at]) * 1099511628211ull;
  }
  return h;
}

void write_rows(const char* path, const std::string& rows) {
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) std::exit(2);
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"rows\": [\n%s\n  ]\n}\n", prop.name, rows.c_str());
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE.json [--variants gdn,kda] [--shapes 0,1,2,3] [--warmup N] [--iters N]\n",
                 argv[0]);
    return 2;
  }
  std::string variants = "gdn,kda", shapes_arg = "0,1,2,3";
  int warmup = 1, iters = 3;
  for (int a = 2; a + 1 < argc; a += 2) {
    if (std::strcmp(argv[a], "--variants") == 0) variants = argv[a + 1];
    if (std::strcmp(argv[a], "--shapes") == 0) shapes_arg = argv[a + 1];
    if (std::strcmp(argv[a], "--warmup") == 0) warmup = std::atoi(argv[a + 1]);
    if (std::strcmp(argv[a], "--iters") == 0) iters = std::atoi(argv[a + 1]);
  }
  struct Shape {
    int b, t, h, hv;
  };
  const Shape shapes[] = {{4, 8192, 32, 32}, {1, 32768, 16, 32}, {8, 4096, 16, 64}, {1, 65536, 2, 8}};
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> pool(1u << 20);
  for (float& x : pool) x = normal(rng);
  std::uint64_t next = 0;
  std::string rows;
  int failures = 0;
  const int D = 128;
  for (const char* name : {"gdn", "kda"}) {
    if (variants.find(name) == std::string::npos) continue;
    const bool kda = std::strcmp(name, "kda") == 0;
    for (int si = 0; si < 4; ++si) {
      if (shapes_arg.find(static_cast<char>('0' + si)) == std::string::npos) continue;
      const Shape s = shapes[si];
      const std::int64_t bt = static_cast<std::int64_t>(s.b) * s.t;
      const std::int64_t qk = bt * s.h * D, vo = bt * s.hv * D, gw = kda ? D : 1;
      DeviceBuffer q(qk * 2), k(qk * 2), v(vo * 2), out(vo * 2), dout(vo * 2), beta(bt * s.hv * 2), g(bt * s.hv * gw * 4);
      DeviceBuffer dq(qk * 2), dk(qk * 2), dv(vo * 2), dg(bt * s.hv * gw * 4), dbeta(bt * s.hv * 2);
      fill_bf16(q.data, qk, pool, &next, D, 0.0f, false);
      fill_bf16(k.data, qk, pool, &next, D, 0.0f, false);
      fill_bf16(v.data, vo, pool, &next, 1, 1.0f, false);
      fill_bf16(dout.data, vo, pool, &next, 1, 1.0f, false);
      fill_bf16(beta.data, bt * s.hv, pool, &next, 1, 1.0f, true);
      {
        std::vector<float> host(bt * s.hv * gw);
        for (float& x : host) {
          next += 7919;
          const float z = pool[next & (pool.size() - 1)];
          x = -std::log1p(std::exp(z)) / (kda ? 4.0f : 1.0f);
        }
        CUDA_OK(cudaMemcpy(g.data, host.data(), host.size() * 4, cudaMemcpyHostToDevice));
      }
      attnkit::LinearOptions options;
      options.variant = kda ? attnkit::LinearVariant::kKimiDelta : attnkit::LinearVariant::kGatedDeltaNet;
      options.backend = attnkit::Backend::kSm80;
      const auto g_ref = kda ? ref(g.data, DType::kFloat32, {s.b, s.t, s.hv, D}) : ref(g.data, DType::kFloat32, {s.b, s.t, s.hv});
      const auto dg_ref =
          kda ? ref(dg.data, DType::kFloat32, {s.b, s.t, s.hv, D}) : ref(dg.data, DType::kFloat32, {s.b, s.t, s.hv});
      attnkit::LinearForwardArgs fa;
      fa.q = ref(q.data, DType::kBFloat16, {s.b, s.t, s.h, D});
      fa.k = ref(k.data, DType::kBFloat16, {s.b, s.t, s.h, D});
      fa.v = ref(v.data, DType::kBFloat16, {s.b, s.t, s.hv, D});
      fa.g = g_ref;
      fa.beta = ref(beta.data, DType::kBFloat16, {s.b, s.t, s.hv});
      fa.out = ref(out.data, DType::kBFloat16, {s.b, s.t, s.hv, D});
      fa.options = options;
      attnkit::LinearBackwardArgs ba;
      ba.q = fa.q;
      ba.k = fa.k;
      ba.v = fa.v;
      ba.g = fa.g;
      ba.beta = fa.beta;
      ba.dout = ref(dout.data, DType::kBFloat16, {s.b, s.t, s.hv, D});
      ba.dq = ref(dq.data, DType::kBFloat16, {s.b, s.t, s.h, D});
      ba.dk = ref(dk.data, DType::kBFloat16, {s.b, s.t, s.h, D});
      ba.dv = ref(dv.data, DType::kBFloat16, {s.b, s.t, s.hv, D});
      ba.dg = dg_ref;
      ba.dbeta = ref(dbeta.data, DType::kBFloat16, {s.b, s.t, s.hv});
      ba.options = options;
      std::size_t fwd_bytes = 0, bwd_bytes = 0;
      const attnkit::Status fs = attnkit::workspace_size(fa, &fwd_bytes);
      const attnkit::Status bs = attnkit::workspace_size(ba, &bwd_bytes);
      if (!fs || !bs) {
        std::printf("%s B=%d T=%d: workspace_size: %s %s\n", name, s.b, s.t, fs.to_string().c_str(),
                    bs.to_string().c_str());
        ++failures;
        continue;
      }
      DeviceBuffer fwd_ws(fwd_bytes), bwd_ws(bwd_bytes);
      fa.workspace = fwd_ws.data;
      fa.workspace_bytes = fwd_bytes;
      ba.workspace = bwd_ws.data;
      ba.workspace_bytes = bwd_bytes;
      bool failed = false;
      const float fwd_ms = median_ms([&] { failed |= !attnkit::forward(fa).is_ok(); }, warmup, iters);
      const std::vector<std::pair<const void*, std::size_t>> grads = {
          {dq.data, static_cast<std::size_t>(qk * 2)}, {dk.data, static_cast<std::size_t>(qk * 2)},
          {dv.data, static_cast<std::size_t>(vo * 2)}, {dg.data, static_cast<std::size_t>(bt * s.hv * gw * 4)},
          {dbeta.data, static_cast<std::size_t>(bt * s.hv * 2)}};
      const float both_ms = median_ms(
          [&] {
            failed |= !attnkit::forward(fa).is_ok();
            failed |= !attnkit::backward(ba).is_ok();
          },
          warmup, iters);
      CUDA_OK(cudaDeviceSynchronize());
      const std::uint64_t hash_both = hash_device(grads);
      const float bwd_ms = median_ms([&] { failed |= !attnkit::backward(ba).is_ok(); }, 0, iters);
      CUDA_OK(cudaDeviceSynchronize());
      const std::uint64_t hash_bwd = hash_device(grads);
      // The gradients of the last call must be finite (a cheap guard; the gtests check the values).
      std::vector<std::uint16_t> sample(std::min<std::int64_t>(vo, 1 << 20));
      bool finite = true;
      for (void* grad : {dv.data, dq.data}) {
        CUDA_OK(cudaMemcpy(sample.data(), grad, sample.size() * 2, cudaMemcpyDeviceToHost));
        for (std::uint16_t x : sample) finite = finite && std::isfinite(attnkit::bf16_to_float(x));
      }
      if (failed || !finite) {
        std::printf("%s B=%d T=%d H=%d HV=%d: %s\n", name, s.b, s.t, s.h, s.hv,
                    failed ? "a call failed" : "non-finite gradients");
        ++failures;
        continue;
      }
      const double flops = 4.0 * bt * s.hv * D * D;
      char row[1024];
      std::snprintf(row, sizeof row,
                    "{\"op\": \"linear_fwd\", \"impl\": \"attnkit\", \"variant\": \"%s\", \"b\": %d, \"t\": %d, "
                    "\"h\": %d, \"hv\": %d, \"k\": 128, \"v\": 128, \"dtype\": \"bf16\", \"ms\": %.4f, \"tflops\": %.2f},\n    "
                    "{\"op\": \"linear_bwd\", \"impl\": \"attnkit\", \"variant\": \"%s\", \"b\": %d, \"t\": %d, "
                    "\"h\": %d, \"hv\": %d, \"k\": 128, \"v\": 128, \"dtype\": \"bf16\", \"timed\": \"forward+backward\", "
                    "\"ms\": %.4f, \"tflops\": %.2f, \"backward_alone_ms\": %.4f, \"workspace_bytes\": %zu, "
                    "\"grad_hash\": \"%016llx\", \"grad_hash_repeat\": \"%016llx\"}",
                    name, s.b, s.t, s.h, s.hv, fwd_ms, flops / fwd_ms * 1e-9, name, s.b, s.t, s.h, s.hv, both_ms,
                    3.5 * flops / both_ms * 1e-9, bwd_ms, bwd_bytes, static_cast<unsigned long long>(hash_both),
                    static_cast<unsigned long long>(hash_bwd));
      rows += (rows.empty() ? "    " : ",\n    ") + std::string(row);
      std::printf("%s B=%d T=%d H=%d HV=%d: fwd %.3f ms, fwd+bwd %.3f ms, bwd %.3f ms (workspace %.2f GB), "
                  "grad hash %016llx %s\n",
                  name, s.b, s.t, s.h, s.hv, fwd_ms, both_ms, bwd_ms, bwd_bytes * 1e-9,
                  static_cast<unsigned long long>(hash_both), hash_both == hash_bwd ? "repeated" : "DIFFERS between calls");
      if (hash_both != hash_bwd) ++failures;
      std::fflush(stdout);
      write_rows(argv[1], rows);  // after every shape: a run cut short keeps what it measured
    }
  }
  write_rows(argv[1], rows);
  return failures == 0 ? 0 : 1;
}
