"""PyTorch support: torch.library ops with fake (meta) implementations, autograd, the eager fast path.

Loaded only when torch is (see _core._torch_support). Registers the dense ops:

- ``attnkit::dense_fwd(q, k, v, sinks?, cu_seqlens_q?, cu_seqlens_k?, max_seqlen_q, max_seqlen_k, scale?,
  causal, window_left, window_right, softcap, deterministic, backend) -> (out, lse)``
- ``attnkit::dense_bwd(dout, q, k, v, out, lse, sinks?, cu_seqlens_q?, cu_seqlens_k?, max_seqlen_q,
  max_seqlen_k, scale?, causal, window_left, window_right, softcap, deterministic, backend)
  -> (dq, dk, dv, dsinks)`` (dsinks is an empty tensor when there are no sinks)

Both have fake implementations (shapes only), so torch.compile(fullgraph=True) traces them without a
graph break, and dense_fwd's autograd formula calls dense_bwd. The ops allocate contiguous outputs;
kernels run on the current CUDA stream of the tensors' device, and nothing synchronises the host
(cu_seqlens on a GPU are never read back).

and the linear attention ops (python/attnkit/_linear.py), built the same way:

- ``attnkit::linear_fwd(q, k, v, g, beta, A_log?, dt_bias?, initial_state?, cu_seqlens?, variant, scale?,
  l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend, output_final_state)
  -> (out, final_state)`` (final_state is an empty fp32 tensor without output_final_state), whose autograd
  formula calls
- ``attnkit::linear_bwd(dout, dfinal_state?, q, k, v, g, beta, A_log?, dt_bias?, initial_state?,
  cu_seqlens?, <the same options>) -> (dq, dk, dv, dg, dbeta, d_initial_state, dA_log, ddt_bias)`` (the last
  three empty where their input is None);
- ``attnkit::linear_decode(q, k, v, g, beta, A_log?, dt_bias?, state, state_indices?, <options>) -> out``,
  mutating state (declared in mutates_args; no autograd).

Eager fast path: a call on plain tensors outside tracing skips the op dispatch. Without a gradient to
record it calls the library directly; with one it goes through ``_EagerAttention``, an autograd.Function
making the same two library calls as the ops and their autograd formula. Both compute the same thing
as the ops and only cost less host time; torch.compile and tensor subclasses take the ops.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

from . import _ext
from ._layout import BACKENDS, forward_shapes

IMPORTER_TORCH = 0

# The current CUDA stream of a device as an int, without building a torch.cuda.Stream object (the public
# torch.cuda.current_stream(i).cuda_stream costs a few microseconds more per call).
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
if _raw_stream is None:  # pragma: no cover - older torch

    def _raw_stream(index: int) -> int:
        return torch.cuda.current_stream(index).cuda_stream


_ext.set_torch_types(Tensor, torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.uint8,
                     _raw_stream, torch.empty_like)


_current_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_is_grad_enabled = torch.is_grad_enabled
# nn.Parameter is a plain tensor to torch (its __torch_function__ is disabled): learned sinks often are one.
_PLAIN_TYPES = (Tensor, Parameter)


def _stream(t: Tensor) -> int:
    return _raw_stream(t.get_device()) if t.is_cuda else 0


def _workspace(nbytes: int, like: Tensor):
    """Scratch memory for the C++ call, from torch's allocator on like's device (stream-ordered: freed
    when the call returns, reused only by work queued after it on the same stream)."""
    buffer = torch.empty(nbytes, dtype=torch.uint8, device=like.device)
    return buffer, buffer.data_ptr()


def _forward_impl(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap, backend_code,
                  need_lse) -> Tuple[Tensor, Optional[Tensor]]:
    """The forward in one extension call: it allocates out (and lse) and runs on the current stream of q's
    device (a backend's workspace is the stream's reusable buffer, tensor_import.h)."""
    result = _ext.dense_forward_torch(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap,
                                      backend_code, need_lse, None, None)
    return _rank_checked(result, q, v, cu_q)


def _rank_checked(result, q, v, cu_q):
    """The extension's result; where it refused the ranks (None), the rank error of forward_shapes, so that
    the message is the same on every path."""
    if result is None:
        forward_shapes(q, v, cu_q is not None)  # raises the rank error
        raise RuntimeError("internal error: the extension refused ranks that forward_shapes accepts")
    return result


def _gradients(q, k, v, sinks):
    """dq, dk, dv contiguous in the inputs' shapes and dtype; dsinks fp32 [Hq] (empty without sinks).
    With Hq = 0 the C++ call has no work and writes nothing: dk, dv start as zeros then. dsinks always
    starts as zeros (a [Hq] fill) for the same reason."""
    heads_q = q.shape[-2]
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    make = torch.zeros if heads_q == 0 else torch.empty
    dk = make(k.shape, dtype=k.dtype, device=k.device)
    dv = make(v.shape, dtype=v.dtype, device=v.device)
    dsinks = torch.zeros((heads_q if sinks is not None else 0,), dtype=torch.float32, device=q.device)
    return dq, dk, dv, dsinks


def _backward_impl(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap,
                   deterministic, backend_code):
    if q.is_cuda and q.get_device() != _current_device():
        with torch.cuda.device(q.get_device()):  # kernels launch on the current device
            return _backward_impl(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left,
                                  right, softcap, deterministic, backend_code)
    dq, dk, dv, dsinks = _gradients(q, k, v, sinks)
    _ext.dense_backward(IMPORTER_TORCH, q, k, v, out, dout, lse, dq, dk, dv, sinks,
                        dsinks if sinks is not None else None, cu_q, cu_k, max_q, max_k, deterministic, scale, causal,
                        left, right, softcap, backend_code, _stream(q), _workspace)
    return dq, dk, dv, dsinks


# ----------------------------------------------------------------------------------------------------
# torch.library ops.


@torch.library.custom_op("attnkit::dense_fwd", mutates_args=())
def dense_fwd(q: Tensor, k: Tensor, v: Tensor, sinks: Optional[Tensor], cu_seqlens_q: Optional[Tensor],
              cu_seqlens_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int, scale: Optional[float],
              causal: bool, window_left: int, window_right: int, softcap: float, deterministic: bool,
              backend: str) -> Tuple[Tensor, Tensor]:
    out, lse = _forward_impl(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                             window_left, window_right, softcap, BACKENDS[backend], True)
    return out, lse


@dense_fwd.register_fake
def _dense_fwd_fake(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                    window_left, window_right, softcap, deterministic, backend):
    out_shape, lse_shape = forward_shapes(q, v, cu_seqlens_q is not None)
    return q.new_empty(out_shape), q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("attnkit::dense_bwd", mutates_args=())
def dense_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, sinks: Optional[Tensor],
              cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int,
              scale: Optional[float], causal: bool, window_left: int, window_right: int, softcap: float,
              deterministic: bool, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _backward_impl(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                          scale, causal, window_left, window_right, softcap, deterministic, BACKENDS[backend])


@dense_bwd.register_fake
def _dense_bwd_fake(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                    causal, window_left, window_right, softcap, deterministic, backend):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            q.new_empty((q.shape[-2] if sinks is not None else 0,), dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    (q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap, deterministic, backend) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, sinks, cu_q, cu_k)
    ctx.options = (max_q, max_k, scale, causal, left, right, softcap, deterministic, backend)
    # lse is returned for inspection (and for merging partial results); no gradient flows through it.
    ctx.mark_non_differentiable(lse)


def _dense_fwd_backward(ctx, dout, _dlse):
    q, k, v, out, lse, sinks, cu_q, cu_k = ctx.saved_tensors
    max_q, max_k, scale, causal, left, right, softcap, deterministic, backend = ctx.options
    if dout.stride(-1) != 1:  # e.g. the expanded gradient of out.sum(): the library needs stride 1
        dout = dout.contiguous()
    dq, dk, dv, dsinks = torch.ops.attnkit.dense_bwd(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale,
                                                     causal, left, right, softcap, deterministic, backend)
    return (dq, dk, dv, dsinks if sinks is not None else None) + (None,) * 11


dense_fwd.register_autograd(_dense_fwd_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------
# Entry points used by _core.


class _EagerAttention(torch.autograd.Function):
    """dense_fwd with dense_fwd's autograd formula, for eager calls: the library's forward and backward
    without the op dispatch in between (outputs and gradients are those of the ops). Options travel as one
    tuple: apply's cost grows with the argument count. forward takes ctx itself: with a separate
    setup_context, Function.apply binds the arguments through inspect.signature on every call (about
    150 us a call on the 2-core CI VM)."""

    @staticmethod
    def forward(ctx, q, k, v, sinks, cu_q, cu_k, options):
        max_q, max_k, scale, causal, left, right, softcap, deterministic, backend_code = options
        out, lse = _forward_impl(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap,
                                 backend_code, True)
        ctx.save_for_backward(q, k, v, out, lse, sinks, cu_q, cu_k)
        ctx.options = options
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, sinks, cu_q, cu_k = ctx.saved_tensors
        max_q, max_k, scale, causal, left, right, softcap, deterministic, backend_code = ctx.options
        if dout.stride(-1) != 1:  # e.g. the expanded gradient of out.sum(): the library needs stride 1
            dout = dout.contiguous()
        dq, dk, dv, dsinks = _backward_impl(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, causal,
                                            left, right, softcap, deterministic, backend_code)
        return dq, dk, dv, dsinks if sinks is not None else None, None, None, None


# Function.apply without its Python wrapper, whose work (binding defaults for setup_context, unwrapping
# dead functorch wrappers) has nothing to do here: the eager fast path (attention) has ruled functorch out.
# (Function.apply ends in the same call: super().apply, the C++ apply of torch._C._FunctionBase.)
_eager_attention = super(torch.autograd.Function, _EagerAttention).apply


def _plain(t) -> bool:
    return type(t) in _PLAIN_TYPES


def _wants_grad(q, k, v, sinks) -> bool:
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad
                                        or (sinks is not None and sinks.requires_grad))


def _check_tensors(**tensors) -> None:
    """TypeError for an argument that is not a torch tensor (the op's own parser would raise RuntimeError)."""
    for name, t in tensors.items():
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor (like q), got {type(t).__module__}.{type(t).__qualname__}")


_OUT_WITH_GRAD = ("out/lse_out: not supported when autograd records the call (an input requires grad): the "
                  "outputs must be new tensors for autograd; call under torch.no_grad() or leave out= and lse_out= "
                  "unset")


def _copy_into(name: str, dest, result: Tensor) -> None:
    """dest.copy_(result) for out=/lse_out= on the op path, with the checks the library makes on the fast path
    (copy_ itself would broadcast, cast and cross devices silently)."""
    if not isinstance(dest, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (like q), got {type(dest).__module__}."
                        f"{type(dest).__qualname__}")
    if dest.shape != result.shape or dest.dtype != result.dtype or dest.device != result.device:
        raise ValueError(f"{name}: expected shape {tuple(result.shape)}, dtype {result.dtype} on {result.device}, got "
                         f"shape {tuple(dest.shape)}, dtype {dest.dtype} on {dest.device}")
    if dest.dim() > 0 and dest.stride(-1) != 1 and dest.shape[-1] > 1:
        raise ValueError(f"{name}: the last dimension must be contiguous (stride 1), got stride {dest.stride(-1)}")
    dest.copy_(result)


def attention(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap, deterministic, backend,
              backend_code, return_lse, out, lse_out):
    # The eager fast path: a call on plain tensors (or Parameters) outside tracing and functorch transforms
    # skips the op dispatch. The checks are written out here, cheapest decisive one first, because every
    # Python call they would make costs this path about 0.1 us (bench/python/NOTES.md).
    if (not (_is_compiling() or _functorch_active()) and type(q) in _PLAIN_TYPES and type(k) in _PLAIN_TYPES
            and type(v) in _PLAIN_TYPES and (sinks is None or type(sinks) in _PLAIN_TYPES)):
        if _is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad
                                   or (sinks is not None and sinks.requires_grad)):
            if out is not None or lse_out is not None:
                raise ValueError(_OUT_WITH_GRAD)
            out, lse = _eager_attention(q, k, v, sinks, cu_q, cu_k,
                                        (max_q, max_k, scale, causal, left, right, softcap, deterministic, backend_code))
        else:
            result = _ext.dense_forward_torch(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right,
                                              softcap, backend_code, return_lse, out, lse_out)
            out, lse = result if result is not None else _rank_checked(result, q, v, cu_q)
    else:
        _check_tensors(k=k, v=v, sinks=sinks, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
        forward_shapes(q, v, cu_q is not None)  # rank errors as ValueError before the op (also when tracing)
        given_out, given_lse = out, lse_out
        if (given_out is not None or given_lse is not None) and _wants_grad(q, k, v, sinks):
            raise ValueError(_OUT_WITH_GRAD)
        out, lse = torch.ops.attnkit.dense_fwd(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right,
                                               softcap, deterministic, backend)
        if given_out is not None:
            _copy_into("out", given_out, out)
            out = given_out
        if given_lse is not None:
            _copy_into("lse_out", given_lse, lse)
            lse = given_lse
    return (out, lse) if return_lse else out


def backward(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap,
             deterministic, backend):
    _check_tensors(dout=dout, k=k, v=v, out=out, lse=lse, sinks=sinks, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    if lse is None:  # the op's schema needs a tensor; say it as the C++ validation does
        raise ValueError("lse: backward needs the fp32 lse written by forward")
    return torch.ops.attnkit.dense_bwd(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left,
                                       right, softcap, deterministic, backend)


def explain(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap, deterministic,
            backend_code, out_shape, lse_shape, backward):
    out = torch.empty(out_shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    options = (scale, causal, left, right, softcap, backend_code, _stream(q))
    if backward:
        dq, dk, dv, dsinks = _gradients(q, k, v, sinks)
        return _ext.dense_explain_backward(IMPORTER_TORCH, q, k, v, out, out, lse, dq, dk, dv, sinks,
                                           dsinks if sinks is not None else None, cu_q, cu_k, max_q, max_k,
                                           deterministic, *options)
    return _ext.dense_explain_forward(IMPORTER_TORCH, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, *options)


# ----------------------------------------------------------------------------------------------------
# Linear attention (python/attnkit/_linear.py): the ops attnkit::linear_fwd, attnkit::linear_bwd and
# attnkit::linear_decode, and the eager fast path. Options travel to the ops by name (variant, gate,
# beta_form, state_layout, backend: the strings linear_attention takes, already validated); each op
# turns them into the library's codes with _linear._options.


def _linear_options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend):
    from ._linear import _options

    return _options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)


def _none_to_empty(t: Optional[Tensor], like: Tensor) -> Tensor:
    """An op cannot return None: an absent output is an empty fp32 tensor on like's device."""
    return torch.empty((0,), dtype=torch.float32, device=like.device) if t is None else t


def _linear_state_shape(q, v, cu_seqlens, state_layout) -> Tuple:
    from ._linear import STATE_LAYOUTS, _state_shape

    sequences = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    return _state_shape(sequences, tuple(v.shape), q.shape[3], STATE_LAYOUTS[state_layout])


@torch.library.custom_op("attnkit::linear_fwd", mutates_args=())
def linear_fwd(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, A_log: Optional[Tensor],
               dt_bias: Optional[Tensor], initial_state: Optional[Tensor], cu_seqlens: Optional[Tensor], variant: str,
               scale: Optional[float], l2norm_qk: bool, gate: str, gate_lower_bound: float, beta_form: str,
               state_layout: str, backend: str, output_final_state: bool) -> Tuple[Tensor, Tensor]:
    from ._linear import _forward, _Frame

    options = _linear_options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)
    out, final_state = _forward(_Frame(q, ()), q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, options,
                                output_final_state)
    return out, _none_to_empty(final_state, q)


@linear_fwd.register_fake
def _linear_fwd_fake(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, variant, scale, l2norm_qk, gate,
                     gate_lower_bound, beta_form, state_layout, backend, output_final_state):
    out = q.new_empty(v.shape)
    if not output_final_state:
        return out, q.new_empty((0,), dtype=torch.float32)
    return out, q.new_empty(_linear_state_shape(q, v, cu_seqlens, state_layout), dtype=torch.float32)


@torch.library.custom_op("attnkit::linear_bwd", mutates_args=())
def linear_bwd(dout: Tensor, dfinal_state: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
               A_log: Optional[Tensor], dt_bias: Optional[Tensor], initial_state: Optional[Tensor],
               cu_seqlens: Optional[Tensor], variant: str, scale: Optional[float], l2norm_qk: bool, gate: str,
               gate_lower_bound: float, beta_form: str, state_layout: str,
               backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dq, dk, dv, dg, dbeta, d_initial_state, dA_log, ddt_bias): the last three empty where their input is
    None."""
    from ._linear import _backward, _Frame

    options = _linear_options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)
    grads = _backward(_Frame(q, ()), dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens,
                      options)
    return tuple(_none_to_empty(grad, q) for grad in grads)


@linear_bwd.register_fake
def _linear_bwd_fake(dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, variant, scale,
                     l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend):
    def fp32_like(t):
        return q.new_empty((0,) if t is None else t.shape, dtype=torch.float32)

    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), g.new_empty(g.shape),
            beta.new_empty(beta.shape), fp32_like(initial_state), fp32_like(A_log), fp32_like(dt_bias))


def _linear_setup_context(ctx, inputs, output):
    (q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens) = inputs[:9]
    ctx.save_for_backward(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens)
    ctx.options = inputs[9:17]
    ctx.output_final_state = inputs[17]


def _linear_fwd_backward(ctx, dout, dfinal_state):
    q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens = ctx.saved_tensors
    if not ctx.output_final_state:
        dfinal_state = None  # the empty placeholder output carries no gradient
    if dout.stride(-1) != 1:  # the library needs the last dimension contiguous
        dout = dout.contiguous()
    if dfinal_state is not None and dfinal_state.stride(-1) != 1:
        dfinal_state = dfinal_state.contiguous()
    grads = torch.ops.attnkit.linear_bwd(dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state,
                                         cu_seqlens, *ctx.options)
    dq, dk, dv, dg, dbeta, d_initial_state, dA_log, ddt_bias = grads
    return ((dq, dk, dv, dg, dbeta, dA_log if A_log is not None else None, ddt_bias if dt_bias is not None else None,
             d_initial_state if initial_state is not None else None, None) + (None,) * 9)


linear_fwd.register_autograd(_linear_fwd_backward, setup_context=_linear_setup_context)


@torch.library.custom_op("attnkit::linear_decode", mutates_args=("state",))
def linear_decode_op(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, A_log: Optional[Tensor],
                     dt_bias: Optional[Tensor], state: Tensor, state_indices: Optional[Tensor], variant: str,
                     scale: Optional[float], l2norm_qk: bool, gate: str, gate_lower_bound: float, beta_form: str,
                     state_layout: str, backend: str) -> Tensor:
    """out [N, T, HV, V]; state is updated in place (declared in mutates_args, so that torch.compile
    functionalises the update)."""
    from ._linear import _decode, _Frame

    options = _linear_options(variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend)
    return _decode(_Frame(q, ()), q, k, v, g, beta, A_log, dt_bias, state, state_indices, options)


@linear_decode_op.register_fake
def _linear_decode_fake(q, k, v, g, beta, A_log, dt_bias, state, state_indices, variant, scale, l2norm_qk, gate,
                        gate_lower_bound, beta_form, state_layout, backend):
    return q.new_empty(v.shape)


# ----------------------------------------------------------------------------------------------------
# Linear attention entry points used by _linear.


def _linear_eager_fast_path(tensors) -> bool:
    """True for an eager call on plain tensors (or Parameters; None allowed): then the op dispatch is
    skipped. torch.compile, functorch transforms and tensor subclasses take the ops."""
    if _is_compiling() or _functorch_active():
        return False
    return all(t is None or _plain(t) for t in tensors)


def _linear_wants_grad(inputs) -> bool:
    return torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in inputs)


def _check_linear_tensors(names, tensors) -> None:
    _check_tensors(**dict(zip(names, tensors)))


_FORWARD_NAMES = ("q", "k", "v", "g", "beta", "A_log", "dt_bias", "initial_state", "cu_seqlens")


def linear_attention_op(inputs, names, output_final_state):
    """(out, final_state or None) through attnkit::linear_fwd (traced, functorch or tensor subclasses).
    names: (variant, scale, l2norm_qk, gate, gate_lower_bound, beta_form, state_layout, backend), validated."""
    from ._linear import _rank

    _check_linear_tensors(_FORWARD_NAMES, inputs)
    q, v, cu_seqlens = inputs[0], inputs[2], inputs[8]
    _rank("q", q, 4, "[B, T, H, K]")  # rank errors as ValueError before the op (also when tracing)
    _rank("v", v, 4, "[B, T, HV, V]")
    if cu_seqlens is not None:
        _rank("cu_seqlens", cu_seqlens, 1, "[N + 1]")
    out, final_state = torch.ops.attnkit.linear_fwd(*inputs, *names, output_final_state)
    return out, (final_state if output_final_state else None)


def linear_backward_op(dout, dfinal_state, inputs, names):
    """The 8 gradients (None for an absent A_log, dt_bias or initial_state) through attnkit::linear_bwd."""
    _check_linear_tensors(("dout", "dfinal_state") + _FORWARD_NAMES, (dout, dfinal_state) + tuple(inputs))
    grads = torch.ops.attnkit.linear_bwd(dout, dfinal_state, *inputs, *names)
    present = (True,) * 5 + (inputs[7] is not None, inputs[5] is not None, inputs[6] is not None)
    return tuple(grad if given else None for grad, given in zip(grads, present))


def linear_decode_op_call(q, k, v, g, beta, A_log, dt_bias, state, state_indices, names):
    _check_linear_tensors(("q", "k", "v", "g", "beta", "A_log", "dt_bias", "state", "state_indices"),
                          (q, k, v, g, beta, A_log, dt_bias, state, state_indices))
    from ._linear import _rank

    _rank("q", q, 4, "[N, T, H, K]")
    _rank("v", v, 4, "[N, T, HV, V]")
    return torch.ops.attnkit.linear_decode(q, k, v, g, beta, A_log, dt_bias, state, state_indices, *names)


class _LinearAttention(torch.autograd.Function):
    """linear_fwd with linear_fwd's autograd formula, for eager calls: the library's forward and backward
    without the op dispatch (outputs and gradients are those of the ops; every intermediate recomputed from
    the saved inputs)."""

    @staticmethod
    def forward(ctx, options, output_final_state, frame, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens):
        from ._linear import _forward

        out, final_state = _forward(frame, q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens, options,
                                    output_final_state)
        ctx.options = options
        ctx.save_for_backward(q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens)
        return (out, final_state) if output_final_state else out

    @staticmethod
    def backward(ctx, dout, *dfinal):
        from ._linear import _backward, _Frame

        q, k, v, g, beta, A_log, dt_bias, initial_state, cu_seqlens = ctx.saved_tensors
        dfinal_state = dfinal[0] if dfinal else None
        if dout.stride(-1) != 1:  # the library needs the last dimension contiguous
            dout = dout.contiguous()
        if dfinal_state is not None and dfinal_state.stride(-1) != 1:
            dfinal_state = dfinal_state.contiguous()
        grads = _backward(_Frame(q, ()), dout, dfinal_state, q, k, v, g, beta, A_log, dt_bias, initial_state,
                          cu_seqlens, ctx.options)
        return (None, None, None, grads.dq, grads.dk, grads.dv, grads.dg, grads.dbeta, grads.dA_log, grads.ddt_bias,
                grads.d_initial_state, None)


def linear_attention_autograd(frame, inputs, options, output_final_state):
    """(out, final_state or None) with autograd (eager)."""
    result = _LinearAttention.apply(options, output_final_state, frame, *inputs)
    return result if output_final_state else (result, None)
