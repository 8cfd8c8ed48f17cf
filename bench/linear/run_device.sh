#!/usr/bin/env bash
# One device call for linear attention (gpu-workflow.md): the GPU check against the float64 recurrence,
# then (with --bench) attnkit's timings and, with --fla, FLA's on the same shapes, joined into one
# results file under $OUT. Expects the stripped linear_gpu_bench and the FLA wheels in $CARRY.
#   bench/linear/run_device.sh CARRY [--bench] [--fla]
# ATTNKIT_COMMIT names the commit of the carried binary in the results file (the device's checkout may
# report another HEAD); FLA_ARGS passes options to bench/peers/fla_linear.py (e.g. --skip-backward).
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
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
"$carry/linear_gpu_bench" check 2>&1 | tee "$out/check.log"
check_status=${PIPESTATUS[0]}
[ "$bench" = 1 ] || exit "$check_status"
"$carry/linear_gpu_bench" bench "$out/attnkit_linear.json" 2>&1 | tee "$out/bench.log"
[ "$fla" = 1 ] || exit "$check_status"
pip install --quiet --no-index --no-deps --target /tmp/fla "$carry"/*.whl 2>&1 | tail -2
PYTHONPATH=/tmp/fla:${PYTHONPATH:-} python3 bench/peers/fla_linear.py --attnkit "$out/attnkit_linear.json" \
  --out "$out/linear_results.json" --commit "${ATTNKIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
  --command "bench/linear/run_device.sh $*" ${FLA_ARGS:-} 2>&1 | tee "$out/fla.log"
exit "$check_status"
