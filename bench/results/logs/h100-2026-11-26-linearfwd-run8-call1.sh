#!/usr/bin/env bash
# linearfwd call 1 (2026-11-26): ncu of the three GDN forward kernels of base (1f91b9d) at (4, 8192, 32, 32)
# and of the slice-16 state pass at (1, 65536, 2, 8); decode bench (batch 64 / 256 beside a copy).
set -u
C=.devcarry/lineargpu
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv > "$out/gpu.txt"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section InstructionStats"
M="--metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum"
s=$(date +%s)
timeout 60 $NCU $S $M --kernel-name regex:linear_gdn --launch-count 3 "$C/base/linear_gpu_bench" bench /tmp/a.json gdn > "$out/ncu_big.txt" 2>&1
echo "ncu big rc=$? $(( $(date +%s) - s )) s"
s=$(date +%s)
timeout 60 $NCU $S $M --kernel-name-base demangled --kernel-name "regex:state_kernel<__nv_bfloat16, 16>" --launch-count 1 "$C/base/linear_gpu_bench" bench /tmp/b.json gdn > "$out/ncu_long.txt" 2>&1
echo "ncu long rc=$? $(( $(date +%s) - s )) s"
s=$(date +%s)
timeout 60 "$C/base/linear_gpu_bench" bench "$out/decode.json" decode > "$out/decode.log" 2>&1
echo "decode rc=$? $(( $(date +%s) - s )) s"
cat "$out/gpu.txt" "$out/decode.log"
for f in "$out"/ncu_*.txt; do echo "== $f"; grep -E "linear_gdn|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|hmma|dram__bytes|lts__t_bytes|Stall|Executed Ipc A|Block Limit" "$f" | head -80; done
