#!/usr/bin/env python3
"""Peer benchmark for dense attention: torch SDPA with its flash backend (impl "torch_flash", FA2) and its
cuDNN backend (impl "cudnn"), timed on the shapes that `attnkit bench` measured, whose rows are then
appended to attnkit's results file, so that one file holds every implementation of a case.

Method (gpu-workflow.md, "Measuring honestly"), the same as `attnkit bench`:
  - bf16 (or fp16) inputs ~ N(0, 1), allocated in attnkit's BSHD layout [B, S, H, D] and handed to SDPA
    as BHSD through transpose views (no copy), as the field does with flash-attn-style tensors;
  - forward:  out = sdpa(q, k, v) under torch.nn.attention.sdpa_kernel(<one backend>) and
    torch.no_grad() (inference: the backend may skip saving its softmax statistics);
  - backward: timed ALONE, as torch.autograd.grad(out, (q, k, v), dout, retain_graph=True) on a graph
    built once by an untimed forward (not "fwd+bwd minus fwd");
  - CUDA events around each call, `--warmup` untimed calls then `--iters` timed ones, median reported;
  - inputs rotated over enough copies (2 x 50 MB of L2) when one set fits in L2;
  - FLOPs: taken from attnkit's row of the same case (so ratios use one count), else the field's
    convention 2*B*Hq*Sq*Sk*(D+Dv) (= 4*B*Hq*Sq*Sk*D), halved when causal; backward 2.5x the forward.
Causal is bottom-right aligned (semantics.md): is_causal=True where Sq == Sk, otherwise torch's
causal_lower_right bias. Cases SDPA cannot express (windows, softcap, sinks) are skipped with a reason.

Usage:
  torch_dense.py --results FILE            time every attnkit case of FILE and append the peer rows
  torch_dense.py --b 2 --s 1024 --h 16 --d 128 --causal --out FILE
                                           time one shape and write a new results file
On the GPU it first times the card's bf16 GEMM rate (torch.matmul 8192^3, row op "gemm", impl
"torch_matmul"; --no-gemm skips it), so that results_table.py can quote attention as a fraction of it.
Needs only Python 3.12 and torch (2.11 with CUDA on the device). `--device cpu` runs torch's CPU flash
kernel (impl "torch_flash_cpu") for a quick check where there is no GPU.
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time

L2_BYTES = 50 * 1024 * 1024  # H100 L2
MAX_ROTATED_SETS = 32
SHAPE_KEYS = ("b", "sq", "sk", "hq", "hkv", "d", "dv", "causal", "dtype")
UNSUPPORTED_KEYS = ("window_left", "window_right", "softcap", "sinks")  # SDPA has no such option


def log(message):
    print(message, file=sys.stderr, flush=True)


def convention_flops(case):
    flops = 2.0 * case["b"] * case["hq"] * case["sq"] * case["sk"] * (case["d"] + case["dv"])
    return flops / 2 if case["causal"] else flops


def cases_from_results(results):
    """One entry per distinct attnkit shape of the file: the shape, the ops measured, the FLOPs used."""
    cases = {}
    for row in results["rows"]:
        if row.get("impl") != "attnkit":
            continue
        shape = tuple(row[key] for key in SHAPE_KEYS)
        case = cases.setdefault(shape, {"shape": dict(zip(SHAPE_KEYS, shape)), "ops": [], "flops": {},
                                        "unsupported": [k for k in UNSUPPORTED_KEYS if k in row]})
        case["ops"].append(row["op"])
        if row.get("ms") and row.get("tflops"):
            case["flops"][row["op"]] = row["tflops"] * 1e12 * row["ms"] * 1e-3
    return list(cases.values())


class Peer:
    """One SDPA backend on one shape: inputs, the timed calls, and what went wrong if it cannot run."""

    def __init__(self, torch, shape, device, sets):
        self.torch = torch
        self.shape = shape
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[shape["dtype"]]
        b, sq, sk, hq, hkv, d, dv = (shape[k] for k in ("b", "sq", "sk", "hq", "hkv", "d", "dv"))
        generator = torch.Generator(device=device).manual_seed(1)

        def normal(*size):  # [B, S, H, D] storage (attnkit's layout), drawn on the device
            return torch.randn(*size, generator=generator, device=device, dtype=torch.float32).to(dtype)

        self.inputs = []
        for _ in range(sets):
            q, k, v = (normal(b, sq, hq, d).requires_grad_(True), normal(b, sk, hkv, d).requires_grad_(True),
                       normal(b, sk, hkv, dv).requires_grad_(True))
            self.inputs.append((q, k, v, normal(b, sq, hq, dv)))
        self.mask = None
        self.is_causal = False
        if shape["causal"]:
            if sq == sk:
                self.is_causal = True
            else:
                from torch.nn.attention.bias import causal_lower_right
                self.mask = causal_lower_right(sq, sk)
        self.enable_gqa = hq != hkv

    def forward(self, index):
        q, k, v, _ = self.inputs[index]
        out = self.torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=self.mask,
            is_causal=self.is_causal, enable_gqa=self.enable_gqa)
        return out.transpose(1, 2)  # back to [B, Sq, Hq, Dv]


def time_calls(torch, device, warmup, iters, call):
    for i in range(warmup):
        call(i)
    if device == "cpu":
        times = []
        for i in range(iters):
            start = time.perf_counter()
            call(warmup + i)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        call(warmup + i)
        stops[i].record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(stop) for start, stop in zip(starts, stops))


def bench_case(torch, case, impl, backend, args):
    """Rows for one implementation on one case; an exception means this backend cannot run it."""
    from torch.nn.attention import sdpa_kernel
    shape = case["shape"]
    element = 2
    set_bytes = element * (shape["b"] * (shape["sq"] * shape["hq"] * (shape["d"] + 2 * shape["dv"])
                                         + shape["sk"] * shape["hkv"] * (shape["d"] + shape["dv"])))
    sets = 1
    if args.device == "cuda" and set_bytes < L2_BYTES:
        sets = min(MAX_ROTATED_SETS, math.ceil(2 * L2_BYTES / set_bytes))
    peer = Peer(torch, shape, args.device, sets)
    rows = []
    with sdpa_kernel([backend]):
        # One untimed call first: an unsupported shape raises here, and the output must be finite.
        out = peer.forward(0)
        if not torch.isfinite(out).all():
            raise RuntimeError("forward output has non-finite values")
        fwd_flops = case["flops"].get("dense_fwd", convention_flops(shape))
        if "dense_fwd" in case["ops"]:
            with torch.no_grad():
                ms = time_calls(torch, args.device, args.warmup, args.iters, lambda i: peer.forward(i % sets))
            rows.append(make_row(shape, "dense_fwd", impl, ms, fwd_flops))
        if "dense_bwd" in case["ops"]:
            graphs = [peer.forward(i) for i in range(sets)]

            def backward(i):
                q, k, v, dout = peer.inputs[i % sets]
                return torch.autograd.grad(graphs[i % sets], (q, k, v), dout, retain_graph=True)

            grads = backward(0)
            if not all(torch.isfinite(g).all() for g in grads):
                raise RuntimeError("backward gradients have non-finite values")
            bwd_flops = case["flops"].get("dense_bwd", 2.5 * fwd_flops)
            ms = time_calls(torch, args.device, args.warmup, args.iters, backward)
            rows.append(make_row(shape, "dense_bwd", impl, ms, bwd_flops))
    return rows


GEMM_SIZE = 8192  # the card's bf16 tensor-core ceiling, as gpu-workflow.md measures it


def bench_gemm(torch, args):
    """The bf16 GEMM rate of the card in this run (torch.matmul, cuBLAS, 8192^3), so that attention
    figures can be quoted as a fraction of it from data rather than from a remembered number."""
    n = GEMM_SIZE
    generator = torch.Generator(device=args.device).manual_seed(2)
    a = torch.randn(n, n, generator=generator, device=args.device, dtype=torch.float32).to(torch.bfloat16)
    b = torch.randn(n, n, generator=generator, device=args.device, dtype=torch.float32).to(torch.bfloat16)
    out = torch.empty(n, n, device=args.device, dtype=torch.bfloat16)
    ms = time_calls(torch, args.device, args.warmup, args.iters, lambda i: torch.matmul(a, b, out=out))
    flops = 2.0 * n * n * n
    return {"op": "gemm", "impl": "torch_matmul", "m": n, "n": n, "k": n, "dtype": "bf16", "ms": ms,
            "tflops": flops / (ms * 1e-3) * 1e-12, "backend": "cublas"}


def make_row(shape, op, impl, ms, flops):
    row = {"op": op, "impl": impl}
    row.update(shape)
    row.update({"ms": ms, "tflops": flops / (ms * 1e-3) * 1e-12 if ms > 0 else 0.0, "backend": impl})
    return row


def write_json(path, results):
    """Write atomically: a run cut short never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(results, stream, indent=1)
        stream.write("\n")
    os.replace(temporary, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", help="attnkit's results file: time its cases, append the peer rows to it")
    parser.add_argument("--out", help="without --results: the new results file to write")
    parser.add_argument("--impl", choices=["torch_flash", "cudnn", "all"], default="all")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--fwd", action="store_true", help="one shape: forward only")
    parser.add_argument("--bwd", action="store_true", help="one shape: backward only")
    for name, default in (("b", 2), ("s", 1024), ("h", 16), ("d", 128)):
        parser.add_argument("--" + name, type=int, default=default, help="one shape (default %d)" % default)
    parser.add_argument("--hkv", type=int, help="one shape: key/value heads (default --h)")
    parser.add_argument("--causal", action="store_true", help="one shape: causal")
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--no-gemm", action="store_true",
                        help="skip the bf16 GEMM-rate row (op \"gemm\", torch.matmul 8192^3) timed before the cases")
    args = parser.parse_args(argv)
    if args.results is None and args.out is None:
        parser.error("give --results FILE (append to attnkit's file) or --out FILE (one shape)")
    if args.warmup < 0 or args.iters < 1:
        parser.error("--warmup must be >= 0 and --iters >= 1")
    return args


def main(argv):
    args = parse_args(argv)
    import torch  # after argument parsing, so that --help works anywhere

    if args.device == "cuda" and not torch.cuda.is_available():
        log("torch_dense.py: torch sees no CUDA device (use --device cpu for a CPU check)")
        return 1
    from torch.nn.attention import SDPBackend
    impls = {"torch_flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    if args.device == "cpu":
        impls = {"torch_flash": SDPBackend.FLASH_ATTENTION}  # torch's CPU flash kernel; cuDNN is GPU only
    if args.impl != "all":
        impls = {name: backend for name, backend in impls.items() if name == args.impl}

    if args.results:
        with open(args.results) as stream:
            results = json.load(stream)
        path = args.results
        cases = cases_from_results(results)
    else:
        path = args.out
        shape = {"b": args.b, "sq": args.s, "sk": args.s, "hq": args.h, "hkv": args.hkv or args.h, "d": args.d,
                 "dv": args.d, "causal": args.causal, "dtype": args.dtype}
        ops = ["dense_fwd"] if args.fwd and not args.bwd else ["dense_bwd"] if args.bwd and not args.fwd else [
            "dense_fwd", "dense_bwd"]
        cases = [{"shape": shape, "ops": ops, "flops": {}, "unsupported": []}]
        device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        results = {"device": device_name, "commit": "unknown",
                   "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "command": " ".join(sys.argv), "rows": []}
    suffix = "" if args.device == "cuda" else "_cpu"
    versions = "torch %s, cuDNN %s" % (torch.__version__, torch.backends.cudnn.version())
    log("torch_dense.py: %d cases x %s on %s (%s) -> %s" % (len(cases), "/".join(impls), args.device, versions, path))
    results.setdefault("peer_versions", {})["torch_dense.py"] = versions
    failures = 0
    start = time.monotonic()
    if args.device == "cuda" and not args.no_gemm:
        gemm = bench_gemm(torch, args)
        log("  %-12s gemm %dx%dx%d bf16  %.4f ms  %.1f TFLOP/s" % (gemm["impl"], GEMM_SIZE, GEMM_SIZE, GEMM_SIZE,
                                                                 gemm["ms"], gemm["tflops"]))
        results["rows"] = [row for row in results["rows"] if row.get("op") != "gemm"] + [gemm]
    for index, case in enumerate(cases):
        label = "b%(b)d sq%(sq)d sk%(sk)d hq%(hq)d hkv%(hkv)d d%(d)d dv%(dv)d causal=%(causal)s %(dtype)s" % case["shape"]
        log("[%d/%d] %s  elapsed %.0f s" % (index + 1, len(cases), label, time.monotonic() - start))
        if case["unsupported"]:
            log("  skipped: SDPA has no %s" % ", ".join(case["unsupported"]))
            continue
        for impl, backend in impls.items():
            try:
                rows = bench_case(torch, case, impl + suffix, backend, args)
            except RuntimeError as error:  # the backend refuses this shape (or produced non-finite values)
                log("  %s: skipped: %s" % (impl, str(error).splitlines()[0] if str(error) else type(error).__name__))
                failures += "non-finite" in str(error)
                continue
            finally:
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            for row in rows:
                log("  %-12s %s  %.4f ms  %.1f TFLOP/s" % (impl + suffix, row["op"], row["ms"], row["tflops"]))
            results["rows"].extend(rows)
            write_json(path, results)  # after every case: a run cut short keeps what it measured
    write_json(path, results)
    log("torch_dense.py: done in %.0f s; %s" % (time.monotonic() - start, path))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
