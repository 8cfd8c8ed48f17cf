#!/usr/bin/env bash
# linearkda device call (2026-11-26, s14): KDA forward builds side by side with HEAD's and FLA 0.6.0's chunk_kda.
#  1. together (nothing timed): linear forward gtests of the test binaries in tests_*/ (4 shards each),
#     `check` of every candidate, and four FLA processes filling Triton's compile cache (FLA_CACHE_RESULTS=0:
#     their autotune picks are discarded, so the timed run autotunes alone);
#  2. alone: `bench FILE kda` of every build in $VARIANTS (round 1), in order;
#  3. alone: FLA chunk_kda forward on the four issue shapes, joined with the last variant's round-1 rows;
#  4. alone: round 2 of the benches (reverse order) where it fits the budget (arg 2, seconds).
set -u
C=.devcarry/linearkda
VARIANTS=${1:-"base A"}
BUDGET=${2:-300}
out=${OUT:-/tmp/linearkda_out}
L=/tmp/lkda_logs
mkdir -p "$L" "$out"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv > "$L/gpu.txt"
: > "$out/summary.txt"
pip install --quiet --no-index --no-deps --target /tmp/fla "$C"/*.whl > "$L/pip.log" 2>&1
export PYTHONPATH=/tmp/fla:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/tc PYTHONUNBUFFERED=1
python3 - "$C/shapes.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
for n, row in enumerate(rows):
    json.dump({"rows": [row]}, open(f"/tmp/warm{n}.json", "w"))
PY
pids=()
for n in 0 1 2 3; do
  FLA_CACHE_RESULTS=0 timeout 100 python3 bench/peers/fla_linear.py --attnkit /tmp/warm$n.json --out /tmp/warm_out$n.json \
    --skip-backward --warmup 1 --iters 1 > "$L/fla_warm$n.log" 2>&1 &
  pids+=($!)
done
for tdir in "$C"/tests_*; do
  [ -d "$tdir" ] || continue
  name=$(basename "$tdir")
  for s in 0 1 2 3; do
    ( GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$s timeout 110 "$tdir/attnkit_gpu_tests" \
        --gtest_filter='Linear*:-Linear/LinearBackward.*:LinearBackward*' > "$L/gtest_${name}_$s.log" 2>&1
      echo "gtest $name shard $s rc=$? ($(el) s)" >> "$out/summary.txt" ) &
    pids+=($!)
  done
done
for v in $VARIANTS; do
  [ "$v" = base ] && continue
  ( timeout 100 "$C/$v/linear_gpu_bench" check > "$L/check_$v.log" 2>&1; echo "check $v rc=$? ($(el) s)" >> "$out/summary.txt" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "phase 1 done ($(el) s)" >> "$out/summary.txt"
last=""
for v in $VARIANTS; do
  timeout 45 "$C/$v/linear_gpu_bench" bench "$L/kda_${v}_r1.json" kda > "$L/bench_${v}_r1.log" 2>&1
  echo "bench $v r1 rc=$? ($(el) s)" >> "$out/summary.txt"; last=$v
done
FLA_CACHE_RESULTS=0 timeout 90 python3 bench/peers/fla_linear.py --attnkit "$L/kda_${last}_r1.json" --out "$out/linear_results.json" \
  --commit "${ATTNKIT_COMMIT:-$last}" --command "bash .devcarry/linearkda/run.sh \"$VARIANTS\" $BUDGET" --skip-backward > "$L/fla.log" 2>&1
echo "fla rc=$? ($(el) s)" >> "$out/summary.txt"
rev=$(echo $VARIANTS | tr ' ' '\n' | tac | tr '\n' ' ')
for v in $rev; do
  if [ $(( $(el) + 35 )) -le "$BUDGET" ]; then
    timeout 45 "$C/$v/linear_gpu_bench" bench "$L/kda_${v}_r2.json" kda > "$L/bench_${v}_r2.log" 2>&1
    echo "bench $v r2 rc=$? ($(el) s)" >> "$out/summary.txt"
  else
    echo "bench $v r2 skipped ($(el) s)" >> "$out/summary.txt"
  fi
done
{
cat "$L/gpu.txt"
echo "== gtest"
for tdir in "$C"/tests_*; do name=$(basename "$tdir"); echo "-- $name"; cat "$L"/gtest_${name}_?.log | grep -E "^\[  (FAILED|PASSED|SKIPPED) \]" | sed 's/, where.*//; s/ tests\?,.*//' | awk '{print $1, $2, $3}' | sort | uniq -c
  cat "$L"/gtest_${name}_?.log | grep -E "^\[  FAILED  \] Linear" | head -12
  echo "worst kda out rms:"; cat "$L"/gtest_${name}_?.log | awk '/^case /{kda = ($0 ~ / kda /); name = $2} kda && /rms\(err\)/{print $5, name, $1}' | sort -g | tail -4; done
for v in $VARIANTS; do [ -f "$L/check_$v.log" ] && { echo "== check $v: $(grep -E 'ALL OK|FAILURES' $L/check_$v.log)"; grep -E "FAIL|kda" "$L/check_$v.log" | head -16; }; done
for r in r1 r2; do for v in $VARIANTS; do [ -f "$L/bench_${v}_$r.log" ] || continue; echo "== bench $v $r"; grep -v "^$" "$L/bench_${v}_$r.log" | sed 's/linear_kda_//g; s/_kernel<__nv_bfloat16//g; s/>//g'; done; done
echo "== fla"; grep -E "fla fwd|speedup|Error|x " "$L/fla.log" | tail -12
} > "$out/report.txt" 2>&1
cat "$out/report.txt"
cat "$out/summary.txt"
tar czf "$out/logs.tgz" -C /tmp lkda_logs
