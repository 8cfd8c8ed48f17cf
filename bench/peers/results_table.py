#!/usr/bin/env python3
"""Prints one results file (gpu-workflow.md format) as a table: per case and op, the TFLOP/s of attnkit
and of each peer in the file, and attnkit's speed relative to each peer (peer ms / attnkit ms: above 1
means attnkit is faster). Standard library only.

Usage: results_table.py FILE [--markdown]
"""

import argparse
import json
import sys

SHAPE_KEYS = ("b", "sq", "sk", "hq", "hkv", "d", "dv", "causal", "dtype")


def case_label(row):
    label = "b%(b)d s%(sq)d h%(hq)d d%(d)d" % row
    if row["sk"] != row["sq"]:
        label += " sk%d" % row["sk"]
    if row["hkv"] != row["hq"]:
        label += " hkv%d" % row["hkv"]
    if row["dv"] != row["d"]:
        label += " dv%d" % row["dv"]
    return label + (" causal" if row["causal"] else "") + " " + row["dtype"]


def rate(tflops):
    """TFLOP/s with three significant digits at most (CPU rows are far below 1)."""
    return "%.1f" % tflops if tflops >= 100 else "%.3g" % tflops


def gemm_rate(results):
    """TFLOP/s of the bf16 GEMM row (op "gemm") timed in the same run, or None."""
    rates = [row["tflops"] for row in results["rows"] if row.get("op") == "gemm" and row.get("tflops")]
    return max(rates) if rates else None


def build_table(results):
    """(header, rows) with one row per (case, op), cases in the order they first appear. With a GEMM
    row in the file, a last column gives attnkit's rate as a fraction of the card's GEMM rate."""
    peers = []
    groups = {}
    gemm = gemm_rate(results)
    for row in results["rows"]:
        if row.get("op") == "gemm":
            continue
        key = (tuple(row.get(k) for k in SHAPE_KEYS), row["op"])
        groups.setdefault(key, {})[row["impl"]] = row
        if row["impl"] != "attnkit" and row["impl"] not in peers:
            peers.append(row["impl"])
    header = ["case", "op", "attnkit TF/s"] + ["%s TF/s" % p for p in peers] + ["vs %s" % p for p in peers]
    if gemm:
        header.append("attnkit / GEMM")
    lines = []
    for (_, op), impls in groups.items():
        first = next(iter(impls.values()))
        mine = impls.get("attnkit")
        line = [case_label(first), op, rate(mine["tflops"]) if mine else "-"]
        line += [rate(impls[p]["tflops"]) if p in impls else "-" for p in peers]
        for p in peers:
            if mine and p in impls and mine["ms"] > 0:
                line.append("%.2fx" % (impls[p]["ms"] / mine["ms"]))
            else:
                line.append("-")
        if gemm:
            line.append("%.2f" % (mine["tflops"] / gemm) if mine else "-")
        lines.append(line)
    return header, lines


def format_table(header, lines, markdown=False):
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                                     for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([render(header)] + [render(line) for line in lines])


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (for bench notes)")
    args = parser.parse_args(argv)
    with open(args.file) as stream:
        results = json.load(stream)
    header, lines = build_table(results)
    print("%s, commit %s, %s" % (results.get("device"), results.get("commit"), results.get("date")))
    if gemm_rate(results):
        print("bf16 GEMM (8192^3) in the same run: %.1f TFLOP/s" % gemm_rate(results))
    print(format_table(header, lines, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
