"""attnkit: attention kernels (dense softmax attention forward and backward; Gated DeltaNet and KDA linear
attention forward and decode) for NumPy, PyTorch, CuPy and JAX arrays, on the CPU and on CUDA GPUs.

    import attnkit
    out = attnkit.attention(q, k, v, causal=True)            # q, k, v: [B, S, H, D]
    out, lse = attnkit.attention(q, k, v, return_lse=True)   # lse: [B, H, S], fp32, natural log
    print(attnkit.explain(q, k, v))                          # which backend runs, and why not the others
    print(attnkit.build_info())
    out = attnkit.linear_attention(q, k, v, g, beta, variant="gdn")  # q, k: [B, T, H, K]; v: [B, T, HV, V]

Conventions (docs/design/numerics.md): causal and sliding-window masks are aligned to the bottom right
(key j visible to query i iff j <= i + Sk - Sq); lse is the natural log; a row that sees no key gets
out = 0 and lse = -inf. Errors: ValueError (bad argument), NotImplementedError (valid but not
supported by this build or device; every backend's reason is listed), RuntimeError (CUDA).

PyTorch is optional. When it is used, attnkit.attention is differentiable, registers the
torch.library ops ``attnkit::dense_fwd`` / ``attnkit::dense_bwd`` and ``attnkit::linear_fwd`` /
``attnkit::linear_bwd`` / ``attnkit::linear_decode`` (traceable by ``torch.compile(fullgraph=True)``) and
runs on the current CUDA stream.
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
from ._linear import LinearGradients, linear_attention, linear_attention_backward, linear_decode

__version__: str = _ext_build_info()["version"]

# Where PyTorch is installed, register the torch.library ops now, so that torch.ops.attnkit exists and the
# first call may be inside torch.compile, whichever of torch and attnkit is imported first. This imports
# torch (about a second) when it is not imported yet; ATTNKIT_IMPORT_TORCH=0 skips it, and the ops are
# then registered at the first call with a torch tensor.
def _register_torch_ops() -> None:
    import importlib.util
    import os

    if "torch" not in _sys.modules:
        if os.environ.get("ATTNKIT_IMPORT_TORCH", "1") == "0" or importlib.util.find_spec("torch") is None:
            return
    from ._core import _load_torch_support

    _load_torch_support()


_register_torch_ops()
del _register_torch_ops

__all__ = [
    "attention",
    "attention_varlen",
    "attention_backward",
    "explain",
    "build_info",
    "linear_attention",
    "linear_attention_backward",
    "linear_decode",
    "LinearGradients",
    "Gradients",
    "Explanation",
    "BackendVerdict",
    "BuildInfo",
]
