// CPU linear attention, forward and decode. Forward: one task per (sequence, value head), the chunked
// algorithm of linear_cpu_kernels.h chunk after chunk (the state pass is sequential within a task,
// parallel across tasks). Decode: the recurrence token by token on the state in place.
#include <algorithm>
#include <vector>

#include "cpu/linear_cpu.h"
#include "cpu/linear_cpu_common.h"
#include "cpu/linear_cpu_kernels.h"

namespace attnkit::cpu {

using namespace linear;

Status linear_supports_forward(const host::LinearProblem&, const LinearForwardArgs&) { return Status::ok(); }
Status linear_supports_decode(const host::LinearProblem&, const LinearDecodeArgs&) { return Status::ok(); }
// Scratch is allocated per thread inside the call (a few MB at most for forward and decode).
std::size_t linear_forward_workspace_bytes(const host::LinearProblem&) { return 0; }
std::size_t linear_decode_workspace_bytes(const host::LinearProblem&) { return 0; }

Status linear_forward(const host::LinearProblem& p, const LinearForwardArgs& args) {
  const LinearInputs in = make_inputs(p, args.q, args.k, args.v, args.g, args.beta, args.A_log, args.dt_bias);
  const TokenOutput out = make_output(args.out, p.out);
  const StateTensor initial = make_state(args.initial_state, p.initial_state, p.state_layout);
  const StateTensor final_state = make_state(args.final_state, p.final_state, p.state_layout);
  const std::vector<SequenceRange> ranges = sequence_ranges(p, args.cu_seqlens);
  const std::int64_t K = p.key_dim, V = p.value_dim, gw = in.g.width;
  const std::int64_t tasks = p.num_sequences * p.heads_v;
#pragma omp parallel
  {
    Chunk chunk;
    chunk.resize(K, V, gw);
    ChunkWork work;
    work.resize(K, V, gw);
    std::vector<float> S(K * V);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t n = task / p.heads_v, j = task % p.heads_v;
      const SequenceRange& range = ranges[n];
      initial.load(n, j, K, V, S.data());
      for (std::int64_t first = 0; first < range.length; first += kChunk) {
        const std::int64_t length = std::min(kChunk, range.length - first);
        load_chunk(p, in, range, j, first, length, &chunk);
        forward_chunk(chunk, K, V, gw, p.scale, true, S.data(), work);
        for (std::int64_t i = 0; i < length; ++i) out.store(range.batch_row, range.begin + first + i, j, &work.o[i * V]);
      }
      final_state.store(n, j, K, V, S.data());
    }
  }
  return Status::ok();
}

Status linear_decode(const host::LinearProblem& p, const LinearDecodeArgs& args) {
  const LinearInputs in = make_inputs(p, args.q, args.k, args.v, args.g, args.beta, args.A_log, args.dt_bias);
  const TokenOutput out = make_output(args.out, p.out);
  const StateTensor state = make_state(args.state, p.state, p.state_layout);
  const auto* indices = static_cast<const std::int32_t*>(args.state_indices.data);
  const std::int64_t index_stride = p.has_state_indices ? args.state_indices.strides[0] : 0;
  const std::int64_t K = p.key_dim, V = p.value_dim, gw = in.g.width;
  const std::int64_t tasks = p.num_sequences * p.heads_v;
#pragma omp parallel
  {
    Chunk chunk;
    chunk.resize(K, V, gw);
    std::vector<float> S(K * V), o(V);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t n = task / p.heads_v, j = task % p.heads_v;
      const std::int64_t slot = p.has_state_indices ? indices[n * index_stride] : n;
      const SequenceRange range{n, 0, p.seqlen};
      if (slot < 0) {  // a padding slot: zero output rows, no state touched
        std::fill(o.begin(), o.end(), 0.0f);
        for (std::int64_t t = 0; t < p.seqlen; ++t) out.store(n, t, j, o.data());
        continue;
      }
      state.load(slot, j, K, V, S.data());
      for (std::int64_t first = 0; first < p.seqlen; first += kChunk) {
        const std::int64_t length = std::min(kChunk, p.seqlen - first);
        load_chunk(p, in, range, j, first, length, &chunk);
        for (std::int64_t i = 0; i < length; ++i) {
          recurrent_step(&chunk.q[i * K], &chunk.k[i * K], &chunk.v[i * V], &chunk.gate[i * gw], chunk.beta[i], K, V,
                         gw, p.scale, S.data(), o.data(), nullptr, nullptr);
          out.store(n, first + i, j, o.data());
        }
      }
      state.store(slot, j, K, V, S.data());
    }
  }
  return Status::ok();
}

}  // namespace attnkit::cpu
