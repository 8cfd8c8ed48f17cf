#!/usr/bin/env bash
# linearfwd, stop 13 (2026-11-26), call 2 (H100). Binaries: c = linear_gpu_bench of 21f9b09 (the GDN
# kernels of 63a657b) with three check cases that reach the state pass's slices of 64; a = c's objects with
# linear_gdn_plan.h taking no slice of 64 (launch and host objects only): whole-sector v_new stores alone.
# 1. `check` of c (forward and decode against float64, now with slice-64 grids); 2. alone on the GPU:
# bench gdn of a, c, a, c (two rounds); 3. ncu of c's state pass (slice 64) at (4, 8192, 32, 32).
set -u
C=.devcarry/lineargpu
out=${OUT:-/tmp/out}
L=$out/logs
mkdir -p "$L"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader > "$L/gpu.txt"
timeout 40 "$C/c/linear_gpu_bench" check > "$L/check_c.log" 2>&1
echo "check c rc=$? ($(el) s)" | tee -a "$out/summary.txt"
for b in a c a c; do
  n=${b}1; [ -f "$L/gdn_$n.json" ] && n=${b}2
  timeout 30 "$C/$b/linear_gpu_bench" bench "$L/gdn_$n.json" gdn > "$L/bench_$n.log" 2>&1
  echo "bench $n rc=$? ($(el) s)" | tee -a "$out/summary.txt"
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
timeout 40 $NCU --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
  --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,lts__t_sectors_op_write.sum,lts__t_sectors_op_read.sum \
  --kernel-name regex:linear_gdn_state --launch-count 1 "$C/c/linear_gpu_bench" bench /tmp/n.json gdn > "$L/ncu_c_state.txt" 2>&1
echo "ncu rc=$? ($(el) s)" | tee -a "$out/summary.txt"
echo "== check c: $(grep -E 'ALL OK|FAILURES' $L/check_c.log)"; grep -E "FAIL|s64|HV=48|HV=72|HV=40" "$L/check_c.log" | head -12
echo "== bench (ms: forward; prep / state / output)"
for f in "$L"/bench_*.log; do
  echo "-- $(basename $f .log)"
  grep -v "^$" "$f" | sed 's/linear_gdn_//g; s/_kernel<__nv_bfloat16//g; s/kernels: //' | paste - - | awk '{$1=$1; print}'
done
grep -E "linear_gdn|Duration|DRAM Throughput|L2 Cache Throughput|hmma|Registers Per|Achieved Occupancy|dram__bytes|lts__t|Issued Warp|Eligible Warps" "$L/ncu_c_state.txt" | head -20
cat "$L/gpu.txt"
gzip -f "$L/ncu_c_state.txt"
tar czf "$out/logs.tgz" -C "$out" logs && rm -rf "$L"
cat "$out/summary.txt"
