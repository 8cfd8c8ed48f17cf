#!/usr/bin/env bash
# Lead: the catalogue's new tail_split_* cases (sm80 backward tail split) on the device: sm80 forward and
# backward (binary of d11f2a2 + the cases, build-sm80b), sm90 forward (hopper's 7374e26 kernels, build-hopper),
# then memcheck and racecheck of the sm80 bf16 backward ones.
set -u
B=.devcarry/lead12b; O=${OUT:-/tmp/lead12b}; mkdir -p "$O"
nvidia-smi -L | tee "$O/summary.txt"
timeout 120 $B/gpu_tests_sm80 --gtest_filter='*Sm80*tail_split*' > "$O/sm80.log" 2>&1; echo "sm80 rc=$?" | tee -a "$O/summary.txt"
timeout 120 $B/gpu_tests_sm90 --gtest_filter='*Sm90*tail_split*' > "$O/sm90.log" 2>&1; echo "sm90 rc=$?" | tee -a "$O/summary.txt"
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $B/gpu_tests_sm80 --gtest_filter='Dense/DenseConformance.Backward/Sm80_bf16_tail_split*' > "$O/$tool.log" 2>&1
  echo "$tool rc=$?" | tee -a "$O/summary.txt"
done
for f in "$O"/*.log; do echo "== $f"; grep -E "^\[  (PASSED|FAILED|SKIPPED)|ERROR SUMMARY|RACECHECK SUMMARY|Hazard" "$f" | head -8; done
