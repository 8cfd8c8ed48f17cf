# Type stub of the compiled module attnkit._ext (python/src/attnkit_ext.cpp). Private: the public API is
# the attnkit package. Arrays are passed as objects: torch tensors (importer 0) or anything with
# __dlpack__ / the buffer protocol (importer 1; 2 reads uint16 arrays as bf16).
from typing import Any, Callable, Optional, Tuple

_WorkspaceAlloc = Callable[[int, Any], Tuple[Any, int]]  # (bytes, q) -> (owner, address)
_Verdict = Tuple[str, bool, str]  # (backend, usable, reason)
_ExplainResult = Tuple[str, str, str, list[_Verdict], str]  # (status, message, chosen or "", verdicts, text)

def dense_forward(
    importer: int, q: Any, k: Any, v: Any, out: Any, lse: Any, sinks: Any, cu_seqlens_q: Any, cu_seqlens_k: Any,
    max_seqlen_q: int, max_seqlen_k: int, scale: Optional[float], causal: bool, window_left: int,
    window_right: int, softcap: float, backend: int, stream: int, workspace_alloc: Optional[_WorkspaceAlloc],
) -> None: ...
def dense_backward(
    importer: int, q: Any, k: Any, v: Any, out: Any, dout: Any, lse: Any, dq: Any, dk: Any, dv: Any, sinks: Any,
    dsinks: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int, deterministic: bool,
    scale: Optional[float], causal: bool, window_left: int, window_right: int, softcap: float, backend: int,
    stream: int, workspace_alloc: Optional[_WorkspaceAlloc],
) -> None: ...
def dense_forward_torch(
    q: Any, k: Any, v: Any, sinks: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int,
    max_seqlen_k: int, scale: Optional[float], causal: bool, window_left: int, window_right: int, softcap: float,
    backend: int, need_lse: bool, out: Any, lse_out: Any,
) -> Optional[Tuple[Any, Optional[Any]]]: ...  # (out, lse or None); None: q or v has the wrong rank
def dense_explain_forward(
    importer: int, q: Any, k: Any, v: Any, out: Any, lse: Any, sinks: Any, cu_seqlens_q: Any, cu_seqlens_k: Any,
    max_seqlen_q: int, max_seqlen_k: int, scale: Optional[float], causal: bool, window_left: int,
    window_right: int, softcap: float, backend: int, stream: int,
) -> _ExplainResult: ...
def dense_explain_backward(
    importer: int, q: Any, k: Any, v: Any, out: Any, dout: Any, lse: Any, dq: Any, dk: Any, dv: Any, sinks: Any,
    dsinks: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int, deterministic: bool,
    scale: Optional[float], causal: bool, window_left: int, window_right: int, softcap: float, backend: int,
    stream: int,
) -> _ExplainResult: ...
def linear_forward(
    importer: int, q: Any, k: Any, v: Any, g: Any, beta: Any, A_log: Any, dt_bias: Any, out: Any,
    initial_state: Any, final_state: Any, cu_seqlens: Any, variant: int, scale: Optional[float], l2norm_qk: bool,
    gate_form: int, gate_lower_bound: float, beta_form: int, state_layout: int, backend: int, stream: int,
    workspace_alloc: Optional[_WorkspaceAlloc],
) -> None: ...
def linear_backward(
    importer: int, q: Any, k: Any, v: Any, g: Any, beta: Any, A_log: Any, dt_bias: Any, initial_state: Any,
    cu_seqlens: Any, dout: Any, dfinal_state: Any, dq: Any, dk: Any, dv: Any, dg: Any, dbeta: Any,
    d_initial_state: Any, dA_log: Any, ddt_bias: Any, variant: int, scale: Optional[float], l2norm_qk: bool,
    gate_form: int, gate_lower_bound: float, beta_form: int, state_layout: int, backend: int, stream: int,
    workspace_alloc: Optional[_WorkspaceAlloc],
) -> None: ...
def linear_decode(
    importer: int, q: Any, k: Any, v: Any, g: Any, beta: Any, A_log: Any, dt_bias: Any, out: Any, state: Any,
    state_indices: Any, variant: int, scale: Optional[float], l2norm_qk: bool, gate_form: int,
    gate_lower_bound: float, beta_form: int, state_layout: int, backend: int, stream: int,
    workspace_alloc: Optional[_WorkspaceAlloc],
) -> None: ...
def build_info() -> dict[str, Any]: ...
def cuda_devices() -> Tuple[list[dict[str, Any]], str]: ...
def set_torch_types(
    tensor_type: type, float16: Any, bfloat16: Any, float32: Any, float64: Any, int32: Any, uint8: Any,
    current_stream: Callable[[int], int], empty_like: Callable[[Any], Any],
) -> None: ...
