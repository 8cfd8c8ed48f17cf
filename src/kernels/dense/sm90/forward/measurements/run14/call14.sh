#!/usr/bin/env bash
# hopper helper, 2026-11-26 session 4, device call 1: ncu on the binaries of c0915cc (d256/: the sm90
# kernels of HEAD, unchanged since) for three cases: D = 128 S = 1024 and 8192 non-causal, D = 64 S = 1024
# causal. Sections: SOL, compute, scheduler, warp state, instruction stats, source counters (per-PC stall
# sampling, exported with the SASS). One launch of the forward kernel per case (the second).
set -u
H=.devcarry/hopper
out=${OUT:-/tmp/hopper}; work=$(mktemp -d); mkdir -p "$out"
nvidia-smi -L
ncu --version | tail -1
sections="--section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section InstructionStats --section SourceCounters --section LaunchStats"
run_case() {  # name, bench args
  local name=$1; shift
  local start=$SECONDS
  timeout 75 ncu $sections --import-source no -k regex:dense_forward_sm90 --launch-skip 1 --launch-count 1 \
    -f -o "$work/$name" $H/d256/attnkit bench --fwd --backend sm90 --warmup 1 --iters 1 --check-rows 1 "$@" \
    --out "$work/$name-bench.json" >"$work/$name-ncu.log" 2>&1
  echo "$name ncu rc=$? in $((SECONDS-start)) s"
  timeout 30 ncu -i "$work/$name.ncu-rep" --page details --csv >"$work/$name-details.csv" 2>&1 || echo "$name details rc=$?"
  timeout 40 ncu -i "$work/$name.ncu-rep" --page source --csv --print-source sass >"$work/$name-source.csv" 2>&1 || echo "$name source rc=$?"
  grep -E '"(Duration|SM Frequency|Compute \(SM\) Throughput|Warp Cycles Per Issued Instruction|Issue Slots Busy|Issued Ipc Active|No Eligible|Active Warps Per Scheduler|Eligible Warps Per Scheduler|Registers Per Thread)"' \
    "$work/$name-details.csv" | awk -F'","' '{print $(NF-2)" = "$NF" "$(NF-1)}' | head -20
  wc -c "$work/$name-source.csv"
}
run_case d128_s1024 --b 16 --s 1024 --h 16 --d 128 --no-causal
run_case d128_s8192 --b 2 --s 8192 --h 16 --d 128 --no-causal
run_case d64_s1024_causal --b 16 --s 1024 --h 32 --d 64 --causal
gzip -f "$work"/*.csv "$work"/*.log
tar -C "$work" -czf "$out/call14.tgz" --exclude='*.ncu-rep' .
tar -C "$work" -czf "$out/call14-reps.tgz" $(cd "$work" && ls *.ncu-rep)
ls -la "$out"
