// Minimal use of the attnkit C++ API: causal bf16 attention on host memory (the CPU backend), with
// the backend choice explained. The same code runs on a GPU when the pointers (workspace included) are
// device pointers and every TensorRef says Device::cuda(0).
#include <cstdio>
#include <vector>

#include "attnkit/attnkit.h"

int main() {
  using namespace attnkit;
  const std::int64_t batch = 1, seqlen = 128, heads = 8, head_dim = 64;
  std::vector<std::uint16_t> q(batch * seqlen * heads * head_dim), k(q.size()), v(q.size()), out(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = float_to_bf16(0.01f * static_cast<float>(i % 97));
    k[i] = float_to_bf16(0.02f * static_cast<float>(i % 89));
    v[i] = float_to_bf16(0.03f * static_cast<float>(i % 83));
  }
  std::vector<float> lse(batch * heads * seqlen);

  DenseForwardArgs args;
  args.q = TensorRef::contiguous(q.data(), DType::kBFloat16, {batch, seqlen, heads, head_dim});  // [B, S, H, D]
  args.k = TensorRef::contiguous(k.data(), DType::kBFloat16, {batch, seqlen, heads, head_dim});
  args.v = TensorRef::contiguous(v.data(), DType::kBFloat16, {batch, seqlen, heads, head_dim});
  args.out = TensorRef::contiguous(out.data(), DType::kBFloat16, {batch, seqlen, heads, head_dim});
  args.lse = TensorRef::contiguous(lse.data(), DType::kFloat32, {batch, heads, seqlen});  // [B, H, S]
  args.options.causal = true;

  // Scratch the chosen backend needs: none on the CPU, a zeroed tile counter for the sm90 forward, split-KV
  // partials on sm80. Ask, then hand it over; too small a workspace is an error, never a silent fallback.
  std::size_t workspace_bytes = 0;
  if (Status status = workspace_size(args, &workspace_bytes); !status) {
    std::fprintf(stderr, "attnkit: %s\n", status.to_string().c_str());
    return 1;
  }
  std::vector<unsigned char> workspace(workspace_bytes);
  args.workspace = workspace.data();
  args.workspace_bytes = workspace.size();

  std::printf("%s\n", explain(args).to_string().c_str());
  if (Status status = forward(args); !status) {
    std::fprintf(stderr, "attnkit: %s\n", status.to_string().c_str());
    return 1;
  }
  std::printf("o[0, last, 0, 0] = %f, lse[0, 0, last] = %f\n",
              bf16_to_float(out[(seqlen - 1) * heads * head_dim]), lse[seqlen - 1]);
  return 0;
}
