#!/usr/bin/env bash
# Lead: the linearkda state-fold patch (linear_chunk_state_sm80.cuh) on HEAD a8a11b6: linear forward gtests and
# check on the fold binaries, then GDN and KDA forward of HEAD (base) and fold interleaved, two rounds each.
set -u
C=.devcarry/lead13f; O=${OUT:-/tmp/lead13f}; mkdir -p "$O"; W=/tmp/lead13f-work; mkdir -p $W
nvidia-smi -L > $W/summary.txt
( timeout 150 $C/fold/attnkit_gpu_tests --gtest_brief=1 --gtest_filter='Linear*:-Linear/LinearBackward.*:LinearBackward*' > $W/tests-fold.log 2>&1; echo "tests rc=$?" >> $W/summary.txt ) &
( timeout 150 $C/fold/linear_gpu_bench check > $W/check-fold.log 2>&1; echo "check rc=$?" >> $W/summary.txt ) &
wait
for r in 1 2; do for v in base fold; do for op in gdn kda; do
  timeout 60 $C/$v/linear_gpu_bench bench $W/$v-$op-$r.json $op > $W/$v-$op-$r.log 2>&1; echo "$v $op round $r rc=$?" >> $W/summary.txt
done; done; done
{ cat $W/summary.txt; grep -E "^\[  (PASSED|FAILED) |tests? from .* ran" $W/tests-fold.log; grep -E "FAIL|ALL OK" $W/check-fold.log | head -5
  for r in 1 2; do for v in base fold; do grep -h "fwd" $W/$v-gdn-$r.log $W/$v-kda-$r.log | sed "s/^/$v r$r /"; done; done; } > $W/report.txt
gzip -f $W/tests-fold.log
tar czf $O/lead13f.tgz -C $W .
cat $W/report.txt
