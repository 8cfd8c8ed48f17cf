#!/usr/bin/env bash
# linearfwd call 2 (2026-11-26): candidate "new" = the GDN output fused into the state pass (prep + state
# kernels); "base" = the three-kernel forward of 1f91b9d. Phase 1 (together): the candidate's linear
# forward/decode/chain gtests in 4 shards and `check`, while 4 FLA processes (one per issue shape) fill
# Triton's compile cache (their autotune picks are discarded: FLA_CACHE_RESULTS=0). Phase 2 (alone on the
# GPU): bench gdn of base and new, then FLA 0.6.0 on the four shapes (its autotuning now benchmarks cached
# binaries), decode of new, and ncu of new's two kernels if time is left.
set -u
C=.devcarry/lineargpu
out=${OUT:-/tmp/out}
L=$out/logs
mkdir -p "$L"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name --format=csv,noheader > "$L/gpu.txt"
pip install --quiet --no-index --no-deps --target /tmp/fla "$C"/*.whl > "$L/pip.log" 2>&1
export PYTHONPATH=/tmp/fla:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/tc FLA_CACHE_RESULTS=0 PYTHONUNBUFFERED=1
python3 - <<'PY'
import json
shapes = [(4, 8192, 32, 32), (1, 32768, 16, 32), (8, 4096, 16, 64), (1, 65536, 2, 8)]
for i, (b, t, h, hv) in enumerate(shapes):
    row = dict(op="linear_fwd", impl="attnkit", variant="gdn", b=b, t=t, h=h, hv=hv, k=128, v=128, dtype="bf16", ms=0)
    json.dump({"rows": [row]}, open(f"/tmp/warm{i}.json", "w"))
PY
warm=()
for i in 0 1 2 3; do
  timeout 75 python3 bench/peers/fla_linear.py --attnkit /tmp/warm$i.json --out /tmp/warm_out$i.json --skip-backward \
    --warmup 1 --iters 1 > "$L/fla_warm$i.log" 2>&1 &
  warm+=($!)
done
shards=()
for s in 0 1 2 3; do
  GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$s timeout 80 "$C/new/attnkit_gpu_tests" --gtest_brief=0 \
    --gtest_filter='Linear*:-Linear/LinearBackward.*:LinearBackward*' > "$L/gtest$s.log" 2>&1 &
  shards+=($!)
done
timeout 60 "$C/new/linear_gpu_bench" check > "$L/check.log" 2>&1
echo "check rc=$? ($(el) s)" | tee "$out/summary.txt"
for p in "${shards[@]}"; do wait "$p"; echo "gtest shard rc=$? ($(el) s)" | tee -a "$out/summary.txt"; done
cat "$L"/gtest?.log | grep -E "^\[  (FAILED|PASSED|SKIPPED) \]" | sed 's/, where.*//; s/ tests\?,.*//' | awk '{print $1, $2, $3}' | sort | uniq -c
cat "$L"/gtest?.log | grep -E "^\[  FAILED  \] Linear" | head -10
for p in "${warm[@]}"; do wait "$p"; echo "fla warm rc=$? ($(el) s)" | tee -a "$out/summary.txt"; done
for b in base new; do
  timeout 30 "$C/$b/linear_gpu_bench" bench "$L/gdn_$b.json" gdn > "$L/bench_$b.log" 2>&1
  echo "bench $b rc=$? ($(el) s)" | tee -a "$out/summary.txt"
  grep -v "^$" "$L/bench_$b.log" | sed 's/linear_gdn_//g; s/_kernel<__nv_bfloat16//g'
done
timeout 80 python3 bench/peers/fla_linear.py --attnkit "$L/gdn_new.json" --out "$out/linear_results.json" \
  --commit "${ATTNKIT_COMMIT:-candidate}" --command "bash .devcarry/lineargpu/call2.sh" --skip-backward > "$L/fla.log" 2>&1
echo "fla rc=$? ($(el) s)" | tee -a "$out/summary.txt"
grep -E "speedup" "$L/fla.log"
timeout 20 "$C/new/linear_gpu_bench" bench "$L/decode.json" decode > "$L/decode.log" 2>&1
echo "decode rc=$? ($(el) s)" | tee -a "$out/summary.txt"
if [ "$(el)" -lt 125 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
  timeout 25 $NCU --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum \
    --kernel-name regex:linear_gdn --launch-count 2 "$C/new/linear_gpu_bench" bench /tmp/n.json gdn > "$L/ncu_new.txt" 2>&1
  echo "ncu rc=$? ($(el) s)" | tee -a "$out/summary.txt"
fi
echo "== worst gdn out rms"; cat "$L"/gtest?.log | awk '/^case /{gdn = ($0 ~ / gdn /); name = $2} gdn && /rms\(err\)/{print $5, name, $1}' | sort -g | tail -4
echo "== check: $(grep -E 'ALL OK|FAILURES' $L/check.log)"; grep -E "FAIL|gdn" "$L/check.log" | head -14
echo "== decode"; grep -v queued "$L/decode.log"
[ -f "$L/ncu_new.txt" ] && grep -E "linear_gdn|Duration|DRAM Throughput|L2 Cache Throughput|hmma|Registers Per|Achieved Occupancy|dram__bytes|lts__t_bytes" "$L/ncu_new.txt" | head -30
cat "$L/gpu.txt"
for f in "$L"/gtest?.log; do gzip -f "$f"; done
tar czf "$out/logs.tgz" -C "$out" logs && rm -rf "$L"
cat "$out/summary.txt"
