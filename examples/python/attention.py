"""attnkit from Python: NumPy on the CPU, then PyTorch (autograd, torch.compile) where it is installed.

    pip install .                      # CPU build (ATTNKIT_PYTHON_CUDA=ON pip install . for the GPU kernels)
    python examples/python/attention.py
"""

import numpy as np

import attnkit


def numpy_example():
    rng = np.random.default_rng(0)
    batch, seqlen_q, seqlen_k, heads_q, heads_kv, dim = 2, 6, 10, 4, 2, 64  # GQA: 2 query heads per kv head
    q = rng.standard_normal((batch, seqlen_q, heads_q, dim)).astype(np.float32)
    k = rng.standard_normal((batch, seqlen_k, heads_kv, dim)).astype(np.float32)
    v = rng.standard_normal((batch, seqlen_k, heads_kv, dim)).astype(np.float32)

    print(attnkit.explain(q, k, v, causal=True))  # which backend runs, and why not the others

    # Causal masks are aligned to the bottom right: with Sq = 6 < Sk = 10 the last query sees all 10 keys.
    out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
    print("out", out.shape, out.dtype, "lse", lse.shape, lse.dtype)

    # The same row by hand: query i sees keys j <= i + Sk - Sq; lse is the natural log of the denominator.
    i, h = seqlen_q - 1, 3
    scores = k[0, :, h // 2] @ q[0, i, h] / np.sqrt(dim)
    weights = np.exp(scores - scores.max())
    by_hand = weights @ v[0, :, h // 2] / weights.sum()
    print("max |out - by hand| =", float(np.abs(out[0, i, h] - by_hand).max()))
    print("lse - log(sum exp(s)) =", float(lse[0, h, i] - np.log(np.exp(scores).sum())))

    # Backward without autograd (NumPy): gradients of sum(out * dout).
    dout = rng.standard_normal(out.shape).astype(np.float32)
    gradients = attnkit.attention_backward(dout, q, k, v, out, lse, causal=True)
    print("dq", gradients.dq.shape, "dk", gradients.dk.shape, "dv", gradients.dv.shape)

    # Packed QKV: views are passed as they are (strided, no copy); only the last dim must be contiguous.
    qkv = rng.standard_normal((batch, seqlen_k, 3, heads_q, dim)).astype(np.float16)
    out16 = attnkit.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)
    print("packed fp16 out", out16.shape, out16.dtype)

    # Variable-length sequences, packed: offsets are int32 [N + 1].
    cu_seqlens = np.array([0, 3, 3, 10], dtype=np.int32)  # lengths 3, 0, 7
    tokens = rng.standard_normal((10, heads_q, dim)).astype(np.float32)
    out_varlen = attnkit.attention_varlen(tokens, tokens, tokens, cu_seqlens, cu_seqlens, 7, 7, causal=True)
    print("varlen out", out_varlen.shape)

    try:
        attnkit.attention(q, k[..., :32], v)
    except ValueError as error:
        print("ValueError:", error)


def torch_example():
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: skipping the torch part")
        return
    device = "cuda" if torch.cuda.is_available() and "sm80-forward" in attnkit.build_info().compiled_backends else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (torch.randn(2, 128, 8, 64, device=device, dtype=dtype, requires_grad=True) for _ in range(3))

    out = attnkit.attention(q, k, v, causal=True)  # differentiable; the current CUDA stream
    out.float().square().sum().backward()
    print(f"torch on {device}: out {tuple(out.shape)}, |dq| = {q.grad.float().norm():.3f}")

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(q, k, v):
        return attnkit.attention(q, k, v, causal=True).float().square().sum()

    print(f"torch.compile(fullgraph=True): loss = {step(q, k, v).item():.3f}")


if __name__ == "__main__":
    print(attnkit.build_info())
    numpy_example()
    torch_example()
