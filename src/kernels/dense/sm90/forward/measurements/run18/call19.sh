#!/usr/bin/env bash
# hopper helper, stop 14, run 18 call 2. s15/ = binaries of 6bf15d3 (clean worktree build: the producer writes
# the plan straight into the slot; the tail held to 16 MiB), s14/ = b6b1fd6's, s13/ = 7666c6a's (base).
# s15's sm90 catalogue; the issue-5 grid base / s14 / s15, two rounds; peers beside s15's second grid (the
# final figures); all-row checks; compute-sanitizer.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
pack() { tar -C "$work" -czf "$out/call19.tgz" .; }
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 60 $H/s15/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "s15 sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
for run in base-1 s14-1 s15-1 base-2 s14-2 s15-2; do
  v=${run%-*}; bin=$H/s13; [ "$v" != base ] && bin=$H/$v
  timeout 40 $bin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
    --out "$work/issue5-$run.json" >"$work/issue5-$run.log" 2>&1
  echo "$run rc=$? at $(date -u +%T)"
done
cp "$work/issue5-s15-2.json" "$work/issue5.json"
timeout 60 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
pack
python3 bench/peers/results_table.py "$work/issue5.json" | tail -32
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" base s14 s15
for spec in "--b 4 --h 16 --s 1000 --d 128 --causal" \
            "--b 2 --h 40 --s 1000 --d 64 --causal" \
            "--b 2 --h 20 --s 900 --d 256 --causal --dtype fp16" \
            "--b 1 --hq 40 --hkv 10 --s 1000 --d 128 --causal --window-left 300 --dtype fp16"; do
  timeout 25 $H/s15/attnkit bench --fwd --backend sm90 --warmup 1 --iters 2 --check-rows 0 $spec --out "$work/check.json" >>"$work/checks.log" 2>&1
  echo "check [$spec] rc=$? at $(date -u +%T): $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
done
pack
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_fp16_varlen_gqa4_window_softcap_sinks:Dense/DenseConformance.Forward/Sm90_bf16_sections_d256_causal_h129:Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300'
for tool in memcheck racecheck; do
  timeout 40 compute-sanitizer --tool $tool --error-exitcode 97 $H/s15/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$? at $(date -u +%T)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
kill $smi
gzip -f "$work"/*.log "$work"/clocks.csv
pack
echo "total $((SECONDS-start)) s"
