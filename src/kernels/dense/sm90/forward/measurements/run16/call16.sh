#!/usr/bin/env bash
# hopper helper, 2026-11-26 session 4, device call 3: cand2/ (run 15's candidate with the early Q release
# only where three consumer warpgroups share the tile, D = 64; binaries of the commit that keeps it)
# against cand/ (run 15: early release on every tile with Q in a buffer apart from O) and base/ (c0915cc).
# cand2's sm90 catalogue, the issue-5 grid of the three in turn (two rounds), the peers added to cand2's
# second round (the final figures), all-row checks and compute-sanitizer on D = 128 cases.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 40 $H/cand2/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "cand2 sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
for round in 1 2; do
  for v in base cand cand2; do
    timeout 45 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
cp "$work/issue5-cand2-2.json" "$work/issue5.json"
timeout 60 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
tar -C "$work" -czf "$out/call16.tgz" .
for spec in "--b 2 --h 16 --s 1000 --d 128 --causal" "--b 2 --h 16 --s 1000 --d 128 --no-causal --dtype fp16"; do
  timeout 15 $H/cand2/attnkit bench --fwd --backend sm90 --warmup 1 --iters 2 --check-rows 0 $spec --out "$work/check.json" >>"$work/checks.log" 2>&1
  echo "check [$spec] rc=$?: $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
done
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_bf16_varlen_long_causal:Dense/DenseConformance.Forward/Sm90_bf16_d256_causal'
for tool in memcheck racecheck; do
  timeout 40 compute-sanitizer --tool $tool --error-exitcode 97 $H/cand2/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
kill $smi
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call16.tgz" .
python3 bench/peers/results_table.py "$work/issue5.json" | tail -32
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" base cand cand2
