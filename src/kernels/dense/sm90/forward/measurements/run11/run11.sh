#!/usr/bin/env bash
# hopper helper, 2026-11-26 session 3, device call 2: ilp/ (D = 64 and 128 bf16 instances with the
# softmax's row reductions in two chains per row, rows side by side; CLI only) against fin/ (4a8358a,
# the kernels of 0adef09, which the tree has again); all-row checks of ilp; fin's sm90 catalogue; the
# issue-5 grid of both in turn (two rounds); fin beside the peers (the final figures).
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 120 $H/fin/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "fin sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
for spec in "--b 4 --h 16 --s 1024 --d 64 --no-causal" "--b 4 --h 16 --s 1000 --d 64 --causal" \
            "--b 4 --h 16 --s 1024 --d 128 --causal" "--b 4 --h 16 --s 1000 --d 128 --no-causal"; do
  timeout 60 $H/ilp/attnkit bench --fwd --backend sm90 --iters 3 --check-rows 0 $spec --out "$work/check.json" >>"$work/checks.log" 2>&1
  echo "check ilp [$spec] rc=$?: $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
done
for round in 1 2; do
  for v in fin ilp; do
    timeout 60 $H/$v/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
      --out "$work/issue5-$v-$round.json" >"$work/issue5-$v-$round.log" 2>&1
    echo "$v round $round rc=$? at $(date -u +%T)"
  done
done
timeout 60 $H/fin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 --out "$work/issue5.json" >"$work/issue5-bench.log" 2>&1
echo "bench (fin) rc=$? at $(date -u +%T)"
timeout 150 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
kill $smi
python3 bench/peers/results_table.py "$work/issue5.json"
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" fin ilp
gzip -f "$work"/*.log "$work"/clocks.csv
tar -C "$work" -czf "$out/call11.tgz" .
