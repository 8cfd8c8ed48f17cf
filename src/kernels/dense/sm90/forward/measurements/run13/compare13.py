#!/usr/bin/env python3
"""Per issue-5 case: TFLOP/s of fin and d256 in each round, ratios of the round means, d256 beside cuDNN."""
import json, sys
w = sys.argv[1]
def load(name, impl="attnkit"):
    try:
        return {(r.get("d"), r.get("sq"), r.get("causal")): (r["tflops"], r.get("check")) for r in json.load(open(f"{w}/{name}"))["rows"] if r["impl"] == impl}
    except Exception:
        return {}
vs = ("fin", "d256")
runs = {(v, r): load(f"issue5-{v}-{r}.json") for v in vs for r in (1, 2)}
c3 = load("issue5.json"); cud = load("issue5.json", "cudnn"); gemm = load("issue5.json", "torch_matmul")
print("GEMM rows:", gemm)
print("checks not passed:", [(n, k, c) for n, d in list(runs.items()) + [("c3", c3)] for k, (t, c) in d.items() if c != "passed"])
g = lambda d, k: d.get(k, (float("nan"), None))[0]
mean = lambda v, k: (g(runs[(v, 1)], k) + g(runs[(v, 2)], k)) / 2
print("case              " + " ".join(f"{v}{r}".rjust(6) for v in vs for r in (1, 2)) + "  d256_3 cudnn d256/fin d256_3/cud")
for k in sorted(c3 or runs[("fin", 1)]):
    print(f"d{k[0]} s{k[1]}{' causal' if k[2] else '':7s}".ljust(18), " ".join(f"{g(runs[(v, r)], k):6.0f}" for v in vs for r in (1, 2)),
          f"{g(c3, k):7.0f} {g(cud, k):5.0f} {mean('d256', k) / mean('fin', k):8.3f} {g(c3, k) / g(cud, k):8.2f}")
