#!/bin/bash
# sm80f device call 2 of stop 13: the kept build (fold + heavy-first sections of 16 MiB for heads of at most
# 16 query tiles): a second A/B sample at S = 1024 (one section against 8, same binary), the forward GPU
# tests, the forward half of the issue-3 bench beside flash and cuDNN.
cd "$(dirname "$0")/../.."
here=.devcarry/sm80f13
export PYTHONUNBUFFERED=1
S=$OUT/summary.log
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader; date -u; } | tee $S
echo "== sched_check" | tee -a $S
timeout 20 $here/ab/bin/sched_check 2>&1 | tail -5 | tee -a $S
echo "== A/B, S = 1024" | tee -a $S
SS=1024 NSECT=8 ROUNDS=3 OUT=$OUT timeout 40 python3 $here/ab/abf2.py 2>&1 | grep -v -e Warning -e missing | tee $OUT/abf2.log | tee -a $S
L=$here/lib
echo "== tests" | tee -a $S
timeout 45 $L/attnkit_gpu_tests --gtest_color=no \
  --gtest_filter='Dense/DenseConformance.Forward/Sm80*:Dense/DenseLargeOffsets.*:Dense/DenseBatchIndependence.*Sm80*' \
  > $OUT/gpu-tests.log 2>&1
echo "tests rc=$?" | tee -a $S
grep -E "^\[  (PASSED|FAILED) |tests? ran|^\[  FAILED  \]" $OUT/gpu-tests.log | tail -12 | tee -a $S
gzip $OUT/gpu-tests.log
echo "== issue-3 forward bench" | tee -a $S
timeout 35 $L/attnkit bench --suite issue3 --backend sm80 --fwd --warmup 5 --iters 20 \
  --out $OUT/issue3-fwd.json > $OUT/bench.log 2>&1; echo "bench rc=$?" | tee -a $S
timeout 45 python3 bench/peers/torch_dense.py --results $OUT/issue3-fwd.json --fwd --warmup 5 --iters 20 \
  >> $OUT/bench.log 2>&1; echo "peers rc=$?" | tee -a $S
python3 bench/peers/results_table.py $OUT/issue3-fwd.json 2>&1 | tee -a $S
