#!/usr/bin/env bash
# linearfwd, stop 13 (2026-11-26), one H100 call. Binaries (stripped linear_gpu_bench of each build):
#   base = HEAD 5ad52d1's GDN forward; (a = v_new pair in whole 32-byte sectors: built, not carried, for time);
#   b = a + slices of 64 value columns where the grid fills the SMs (63a657b); d = b + the k copy once per q/k head.
# Phase 1 (together): b's linear gtests (forward, decode, chains) in 4 shards, `check` of a, b and d, while
#   four FLA 0.6.0 processes (one per issue shape) fill Triton's compile cache (autotune picks discarded).
# Phase 2 (alone on the GPU): bench gdn of base, a, b, d (those carried); FLA 0.6.0 timed on the four
#   shapes (its autotuning now over cached binaries); ncu of b's state pass if time is left.
set -u
C=.devcarry/lineargpu
out=${OUT:-/tmp/out}
L=$out/logs
mkdir -p "$L"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader > "$L/gpu.txt"
pip install --quiet --no-index --no-deps --target /tmp/fla "$C"/*.whl > "$L/pip.log" 2>&1
export PYTHONPATH=/tmp/fla:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
python3 - <<'PY'
import json
shapes = [(4, 8192, 32, 32), (1, 32768, 16, 32), (8, 4096, 16, 64), (1, 65536, 2, 8)]
for i, (b, t, h, hv) in enumerate(shapes):
    row = dict(op="linear_fwd", impl="attnkit", variant="gdn", b=b, t=t, h=h, hv=hv, k=128, v=128, dtype="bf16", ms=1)
    json.dump({"rows": [row]}, open(f"/tmp/warm{i}.json", "w"))
PY
warm=()
for i in 0 1 2 3; do
  FLA_CACHE_RESULTS=0 timeout 75 python3 bench/peers/fla_linear.py --attnkit /tmp/warm$i.json --out /tmp/warm_out$i.json \
    --skip-backward --warmup 1 --iters 1 > "$L/fla_warm$i.log" 2>&1 &
  warm+=($!)
done
shards=()
for s in 0 1 2 3; do
  GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$s timeout 70 "$C/b/attnkit_gpu_tests" --gtest_brief=0 \
    --gtest_filter='Linear*:-Linear/LinearBackward.*' > "$L/gtest$s.log" 2>&1 &
  shards+=($!)
done
for b in a b d; do
  [ -x "$C/$b/linear_gpu_bench" ] || continue
  timeout 40 "$C/$b/linear_gpu_bench" check > "$L/check_$b.log" 2>&1
  echo "check $b rc=$? ($(el) s)" | tee -a "$out/summary.txt"
done
for p in "${shards[@]}"; do wait "$p"; echo "gtest shard rc=$? ($(el) s)" | tee -a "$out/summary.txt"; done
for p in "${warm[@]}"; do wait "$p"; echo "fla warm rc=$? ($(el) s)" | tee -a "$out/summary.txt"; done
for b in base a b d; do
  [ -x "$C/$b/linear_gpu_bench" ] || continue
  n=$b; [ -f "$L/gdn_$b.json" ] && n=${b}2
  timeout 30 "$C/$b/linear_gpu_bench" bench "$L/gdn_$n.json" gdn > "$L/bench_$n.log" 2>&1
  echo "bench $n rc=$? ($(el) s)" | tee -a "$out/summary.txt"
done
timeout 60 python3 bench/peers/fla_linear.py --attnkit "$L/gdn_b.json" --out "$out/linear_results.json" \
  --commit "${ATTNKIT_COMMIT:-candidate-b}" --command "bash .devcarry/lineargpu/run13.sh" --skip-backward > "$L/fla.log" 2>&1
echo "fla rc=$? ($(el) s)" | tee -a "$out/summary.txt"
if [ "$(el)" -lt 120 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  timeout 25 $NCU --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum \
    --kernel-name regex:linear_gdn_state --launch-count 1 "$C/b/linear_gpu_bench" bench /tmp/n.json gdn > "$L/ncu_b_state.txt" 2>&1
  echo "ncu rc=$? ($(el) s)" | tee -a "$out/summary.txt"
fi
echo "== gtest"; cat "$L"/gtest?.log | grep -E "^\[  (FAILED|PASSED|SKIPPED) \]" | sed 's/, where.*//; s/ tests\?,.*//' | awk '{print $1, $2, $3}' | sort | uniq -c
cat "$L"/gtest?.log | grep -E "^\[  FAILED  \] Linear" | head -10
echo "== worst gdn out rms"; cat "$L"/gtest?.log | awk '/^case /{gdn = ($0 ~ / gdn /); name = $2} gdn && /rms\(err\)/{print $5, name, $1}' | sort -g | tail -3
for b in a b d; do [ -f "$L/check_$b.log" ] && echo "== check $b: $(grep -E 'ALL OK|FAILURES' $L/check_$b.log)"; done
grep -E "FAIL" "$L"/check_*.log | head -5
echo "== bench (ms: forward; prep / state / output)"
for f in "$L"/bench_*.log; do
  echo "-- $(basename $f .log)"
  grep -v "^$" "$f" | sed 's/linear_gdn_//g; s/_kernel<__nv_bfloat16//g; s/kernels: //' | paste - - | awk '{$1=$1; print}'
done
echo "== fla"; grep -E "fla fwd|speedup|Error" "$L/fla.log" | tail -10
[ -f "$L/ncu_b_state.txt" ] && grep -E "linear_gdn|Duration|DRAM Throughput|L2 Cache Throughput|hmma|Registers Per|Achieved Occupancy|dram__bytes|lts__t_bytes|Issued Warp" "$L/ncu_b_state.txt" | head -16
cat "$L/gpu.txt"
for f in "$L"/gtest?.log "$L"/fla_warm?.log; do gzip -f "$f"; done
tar czf "$out/logs.tgz" -C "$out" logs && rm -rf "$L"
cat "$out/summary.txt"
