#!/usr/bin/env bash
# hopper helper, stop 13, the one device call: cand/ = s13/ (binaries of the run-17 commit, built in a clean
# worktree: causal / window tiles in sections of heads) against base13/ (the sm90 kernels of 7374e26).
# cand's sm90 catalogue; the issue-5 grid base / cand / base / cand; the peers added to cand's second grid
# and, in the same call, to base's second grid; all-row checks on multi-section causal cases;
# compute-sanitizer on four cases.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 45 $H/s13/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "cand sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
for run in base-1 cand-1 base-2 cand-2; do
  v=${run%-*}; bin=$H/base13; [ "$v" = cand ] && bin=$H/s13
  timeout 40 $bin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
    --out "$work/issue5-$run.json" >"$work/issue5-$run.log" 2>&1
  echo "$run rc=$? at $(date -u +%T)"
done
cp "$work/issue5-cand-2.json" "$work/issue5.json"
timeout 60 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
tar -C "$work" -czf "$out/call17.tgz" .
python3 bench/peers/results_table.py "$work/issue5.json" | tail -32
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" base cand
# Every row checked on causal / window cases of several sections with a partial last one (sections of
# 16 + 4 pairs at D = 256, 32 + 8 with GQA 4 at D = 128, 54 + 26 at D = 64).
for spec in "--b 2 --h 10 --s 2000 --d 256 --causal" \
            "--b 1 --hq 40 --hkv 10 --s 8000 --d 128 --causal --window-left 300 --dtype fp16" \
            "--b 2 --h 40 --s 2400 --d 64 --causal"; do
  timeout 25 $H/s13/attnkit bench --fwd --backend sm90 --warmup 1 --iters 2 --check-rows 0 $spec --out "$work/check.json" >>"$work/checks.log" 2>&1
  echo "check [$spec] rc=$? at $(date -u +%T): $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
done
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_129_300:Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_fp16_varlen_gqa4_window_softcap_sinks:Dense/DenseConformance.Forward/Sm90_bf16_d256_causal'
for tool in memcheck racecheck; do
  timeout 35 compute-sanitizer --tool $tool --error-exitcode 97 $H/s13/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$? at $(date -u +%T)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
# base's second grid beside the same peers (kept if the candidate is rejected).
cp "$work/issue5-base-2.json" "$work/issue5-base.json"
timeout 45 python3 bench/peers/torch_dense.py --results "$work/issue5-base.json" --fwd --iters 20 >"$work/peers-base.log" 2>&1
echo "peers (base) rc=$? at $(date -u +%T)"
kill $smi
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call17.tgz" .
