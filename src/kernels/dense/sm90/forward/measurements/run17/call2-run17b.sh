#!/usr/bin/env bash
# hopper helper, stop 13, device call 2: s13b/ (binaries of 7666c6a: run 17's sections, head by head for heads
# of at most 8 query tiles) against base13/ (the sm90 kernels of 7374e26): s13b's sm90 catalogue, the issue-5
# grid base / cand2 / base / cand2, the peers added to cand2's second grid (the final figures), sanitizer.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 45 $H/s13b/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "cand2 sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
for run in base-1 cand2-1 base-2 cand2-2; do
  v=${run%-*}; bin=$H/base13; [ "$v" = cand2 ] && bin=$H/s13b
  timeout 40 $bin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
    --out "$work/issue5-$run.json" >"$work/issue5-$run.log" 2>&1
  echo "$run rc=$? at $(date -u +%T)"
done
cp "$work/issue5-cand2-2.json" "$work/issue5.json"
timeout 60 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
tar -C "$work" -czf "$out/call17b.tgz" .
python3 bench/peers/results_table.py "$work/issue5.json" | tail -32
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" base cand2
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_fp16_varlen_gqa4_window_softcap_sinks:Dense/DenseConformance.Forward/Sm90_bf16_d256_causal'
for tool in memcheck racecheck; do
  timeout 35 compute-sanitizer --tool $tool --error-exitcode 97 $H/s13b/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$? at $(date -u +%T)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
kill $smi
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call17b.tgz" .
