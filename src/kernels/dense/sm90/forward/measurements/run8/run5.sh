#!/usr/bin/env bash
# hopper helper, 2026-11-26, device call 2: K/V stages at D = 64: s3/ (3 stages, committed candidate) and
# s4/ (4 stages, D = 64 bf16 only) against r7/ (0adef09, 2 stages). sm90 catalogue of s3, the issue-5
# grid of r7, s3, s4 in turn (two rounds), s3 beside the peers, sanitizer on two D = 64 cases of s3.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv,noheader -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 150 $H/s3/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "sm90 tests (s3) rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
for round in 1 2; do
  for v in r7 s3 s4; do
    timeout 60 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
timeout 60 $H/s3/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench (s3) rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
kill $smi 2>/dev/null
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_fp16_long_300_200'
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 97 $H/s3/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
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
runs = {f"{v}{r}": load(f"issue5-{v}-{r}.json") for v in ("r7", "s3", "s4") for r in (1, 2)}
fin = load("issue5.json"); cud = load("issue5.json", "cudnn")
bad = [(n, k) for n, d in list(runs.items()) + [("fin", fin)] for k, (t, c) in d.items() if c != "passed"]
print("checks not passed:", bad)
g = lambda d, k: d.get(k, (float("nan"), None))[0]
print("case               r7_1  r7_2  s3_1  s3_2  s4_1  s4_2   fin cudnn  s3/r7  s4/r7 fin/cud")
for k in sorted(fin):
    r7 = g(runs["r71"], k) + g(runs["r72"], k)
    s3 = g(runs["s31"], k) + g(runs["s32"], k)
    s4 = g(runs["s41"], k) + g(runs["s42"], k)
    print(f"d{k[0]} s{k[1]}{' causal' if k[2] else '':7s}".ljust(18), " ".join(f"{g(runs[n], k):5.0f}" for n in ("r71", "r72", "s31", "s32", "s41", "s42")),
          f"{g(fin, k):5.0f} {g(cud, k):5.0f} {s3 / r7:6.3f} {s4 / r7:6.3f} {g(fin, k) / g(cud, k):6.2f}")
PY
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call5.tgz" .
