#!/usr/bin/env bash
# hopper helper, stop 14, run 18, the one device call. s14/ = binaries of b6b1fd6 (clean worktree build):
# the plan decoded by the producer + the tail of short causal heads interleaved; s13/ = 7666c6a's binaries
# (base); v_hbh / v_cap16 / v_sec16 = b6b1fd6's kernels with host variants (S = 1024 causal order only).
# s14's sm90 catalogue; the issue-5 grid base / s14 / base / s14; peers beside s14's second grid; S = 1024
# causal single cases, five binaries, two rounds; all-row checks; compute-sanitizer.
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
pack() { tar -C "$work" -czf "$out/call18.tgz" .; }
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv -lms 250 >"$work/clocks.csv" 2>&1 &
smi=$!
start=$SECONDS
timeout 60 $H/s14/attnkit_gpu_tests --gtest_color=no --gtest_filter='Dense*Sm90*' >"$work/sm90-tests.log" 2>&1
echo "s14 sm90 tests rc=$? in $((SECONDS-start)) s"
grep -E "^\[  +(PASSED|FAILED) +\] [0-9]|tests? ran" "$work/sm90-tests.log"
grep -E "^\[  FAILED  \] Dense" "$work/sm90-tests.log" | head -20
grep -E "sections_d256_causal_h129" "$work/sm90-tests.log" | head -4
for run in base-1 s14-1 base-2 s14-2; do
  v=${run%-*}; bin=$H/s13; [ "$v" = s14 ] && bin=$H/s14
  timeout 40 $bin/attnkit bench --suite issue5 --fwd --backend sm90 --iters 20 --check-rows 4 \
    --out "$work/issue5-$run.json" >"$work/issue5-$run.log" 2>&1
  echo "$run rc=$? at $(date -u +%T)"
done
cp "$work/issue5-s14-2.json" "$work/issue5.json"
timeout 60 python3 bench/peers/torch_dense.py --results "$work/issue5.json" --fwd --iters 20 >"$work/peers.log" 2>&1
echo "peers rc=$? at $(date -u +%T)"
pack
# S = 1024 causal, one case a process: base (7666c6a), hbh (b6b1fd6's kernels, 7666c6a's order), s14 (tail of
# two waves), cap16 (tail capped at 16 MiB), sec16 (16 MiB sections everywhere).
for round in 1 2; do
  for v in s13 v_hbh s14 v_cap16 v_sec16; do
    for dh in "64 32" "128 16" "256 8"; do
      set -- $dh
      timeout 15 $H/$v/attnkit bench --fwd --backend sm90 --b 16 --s 1024 --h $2 --d $1 --causal --iters 20 \
        --check-rows 4 --out "$work/single-$v-d$1-$round.json" >>"$work/singles.log" 2>&1 || echo "single $v d$1 $round failed"
    done
  done
done
echo "singles done at $(date -u +%T)"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
def t(v, d, r):
    try:
        row = json.load(open(f"{w}/single-{v}-d{d}-{r}.json"))["rows"][0]
        return row["tflops"], row.get("check")
    except Exception as e:
        return float("nan"), str(e)[:40]
vs = ["s13", "v_hbh", "s14", "v_cap16", "v_sec16"]
print("S=1024 causal TFLOP/s r1/r2 and mean over s13 (7666c6a):")
for d in (64, 128, 256):
    cells = []
    for v in vs:
        a, b = t(v, d, 1), t(v, d, 2)
        base = (t("s13", d, 1)[0] + t("s13", d, 2)[0]) / 2
        cells.append(f"{v} {a[0]:.0f}/{b[0]:.0f} ({(a[0] + b[0]) / 2 / base:.3f}){'' if a[1] == b[1] == 'passed' else ' CHECK ' + str(a[1]) + str(b[1])}")
    print(f"d{d}: " + " | ".join(cells))
PY
pack
python3 bench/peers/results_table.py "$work/issue5.json" | tail -32
python3 src/kernels/dense/sm90/forward/measurements/compare_rounds.py "$work" base s14
# Every row checked on causal cases with pairs both head by head and in the tail section.
for spec in "--b 4 --h 16 --s 1000 --d 128 --causal" \
            "--b 2 --h 40 --s 1000 --d 64 --causal" \
            "--b 2 --h 20 --s 900 --d 256 --causal --dtype fp16" \
            "--b 1 --hq 40 --hkv 10 --s 1000 --d 128 --causal --window-left 300 --dtype fp16"; do
  timeout 25 $H/s14/attnkit bench --fwd --backend sm90 --warmup 1 --iters 2 --check-rows 0 $spec --out "$work/check.json" >>"$work/checks.log" 2>&1
  echo "check [$spec] rc=$? at $(date -u +%T): $(python3 -c 'import json,sys; print([(r["check"], r["check_rows"]) for r in json.load(open(sys.argv[1]))["rows"]])' "$work/check.json" 2>&1)"
done
pack
cases='Dense/DenseConformance.Forward/Sm90_bf16_causal_257_multi_tile:Dense/DenseConformance.Forward/Sm90_fp16_varlen_gqa4_window_softcap_sinks:Dense/DenseConformance.Forward/Sm90_bf16_sections_d256_causal_h129'
for tool in memcheck racecheck; do
  timeout 40 compute-sanitizer --tool $tool --error-exitcode 97 $H/s14/attnkit_gpu_tests --gtest_color=no --gtest_filter="$cases" >"$work/sanitizer-$tool.log" 2>&1
  echo "$tool rc=$? at $(date -u +%T)"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED) " "$work/sanitizer-$tool.log"
done
kill $smi
gzip -f "$work"/*.log "$work"/clocks.csv
pack
echo "total $((SECONDS-start)) s"
