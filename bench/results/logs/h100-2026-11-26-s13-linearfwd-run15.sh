#!/usr/bin/env bash
# linearfwd, stop 13 (2026-11-26), call 3 (H100). Binaries: c = the GDN kernels of 63a657b (call 2's c);
# p5 = c with the prep's k Gamma tile dropped (35.5 KB: 5 CTAs per SM); p6 = p5 with __launch_bounds__(128, 6).
# 1. p5's linear gtests in 4 shards and `check` of p5 and p6; 2. alone on the GPU: bench gdn of c, p5, p6,
# then c and p5 again while time allows.
set -u
C=.devcarry/lineargpu
out=${OUT:-/tmp/out}
L=$out/logs
mkdir -p "$L"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader > "$L/gpu.txt"
shards=()
for s in 0 1 2 3; do
  GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$s timeout 60 "$C/p5/attnkit_gpu_tests" --gtest_brief=0 \
    --gtest_filter='Linear*:-Linear/LinearBackward.*' > "$L/gtest$s.log" 2>&1 &
  shards+=($!)
done
for b in p5 p6; do
  timeout 40 "$C/$b/linear_gpu_bench" check > "$L/check_$b.log" 2>&1
  echo "check $b rc=$? ($(el) s)" | tee -a "$out/summary.txt"
done
for p in "${shards[@]}"; do wait "$p"; echo "gtest shard rc=$? ($(el) s)" | tee -a "$out/summary.txt"; done
for n in c1 p51 p61 c2 p52; do
  [ "$(el)" -gt 75 ] && break
  b=${n%?}
  timeout 25 "$C/$b/linear_gpu_bench" bench "$L/gdn_$n.json" gdn > "$L/bench_$n.log" 2>&1
  echo "bench $n rc=$? ($(el) s)" | tee -a "$out/summary.txt"
done
echo "== gtest"; cat "$L"/gtest?.log | grep -E "^\[  (FAILED|PASSED|SKIPPED) +\] [0-9]+ test" | awk '{s[$2]+=$3} END {for (k in s) print k, s[k]}'
cat "$L"/gtest?.log | grep -E "^\[  FAILED  \] Linear" | head -10
echo "== worst gdn out rms"; cat "$L"/gtest?.log | awk '/^case /{gdn = ($0 ~ / gdn /); name = $2} gdn && /rms\(err\)/{print $5, name, $1}' | sort -g | tail -3
for b in p5 p6; do echo "== check $b: $(grep -E 'ALL OK|FAILURES' $L/check_$b.log)"; grep -E "FAIL" "$L/check_$b.log" | head -5; done
echo "== bench (ms: forward; prep / state / output)"
for f in "$L"/bench_*.log; do
  echo "-- $(basename $f .log)"
  grep -v "^$" "$f" | sed 's/linear_gdn_//g; s/_kernel<__nv_bfloat16//g; s/kernels: //' | paste - - | awk '{$1=$1; print}'
done
cat "$L/gpu.txt"
for f in "$L"/gtest?.log; do gzip -f "$f"; done
tar czf "$out/logs.tgz" -C "$out" logs && rm -rf "$L"
cat "$out/summary.txt"
