#!/usr/bin/env bash
# linearkda device call 2 (2026-11-26): the chunk-parallel KDA forward after the prep changes, beside FLA.
#  1. in parallel (nothing timed): the KDA forward gtests (6 shards), `linear_gpu_bench check`, and a
#     pre-warm of FLA's chunk_kda (one process per shape: Triton compiles and autotunes each shape's
#     kernels; the on-disk Triton cache then serves step 3; these timings are discarded);
#  2. alone: `linear_gpu_bench bench FILE kda` (forward and its kernels timed apart);
#  3. alone: FLA 0.6.0's chunk_kda forward on the same shapes (fla_linear.py --skip-backward), joined with 2.
set -u
C=.devcarry/linearkda
out=${OUT:-/tmp/linearkda_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv > "$out/gpu.txt"
pip install --quiet --no-index --no-deps --target /tmp/fla "$C"/*.whl > "$out/pip.log" 2>&1
export PYTHONPATH=/tmp/fla:${PYTHONPATH:-}
s=$(date +%s)
: > "$out/summary.txt"
python3 - "$C/shapes.json" /tmp/prewarm <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))["rows"]
os.makedirs(sys.argv[2], exist_ok=True)
for n, row in enumerate(rows):
    json.dump({"rows": [row]}, open(f"{sys.argv[2]}/shape{n}.json", "w"))
PY
for n in 0 1 2 3; do
  ( timeout 75 python3 bench/peers/fla_linear.py --attnkit /tmp/prewarm/shape$n.json --out /tmp/prewarm/out$n.json \
      --skip-backward --warmup 1 --iters 1 > "$out/prewarm-$n.log" 2>&1; echo "fla prewarm $n rc=$? $(( $(date +%s) - s )) s" >> "$out/summary.txt" ) &
done
for i in 0 1 2 3 4 5; do
  ( GTEST_TOTAL_SHARDS=6 GTEST_SHARD_INDEX=$i timeout 50 "$C/attnkit_gpu_tests" --gtest_brief=1 \
      --gtest_filter='Linear/LinearForward.*Sm80_kda*:Linear/LinearDecodeChain.*kda*' > "$out/gtest-$i.log" 2>&1
    echo "gtest shard $i rc=$?" >> "$out/summary.txt" ) &
done
( timeout 50 "$C/linear_gpu_bench" check > "$out/check.log" 2>&1; echo "check rc=$?" >> "$out/summary.txt" ) &
wait
cat "$out"/gtest-*.log > "$out/gtest.log"; rm -f "$out"/gtest-*.log
cat "$out"/prewarm-*.log > "$out/fla-prewarm.log"; rm -f "$out"/prewarm-*.log
echo "step 1 $(( $(date +%s) - s )) s" >> "$out/summary.txt"
s=$(date +%s)
timeout 45 "$C/linear_gpu_bench" bench "$out/attnkit_kda.json" kda > "$out/bench.log" 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s" >> "$out/summary.txt"
s=$(date +%s)
timeout 60 python3 bench/peers/fla_linear.py --attnkit "$out/attnkit_kda.json" --out "$out/linear_results.json" \
  --commit "${ATTNKIT_COMMIT:-unknown}" --command "bash .devcarry/linearkda/run2.sh" --skip-backward > "$out/fla.log" 2>&1
echo "fla rc=$? $(( $(date +%s) - s )) s" >> "$out/summary.txt"
gzip -f "$out/gtest.log"
cat "$out/gpu.txt"
echo "== gtest"; zcat "$out/gtest.log.gz" | grep -E "^\[  (FAILED|PASSED|SKIPPED) " | sed 's/, where.*//' | sort | uniq -c | sort -rn | head -20
echo "== check"; grep -E "kda|FAIL|ALL OK|FAILURES" "$out/check.log" | head -12
echo "== bench"; cat "$out/bench.log"
echo "== fla"; grep -E "fla fwd|failed" "$out/fla.log" | tail -6; tail -8 "$out/fla.log"
cat "$out/summary.txt"
