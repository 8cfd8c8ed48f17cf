"""attnkit: attention kernels (dense softmax attention forward and backward) for NumPy, PyTorch, CuPy
and JAX arrays, on the CPU and on CUDA GPUs.

    import attnkit
    out = attnkit.attention(q, k, v, causal=True)            # q, k, v: [B, S, H, D]
    out, lse = attnkit.attention(q, k, v, return_lse=True)   # lse: [B, H, S], fp32, natural log
    print(attnkit.explain(q, k, v))                          # which backend runs, and why not the others
    print(attnkit.build_info())

Conventions (docs/design/numerics.md): causal and sliding-window masks are aligned to the bottom right
(key j visible to query i iff j <= i + Sk - Sq); lse is the natural log; a row that sees no key gets
out = 0 and lse = -inf. Errors: ValueError (bad argument), NotImplementedError (valid but not
supported by this build or device; every backend's reason is listed), RuntimeError (CUDA).

PyTorch is optional. When it is used, attnkit.attention is differentiable, registers the
torch.library ops ``attnkit::dense_fwd`` / ``attnkit::dense_bwd`` (traceable by
``torch.compile(fullgraph=True)``) and runs on the current CUDA stream.
"""

import sys as _sys

from ._core import (
    BackendVerdict,
    BuildInfo,
    Explanation,
    Gradients,
    attention,
    attention_backward,
    attention_varlen,
    build_info,
    explain,
)
from ._ext import build_info as _ext_build_info

__version__: str = _ext_build_info()["version"]

# With torch already imported, register the torch.library ops now, so that the first call can be inside
# torch.compile. Otherwise they are registered at the first call with a torch tensor.
if "torch" in _sys.modules:
    from ._core import _load_torch_support

    _load_torch_support()
    del _load_torch_support

__all__ = [
    "attention",
    "attention_varlen",
    "attention_backward",
    "explain",
    "build_info",
    "Gradients",
    "Explanation",
    "BackendVerdict",
    "BuildInfo",
]
