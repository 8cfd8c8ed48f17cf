"""Linear attention of the delta-rule family (Gated DeltaNet, KDA): forward, backward and the recurrent
decode step.

The same pattern as dense attention: arguments are normalised here, outputs allocated in q's framework on
q's device, and the C++ library (include/attnkit/linear.h) validates and runs the call. With PyTorch the
three calls are also the torch.library ops ``attnkit::linear_fwd`` (with autograd), ``attnkit::linear_bwd``
and ``attnkit::linear_decode`` (mutating its state argument), in python/attnkit/_torch_ops.py; as for dense
attention, torch.compile, functorch transforms and tensor subclasses take the ops, and an eager call on
plain tensors skips the op dispatch (an autograd.Function when a gradient is wanted).
"""

import sys
from typing import Any, NamedTuple, Optional

from . import _arrays, _ext
from ._core import _torch_support
from ._layout import backend_code, real_float

VARIANTS = {"gdn": 0, "kda": 1}
GATE_FORMS = {"log_decay": 0, "softplus": 1, "lower_bound_sigmoid": 2}
BETA_FORMS = {"value": 0, "sigmoid": 1, "two_sigmoid": 2}
STATE_LAYOUTS = {"kv": 0, "vk": 1}

_SEMANTICS = """
    Semantics (semantics.md section 5; include/attnkit/linear.h): per sequence and value head j (q/k head
    ``h = j // G``, ``HV = G * H``) with an fp32 state ``S`` of shape ``[K, V]``:

    - GDN: ``S' = exp(g_t) S_{t-1}``; KDA: ``S' = diag(exp(g_t)) S_{t-1}`` (g ``[..., HV, K]``).
    - ``S_t = S' + beta_t k_t (v_t - S'^T k_t)^T`` and ``o_t = S_t^T (scale q_t)``: **the output reads
      the state after the token is written**. scale defaults to ``K^-0.5``; g are natural-log decays (<= 0).
    - ``l2norm_qk``: ``x * rsqrt(sum x^2 + 1e-6)`` for q and k first. ``gate="softplus"``:
      ``g = -exp(A_log[j]) * softplus(g + dt_bias)``; ``gate="lower_bound_sigmoid"``:
      ``g = lb * sigmoid(exp(A_log[j]) * (g + dt_bias))`` with ``-5 <= lb < 0``. ``beta_form="sigmoid"``:
      ``beta = sigmoid(beta)``; ``"two_sigmoid"``: ``2 sigmoid(beta)`` (negative eigenvalues).
    - Layout: q, k ``[B, T, H, K]``; v and out ``[B, T, HV, V]``; beta ``[B, T, HV]``; g ``[B, T, HV]``
      (GDN) or ``[B, T, HV, K]`` (KDA). States fp32 ``[N, HV, K, V]`` (``state_layout="vk"``: ``[N, HV, V,
      K]``). Varlen: B = 1 and ``cu_seqlens`` int32 ``[N + 1]``; otherwise N = B. q, k, v share fp16,
      bf16 or fp32 (fp32: CPU backend); g and beta are fp32 or q's dtype; the last dim is contiguous.

    Raises:
        ValueError: a bad argument; the message names it, the expected and the actual value.
        NotImplementedError: valid, but no backend of this build can run it (every reason listed).
        RuntimeError: a CUDA error, or an internal error.
        TypeError: an argument that is not an array of a supported framework.
"""


def _code(name: str, table: dict, value) -> int:
    code = table.get(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError(f"{name}: expected one of {', '.join(table)}, got {value!r}")
    return code


def _options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend):
    return (_code("variant", VARIANTS, variant), None if scale is None else real_float("scale", scale),
            bool(l2norm_qk), _code("gate", GATE_FORMS, gate), real_float("gate_lower_bound", gate_lower_bound),
            _code("beta_form", BETA_FORMS, beta_form), _code("state_layout", STATE_LAYOUTS, state_layout),
            backend_code(backend))


def _names(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend, options):
    """The options as the torch ops take them (names, not codes), after _options validated them."""
    return (variant, options[1], options[2], gate, options[4], beta_form, state_layout, backend)


def _rank(name: str, array, rank: int, layout: str) -> tuple:
    shape = getattr(array, "shape", None)
    if shape is None:
        raise TypeError(f"{name}: expected an array or tensor, got {type(array).__name__}")
    if len(shape) != rank:
        raise ValueError(f"{name}: expected rank {rank} ({layout}), got rank {len(shape)} with shape {tuple(shape)}")
    return tuple(shape)


def _state_shape(sequences: int, v_shape: tuple, key_dim: int, layout_code: int) -> tuple:
    heads_v, value_dim = v_shape[2], v_shape[3]
    return (sequences, heads_v, key_dim, value_dim) if layout_code == 0 else (sequences, heads_v, value_dim, key_dim)


class _Frame:
    """Allocation, importer, stream and workspace for q's framework (torch, or the DLPack adapters)."""

    def __init__(self, q, inputs):
        from ._core import _torch_support

        self.torch_ops = _torch_support(q)
        if self.torch_ops is not None:
            self.torch = sys.modules["torch"]
            self.importer = self.torch_ops.IMPORTER_TORCH
            self.stream = self.torch_ops._stream(q)
            self.workspace = self.torch_ops._workspace
            self.arrays = None
        else:
            self.arrays = _arrays.arrays_for(q)
            self.arrays.wait_inputs(*inputs)
            self.importer = self.arrays.importer
            self.stream = self.arrays.stream(q)
            self.workspace = self.arrays.workspace

    def empty(self, q, shape, dtype_of=None):
        """An uninitialised array on q's device, in the dtype of `dtype_of` (an array), else fp32."""
        if self.arrays is None:
            dtype = self.torch.float32 if dtype_of is None else dtype_of.dtype
            return self.torch.empty(tuple(shape), dtype=dtype, device=q.device)
        return self.arrays.empty(tuple(shape), "float32" if dtype_of is None else dtype_of.dtype)

    def view(self, name, array):
        return array if self.arrays is None else self.arrays.view(name, array)

    def finish(self, array):
        return array if self.arrays is None or array is None else self.arrays.finish(array)


def _forward(frame, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, options, output_final_state):
    q_shape = _rank("q", q, 4, "[B, T, H, K]")
    v_shape = _rank("v", v, 4, "[B, T, HV, V]")
    out = frame.empty(q, v_shape, q)
    final_state = None
    if output_final_state:
        sequences = q_shape[0] if cu_seqlens is None else _rank("cu_seqlens", cu_seqlens, 1, "[N + 1]")[0] - 1
        final_state = frame.empty(q, _state_shape(max(sequences, 0), v_shape, q_shape[3], options[6]))
    view = frame.view
    _ext.linear_forward(frame.importer, view("q", q), view("k", k), view("v", v), view("g", g), view("beta", beta),
                        view("A_log", A_log), view("dt_bias", dt_bias), view("out", out),
                        view("initial_state", initial_state), view("final_state", final_state),
                        view("cu_seqlens", cu_seqlens), *options, frame.stream, frame.workspace)
    return out, final_state


def _backward(frame, dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, options):
    """LinearGradients in q's framework: each gradient shaped and typed like its input (fp32 for the
    states and the gate parameters), None where the input was not given."""
    for name, array in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        if getattr(array, "shape", None) is None:
            raise TypeError(f"{name}: expected an array or tensor, got {type(array).__name__}")

    def like(array):
        return None if array is None else frame.empty(q, array.shape, array)

    def fp32_like(array):
        return None if array is None else frame.empty(q, array.shape)

    grads = LinearGradients(like(q), like(k), like(v), like(g), like(beta), fp32_like(initial_state),
                            fp32_like(A_log), fp32_like(dt_bias))
    view = frame.view
    _ext.linear_backward(frame.importer, view("q", q), view("k", k), view("v", v), view("g", g), view("beta", beta),
                         view("A_log", A_log), view("dt_bias", dt_bias), view("initial_state", initial_state),
                         view("cu_seqlens", cu_seqlens), view("dout", dout), view("dfinal_state", dfinal_state),
                         view("dq", grads.dq), view("dk", grads.dk), view("dv", grads.dv), view("dg", grads.dg),
                         view("dbeta", grads.dbeta), view("d_initial_state", grads.d_initial_state),
                         view("dA_log", grads.dA_log), view("ddt_bias", grads.ddt_bias), *options, frame.stream,
                         frame.workspace)
    return LinearGradients(*(frame.finish(grad) for grad in grads))


class LinearGradients(NamedTuple):
    """Gradients of :func:`linear_attention_backward`, each shaped like its input; d_initial_state, dA_log
    and ddt_bias are fp32 and None when that input was not given."""

    dq: Any
    dk: Any
    dv: Any
    dg: Any
    dbeta: Any
    d_initial_state: Any
    dA_log: Any
    ddt_bias: Any


def linear_attention(q, k, v, g, beta, *, variant: str = "gdn", scale: Optional[float] = None, initial_state=None,
                     output_final_state: bool = False, cu_seqlens=None, l2norm_qk: bool = False,
                     gate: str = "log_decay", A_log=None, dt_bias=None, gate_lower_bound: float = -5.0,
                     beta_form: str = "value", state_layout: str = "kv", backend: str = "auto"):
    """Chunked linear attention (prefill/training forward): Gated DeltaNet (``variant="gdn"``) or KDA
    (``variant="kda"``).

    Args:
        q, k: ``[B, T, H, K]``. v: ``[B, T, HV, V]``. g: the gate (``[B, T, HV]`` GDN, ``[B, T, HV, K]``
            KDA): log decays, or raw values with a fused ``gate``. beta: ``[B, T, HV]``, or logits with a
            fused ``beta_form``. NumPy, PyTorch, CuPy or JAX arrays, all of one framework and device.
        initial_state: optional fp32 state per sequence (absent = zeros).
        output_final_state: also return the state after each sequence's last token.
        cu_seqlens: varlen offsets, int32 ``[N + 1]`` (B must be 1).
        A_log: fp32 ``[HV]``, required with a fused gate; dt_bias: fp32 ``[HV]`` (GDN) or ``[HV, K]`` (KDA),
            optional with a fused gate.
        backend: "auto", "cpu", "sm80" or "sm90"; an explicit backend never falls back.

    Returns:
        out ``[B, T, HV, V]`` in q's dtype, or ``(out, final_state)`` (fp32) with ``output_final_state``.
        Differentiable with torch (the op ``attnkit::linear_fwd``; torch.compile(fullgraph=True) traces it).
    """
    options = _options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)
    inputs = (q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens)
    support = _torch_support(q)
    if support is not None and not support._linear_eager_fast_path(inputs):
        names = _names(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend, options)
        out, final_state = support.linear_attention_op(inputs, names, bool(output_final_state))
        return (out, final_state) if output_final_state else out
    frame = _Frame(q, inputs)
    if frame.torch_ops is not None and frame.torch_ops._linear_wants_grad(inputs):
        out, final_state = frame.torch_ops.linear_attention_autograd(frame, inputs, options, bool(output_final_state))
    else:
        out, final_state = _forward(frame, *inputs, options, bool(output_final_state))
        out, final_state = frame.finish(out), frame.finish(final_state)
    return (out, final_state) if output_final_state else out


def linear_attention_backward(dout, q, k, v, g, beta, *, dfinal_state=None, variant: str = "gdn",
                              scale: Optional[float] = None, initial_state=None, cu_seqlens=None,
                              l2norm_qk: bool = False, gate: str = "log_decay", A_log=None, dt_bias=None,
                              gate_lower_bound: float = -5.0, beta_form: str = "value", state_layout: str = "kv",
                              backend: str = "auto") -> LinearGradients:
    """The backward of :func:`linear_attention` for frameworks without autograd: the gradients of
    ``L = <dout, out> + <dfinal_state, final_state>`` (``dfinal_state`` None = 0) with respect to the
    tensors as passed (with a fused gate, dg is d/d(raw g); with a fused beta, dbeta is d/d(logits); with
    l2norm_qk, dq and dk are with respect to the unnormalised q and k). Takes the forward's inputs and
    options; every intermediate is recomputed. Returns :class:`LinearGradients`; dq and dk of a q/k head
    sum over its G value heads. PyTorch users get the same through autograd.
    """
    options = _options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)
    inputs = (q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens)
    support = _torch_support(q)
    if support is not None and not support._linear_eager_fast_path((dout, dfinal_state) + inputs):
        names = _names(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend, options)
        return LinearGradients(*support.linear_backward_op(dout, dfinal_state, inputs, names))
    frame = _Frame(q, (dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens))
    return _backward(frame, dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, options)


def linear_decode(q, k, v, g, beta, state, *, state_indices=None, variant: str = "gdn", scale: Optional[float] = None,
                  l2norm_qk: bool = False, gate: str = "log_decay", A_log=None, dt_bias=None,
                  gate_lower_bound: float = -5.0, beta_form: str = "value", state_layout: str = "kv",
                  backend: str = "auto"):
    """The recurrent step for serving: T = 1 (or a few tokens) per sequence, the state updated in place.

    Args:
        q, k: ``[N, T, H, K]``; v: ``[N, T, HV, V]``; g, beta: as in :func:`linear_attention` with B = N.
        state: fp32 ``[P, HV, K, V]`` (or ``[P, HV, V, K]``), read and written in place. Without
            ``state_indices`` P = N and sequence n owns ``state[n]``.
        state_indices: optional int32 ``[N]``: sequence n owns ``state[state_indices[n]]`` of a pool of P
            states; a negative index marks a padding slot (its out rows are zeros, no state is touched).
            Indices must be < P and distinct (checked on the host; GPU kernels skip an index >= P).
        The other keyword arguments are those of :func:`linear_attention`.

    Returns:
        out ``[N, T, HV, V]`` in q's dtype. With JAX, ``state`` cannot be updated in place: pass NumPy or
        CuPy arrays (or torch tensors) for decode. With torch it is the op ``attnkit::linear_decode``
        (state declared mutated), so ``torch.compile(fullgraph=True)`` traces it; no autograd.
    """
    options = _options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)
    support = _torch_support(q)
    if support is not None:
        if support._linear_wants_grad((q, k, v, g, beta, A_log, dt_bias, state)):
            raise NotImplementedError("linear_decode: no autograd (it updates the state in place, for serving); "
                                      "call it under torch.no_grad() or pass detached tensors")
        if not support._linear_eager_fast_path((q, k, v, g, beta, A_log, dt_bias, state, state_indices)):
            names = _names(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend,
                           options)
            return support.linear_decode_op_call(q, k, v, g, beta, A_log, dt_bias, state, state_indices, names)
    frame = _Frame(q, (q, k, v, g, beta, A_log, dt_bias, state, state_indices))
    if isinstance(frame.arrays, _arrays.JaxArrays):
        raise NotImplementedError("linear_decode: JAX arrays are immutable and the state is updated in place; "
                                  "pass NumPy or CuPy arrays, or torch tensors")
    if getattr(getattr(state, "flags", None), "writeable", True) is False:
        raise ValueError("state: is read-only, but linear_decode updates it in place")
    return frame.finish(_decode(frame, q, k, v, g, beta, A_log, dt_bias, state, state_indices, options))


def _decode(frame, q, k, v, g, beta, A_log, dt_bias, state, state_indices, options):
    _rank("q", q, 4, "[N, T, H, K]")
    v_shape = _rank("v", v, 4, "[N, T, HV, V]")
    out = frame.empty(q, v_shape, q)
    view = frame.view
    _ext.linear_decode(frame.importer, view("q", q), view("k", k), view("v", v), view("g", g), view("beta", beta),
                       view("A_log", A_log), view("dt_bias", dt_bias), view("out", out), view("state", state),
                       view("state_indices", state_indices), *options, frame.stream, frame.workspace)
    return out


linear_attention.__doc__ += _SEMANTICS
linear_attention_backward.__doc__ += _SEMANTICS
linear_decode.__doc__ += _SEMANTICS
