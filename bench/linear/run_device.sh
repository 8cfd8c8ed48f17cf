#!/usr/bin/env bash
# One device call for linear attention (gpu-workflow.md), every log under $OUT, a short table last:
#   1. the linear conformance tests of attnkit_gpu_tests on the sm80 backend (forward, decode, chains);
#   2. `linear_gpu_bench check`: forward and decode against the float64 recurrence;
#   3. with --bench: `linear_gpu_bench bench`, then (with --fla) FLA's forward on the same shapes, joined
#      into one results file $OUT/linear_results.json.
#   bench/linear/run_device.sh CARRY [--bench] [--fla]
# CARRY holds the stripped attnkit_gpu_tests and linear_gpu_bench and the FLA wheels.
# Environment: ATTNKIT_COMMIT names the carried binaries' commit in the results file (the device's checkout
# may report another HEAD); FLA_VARIANTS (default "gdn kda") limits the FLA rows; FLA_ARGS passes options
# to bench/peers/fla_linear.py (e.g. --skip-backward); GTEST_LIMIT and FLA_LIMIT are the seconds allowed to
# those steps.
# FLA's Triton autotuning compiles every config of every kernel, about a minute per shape one after
# another. With --fla, one FLA process per (variant, issue shape) runs during the tests to fill a fresh
# Triton cache (their autotune picks are not kept: FLA_CACHE_RESULTS=0), so the timed run's autotuning,
# alone on the GPU later, benchmarks cached binaries (H100, 2026-11-26: 63 s beside the tests, then 34 s
# for the four GDN shapes).
set -u
carry=$1
shift
bench=0
fla=0
for arg in "$@"; do
  case $arg in
    --bench) bench=1 ;;
    --fla) fla=1 ;;
  esac
done
out=${OUT:-/tmp/linear_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv > "$out/gpu.txt"
export TRITON_CACHE_DIR=/tmp/linear_triton_cache
warm=()
if [ "$bench" = 1 ] && [ "$fla" = 1 ]; then
  rm -rf "$TRITON_CACHE_DIR"
  pip install --quiet --no-index --no-deps --target /tmp/fla "$carry"/*.whl > "$out/pip.log" 2>&1
  i=0
  for variant in ${FLA_VARIANTS:-gdn kda}; do
    for shape in "4 8192 32 32" "1 32768 16 32" "8 4096 16 64" "1 65536 2 8"; do
      read -r b t h hv <<< "$shape"
      echo "{\"rows\": [{\"op\": \"linear_fwd\", \"impl\": \"attnkit\", \"variant\": \"$variant\", \"b\": $b, \"t\": $t, \"h\": $h, \"hv\": $hv, \"k\": 128, \"v\": 128, \"dtype\": \"bf16\", \"ms\": 1}]}" > /tmp/linear_warm$i.json
      FLA_CACHE_RESULTS=0 PYTHONPATH=/tmp/fla:${PYTHONPATH:-} timeout "${FLA_LIMIT:-300}" python3 bench/peers/fla_linear.py \
        --attnkit /tmp/linear_warm$i.json --out /tmp/linear_warm_out$i.json --skip-backward --warmup 1 --iters 1 \
        > "$out/fla_warm$i.log" 2>&1 &
      warm+=($!)
      i=$((i + 1))
    done
  done
fi
timeout "${GTEST_LIMIT:-120}" "$carry/attnkit_gpu_tests" --gtest_brief=1 \
  --gtest_filter='Linear/LinearForward.*Sm80*:Linear/LinearDecode.*Sm80*:Linear/LinearDecodeChain.*' > "$out/gtest.log" 2>&1
echo "gtest rc=$?" | tee "$out/summary.txt"
timeout 120 "$carry/linear_gpu_bench" check > "$out/check.log" 2>&1
echo "check rc=$?" | tee -a "$out/summary.txt"
for p in "${warm[@]}"; do wait "$p"; done  # the timings below run alone on the GPU
if [ "$bench" = 1 ]; then
  timeout 120 "$carry/linear_gpu_bench" bench "$out/attnkit_linear.json" > "$out/bench.log" 2>&1
  echo "bench rc=$?" | tee -a "$out/summary.txt"
fi
if [ "$bench" = 1 ] && [ "$fla" = 1 ]; then
  FLA_VARIANTS=${FLA_VARIANTS:-gdn kda} python3 - "$out" <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1] + "/attnkit_linear.json"))
keep = os.environ["FLA_VARIANTS"].split()
rows["rows"] = [r for r in rows["rows"] if r["op"] == "linear_fwd" and r["variant"] in keep]
json.dump(rows, open(sys.argv[1] + "/attnkit_for_fla.json", "w"))
PY
  PYTHONPATH=/tmp/fla:${PYTHONPATH:-} timeout "${FLA_LIMIT:-300}" python3 bench/peers/fla_linear.py \
    --attnkit "$out/attnkit_for_fla.json" --out "$out/linear_results.json" \
    --commit "${ATTNKIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
    --command "bench/linear/run_device.sh $*" ${FLA_ARGS:-} > "$out/fla.log" 2>&1
  echo "fla rc=$?" | tee -a "$out/summary.txt"
fi
gzip -f "$out/gtest.log"
echo "== gtest"; zcat "$out/gtest.log.gz" | grep -E "^\[  (FAILED|PASSED|SKIPPED) " | sed 's/, where.*//' | tail -20
echo "== check"; grep -E "FAIL|ALL OK|FAILURES" "$out/check.log" | head -20
[ -f "$out/bench.log" ] && { echo "== bench"; cat "$out/bench.log"; }
[ -f "$out/fla.log" ] && { echo "== fla"; tail -12 "$out/fla.log"; }
cat "$out/summary.txt"
grep -q "check rc=0" "$out/summary.txt"
