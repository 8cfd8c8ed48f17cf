"""The public functions of attnkit: dense attention forward/backward, explain, build_info.

Each function normalises its Python arguments, then hands the arrays to the framework's path:
PyTorch tensors to ``_torch_ops`` (autograd, torch.library ops, the current CUDA stream), everything
else to the DLPack path below (``_arrays``). Both end in the same C++ calls (``_ext``).
"""

import sys
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from . import _arrays, _ext
from ._layout import backend_code, check_varlen_pair, forward_shapes, real_float, window_bounds

_SEMANTICS = """
    Semantics (the library's contract; docs/design/numerics.md):

    - Layout BSHD: q ``[B, Sq, Hq, D]``, k ``[B, Sk, Hkv, D]``, v ``[B, Sk, Hkv, Dv]``; out
      ``[B, Sq, Hq, Dv]`` in q's dtype, lse ``[B, Hq, Sq]`` fp32. Varlen: q ``[Tq, Hq, D]``, k/v
      ``[Tk, Hkv, D|Dv]``, out ``[Tq, Hq, Dv]``, lse ``[Hq, Tq]``. The last dim of every array must be
      contiguous (stride 1); other strides are free, so views into a packed QKV tensor work as they are.
      Nothing is copied.
    - dtypes: fp16 and bf16 (fp32 too on the CPU backend), fp32 accumulation. D and Dv: multiples of 8
      up to 256. GQA/MQA: ``Hq = G * Hkv``, query head h reads kv head ``h // G``.
    - Score ``s_ij = scale * <q_i, k_j>``, scale defaults to ``1 / sqrt(D)``; with softcap ``c > 0``,
      ``s_ij = c * tanh(s_ij / c)`` (after the scale, before the mask).
    - Masks are aligned to the **bottom right**: with ``off = Sk - Sq``, key j is visible to query i iff
      ``i + off - left <= j <= i + off + right`` for ``window = (left, right)``, -1 meaning unbounded.
      ``causal=True`` is ``right = 0`` (``j <= i + Sk - Sq``); it cannot be combined with ``right > 0``.
      With Sq > Sk the first ``Sq - Sk`` queries of a causal call see no key.
    - Sinks (optional, fp32 ``[Hq]``): ``exp(sink_h)`` is added to the softmax denominator only.
    - ``o_i = sum_j p_ij v_j`` with ``p_ij = exp(s_ij) / (sum_visible exp(s_ij) [+ exp(sink_h)])``;
      ``lse_i = log(sum_visible exp(s_ij) [+ exp(sink_h)])``: the **natural** log.
    - A row with no visible key and no sink (also Sk = 0): ``o_i = 0``, ``lse_i = -inf``; never NaN.
      Zero batch, heads or query rows is a no-op (the outputs are empty).
"""

_ERRORS = """
    Raises:
        ValueError: a bad argument (shape, dtype, stride, device, window, scale, ...); the message names
            the argument, the expected and the actual value.
        NotImplementedError: valid, but no backend of this build can run it; the message lists every
            backend's reason (see :func:`explain`).
        RuntimeError: a CUDA error, or an internal error.
        TypeError: an argument that is not an array of a supported framework.
"""


# ----------------------------------------------------------------------------------------------------
# PyTorch detection. `_TORCH` is the loaded torch support (python/attnkit/_torch_ops.py), set at
# `import attnkit` where torch is installed (see __init__.py), else at the first call with a torch tensor.
_TORCH = None


def _torch_support(x):
    """The torch support module if x is a torch.Tensor, else None. Never imports torch itself."""
    global _TORCH
    support = _TORCH
    if support is None:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(x, torch.Tensor):
            return None
        from . import _torch_ops

        _TORCH = support = _torch_ops
    return support if isinstance(x, support.Tensor) else None


def _load_torch_support() -> None:
    """Registers the torch.library ops now (called by `import attnkit` where torch is installed)."""
    global _TORCH
    from . import _torch_ops

    _TORCH = _torch_ops


# ----------------------------------------------------------------------------------------------------
# The DLPack path (NumPy, CuPy, JAX).


def _dlpack_forward(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap, backend,
                    need_lse):
    arrays = _arrays.arrays_for(q)
    out_shape, lse_shape = forward_shapes(q, v, cu_q is not None)
    arrays.wait_inputs(q, k, v, sinks, cu_q, cu_k)
    out = arrays.empty(out_shape, q.dtype)
    lse = arrays.empty(lse_shape, "float32") if need_lse else None
    view = arrays.view
    _ext.dense_forward(arrays.importer, view("q", q), view("k", k), view("v", v), view("out", out), lse,
                       view("sinks", sinks), view("cu_seqlens_q", cu_q), view("cu_seqlens_k", cu_k), max_q, max_k,
                       scale, causal, left, right, softcap, backend, arrays.stream(q), arrays.workspace)
    return arrays.finish(out), (arrays.finish(lse) if need_lse else None)


def _dlpack_backward(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right,
                     softcap, deterministic, backend):
    arrays = _arrays.arrays_for(q)
    arrays.wait_inputs(dout, q, k, v, out, lse, sinks, cu_q, cu_k)
    dq, dk, dv, dsinks = _dlpack_gradients(arrays, q, k, v, sinks)
    view = arrays.view
    _ext.dense_backward(arrays.importer, view("q", q), view("k", k), view("v", v), view("out", out),
                        view("dout", dout), view("lse", lse), view("dq", dq), view("dk", dk), view("dv", dv),
                        view("sinks", sinks), dsinks, view("cu_seqlens_q", cu_q), view("cu_seqlens_k", cu_k),
                        max_q, max_k, deterministic, scale, causal, left, right, softcap, backend,
                        arrays.stream(q), arrays.workspace)
    finish = arrays.finish
    return Gradients(finish(dq), finish(dk), finish(dv), finish(dsinks) if dsinks is not None else None)


def _dlpack_gradients(arrays, q, k, v, sinks):
    """dq, dk, dv in the inputs' shapes (contiguous) and dtype; dsinks fp32 [Hq] when sinks are given.
    With Hq = 0 the C++ call has no work and writes nothing, so dk and dv start as zeros then (the
    gradient of keys no query sees); dsinks always starts as zeros for the same reason."""
    zeros_needed = q.ndim >= 2 and q.shape[-2] == 0
    dq = arrays.empty(tuple(q.shape), q.dtype)
    dk = arrays.empty(tuple(k.shape), k.dtype)
    dv = arrays.empty(tuple(v.shape), v.dtype)
    if zeros_needed:
        dk[...] = 0
        dv[...] = 0
    dsinks = None
    if sinks is not None:
        dsinks = arrays.empty((q.shape[-2],), "float32")
        dsinks[...] = 0
    return dq, dk, dv, dsinks


# ----------------------------------------------------------------------------------------------------
# Public API.


class Gradients(NamedTuple):
    """Gradients of :func:`attention_backward`: dq, dk, dv in the inputs' dtypes, dsinks fp32 or None."""

    dq: Any
    dk: Any
    dv: Any
    dsinks: Any


_UNBOUNDED = (-1, -1)


def _options(window, backend, scale, softcap):
    """(left, right, backend code, scale, softcap), checked; the defaults take the shortest path."""
    left, right = (-1, -1) if type(window) is tuple and window == _UNBOUNDED else window_bounds(window)
    code = backend_code(backend)
    scale = None if scale is None else real_float("scale", scale)
    softcap = softcap if type(softcap) is float else real_float("softcap", softcap)
    return left, right, code, scale, softcap


def attention(q, k, v, *, causal: bool = False, window: Sequence[int] = _UNBOUNDED, softcap: float = 0.0,
              sinks=None, scale: Optional[float] = None, return_lse: bool = False, deterministic: bool = False,
              backend: str = "auto", out=None, lse_out=None):
    """Dense softmax attention, BSHD layout: ``out = softmax(scale * q k^T [masked]) v``.

    Args:
        q: ``[B, Sq, Hq, D]``. k: ``[B, Sk, Hkv, D]``. v: ``[B, Sk, Hkv, Dv]``. NumPy, PyTorch, CuPy or
            JAX arrays (all of one framework, on one device); the outputs are allocated in that framework.
        causal: bottom-right aligned causal mask (the same as ``window=(left, 0)``).
        window: ``(left, right)`` sliding window around the bottom-right diagonal, -1 = unbounded.
        softcap: ``c > 0`` caps scores as ``c * tanh(s / c)``; 0 turns it off.
        sinks: optional fp32 ``[Hq]`` per-head sink logits (denominator only).
        scale: softmax scale, default ``1 / sqrt(D)``; must be finite and > 0.
        return_lse: also return lse (fp32, natural log). With PyTorch autograd the lse output does not
            require grad: no gradient flows back through it.
        deterministic: the backward pass (PyTorch autograd) is bit-identical from run to run.
        backend: "auto" (the fastest usable), "cpu", "sm80" or "sm90"; an explicit backend that cannot
            run the call raises NotImplementedError, it never falls back.
        out, lse_out: PyTorch only: tensors to write out (``[B, Sq, Hq, Dv]``, q's dtype) and lse
            (``[B, Hq, Sq]``, fp32) into instead of allocating them, on q's device, last dimension
            contiguous, not overlapping any input (else ValueError). They are returned as out / lse.
            lse_out is written even without ``return_lse``. Not with autograd: when an input requires
            grad (outside ``torch.no_grad()``) they raise ValueError, as autograd needs new outputs.
            Under torch.compile or with tensor subclasses the op's result is copied into them.

    Returns:
        out ``[B, Sq, Hq, Dv]`` in q's dtype, or ``(out, lse)`` with lse ``[B, Hq, Sq]`` when
        ``return_lse``.

    PyTorch: differentiable (``attnkit::dense_fwd``/``attnkit::dense_bwd`` torch.library ops, traceable
    by ``torch.compile(fullgraph=True)``); runs on the current CUDA stream and never synchronises the
    host. Without autograd or compilation the call goes straight to the library (lowest overhead).
    """
    if window is _UNBOUNDED and backend == "auto" and scale is None and type(softcap) is float:
        left, right, code = -1, -1, 0  # the defaults (softcap is the C++ validation's to check)
    else:
        left, right, code, scale, softcap = _options(window, backend, scale, softcap)
    support = _TORCH
    if support is None or not isinstance(q, support.Tensor):
        support = _torch_support(q)
    if support is not None:
        return support.attention(q, k, v, sinks, None, None, 0, 0, scale, bool(causal), left, right, softcap,
                                 bool(deterministic), backend, code, bool(return_lse), out, lse_out)
    _no_out_arrays(out, lse_out)
    out, lse = _dlpack_forward(q, k, v, sinks, None, None, 0, 0, scale, bool(causal), left, right, softcap, code,
                               bool(return_lse))
    return (out, lse) if return_lse else out


def _no_out_arrays(out, lse_out) -> None:
    if out is not None or lse_out is not None:
        raise ValueError("out/lse_out: supported for PyTorch tensors only; NumPy, CuPy and JAX calls return new "
                         "arrays")


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, *,
                     causal: bool = False, window: Sequence[int] = _UNBOUNDED, softcap: float = 0.0, sinks=None,
                     scale: Optional[float] = None, return_lse: bool = False, deterministic: bool = False,
                     backend: str = "auto", out=None, lse_out=None):
    """Dense softmax attention over packed variable-length sequences.

    Args:
        q: ``[Tq, Hq, D]``, k: ``[Tk, Hkv, D]``, v: ``[Tk, Hkv, Dv]``: the tokens of all sequences, packed.
        cu_seqlens_q, cu_seqlens_k: int32 ``[N + 1]``, start at 0, non-decreasing, end at Tq / Tk;
            sequence n owns rows ``cu[n]:cu[n + 1]``. Masks apply per sequence, bottom-right aligned to
            that sequence's own lengths. Offsets on the host are checked; offsets on a GPU are not read
            (no host sync): the kernels clamp to the token counts instead.
        max_seqlen_q, max_seqlen_k: upper bounds of the sequence lengths (ints).
        The keyword arguments are those of :func:`attention` (out ``[Tq, Hq, Dv]``, lse_out ``[Hq, Tq]``).

    Returns:
        out ``[Tq, Hq, Dv]``, or ``(out, lse)`` with lse ``[Hq, Tq]`` (fp32) when ``return_lse``.
    """
    check_varlen_pair(cu_seqlens_q, cu_seqlens_k)
    if cu_seqlens_q is None:
        raise ValueError("attention_varlen: cu_seqlens_q and cu_seqlens_k are required")
    left, right, code, scale, softcap = _options(window, backend, scale, softcap)
    max_q, max_k = _max_seqlens(max_seqlen_q, max_seqlen_k)
    support = _torch_support(q)
    if support is not None:
        return support.attention(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale, bool(causal),
                                 left, right, softcap, bool(deterministic), backend, code, bool(return_lse), out,
                                 lse_out)
    _no_out_arrays(out, lse_out)
    out, lse = _dlpack_forward(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale, bool(causal), left,
                               right, softcap, code, bool(return_lse))
    return (out, lse) if return_lse else out


def attention_backward(dout, q, k, v, out, lse, *, sinks=None, cu_seqlens_q=None, cu_seqlens_k=None,
                       max_seqlen_q: int = 0, max_seqlen_k: int = 0, causal: bool = False,
                       window: Sequence[int] = _UNBOUNDED, softcap: float = 0.0, scale: Optional[float] = None,
                       deterministic: bool = False, backend: str = "auto") -> Gradients:
    """The backward pass of :func:`attention` / :func:`attention_varlen`, for frameworks without autograd.

    Takes the forward's inputs and options, its ``out`` and ``lse`` (``return_lse=True``), and ``dout``
    (the gradient of out, shaped like out). Returns :class:`Gradients` ``(dq, dk, dv, dsinks)``: dq, dk,
    dv shaped like q, k, v in their dtype, where dk and dv of a kv head sum over its G query heads;
    dsinks fp32 ``[Hq]`` when sinks are given, else None (``dsink_h = -sum_i exp(sink_h - lse_i) *
    <dO_i, O_i>``). A row with no visible key gets dq = 0 and adds nothing to dk, dv. With
    ``deterministic=True`` every output is bit-identical from run to run.

    PyTorch users get the same through autograd; this function works for torch tensors too.
    """
    varlen = check_varlen_pair(cu_seqlens_q, cu_seqlens_k)
    left, right, code, scale, softcap = _options(window, backend, scale, softcap)
    max_q, max_k = _max_seqlens(max_seqlen_q, max_seqlen_k) if varlen else (0, 0)
    support = _torch_support(q)
    if support is not None:
        dq, dk, dv, dsinks = support.backward(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_q,
                                              max_k, scale, bool(causal), left, right, softcap,
                                              bool(deterministic), backend)
        return Gradients(dq, dk, dv, dsinks if sinks is not None else None)
    return _dlpack_backward(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale,
                            bool(causal), left, right, softcap, bool(deterministic), code)


def _max_seqlens(max_seqlen_q, max_seqlen_k) -> Tuple[int, int]:
    import operator

    try:
        return operator.index(max_seqlen_q), operator.index(max_seqlen_k)
    except TypeError:
        raise ValueError(
            f"max_seqlen_q / max_seqlen_k: expected ints, got {max_seqlen_q!r} / {max_seqlen_k!r}") from None


attention.__doc__ += _SEMANTICS + _ERRORS
attention_varlen.__doc__ += _SEMANTICS + _ERRORS
attention_backward.__doc__ += _SEMANTICS + _ERRORS


# ----------------------------------------------------------------------------------------------------
# explain and build_info.


@dataclass(frozen=True)
class BackendVerdict:
    """One backend's answer to a call: usable or not, and why."""

    backend: str
    usable: bool
    reason: str


@dataclass(frozen=True)
class Explanation:
    """Which backend would run a call and why every other one would not (see :func:`explain`).

    ``status`` is "ok" when the arguments are valid, else the error class ("invalid argument", ...),
    with ``message`` saying what is wrong. ``chosen`` is the backend that would run, or None.
    """

    status: str
    message: str
    chosen: Optional[str]
    verdicts: Tuple[BackendVerdict, ...]
    text: str

    @property
    def valid(self) -> bool:
        return self.status == "ok"

    def __str__(self) -> str:
        return self.text


def explain(q, k, v, *, causal: bool = False, window: Sequence[int] = _UNBOUNDED, softcap: float = 0.0,
            sinks=None, scale: Optional[float] = None, cu_seqlens_q=None, cu_seqlens_k=None,
            max_seqlen_q: int = 0, max_seqlen_k: int = 0, backward: bool = False, deterministic: bool = False,
            backend: str = "auto") -> Explanation:
    """Which backend would run this call (forward, or backward with ``backward=True``) and why every other
    one would not, without running it. Invalid arguments are reported in the result, not raised.

    Takes the arguments of :func:`attention` (varlen: pass cu_seqlens_q/k and max_seqlen_q/k). The
    outputs the real call would allocate are allocated for the check (and discarded).
    """
    try:
        varlen = check_varlen_pair(cu_seqlens_q, cu_seqlens_k)
        left, right, code, scale, softcap = _options(window, backend, scale, softcap)
        max_q, max_k = _max_seqlens(max_seqlen_q, max_seqlen_k) if varlen else (0, 0)
        out_shape, lse_shape = forward_shapes(q, v, varlen)
    except ValueError as error:
        return Explanation("invalid argument", str(error), None, (), f"the arguments are invalid: {error}")
    support = _torch_support(q)
    if support is not None:
        result = support.explain(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale, bool(causal),
                                 left, right, softcap, bool(deterministic), code, out_shape, lse_shape,
                                 bool(backward))
    else:
        arrays = _arrays.arrays_for(q)
        view = arrays.view
        out = arrays.empty(out_shape, q.dtype)
        lse = arrays.empty(lse_shape, "float32")
        common = (view("q", q), view("k", k), view("v", v), view("out", out))
        options = (scale, bool(causal), left, right, softcap, code, arrays.stream(q))
        if backward:
            dq, dk, dv, dsinks = _dlpack_gradients(arrays, q, k, v, sinks)
            result = _ext.dense_explain_backward(arrays.importer, *common, view("dout", out), lse, view("dq", dq),
                                                 view("dk", dk), view("dv", dv), view("sinks", sinks), dsinks,
                                                 view("cu_seqlens_q", cu_seqlens_q),
                                                 view("cu_seqlens_k", cu_seqlens_k), max_q, max_k,
                                                 bool(deterministic), *options)
        else:
            result = _ext.dense_explain_forward(arrays.importer, *common, lse, view("sinks", sinks),
                                                view("cu_seqlens_q", cu_seqlens_q),
                                                view("cu_seqlens_k", cu_seqlens_k), max_q, max_k, *options)
    return _explanation(result)


def _explanation(result) -> Explanation:
    status, message, chosen, verdicts, text = result
    return Explanation(status, message, chosen or None, tuple(BackendVerdict(*v) for v in verdicts), text)


@dataclass(frozen=True)
class BuildInfo:
    """What this build of attnkit contains, and the CUDA devices it sees."""

    version: str
    cuda_enabled: bool
    cuda_archs: Tuple[str, ...]
    compiled_backends: Tuple[str, ...]
    compiler: str
    cuda_devices: Tuple[dict, ...]
    cuda_devices_note: str  # why there is no CUDA device, or ""


def build_info() -> BuildInfo:
    """The version, compiled backends and CUDA archs of this build, and the visible CUDA devices."""
    info = _ext.build_info()
    devices, why_none = _ext.cuda_devices()
    archs = tuple(a for a in info["cuda_archs"].split(";") if a)
    return BuildInfo(info["version"], info["cuda_enabled"], archs, tuple(info["compiled_backends"].split()),
                     info["compiler"], tuple(devices), why_none)


__all__: List[str] = [
    "attention", "attention_varlen", "attention_backward", "explain", "build_info", "Gradients", "Explanation",
    "BackendVerdict", "BuildInfo",
]
