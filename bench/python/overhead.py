#!/usr/bin/env python3
"""Host overhead of one small attnkit forward call from Python, beside torch SDPA's (a benchmark, not a test).

What is measured: host wall time per call, with the GPU kept out of the picture. Before each batch of
`--calls` calls, torch.cuda._sleep queues a few milliseconds of GPU work, so every call only enqueues its
kernel behind it and returns: the batch's host time / calls is the time the call costs the Python thread
(argument handling, output allocation, binding, validation, dispatch, kernel launch). The median over
`--repeats` batches is reported. Nothing here reads a result back before the batch's clock stops.

Rows (one shape, default B=1, S=128, H=8, D=64, bf16, causal; attnkit BSHD, SDPA BHSD views):
  attnkit            attnkit.attention under torch.no_grad(): the eager fast path (no op dispatch)
  attnkit_lse        the same with return_lse=True (one more output allocation)
  attnkit_autograd   inputs requiring grad, eager: attnkit's autograd.Function (no op dispatch; forward only)
  attnkit_out        the same with out= given (no output allocation); attnkit_lse_out with lse_out= too
  attnkit_op         torch.ops.attnkit.dense_fwd called directly under no_grad (the torch.library op)
  attnkit_op_autograd  the op with inputs requiring grad: the path torch.compile and tensor subclasses take
  torch_sdpa         torch.nn.functional.scaled_dot_product_attention under no_grad (its own backend choice)
  torch_sdpa_autograd  SDPA with inputs requiring grad (forward only)
  attnkit_cuda_zero_size  B = 0 CUDA tensors: the Python path, output allocation and validation; zero-size
                     work returns before backend choice and launch (also measured without GPU kernels)
  torch_empty_kernel_launch  torch.cuda._sleep(0): the floor of a Python call that launches a kernel
  part_*             the steps of the attnkit row one at a time, on the same tensors
The no_grad rows are timed in alternation, batch by batch (time_interleaved), so that they share the host's
conditions; the rows with autograd likewise among themselves.
and, host-only, the same paths on CPU tensors with B = 0 (validated, nothing computed): the floor of
the bindings from NumPy, and from torch for each path (direct, eager autograd, op, op with autograd).
The attnkit rows need a build with the GPU kernels (ATTNKIT_PYTHON_CUDA=ON); without them only the
zero-size and SDPA rows are measured.

Usage: overhead.py [--json FILE] [--commit SHA] [--calls 200] [--repeats 30]
Writes {"device", "commit", "date", "command", "rows": [...]} with `us_per_call` per row (median) and
prints a table.
"""

import argparse
import datetime
import json
import platform
import statistics
import sys
import time

import numpy as np

import attnkit


def time_interleaved(named_calls, calls, repeats, before_batch, after_batch):
    """{name: (median, best)} as time_batches, with the rows taking turns batch by batch: the host's
    conditions drift over seconds (the same row measured a few seconds apart has differed by several us on
    the device host), so rows to be compared are timed in alternation rather than one after the other."""
    samples = {name: [] for name in named_calls}
    for _ in range(repeats):
        for name, call in named_calls.items():
            before_batch()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            elapsed = time.perf_counter() - start
            after_batch()
            samples[name].append(elapsed / calls * 1e6)
    return {name: (statistics.median(s), min(s)) for name, s in samples.items()}


def time_batches(call, calls, repeats, before_batch=None, after_batch=None):
    """Median over `repeats` of (host seconds for `calls` calls) / calls, in microseconds."""
    samples = []
    for _ in range(repeats):
        if before_batch is not None:
            before_batch()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - start
        if after_batch is not None:
            after_batch()
        samples.append(elapsed / calls * 1e6)
    return statistics.median(samples), min(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results file here")
    parser.add_argument("--commit", default="unknown", help="the commit measured (recorded in the JSON)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--b", type=int, default=1)
    parser.add_argument("--s", type=int, default=128)
    parser.add_argument("--h", type=int, default=8)
    parser.add_argument("--d", type=int, default=64)
    args = parser.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None

    rows = []
    shape = {"b": args.b, "sq": args.s, "sk": args.s, "hq": args.h, "hkv": args.h, "d": args.d, "dv": args.d,
             "causal": True, "dtype": "bf16"}

    def record(impl, device, us, best, note=""):
        row_shape = dict(shape, b=0) if "zero_size" in impl else shape  # those calls pass B = 0
        rows.append(dict(op="dense_fwd_host_overhead", impl=impl, device_kind=device, us_per_call=round(us, 3),
                         us_best_batch=round(best, 3), calls=args.calls, repeats=args.repeats, note=note,
                         **row_shape))

    # The floor of the bindings: zero-size work on the CPU (validated, dispatched, nothing computed).
    q0 = np.zeros((0, args.s, args.h, args.d), np.float32)
    us, best = time_batches(lambda: attnkit.attention(q0, q0, q0, causal=True), args.calls, args.repeats)
    record("attnkit_numpy_zero_size", "cpu", us, best, "B = 0: binding + validation floor")
    if torch is not None:
        t0 = torch.zeros((0, args.s, args.h, args.d))
        g0 = torch.zeros((0, args.s, args.h, args.d), requires_grad=True)
        op = lambda t: torch.ops.attnkit.dense_fwd(t, t, t, None, None, None, 0, 0, None, True, -1, -1, 0.0, False,
                                                   "auto")
        with torch.no_grad():
            us, best = time_batches(lambda: attnkit.attention(t0, t0, t0, causal=True), args.calls, args.repeats)
            record("attnkit_torch_zero_size", "cpu", us, best, "B = 0: binding + validation floor")
            us, best = time_batches(lambda: op(t0), args.calls, args.repeats)
            record("attnkit_op_torch_zero_size", "cpu", us, best, "B = 0, the torch.library op")
        us, best = time_batches(lambda: attnkit.attention(g0, g0, g0, causal=True), args.calls, args.repeats)
        record("attnkit_autograd_torch_zero_size", "cpu", us, best, "B = 0, eager autograd.Function")
        us, best = time_batches(lambda: op(g0), args.calls, args.repeats)
        record("attnkit_op_autograd_torch_zero_size", "cpu", us, best, "B = 0, the op with its autograd")

    device_name = platform.processor() or "cpu"
    if torch is not None and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name()
        make = lambda batch, grad: torch.randn(batch, args.s, args.h, args.d, device="cuda", dtype=torch.bfloat16,
                                               requires_grad=grad)
        q, k, v = make(args.b, False), make(args.b, False), make(args.b, False)
        qg, kg, vg = make(args.b, True), make(args.b, True), make(args.b, True)
        q0 = make(0, False)
        q_bhsd, k_bhsd, v_bhsd = (t.transpose(1, 2) for t in (q, k, v))
        qg_bhsd, kg_bhsd, vg_bhsd = (t.transpose(1, 2) for t in (qg, kg, vg))
        sleep_cycles = int(2e5 * args.calls)  # ~110 us of GPU time per call at ~1.8 GHz: outlasts the batch

        def busy():
            torch.cuda._sleep(sleep_cycles)

        def drain():
            torch.cuda.synchronize()

        candidates = {
            # B = 0 on the GPU: the whole Python path and output allocation, validation, no kernel launch.
            "attnkit_cuda_zero_size": lambda: attnkit.attention(q0, q0, q0, causal=True),
            "torch_sdpa": lambda: F.scaled_dot_product_attention(q_bhsd, k_bhsd, v_bhsd, is_causal=True),
            # The floor of any Python call that launches a kernel: torch's own binding launching its sleep
            # kernel for 0 cycles (one argument, no tensor, no allocation).
            "torch_empty_kernel_launch": lambda: torch.cuda._sleep(0),
        }
        with_grad = {
            "torch_sdpa_autograd": lambda: F.scaled_dot_product_attention(qg_bhsd, kg_bhsd, vg_bhsd, is_causal=True),
        }
        explanation = attnkit.explain(q, k, v, causal=True)
        if explanation.chosen is None:
            print(f"attnkit cannot run this shape on the GPU (only its zero-size row is measured):\n{explanation}",
                  file=sys.stderr)
        else:
            from attnkit import _ext, _torch_ops

            out_buffer = torch.empty_like(q)
            lse_buffer = torch.empty((args.b, args.h, args.s), dtype=torch.float32, device="cuda")
            out_shape = tuple(q.shape)
            is_compiling, functorch_active = _torch_ops._is_compiling, _torch_ops._functorch_active
            plain, grad_enabled = _torch_ops._PLAIN_TYPES, torch.is_grad_enabled
            candidates.update({
                "attnkit": lambda: attnkit.attention(q, k, v, causal=True),
                "attnkit_lse": lambda: attnkit.attention(q, k, v, causal=True, return_lse=True),
                # out= (and lse_out=): no output allocation.
                "attnkit_out": lambda: attnkit.attention(q, k, v, causal=True, out=out_buffer),
                "attnkit_lse_out": lambda: attnkit.attention(q, k, v, causal=True, return_lse=True, out=out_buffer,
                                                             lse_out=lse_buffer),
                "attnkit_op": lambda: torch.ops.attnkit.dense_fwd(q, k, v, None, None, None, 0, 0, None, True, -1,
                                                                  -1, 0.0, False, "auto"),
                # Where the fast path's time goes: its steps one at a time, on the same tensors.
                # One extension call: imports q, k, v, allocates out (empty_like), validates, dispatches, launches.
                "part_ext_call_and_launch": lambda: _ext.dense_forward_torch(q, k, v, None, None, None, 0, 0, None,
                                                                             True, -1, -1, 0.0, 0, False, None, None),
                # The same with out given (imported like q instead of allocated).
                "part_ext_call_out_given": lambda: _ext.dense_forward_torch(q, k, v, None, None, None, 0, 0, None,
                                                                            True, -1, -1, 0.0, 0, False, out_buffer,
                                                                            None),
                # The same call on B = 0 tensors: everything but backend choice, planning and the launch.
                "part_ext_call_zero_size": lambda: _ext.dense_forward_torch(q0, q0, q0, None, None, None, 0, 0, None,
                                                                            True, -1, -1, 0.0, 0, False, None, None),
                # The allocation calls for out (each timed from Python: an upper bound of the C++ call's).
                "part_torch_empty_like_out": lambda: torch.empty_like(q),
                "part_new_empty_out": lambda: q.new_empty(out_shape),
                "part_torch_empty_out": lambda: torch.empty(out_shape, dtype=q.dtype, device=q.device),
                # What each call of a backend with a workspace paid before the per-stream buffer (the Python
                # allocator callback: torch.empty(16 bytes) on q's device).
                "part_workspace_alloc_callback": lambda: _torch_ops._workspace(16, q),
                "part_current_stream": lambda: _torch_ops._raw_stream(q.get_device()),
                # The Python layer above the extension (_core.attention is above it), with everything below it.
                "part_torch_ops_attention": lambda: _torch_ops.attention(q, k, v, None, None, None, 0, 0, None, True,
                                                                         -1, -1, 0.0, False, "auto", 0, False, None,
                                                                         None),
                # Its eager checks alone (compiling? functorch? plain tensors? grad wanted?), as written there.
                "part_python_checks": lambda: (not (is_compiling() or functorch_active()) and type(q) in plain
                                               and type(k) in plain and type(v) in plain
                                               and not (grad_enabled() and (q.requires_grad or k.requires_grad
                                                                            or v.requires_grad))),
            })
            with_grad["attnkit_autograd"] = lambda: attnkit.attention(qg, kg, vg, causal=True)
            with_grad["attnkit_op_autograd"] = lambda: torch.ops.attnkit.dense_fwd(qg, kg, vg, None, None, None, 0, 0,
                                                                                   None, True, -1, -1, 0.0, False,
                                                                                   "auto")
        # Warm-up: first calls load kernels, fill the allocator's cache and build dispatch caches.
        with torch.no_grad():
            for call in candidates.values():
                for _ in range(20):
                    call()
        for call in with_grad.values():
            for _ in range(20):
                call()
        drain()
        with torch.no_grad():
            timed = time_interleaved(candidates, args.calls, args.repeats, busy, drain)
        for impl, (us, best) in timed.items():
            note = "no kernel: B = 0" if "zero_size" in impl else ("a step of the attnkit row"
                                                                     if impl.startswith("part_") else "")
            record(impl, "cuda", us, best, note)
        for impl, (us, best) in time_interleaved(with_grad, args.calls, args.repeats, busy, drain).items():
            record(impl, "cuda", us, best, "forward only")

    results = {"device": device_name, "commit": args.commit,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(sys.argv), "torch": torch.__version__ if torch is not None else None, "python": platform.python_version(),
               "attnkit_backends": " ".join(attnkit.build_info().compiled_backends), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(f"host overhead per call, {device_name}, B={args.b} S={args.s} H={args.h} D={args.d} bf16 causal "
          f"(median of {args.repeats} batches of {args.calls} calls):")
    for row in rows:
        print(f"  {row['impl']:<36} {row['device_kind']:<5} {row['us_per_call']:8.2f} us   {row['note']}")
    # attnkit's own cost: the call minus the cheapest Python call that launches a kernel, same run; and the
    # ratios to SDPA (no_grad), same run.
    cuda = {row["impl"]: row["us_per_call"] for row in rows if row["device_kind"] == "cuda"}
    floor, sdpa = cuda.get("torch_empty_kernel_launch"), cuda.get("torch_sdpa")
    for impl in ("attnkit", "attnkit_lse", "attnkit_out", "attnkit_lse_out"):
        if impl in cuda and floor is not None and sdpa is not None:
            print(f"  {impl:<36} minus an empty launch {cuda[impl] - floor:6.2f} us; {cuda[impl] / sdpa:.2f}x SDPA "
                  f"({sdpa - floor:.2f} us above the launch)")


if __name__ == "__main__":
    main()
