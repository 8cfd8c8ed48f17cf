#!/usr/bin/env python3
"""Tests of the peer scripts' torch-free parts (they run wherever Python does; the timing itself needs
torch and a GPU): which cases torch_dense.py reads from attnkit's results file, the rows it appends,
and the ratios results_table.py prints."""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_table  # noqa: E402
import torch_dense  # noqa: E402


def attnkit_row(op, ms, tflops, **shape):
    row = {"op": op, "impl": "attnkit", "b": 2, "sq": 1024, "sk": 1024, "hq": 16, "hkv": 16, "d": 128, "dv": 128,
           "causal": True, "dtype": "bf16", "ms": ms, "tflops": tflops, "backend": "sm80"}
    row.update(shape)
    return row


class CasesFromResults(unittest.TestCase):
    def test_one_case_per_shape_with_attnkit_flops(self):
        results = {"rows": [
            attnkit_row("dense_fwd", 2.0, 100.0),
            attnkit_row("dense_bwd", 5.0, 100.0),
            attnkit_row("dense_fwd", 1.0, 50.0, d=64, dv=64, causal=False),
            {"op": "dense_fwd", "impl": "cudnn", "b": 2, "sq": 1024, "sk": 1024, "hq": 16, "hkv": 16, "d": 128,
             "dv": 128, "causal": True, "dtype": "bf16", "ms": 1.0, "tflops": 200.0, "backend": "cudnn"},
        ]}
        cases = torch_dense.cases_from_results(results)
        self.assertEqual(len(cases), 2)
        first = cases[0]
        self.assertEqual(first["ops"], ["dense_fwd", "dense_bwd"])
        self.assertAlmostEqual(first["flops"]["dense_fwd"], 100e12 * 2e-3)  # TFLOP/s x s
        self.assertAlmostEqual(first["flops"]["dense_bwd"], 100e12 * 5e-3)
        self.assertEqual(first["unsupported"], [])
        self.assertEqual(cases[1]["shape"]["d"], 64)

    def test_options_sdpa_lacks_are_named(self):
        cases = torch_dense.cases_from_results({"rows": [attnkit_row("dense_fwd", 1.0, 1.0, softcap=30.0, sinks=True)]})
        self.assertEqual(cases[0]["unsupported"], ["softcap", "sinks"])

    def test_convention_flops_match_the_catalogue(self):
        shape = {"b": 2, "sq": 1024, "sk": 512, "hq": 16, "d": 128, "dv": 64, "causal": False}
        self.assertEqual(torch_dense.convention_flops(shape), 2.0 * 2 * 16 * 1024 * 512 * (128 + 64))
        shape["causal"] = True
        self.assertEqual(torch_dense.convention_flops(shape), 2.0 * 2 * 16 * 1024 * 512 * (128 + 64) / 2)


class AppendAndTable(unittest.TestCase):
    def test_rows_appended_to_the_file_and_ratios(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "results.json")
            results = {"device": "GPU", "commit": "abc", "date": "today", "command": "attnkit bench",
                       "rows": [attnkit_row("dense_fwd", 2.0, 100.0)]}
            case = torch_dense.cases_from_results(results)[0]
            peer = torch_dense.make_row(case["shape"], "dense_fwd", "cudnn", 1.0, case["flops"]["dense_fwd"])
            self.assertAlmostEqual(peer["tflops"], 200.0)
            self.assertEqual(peer["impl"], "cudnn")
            results["rows"].append(peer)
            torch_dense.write_json(path, results)
            with open(path) as stream:
                written = json.load(stream)
            self.assertEqual([row["impl"] for row in written["rows"]], ["attnkit", "cudnn"])
            self.assertEqual(os.listdir(folder), ["results.json"])  # no temporary file left behind
            header, lines = results_table.build_table(written)
            self.assertEqual(header, ["case", "op", "attnkit TF/s", "cudnn TF/s", "vs cudnn"])
            self.assertEqual(lines, [["b2 s1024 h16 d128 causal bf16", "dense_fwd", "100.0", "200.0", "0.50x"]])

    def test_gemm_row_gives_the_fraction_of_the_gemm_rate(self):
        results = {"rows": [attnkit_row("dense_fwd", 2.0, 100.0),
                            {"op": "gemm", "impl": "torch_matmul", "m": 8192, "n": 8192, "k": 8192,
                             "dtype": "bf16", "ms": 1.0, "tflops": 400.0}]}
        header, lines = results_table.build_table(results)
        self.assertEqual(header, ["case", "op", "attnkit TF/s", "attnkit / GEMM"])
        self.assertEqual(lines, [["b2 s1024 h16 d128 causal bf16", "dense_fwd", "100.0", "0.25"]])


if __name__ == "__main__":
    unittest.main()
