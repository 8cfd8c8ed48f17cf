#!/usr/bin/env bash
# Lead: the chunked KDA forward (linear_gpu_bench of aed41d8; KDA kernels of 1a9f91d) beside FLA 0.6.0's
# chunk_kda forward on the four issue shapes, in one run:
#  1. FLA pre-warm, one process per shape (Triton compiles and autotunes into the on-disk cache; timings discarded);
#  2. alone: `linear_gpu_bench bench FILE kda`;  3. alone: fla_linear.py --skip-backward on the same shapes.
set -u
C=.devcarry/lead12c; out=${OUT:-/tmp/lead12c}; mkdir -p "$out"
nvidia-smi -L | tee "$out/summary.txt"
pip install --quiet --no-index --no-deps --target /tmp/fla "$C"/*.whl > "$out/pip.log" 2>&1
export PYTHONPATH=/tmp/fla:${PYTHONPATH:-} TRITON_CACHE_DIR=/tmp/lead_triton_cache
s=$(date +%s); el() { echo $(( $(date +%s) - s )); }
python3 - "$C/shapes.json" /tmp/prewarm <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))["rows"]
os.makedirs(sys.argv[2], exist_ok=True)
for n, row in enumerate(rows):
    json.dump({"rows": [row]}, open(f"{sys.argv[2]}/shape{n}.json", "w"))
PY
for n in 0 1 2 3; do
  ( FLA_CACHE_RESULTS=0 timeout 170 python3 bench/peers/fla_linear.py --attnkit /tmp/prewarm/shape$n.json --out /tmp/prewarm/out$n.json \
      --skip-backward --warmup 1 --iters 1 > "$out/prewarm-$n.log" 2>&1; echo "fla prewarm $n rc=$? $(el) s" >> "$out/summary.txt" ) &
done
wait
timeout 60 "$C/linear_gpu_bench" bench "$out/attnkit_kda.json" kda > "$out/bench.log" 2>&1
echo "bench rc=$? $(el) s" >> "$out/summary.txt"
timeout 170 python3 bench/peers/fla_linear.py --attnkit "$out/attnkit_kda.json" --out "$out/linear_results.json" \
  --commit aed41d8 --command "bash .devcarry/lead12c/run.sh" --skip-backward > "$out/fla.log" 2>&1
echo "fla rc=$? $(el) s" >> "$out/summary.txt"
cat "$out"/prewarm-*.log > "$out/fla-prewarm.log"; rm -f "$out"/prewarm-*.log
echo "== bench"; grep "fwd kda" "$out/bench.log"
echo "== fla"; grep -E "fla fwd|Error|error" "$out/fla.log" | tail -8
cat "$out/summary.txt"
