#!/usr/bin/env python3
"""Peer benchmark for linear attention: FLA's chunk_gated_delta_rule (GDN) and chunk_kda (KDA), timed on
the shapes that `linear_gpu_bench bench` measured, whose rows are then joined with attnkit's into one
results file (gpu-workflow.md format: device, commit, date, command, rows).

Method, the same as linear_gpu_bench:
  - bf16 q, k, v [B, T, H|HV, 128]; k L2-normalised (F.normalize), q ~ N(0, 1) normalised the same way;
    g fp32 log decays (-softplus(z), z ~ N(0, 1); KDA: per key channel, divided by 4); beta = sigmoid(z);
  - forward: o = chunk_*(q, k, v, g, beta) under torch.no_grad();
  - forward+backward (row op "linear_bwd", timed "forward+backward"; FLOPs counted as 3.5x the forward):
    o = chunk_*(...) with q, k, v, g, beta requiring grad, then o.backward(do), timed as one call (FLA's GDN backward refuses to run on Hopper with triton 3.6, FLA issue #640: that row is
    recorded as skipped with FLA's message);
  - FLA autotunes its Triton kernels on first calls (minutes): `--warmup` untimed calls per case first;
  - CUDA events around each call, `--iters` timed calls, median reported. FLOPs 4*B*T*HV*K*V (forward).

Usage (on the device, FLA installed from the carried wheels and on PYTHONPATH):
  fla_linear.py --attnkit ATTNKIT.json --out RESULTS.json [--commit SHA] [--command CMD]
"""

import argparse
import datetime
import json
import statistics
import sys


def log(message):
    print(message, file=sys.stderr, flush=True)


def time_call(torch, call, warmup, iters):
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def make_inputs(torch, variant, b, t, h, hv, d, requires_grad):
    import torch.nn.functional as F

    dev = "cuda"
    q = F.normalize(torch.randn(b, t, h, d, device=dev, dtype=torch.float32), dim=-1).to(torch.bfloat16)
    k = F.normalize(torch.randn(b, t, h, d, device=dev, dtype=torch.float32), dim=-1).to(torch.bfloat16)
    v = torch.randn(b, t, hv, d, device=dev, dtype=torch.bfloat16)
    if variant == "kda":
        g = -F.softplus(torch.randn(b, t, hv, d, device=dev, dtype=torch.float32)) / 4
    else:
        g = -F.softplus(torch.randn(b, t, hv, device=dev, dtype=torch.float32))
    beta = torch.sigmoid(torch.randn(b, t, hv, device=dev, dtype=torch.float32)).to(torch.bfloat16)
    tensors = [q, k, v, g, beta]
    if requires_grad:
        for x in tensors:
            x.requires_grad_(True)
    return tensors


def bench_case(torch, fla_ops, row, args):
    variant, b, t, h, hv, d = row["variant"], row["b"], row["t"], row["h"], row["hv"], row["k"]
    fn = fla_ops[variant]
    shape = {k: row[k] for k in ("variant", "b", "t", "h", "hv", "k", "v", "dtype")}
    flops = 4.0 * b * t * hv * d * row["v"]
    out = []
    q, k, v, g, beta = make_inputs(torch, variant, b, t, h, hv, d, False)
    with torch.no_grad():
        ms = time_call(torch, lambda: fn(q, k, v, g, beta), args.warmup, args.iters)
    out.append(dict(op="linear_fwd", impl="fla", **shape, ms=round(ms, 4), tflops=round(flops / ms * 1e-9, 2)))
    log(f"fla fwd {variant} B={b} T={t} H={h} HV={hv}: {ms:.3f} ms")
    del q, k, v, g, beta
    if args.skip_backward:
        return out
    q, k, v, g, beta = make_inputs(torch, variant, b, t, h, hv, d, True)
    do = torch.randn(b, t, hv, row["v"], device="cuda", dtype=torch.bfloat16)

    def fwd_bwd():
        o = fn(q, k, v, g, beta)[0]
        o.backward(do)

    try:
        ms = time_call(torch, fwd_bwd, args.warmup, args.iters)
        out.append(dict(op="linear_bwd", impl="fla", **shape, timed="forward+backward", ms=round(ms, 4),
                        tflops=round(3.5 * flops / ms * 1e-9, 2)))
        log(f"fla fwd+bwd {variant} B={b} T={t}: {ms:.3f} ms")
    except Exception as error:  # FLA's own guard (GDN backward on Hopper) or a Triton failure
        message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        out.append(dict(op="linear_bwd", impl="fla", **shape, timed="forward+backward", skipped=message))
        log(f"fla fwd+bwd {variant} B={b} T={t}: skipped ({message})")
    return out


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attnkit", required=True, help="rows written by linear_gpu_bench bench")
    parser.add_argument("--out", required=True)
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--command", default=" ".join(sys.argv))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--skip-backward", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.kda import chunk_kda

    with open(args.attnkit) as stream:
        attnkit = json.load(stream)
    results = {
        "device": torch.cuda.get_device_name(),
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": args.command,
        "peer_versions": {"torch": torch.__version__, "triton": __import__("triton").__version__,
                          "fla": __import__("fla").__version__},
        "rows": list(attnkit["rows"]),
    }
    fla_ops = {"gdn": chunk_gated_delta_rule, "kda": chunk_kda}
    for row in attnkit["rows"]:
        if row["op"] != "linear_fwd":
            continue
        try:
            results["rows"].extend(bench_case(torch, fla_ops, row, args))
        except Exception as error:
            log(f"fla {row['variant']} B={row['b']} T={row['t']}: failed: {error}")
            results["rows"].append(dict(op="linear_fwd", impl="fla", variant=row["variant"], b=row["b"],
                                        t=row["t"], h=row["h"], hv=row["hv"], k=row["k"], v=row["v"],
                                        dtype=row["dtype"], skipped=str(error)[:300]))
        torch.cuda.empty_cache()
        with open(args.out, "w") as stream:  # after every case: a run cut short keeps what it measured
            json.dump(results, stream, indent=1)
    # Ratio table: attnkit forward over FLA forward, per case.
    fla = {(r["variant"], r["b"], r["t"], r["h"], r["hv"]): r for r in results["rows"]
           if r["impl"] == "fla" and r["op"] == "linear_fwd" and "ms" in r}
    for r in results["rows"]:
        if r["impl"] == "attnkit" and r["op"] == "linear_fwd":
            peer = fla.get((r["variant"], r["b"], r["t"], r["h"], r["hv"]))
            if peer:
                print(f"{r['variant']} B={r['b']} T={r['t']} H={r['h']} HV={r['hv']}: attnkit {r['ms']:.3f} ms, "
                      f"fla {peer['ms']:.3f} ms, speedup {peer['ms'] / r['ms']:.2f}x")
    with open(args.out, "w") as stream:
        json.dump(results, stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
