#!/usr/bin/env bash
# Lead's check of 88a36eb (the KDA prep's decayed_product_step refactor, the backward's explain tidy):
# KDA forward gtests + explain + check, then bench kda of HEAD b9012cd's binary and 88a36eb's alternating.
set -u
B=.devcarry/lead14b; O=${OUT:-/tmp/lead14b}; mkdir -p "$O"
nvidia-smi -L > "$O/summary.txt"
for i in 0 1 2 3; do
  ( GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$i timeout 150 $B/attnkit_gpu_tests --gtest_brief=1 \
      --gtest_filter='Linear/LinearForward.*Sm80_kda*:LinearBackwardExplain.*:Linear*Explain*' > "$O/t$i.log" 2>&1
    echo "tests shard $i rc=$?" >> "$O/summary.txt" ) &
done
( timeout 150 $B/linear_gpu_bench check > "$O/check.log" 2>&1; echo "check rc=$?" >> "$O/summary.txt" ) &
wait
cat "$O"/t?.log > "$O/tests.log"; rm -f "$O"/t?.log
for r in 1 2; do for b in head new; do
  bin=$B/linear_gpu_bench; [ $b = head ] && bin=$B/linear_gpu_bench.head
  timeout 60 $bin bench "$O/kda-$b-$r.json" kda > "$O/bench-$b-$r.log" 2>&1; echo "bench $b $r rc=$?" >> "$O/summary.txt"
done; done
cat "$O/summary.txt"; grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$O/tests.log" | awk '{s[$2]+=$4} END{for(k in s) print k, s[k]}'; grep -E "^\[  FAILED" "$O/tests.log" | head
grep -E "FAIL|ALL OK" "$O/check.log" | head -3
for f in "$O"/bench-*.log; do echo "== $f"; grep -E "fwd kda" "$f"; done
cd "$O" && tar czf logs.tgz tests.log check.log bench-*.log && rm -f tests.log check.log bench-*.log
