#include "dense_workload.h"

#include <omp.h>

#include <cmath>
#include <stdexcept>

#include "attnkit/numeric.h"
#include "cli_args.h"

namespace attnkit::cli {

DenseSizes dense_sizes(const cases::DenseCase& c) {
  if (c.varlen()) throw UsageError("case '" + c.name + "' is varlen; the attnkit tool runs BSHD cases only");
  if (c.layout != cases::DenseLayout::kContiguous) {
    throw UsageError("case '" + c.name + "' has layout " + cases::layout_name(c.layout) +
                     "; the attnkit tool lays tensors out contiguous only");
  }
  if (c.dtype != DType::kBFloat16 && c.dtype != DType::kFloat16) {
    throw UsageError(std::string("case '") + c.name + "' has dtype " + dtype_name(c.dtype) +
                     "; the attnkit tool runs bf16 and fp16");
  }
  DenseSizes sizes;
  sizes.q = c.batch * c.seqlen_q * c.heads_q * c.head_dim;
  sizes.k = c.batch * c.seqlen_k * c.heads_kv * c.head_dim;
  sizes.v = c.batch * c.seqlen_k * c.heads_kv * c.head_dim_v;
  sizes.out = c.batch * c.seqlen_q * c.heads_q * c.head_dim_v;
  sizes.lse = c.batch * c.heads_q * c.seqlen_q;
  sizes.sinks = c.sinks ? c.heads_q : 0;
  return sizes;
}

namespace {

// splitmix64: a tiny, well-mixed generator; one independent stream per chunk of 4096 values keeps the
// result the same for any thread count.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1]: never 0, so log() below is finite.
  double uniform() { return (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53; }
};

constexpr std::int64_t kChunk = 4096;

// Standard normal values (Box-Muller), each tensor from its own stream id.
template <typename Store>
void fill_normal(std::int64_t count, std::uint64_t seed, std::uint64_t stream, Store store) {
  const std::int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    SplitMix64 rng{seed ^ (stream * 0xd1b54a32d192ed03ull) ^
                   (static_cast<std::uint64_t>(chunk) * 0x8cb92ba72f3d8dd7ull)};
    const std::int64_t end = std::min(count, (chunk + 1) * kChunk);
    for (std::int64_t i = chunk * kChunk; i < end; i += 2) {
      const double radius = std::sqrt(-2.0 * std::log(rng.uniform()));
      const double angle = 2.0 * M_PI * rng.uniform();
      store(i, static_cast<float>(radius * std::cos(angle)));
      if (i + 1 < end) store(i + 1, static_cast<float>(radius * std::sin(angle)));
    }
  }
}

std::vector<std::uint16_t> normal_16bit(std::int64_t count, DType dtype, std::uint64_t seed, std::uint64_t stream) {
  std::vector<std::uint16_t> values(static_cast<std::size_t>(count));
  const bool bf16 = dtype == DType::kBFloat16;
  fill_normal(count, seed, stream, [&](std::int64_t i, float x) {
    values[static_cast<std::size_t>(i)] = bf16 ? float_to_bf16(x) : float_to_fp16(x);
  });
  return values;
}

}  // namespace

HostInputs make_host_inputs(const cases::DenseCase& c, std::uint64_t seed, bool with_dout) {
  const DenseSizes sizes = dense_sizes(c);
  HostInputs inputs;
  inputs.q = normal_16bit(sizes.q, c.dtype, seed, 1);
  inputs.k = normal_16bit(sizes.k, c.dtype, seed, 2);
  inputs.v = normal_16bit(sizes.v, c.dtype, seed, 3);
  if (with_dout) inputs.dout = normal_16bit(sizes.out, c.dtype, seed, 4);
  inputs.sinks.resize(static_cast<std::size_t>(sizes.sinks));
  fill_normal(sizes.sinks, seed, 5, [&](std::int64_t i, float x) { inputs.sinks[static_cast<std::size_t>(i)] = x; });
  return inputs;
}

DenseOptions case_options(const cases::DenseCase& c, Backend backend) {
  DenseOptions options;
  options.causal = c.causal;
  options.window_left = c.window_left;
  options.window_right = c.window_right;
  options.softcap = c.softcap;
  if (c.scale != 0.0f) options.scale = c.scale;
  options.backend = backend;
  return options;
}

namespace {
Buffer upload_new(Device device, const void* host, std::size_t bytes) {
  Buffer buffer(device, bytes);
  buffer.upload(host, bytes);
  return buffer;
}
}  // namespace

DenseTensors make_device_tensors(const cases::DenseCase& c, const HostInputs& inputs, Device device, bool backward) {
  const DenseSizes sizes = dense_sizes(c);
  const std::size_t element = dtype_size(c.dtype);
  DenseTensors t;
  t.device = device;
  t.q = upload_new(device, inputs.q.data(), inputs.q.size() * element);
  t.k = upload_new(device, inputs.k.data(), inputs.k.size() * element);
  t.v = upload_new(device, inputs.v.data(), inputs.v.size() * element);
  t.sinks = upload_new(device, inputs.sinks.data(), inputs.sinks.size() * sizeof(float));
  t.out = Buffer(device, static_cast<std::size_t>(sizes.out) * element);
  t.lse = Buffer(device, static_cast<std::size_t>(sizes.lse) * sizeof(float));
  if (backward) {
    if (inputs.dout.size() != static_cast<std::size_t>(sizes.out)) {
      throw std::logic_error("make_device_tensors: backward needs host inputs made with dout");
    }
    t.dout = upload_new(device, inputs.dout.data(), inputs.dout.size() * element);
    t.dq = Buffer(device, static_cast<std::size_t>(sizes.q) * element);
    t.dk = Buffer(device, static_cast<std::size_t>(sizes.k) * element);
    t.dv = Buffer(device, static_cast<std::size_t>(sizes.v) * element);
    t.dsinks = Buffer(device, static_cast<std::size_t>(sizes.sinks) * sizeof(float));
  }
  return t;
}

namespace {
// Contiguous BSHD views: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv], o [B, Sq, Hq, Dv],
// lse [B, Hq, Sq], sinks [Hq].
struct Views {
  TensorRef q, k, v, out, lse, sinks;
};
Views bshd_views(const cases::DenseCase& c, const DenseTensors& t) {
  Views views;
  views.q = TensorRef::contiguous(t.q.data(), c.dtype, {c.batch, c.seqlen_q, c.heads_q, c.head_dim}, t.device);
  views.k = TensorRef::contiguous(t.k.data(), c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim}, t.device);
  views.v = TensorRef::contiguous(t.v.data(), c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim_v}, t.device);
  views.out = TensorRef::contiguous(t.out.data(), c.dtype, {c.batch, c.seqlen_q, c.heads_q, c.head_dim_v}, t.device);
  views.lse = TensorRef::contiguous(t.lse.data(), DType::kFloat32, {c.batch, c.heads_q, c.seqlen_q}, t.device);
  if (c.sinks) views.sinks = TensorRef::contiguous(t.sinks.data(), DType::kFloat32, {c.heads_q}, t.device);
  return views;
}
}  // namespace

DenseForwardArgs forward_args(const cases::DenseCase& c, const DenseTensors& t, Backend backend) {
  const Views views = bshd_views(c, t);
  DenseForwardArgs args;
  args.q = views.q;
  args.k = views.k;
  args.v = views.v;
  args.out = views.out;
  args.lse = views.lse;
  args.sinks = views.sinks;
  args.options = case_options(c, backend);
  return args;
}

DenseBackwardArgs backward_args(const cases::DenseCase& c, const DenseTensors& t, Backend backend) {
  const Views views = bshd_views(c, t);
  DenseBackwardArgs args;
  args.q = views.q;
  args.k = views.k;
  args.v = views.v;
  args.out = views.out;
  args.lse = views.lse;
  args.sinks = views.sinks;
  args.dout = TensorRef::contiguous(t.dout.data(), c.dtype, {c.batch, c.seqlen_q, c.heads_q, c.head_dim_v}, t.device);
  args.dq = TensorRef::contiguous(t.dq.data(), c.dtype, {c.batch, c.seqlen_q, c.heads_q, c.head_dim}, t.device);
  args.dk = TensorRef::contiguous(t.dk.data(), c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim}, t.device);
  args.dv = TensorRef::contiguous(t.dv.data(), c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim_v}, t.device);
  if (c.sinks) args.dsinks = TensorRef::contiguous(t.dsinks.data(), DType::kFloat32, {c.heads_q}, t.device);
  args.options = case_options(c, backend);
  return args;
}

Status prepare_forward_workspace(DenseForwardArgs* args, DenseTensors* t) {
  std::size_t bytes = 0;
  if (Status status = workspace_size(*args, &bytes); !status) return status;
  if (t->forward_workspace.bytes() < bytes) t->forward_workspace = Buffer(t->device, bytes);
  args->workspace = t->forward_workspace.data();
  args->workspace_bytes = t->forward_workspace.bytes();
  return Status::ok();
}

Status prepare_backward_workspace(DenseBackwardArgs* args, DenseTensors* t) {
  std::size_t bytes = 0;
  if (Status status = workspace_size(*args, &bytes); !status) return status;
  if (t->backward_workspace.bytes() < bytes) t->backward_workspace = Buffer(t->device, bytes);
  args->workspace = t->backward_workspace.data();
  args->workspace_bytes = t->backward_workspace.bytes();
  return Status::ok();
}

}  // namespace attnkit::cli
