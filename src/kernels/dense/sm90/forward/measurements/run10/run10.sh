#!/usr/bin/env bash
# hopper helper, 2026-11-26 session 3, device call 1: cand/ (two Q buffers at D = 64 and 128) against fin/
# (4a8358a, kernels of 0adef09), and poly2/ poly4/ (cand + 2 or 4 of every 8 exponentials of the D = 64
# tile from the FMA-pipe polynomial; CLI only). sm90 catalogue and all-row checks on cand, the issue-5
# grid of every binary in turn (two rounds), cand beside the peers, compute-sanitizer on three cases.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 150 $H/cand/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
# Every row checked, on grids of more than two work tiles per CTA (each Q buffer used more than once).
for spec in "--b 4 --h 16 --s 1024 --d 64 --no-causal" "--b 4 --h 16 --s 1000 --d 64 --causal" \
            "--b 4 --h 16 --s 1024 --d 128 --causal" "--b 4 --h 16 --s 1000 --d 128 --no-causal --dtype fp16"; do
  for v in cand poly2 poly4; do
    timeout 60 $H/$v/attnkit bench --fwd --backend sm90 --iters 3 --check-rows 0 $spec --out "$work/check.json" >>"$work/checks.log" 2>&1
    echo "check $v [$spec] rc=$?: $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
    case "$spec" in *"--d 64"*) ;; *) break ;; esac
  done
done
for round in 1 2; do
  for v in fin cand poly2 poly4; do
    timeout 60 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
timeout 60 $H/cand/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench (cand) rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_fp16_long_300_200:Dense/DenseConformance.Forward/Sm90_bf16_varlen_long_causal'
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 97 $H/cand/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
kill $smi
python3 bench/peers/results_table.py "$work/issue5.json"
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" fin cand
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" cand poly2 poly4
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call10.tgz" .
