#!/usr/bin/env bash
# Lead's integrated linear check of aed41d8 (build-linearbwd: linear only, archs 90a;80): the whole linear
# catalogue on sm80 (forward, decode, chains, backward in 8 shards, repeat, explain) and `check`, in parallel;
# then alone on the GPU: `linear_gpu_bench bench` (GDN + KDA forward, decode) and `linear_backward_bench`.
set -u
B=.devcarry/lead12; T=$B/attnkit_gpu_tests; O=${OUT:-/tmp/lead12}; mkdir -p "$O"
nvidia-smi -L > "$O/summary.txt"
s=$(date +%s); el() { echo $(( $(date +%s) - s )); }
for i in 0 1 2 3 4 5 6 7; do
  ( GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 150 "$T" --gtest_brief=1 \
      --gtest_filter='Linear/LinearBackward.*Sm80*:LinearBackwardExplain.*:LinearBackwardRepeat.*' > "$O/bwd-$i.log" 2>&1
    echo "linear-backward shard $i rc=$? $(el) s" >> "$O/summary.txt" ) &
done
( timeout 150 "$T" --gtest_brief=1 --gtest_filter='Linear/LinearForward.*Sm80*:Linear/LinearDecode*' > "$O/tests-linear-forward-decode.log" 2>&1
  echo "linear forward/decode rc=$? $(el) s" >> "$O/summary.txt" ) &
( timeout 150 "$B/linear_gpu_bench" check > "$O/check.log" 2>&1; echo "check rc=$? $(el) s" >> "$O/summary.txt" ) &
wait
cat "$O"/bwd-*.log > "$O/tests-linear-backward.log"; rm -f "$O"/bwd-*.log
timeout 60 "$B/linear_gpu_bench" bench "$O/attnkit_linear_fwd.json" > "$O/bench.log" 2>&1; echo "bench rc=$? $(el) s" >> "$O/summary.txt"
timeout 60 "$B/linear_backward_bench" "$O/attnkit_linear_bwd.json" --variants gdn > "$O/bench-bwd.log" 2>&1; echo "bench-bwd rc=$? $(el) s" >> "$O/summary.txt"
cat "$O/summary.txt"
for f in "$O"/tests-*.log; do echo "== $f"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? from .* ran" "$f" | sed 's/, where.*//' | awk '{print $1,$2,$3}' | sort | uniq -c | sort -rn | head -8; grep -E "^\[  FAILED " "$f" | head; done
echo "== check"; grep -E "FAIL|ALL OK" "$O/check.log" | head
echo "== bench"; cat "$O/bench.log"; echo "== bench-bwd"; tail -12 "$O/bench-bwd.log"
gzip -f "$O"/tests-*.log
