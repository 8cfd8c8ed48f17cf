#!/usr/bin/env python3
"""Throwaway A/B of sm80 forward variants, second form (fwd_entry2.cu: one more argument, the heavy-first
section size in (batch, head) pairs, 0 = one section). Beside torch SDPA's flash backend (FA2), bf16 BSHD,
B*S = 16384, H*D = 2048, same inputs, one process. Each case runs ROUNDS rounds; a round times flash then
every variant (median of ITERS back-to-back launches after WARMUP); the figure is the median over rounds.
err: relative L2 distance to flash's output.
Variants per case: PLAN below. Non-causal cases: head (HEAD's objects) and new (fold) only, and only
where the code differs (D = 128); causal cases: head, new at one section, and new at N = 2, 4, 8, 16
equal sections (G = B*H / N pairs each)."""
import ctypes, os, statistics, json
import torch
from torch.nn.attention import sdpa_kernel, SDPBackend
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
lib = ctypes.CDLL(os.path.join(here, "bin", "libsm80f_ab2.so"))
WARMUP, ITERS, ROUNDS = int(os.environ.get("WARMUP", 3)), int(os.environ.get("ITERS", 10)), int(os.environ.get("ROUNDS", 4))
DS = [int(x) for x in os.environ.get("DS", "64,128,256").split(",")]
SS = [int(x) for x in os.environ.get("SS", "1024,4096,16384").split(",")]
SHAPE = {64: 0, 128: 1, 256: 3}
NSECT = [int(x) for x in os.environ.get("NSECT", "4,8,16").split(",")]
EXTRA = [x for x in os.environ.get("EXTRA", "").split(",") if x]  # more code variants, one section


def entry(v, shape):
    fn = getattr(lib, f"fwd_{v}_s{shape}", None)
    if fn is None:
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 5 + [ctypes.c_void_p, ctypes.c_int]
    return fn


def plan(d, s, causal, bh):
    out = [("head", "head", 0), ("new", "new", 0)]
    out += [(x, x, 0) for x in EXTRA]
    if causal:
        out += [(f"new_n{n}", "new", bh // n) for n in NSECT if bh // n >= 1]
    elif d != 128:
        out = [("new", "new", 0)]  # non-causal D = 64 / 256: the kernel of HEAD (same path), for the margin
    return out


def timed(fn):
    for _ in range(WARMUP):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(ITERS)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(ITERS)]
    for i in range(ITERS):
        starts[i].record(); fn(); stops[i].record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in zip(starts, stops))


print(torch.cuda.get_device_name(), torch.__version__, flush=True)
rows = []
for d in DS:
    for s in SS:
        for causal in (False, True):
            b, h = 16384 // s, 2048 // d
            torch.manual_seed(1234 + d + s + causal)
            q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            flops = 4.0 * b * h * s * s * d / (2 if causal else 1)
            f = lambda: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                       is_causal=causal)
            with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                ref = f().transpose(1, 2).float()
            o = torch.empty_like(q)
            lse = torch.empty(b, h, s, device="cuda", dtype=torch.float32)
            ptrs = (ctypes.c_void_p * 5)(*[t.data_ptr() for t in (q, k, v, o, lse)])
            stream = torch.cuda.current_stream().cuda_stream
            runs, errs = {}, {}
            for label, name, sect in plan(d, s, causal, b * h):
                fn = entry(name, SHAPE[d])
                if fn is None:
                    print(f"missing {name}", flush=True)
                    continue
                def run(fn=fn, sect=sect, label=label):
                    rc = fn(ptrs, b, s, h, d, int(causal), stream, sect)
                    if rc != 0:
                        raise RuntimeError(f"{label} rc={rc}")
                o.fill_(float("nan")); run(); torch.cuda.synchronize()
                errs[label] = ((o.float() - ref).norm() / ref.norm()).item()
                runs[label] = run
            times = {"flash": []} | {var: [] for var in runs}
            for _ in range(ROUNDS):
                with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    times["flash"].append(timed(f))
                for var, run in runs.items():
                    times[var].append(timed(run))
            row = {"d": d, "s": s, "causal": causal}
            fl = flops / statistics.median(times["flash"]) / 1e9
            row["flash_tflops"] = fl
            line = f"D={d:3d} S={s:5d} {'c ' if causal else 'nc'} flash {fl:6.1f}"
            for var in runs:
                tf = flops / statistics.median(times[var]) / 1e9
                row[var] = {"tflops": tf, "ratio": tf / fl, "err": errs[var], "rounds_ms": times[var]}
                line += f" | {var} {tf:6.1f} ({tf / fl:.3f}) e{errs[var]:.0e}"
            row["flash_rounds_ms"] = times["flash"]
            print(line, flush=True)
            rows.append(row)
            del q, k, v, o, lse, ref
            torch.cuda.empty_cache()
json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "abf2.json"), "w"), indent=1)
