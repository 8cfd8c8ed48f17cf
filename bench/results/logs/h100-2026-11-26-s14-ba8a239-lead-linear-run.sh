#!/usr/bin/env bash
# Lead's final integrated linear check of HEAD (stop 14, after kdabwd3's 26dd671; linear-only build, archs 90a;80): the whole linear catalogue
# on sm80 (forward, decode, chains, backward GDN + KDA in 8 shards, repeat, explain) and `check`, in parallel
# with FLA's Triton pre-warm (compiles only: FLA_CACHE_RESULTS=0, so the timed run autotunes alone; KDA rows
# with their backward); then alone on the GPU: `linear_gpu_bench bench` (GDN + KDA forward, decode),
# `linear_backward_bench --variants gdn,kda`, and FLA 0.6.0 (chunk_gated_delta_rule forward; chunk_kda forward
# and forward+backward) on the same shapes. Everything but the results JSONs goes into one tar (8-file limit).
set -u
B=.devcarry/lead14c; T=$B/attnkit_gpu_tests; O=${OUT:-/tmp/lead14c}; L=$O/logs; mkdir -p "$L"
COMMIT=${1:-unknown}
nvidia-smi -L > "$O/summary.txt"
pip install --quiet --no-index --no-deps --target /tmp/fla "$B"/*.whl > "$L/pip.log" 2>&1
export PYTHONPATH=/tmp/fla:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/lead_triton_cache
s=$(date +%s); el() { echo $(( $(date +%s) - s )); }
python3 - "$B/shapes.json" /tmp/prewarm <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))["rows"]
os.makedirs(sys.argv[2], exist_ok=True)
for n, row in enumerate(rows):
    json.dump({"rows": [row]}, open(f"{sys.argv[2]}/shape{n}.json", "w"))
    open(f"{sys.argv[2]}/variant{n}", "w").write(row["variant"])
PY
for n in 0 1 2 3; do
  ( FLA_CACHE_RESULTS=0 timeout 280 python3 bench/peers/fla_linear.py --attnkit /tmp/prewarm/shape$n.json --out /tmp/prewarm/out$n.json \
      --warmup 1 --iters 1 > "$L/prewarm-$n.log" 2>&1; echo "fla prewarm $n rc=$? $(el) s" >> "$O/summary.txt" ) &
done
for i in 0 1 2 3 4 5 6 7; do
  ( GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 240 "$T" --gtest_brief=1 \
      --gtest_filter='Linear/LinearBackward.*Sm80*:LinearBackwardExplain.*:LinearBackwardRepeat.*' > "$L/bwd-$i.log" 2>&1
    echo "linear-backward shard $i rc=$? $(el) s" >> "$O/summary.txt" ) &
done
( timeout 240 "$T" --gtest_brief=1 --gtest_filter='Linear*:-Linear/LinearBackward.*:LinearBackward*' > "$L/tests-linear-forward-decode.log" 2>&1
  echo "linear forward/decode rc=$? $(el) s" >> "$O/summary.txt" ) &
( timeout 240 "$B/linear_gpu_bench" check > "$L/check.log" 2>&1; echo "check rc=$? $(el) s" >> "$O/summary.txt" ) &
wait
cat "$L"/bwd-*.log > "$L/tests-linear-backward.log"; rm -f "$L"/bwd-*.log
timeout 60 "$B/linear_gpu_bench" bench "$O/attnkit_gdn.json" gdn > "$L/bench.log" 2>&1; echo "bench gdn rc=$? $(el) s" >> "$O/summary.txt"
timeout 60 "$B/linear_gpu_bench" bench "$O/attnkit_kda.json" kda >> "$L/bench.log" 2>&1; echo "bench kda rc=$? $(el) s" >> "$O/summary.txt"
timeout 60 "$B/linear_gpu_bench" bench "$O/attnkit_decode.json" decode >> "$L/bench.log" 2>&1; echo "bench decode rc=$? $(el) s" >> "$O/summary.txt"
timeout 120 "$B/linear_backward_bench" "$O/attnkit_linear_bwd.json" --variants gdn,kda > "$L/bench-bwd.log" 2>&1; echo "bench-bwd rc=$? $(el) s" >> "$O/summary.txt"
python3 - "$O" <<'PY'
import json, sys
o = sys.argv[1]
a = json.load(open(f"{o}/attnkit_gdn.json")); b = json.load(open(f"{o}/attnkit_kda.json"))
a["rows"] += b["rows"]; json.dump(a, open(f"{o}/attnkit_fwd.json", "w"))
json.dump(b, open(f"{o}/attnkit_kda_only.json", "w"))
PY
rm -f "$O/attnkit_gdn.json" "$O/attnkit_kda.json"
timeout 240 python3 bench/peers/fla_linear.py --attnkit "$O/attnkit_kda_only.json" --out "$O/linear_fwd_results.json" \
  --commit "$COMMIT" --command "bash .devcarry/lead14c/run.sh $COMMIT" > "$L/fla.log" 2>&1
echo "fla rc=$? $(el) s" >> "$O/summary.txt"
cat "$O/summary.txt"
for f in "$L"/tests-*.log; do echo "== $f"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? from .* ran" "$f" | sed 's/, where.*//' | awk '{print $1,$2,$3}' | sort | uniq -c | sort -rn | head -8; grep -E "^\[  FAILED " "$f" | head; done
echo "== check"; grep -E "FAIL|ALL OK" "$L/check.log" | head
echo "== bench"; grep -E "fwd|decode" "$L/bench.log" | head -30; echo "== bench-bwd"; tail -16 "$L/bench-bwd.log"
echo "== fla"; grep -E "fla fwd|Error|error|speedup" "$L/fla.log" | tail -24
gzip -f "$L"/tests-*.log; tar czf "$O/logs.tgz" -C "$O" logs && rm -rf "$L"
