#!/usr/bin/env bash
# linearkda device call 3 (2026-11-26, s13): the KDA prep rework (diagonal 8 x 8 blocks on CUDA cores with
# the lower-left quarters of the diagonal 16 x 16 blocks on mma.sync, blocked solve, gates by cp.async) and
# the output fold (linear_chunk_output_sm80.cuh), binary "new"; "base" = linear_gpu_bench of the tree
# before this session's KDA changes.
#  1. together (nothing timed): linear forward gtests of new (8 shards), `check` of new, ncu --set full of
#     one KDA prep launch at (4, 8192, 32, 32) of base then new, and (arg "fla") four FLA processes that
#     fill Triton's compile cache (their autotune picks discarded: FLA_CACHE_RESULTS=0);
#  2. alone: `bench FILE kda` of new (forward and each kernel timed apart);
#  3. alone (arg "fla"): FLA 0.6.0 chunk_kda forward on the four shapes, joined with new's rows;
#  4. alone: `bench FILE kda` of base, where it fits the call's budget (arg 2, seconds).
set -u
C=.devcarry/linearkda
out=${OUT:-/tmp/linearkda_out}
L=$out/logs
mkdir -p "$L"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
FLA=${1:-nofla}
BUDGET=${2:-180}  # seconds this call may take: the base bench runs last, only where it still fits
PROFILE=${3:-"base new"}  # whose prep ncu profiles
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv > "$L/gpu.txt"
: > "$out/summary.txt"
warm=()
if [ "$FLA" = fla ]; then
  pip install --quiet --no-index --no-deps --target /tmp/fla "$C"/*.whl > "$L/pip.log" 2>&1
  export PYTHONPATH=/tmp/fla:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
  python3 - "$C/shapes.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
for n, row in enumerate(rows):
    json.dump({"rows": [row]}, open(f"/tmp/warm{n}.json", "w"))
PY
  for n in 0 1 2 3; do
    FLA_CACHE_RESULTS=0 timeout 100 python3 bench/peers/fla_linear.py --attnkit /tmp/warm$n.json --out /tmp/warm_out$n.json \
      --skip-backward --warmup 1 --iters 1 > "$L/fla_warm$n.log" 2>&1 &
    warm+=($!)
  done
fi
shards=()
for s in 0 1 2 3 4 5 6 7; do
  GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$s timeout 90 "$C/attnkit_gpu_tests" \
    --gtest_filter='Linear*:-Linear/LinearBackward.*:LinearBackward*' > "$L/gtest$s.log" 2>&1 &
  shards+=($!)
done
( timeout 90 "$C/linear_gpu_bench" check > "$L/check.log" 2>&1; echo "check rc=$? ($(el) s)" >> "$out/summary.txt" ) &
chk=$!
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
for b in $PROFILE; do
  bin=$C/linear_gpu_bench; [ $b = base ] && bin=$C/linear_gpu_bench_base
  timeout 45 $NCU --set full --kernel-name regex:linear_kda_prep --launch-count 1 -o "$L/ncu_prep_$b" \
    "$bin" bench /tmp/ncu_$b.json kda > "$L/ncu_prep_$b.log" 2>&1
  echo "ncu $b rc=$? ($(el) s)" >> "$out/summary.txt"
  if [ -f "$L/ncu_prep_$b.ncu-rep" ]; then
    $NCU -i "$L/ncu_prep_$b.ncu-rep" --page details > "$L/ncu_prep_$b.txt" 2>&1
    $NCU -i "$L/ncu_prep_$b.ncu-rep" --page source --csv --print-source sass > "$L/ncu_prep_${b}_sass.csv" 2>&1
    gzip -f "$L/ncu_prep_${b}_sass.csv"
    rm -f "$L/ncu_prep_$b.ncu-rep"
  fi
done
for p in "${shards[@]}"; do wait "$p"; echo "gtest shard rc=$? ($(el) s)" >> "$out/summary.txt"; done
wait "$chk"
for p in "${warm[@]}"; do wait "$p"; echo "fla warm rc=$? ($(el) s)" >> "$out/summary.txt"; done
timeout 40 "$C/linear_gpu_bench" bench "$L/kda_new.json" kda > "$L/bench_new.log" 2>&1
echo "bench new rc=$? ($(el) s)" >> "$out/summary.txt"
if [ "$FLA" = fla ]; then
  FLA_CACHE_RESULTS=0 timeout 75 python3 bench/peers/fla_linear.py --attnkit "$L/kda_new.json" --out "$out/linear_results.json" \
    --commit "${ATTNKIT_COMMIT:-candidate}" --command "bash .devcarry/linearkda/run3.sh fla" --skip-backward > "$L/fla.log" 2>&1
  echo "fla rc=$? ($(el) s)" >> "$out/summary.txt"
fi
if [ $(( $(el) + 35 )) -le "$BUDGET" ]; then
  timeout 35 "$C/linear_gpu_bench_base" bench "$L/kda_base.json" kda > "$L/bench_base.log" 2>&1
  echo "bench base rc=$? ($(el) s)" >> "$out/summary.txt"
else
  echo "bench base skipped ($(el) s)" >> "$out/summary.txt"
fi
cat "$L/gpu.txt"
echo "== gtest"; cat "$L"/gtest?.log | grep -E "^\[  (FAILED|PASSED|SKIPPED) \]" | sed 's/, where.*//; s/ tests\?,.*//' | awk '{print $1, $2, $3}' | sort | uniq -c
cat "$L"/gtest?.log | grep -E "^\[  FAILED  \] Linear" | head -12
echo "== worst kda out rms"; cat "$L"/gtest?.log | awk '/^case /{kda = ($0 ~ / kda /); name = $2} kda && /rms\(err\)/{print $5, name, $1}' | sort -g | tail -4
echo "== check: $(grep -E 'ALL OK|FAILURES' $L/check.log)"; grep -E "FAIL|kda" "$L/check.log" | head -14
for b in new base; do [ -f "$L/bench_$b.log" ] || continue; echo "== bench $b"; grep -v "^$" "$L/bench_$b.log" | sed 's/linear_kda_//g; s/_kernel<__nv_bfloat16//g'; done
[ -f "$L/fla.log" ] && { echo "== fla"; grep -E "fla fwd|speedup|Error" "$L/fla.log" | tail -10; }
for b in base new; do
  [ -f "$L/ncu_prep_$b.txt" ] && { echo "== ncu $b"; grep -E "Duration|Executed Ipc A|Issue Slots Busy|Achieved Occupancy|Registers Per|Executed Instructions  |Warp Cycles Per Issued|No Eligible|Shared Memory Throughput|DRAM Throughput|Memory Throughput|L1/TEX Hit|Bank" "$L/ncu_prep_$b.txt" | head -24; }
done
for f in "$L"/gtest?.log; do gzip -f "$f"; done
for f in "$L"/fla_warm*.log; do [ -f "$f" ] && gzip -f "$f"; done
cat "$out/summary.txt"
