#!/usr/bin/env bash
# hopper helper, 2026-11-26, device call 4: cand/ (masked calls: the partial query tile first) against
# fin/ (eb292b5). sm90 catalogue (default seed, then a second seed with 120 random cases), causal and
# window cases with every row checked, the issue-5 grid of fin and cand in turn (two rounds), cand
# beside the peers, compute-sanitizer on four cases.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
start=$SECONDS
timeout 150 $H/cand/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
start=$SECONDS
ATTNKIT_TEST_SEED=20261127 ATTNKIT_TEST_RANDOM_CASES=120 timeout 150 $H/cand/attnkit_gpu_tests --gtest_color=no \
  --gtest_filter='Dense/DenseConformance.Forward/Sm90_*random*' >"$work/sm90-tests-seed2.log" 2>&1
echo "sm90 random seed 20261127 x120 rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests-seed2.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests-seed2.log" | head -20
for spec in "--d 64 --causal --s 1000" "--d 64 --causal --s 1000 --sk 1300" "--d 64 --causal --s 1000 --window-left 100" \
            "--d 128 --causal --s 1000" "--d 256 --causal --s 1000 --window-left 200" "--d 64 --no-causal --s 1000 --window-left 300 --window-right 40"; do
  timeout 40 $H/cand/attnkit bench --fwd --backend sm90 --iters 3 --check-rows 0 --b 2 --h 4 $spec --out "$work/check.json" >"$work/check.log" 2>&1
  echo "check [$spec] rc=$?: $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
  cat "$work/check.log" >>"$work/checks.log"
done
for round in 1 2; do
  for v in fin cand; do
    timeout 60 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
timeout 60 $H/cand/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench (cand) rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_33_127:Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_fp16_varlen_long_causal:Dense/DenseConformance.Forward/Sm90_bf16_window_causal_left'
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 97 $H/cand/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
python3 bench/peers/results_table.py "$work/issue5.json"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
def load(name, impl="attnkit"):
    try:
        return {(r["d"], r["sq"], r["causal"]): (r["tflops"], r.get("check")) for r in json.load(open(f"{w}/{name}"))["rows"] if r["impl"] == impl}
    except Exception:
        return {}
runs = {f"{v}{r}": load(f"issue5-{v}-{r}.json") for v in ("fin", "cand") for r in (1, 2)}
c3 = load("issue5.json"); cud = load("issue5.json", "cudnn")
print("checks not passed:", [(n, k) for n, d in list(runs.items()) + [("c3", c3)] for k, (t, c) in d.items() if c != "passed"])
g = lambda d, k: d.get(k, (float("nan"), None))[0]
print("case              fin1 cand1  fin2 cand2 cand3 cudnn cand/fin cand3/cud")
for k in sorted(c3):
    ratio = (g(runs["cand1"], k) + g(runs["cand2"], k)) / (g(runs["fin1"], k) + g(runs["fin2"], k))
    print(f"d{k[0]} s{k[1]}{' causal' if k[2] else '':7s}".ljust(18), " ".join(f"{g(runs[n], k):5.0f}" for n in ("fin1", "cand1", "fin2", "cand2")),
          f"{g(c3, k):5.0f} {g(cud, k):5.0f} {ratio:8.3f} {g(c3, k) / g(cud, k):8.2f}")
PY
gzip -f "$work"/*.log
tar -C "$work" -czf "$out/call7.tgz" .
