#!/usr/bin/env python3
"""Issue-5 A/B table of one device call (runs 10-13): TFLOP/s of each binary in each round, each binary's
round mean over the first (the baseline's), and issue5.json (the binary timed beside the peers) over cuDNN.

    compare_rounds.py WORK BASELINE CANDIDATE [CANDIDATE ...]

WORK holds issue5-<name>-<round>.json for rounds 1 and 2 of every name (attnkit bench rows) and issue5.json
(attnkit rows with torch_dense.py's cudnn and torch_matmul rows added)."""
import json
import sys


def load(path, impl="attnkit"):
    try:
        rows = json.load(open(path))["rows"]
    except (OSError, ValueError, KeyError):
        return {}
    return {(r.get("d"), r.get("sq"), r.get("causal")): (r["tflops"], r.get("check")) for r in rows if r["impl"] == impl}


work, names = sys.argv[1], sys.argv[2:]
runs = {(v, r): load(f"{work}/issue5-{v}-{r}.json") for v in names for r in (1, 2)}
peers_run = load(f"{work}/issue5.json")
cudnn = load(f"{work}/issue5.json", "cudnn")
print("GEMM rows:", load(f"{work}/issue5.json", "torch_matmul"))
print("checks not passed:", [(n, k, c) for n, d in list(runs.items()) + [("peers run", peers_run)]
                             for k, (t, c) in d.items() if c != "passed"])


def tflops(d, k):
    return d.get(k, (float("nan"), None))[0]


def mean(v, k):
    return (tflops(runs[(v, 1)], k) + tflops(runs[(v, 2)], k)) / 2


base = names[0]
print("case              " + " ".join(f"{v}{r}".rjust(7) for v in names for r in (1, 2)) + "   peers cudnn " +
      " ".join(f"{v}/{base}".rjust(10) for v in names[1:]) + " peers/cudnn")
for k in sorted(peers_run or runs[(base, 1)]):
    print(f"d{k[0]} s{k[1]}{' causal' if k[2] else '':7s}".ljust(18),
          " ".join(f"{tflops(runs[(v, r)], k):7.0f}" for v in names for r in (1, 2)),
          f"{tflops(peers_run, k):7.0f} {tflops(cudnn, k):5.0f}",
          " ".join(f"{mean(v, k) / mean(base, k):10.3f}" for v in names[1:]),
          f"{tflops(peers_run, k) / tflops(cudnn, k):11.2f}")
