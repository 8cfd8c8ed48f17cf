#!/usr/bin/env bash
# hopper helper, 2026-11-26, device call 1: cand/ (per-warpgroup key-tile ranges) against prev/ (9dcd9f3).
# sm90 catalogue (default seed, then a second seed with 120 random cases), window cases at D = 64 with
# many checked rows, the issue-5 grid of prev and cand in turn (two rounds, GPU clocks logged), cand
# beside the peers, compute-sanitizer on five cases. Everything in one tarball; a table printed last.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv,noheader -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
echo "== sm90 catalogue (cand)"
start=$SECONDS
timeout 150 $H/cand/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED|SKIPPED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
start=$SECONDS
ATTNKIT_TEST_SEED=20261126 ATTNKIT_TEST_RANDOM_CASES=120 timeout 150 $H/cand/attnkit_gpu_tests --gtest_color=no \
  --gtest_filter='Dense/DenseConformance.Forward/Sm90_*random*' >"$work/sm90-tests-seed2.log" 2>&1
echo "sm90 random seed 20261126 x120 rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests-seed2.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests-seed2.log" | head -20
echo "== window / causal cases, D = 64 and 256, every row checked"
for spec in "--d 64 --causal --window-left 100" "--d 64 --no-causal --window-left 300 --window-right 40" \
            "--d 64 --causal" "--d 256 --causal --window-left 200" "--d 64 --no-causal --sk 1500"; do
  timeout 40 $H/cand/attnkit bench --fwd --backend sm90 --iters 3 --check-rows 0 --b 2 --s 1000 --h 4 $spec \
    --out "$work/check.json" >"$work/check.log" 2>&1
  echo "check [$spec] rc=$?: $(grep -oE 'fwd check [A-Za-z]+ \([0-9]+ rows' "$work/check.log" | head -1)" \
    "$(python3 -c 'import json,sys; print([(r["check"], r["check_rows"], r["tflops"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
  cat "$work/check.log" >>"$work/checks.log"
done
for round in 1 2; do
  for v in prev cand; do
    timeout 60 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
echo "== issue5 grid (cand) with peers"
timeout 60 $H/cand/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
kill $smi 2>/dev/null
echo "== sanitizer"
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_bf16_causal_33_127:Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_fp16_varlen_gqa4_window_softcap_sinks:Dense/DenseConformance.Forward/Sm90_bf16_d256_causal'
for tool in memcheck racecheck; do
  start=$SECONDS
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 97 $H/cand/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$? in $((SECONDS-start)) s"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
python3 bench/peers/results_table.py "$work/issue5.json"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
def load(name, impl="attnkit"):
    try:
        return {(r["d"], r["sq"], r["causal"]): r["tflops"] for r in json.load(open(f"{w}/{name}"))["rows"] if r["impl"] == impl}
    except Exception:
        return {}
p1, c1, p2, c2, cf = (load(n) for n in ["issue5-prev-1.json", "issue5-cand-1.json", "issue5-prev-2.json", "issue5-cand-2.json", "issue5.json"])
cud = load("issue5.json", "cudnn")
print("case              prev1 cand1 prev2 cand2 cand3 cudnn  cand/prev  cand3/cudnn prev/cudnn")
for k in sorted(cf):
    g = lambda d: d.get(k, float("nan"))
    ratio = (g(c1) + g(c2)) / (g(p1) + g(p2))
    print(f"d{k[0]} s{k[1]}{' causal' if k[2] else '':7s}".ljust(18), " ".join(f"{g(d):5.0f}" for d in (p1, c1, p2, c2, cf, cud)),
          f"{ratio:6.3f} {g(cf) / g(cud):8.2f} {(g(p1) + g(p2)) / 2 / g(cud):8.2f}")
PY
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call4.tgz" .
