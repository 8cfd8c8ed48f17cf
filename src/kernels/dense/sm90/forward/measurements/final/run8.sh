#!/usr/bin/env bash
# hopper helper, 2026-11-26, device call 5: the final binaries (fin/, the revert of run 9; kernel sources of 0adef09): sm90 catalogue, the issue-5
# grid beside the peers, a second grid round for the spread, compute-sanitizer on three cases.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
start=$SECONDS
timeout 150 $H/fin/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
timeout 60 $H/fin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
timeout 60 $H/fin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5-round2.json" >"$work/issue5-round2.log" 2>&1
echo "round 2 rc=$? at $(date -u +%T)"
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_fp16_long_300_200:Dense/DenseConformance.Forward/Sm90_bf16_varlen_long_causal'
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 97 $H/fin/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
python3 bench/peers/results_table.py "$work/issue5.json"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
def load(name, impl="attnkit"):
    return {(r["d"], r["sq"], r["causal"]): (r["tflops"], r.get("check")) for r in json.load(open(f"{w}/{name}"))["rows"] if r["impl"] == impl}
a, b, c = load("issue5.json"), load("issue5-round2.json"), load("issue5.json", "cudnn")
print("checks not passed:", [k for d in (a, b) for k, v in d.items() if v[1] != "passed"])
print("case              fin  round2  cudnn  fin/cud  r2/cud")
for k in sorted(a):
    print(f"d{k[0]} s{k[1]}{' causal' if k[2] else '':7s}".ljust(18), f"{a[k][0]:4.0f} {b[k][0]:6.0f} {c[k][0]:6.0f} {a[k][0] / c[k][0]:7.2f} {b[k][0] / c[k][0]:7.2f}")
PY
gzip -f "$work"/*.log
tar -C "$work" -czf "$out/call8.tgz" .
