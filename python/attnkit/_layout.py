"""Output shapes of the dense ops and the Python-side argument checks shared by every framework.

Only what the package needs before it can allocate the outputs is checked here (the ranks of q and v,
the form of window and backend); every other check is the C++ validation's, so its messages are the
same in C++ and Python.
"""

import operator
from typing import Sequence, Tuple

# The Backend enum of include/attnkit/dense.h, by name.
BACKENDS = {"auto": 0, "cpu": 1, "sm80": 2, "sm90": 3}

Shape = Tuple[int, ...]


def backend_code(backend: str) -> int:
    code = BACKENDS.get(backend) if isinstance(backend, str) else None
    if code is None:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    return code


def window_bounds(window: Sequence[int]) -> Tuple[int, int]:
    """(left, right) as ints; -1 means unbounded. Bounds below -1 are the C++ validation's to reject."""
    try:
        left, right = window
        if isinstance(left, bool) or isinstance(right, bool):
            raise TypeError
        return operator.index(left), operator.index(right)
    except (TypeError, ValueError):
        raise ValueError(f"window: expected a pair (left, right) of ints, -1 = unbounded, got {window!r}") from None


def real_float(name: str, value: float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a float, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a float, got {value!r}") from None


def _check_rank(name: str, array, rank: int, layout: str) -> None:
    ndim = getattr(array, "ndim", None)
    if ndim is None:
        raise TypeError(f"{name}: expected an array or tensor, got {type(array).__name__}")
    if ndim != rank:
        raise ValueError(f"{name}: expected rank {rank} ({layout}), got rank {ndim} with shape {tuple(array.shape)}")


def forward_shapes(q, v, varlen: bool) -> Tuple[Shape, Shape]:
    """(out shape, lse shape): BSHD out [B, Sq, Hq, Dv], lse [B, Hq, Sq]; varlen out [Tq, Hq, Dv], lse [Hq, Tq]."""
    if varlen:
        _check_rank("q", q, 3, "[Tq, Hq, D] for varlen")
        _check_rank("v", v, 3, "[Tk, Hkv, Dv] for varlen")
        tokens, heads = q.shape[0], q.shape[1]
        return (tokens, heads, v.shape[2]), (heads, tokens)
    _check_rank("q", q, 4, "[B, Sq, Hq, D]")
    _check_rank("v", v, 4, "[B, Sk, Hkv, Dv]")
    batch, seqlen_q, heads = q.shape[0], q.shape[1], q.shape[2]
    return (batch, seqlen_q, heads, v.shape[3]), (batch, heads, seqlen_q)


def check_varlen_pair(cu_seqlens_q, cu_seqlens_k) -> bool:
    """True for a varlen call; both offsets or neither (the C++ validation says the same)."""
    if (cu_seqlens_q is None) != (cu_seqlens_k is None):
        given = "cu_seqlens_q" if cu_seqlens_k is None else "cu_seqlens_k"
        raise ValueError(f"varlen needs both cu_seqlens_q and cu_seqlens_k; only {given} was given")
    return cu_seqlens_q is not None
