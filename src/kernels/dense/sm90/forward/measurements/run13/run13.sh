#!/usr/bin/env bash
# hopper helper, 2026-11-26 session 3, device call 4: d256/ (binaries of the split: the kernels of 0adef09
# with the two-chain softmax reductions at Dv <= 128 only; c0915cc) against fin/ (4a8358a). d256's sm90
# catalogue and compute-sanitizer on three cases, the issue-5 grid of both in turn (two rounds), d256
# beside the peers (the final figures).
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
start=$SECONDS
timeout 120 $H/d256/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "d256 sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_fp16_long_300_200:Dense/DenseConformance.Forward/Sm90_bf16_varlen_long_causal'
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 97 $H/d256/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
for round in 1 2; do
  for v in fin d256; do
    timeout 60 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
timeout 60 $H/d256/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench (d256) rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
python3 bench/peers/results_table.py "$work/issue5.json"
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" fin d256
gzip -f "$work"/*.log
tar -C "$work" -czf "$out/call13.tgz" .
