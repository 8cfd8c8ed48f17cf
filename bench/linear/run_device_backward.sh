#!/usr/bin/env bash
# One device call for the linear backward (gpu-workflow.md), every log under $OUT, a short table last:
#   1. the LinearBackward conformance gtests of attnkit_gpu_tests on sm80 and the bitwise repeatability
#      test (LinearBackwardRepeat), 8 shards in parallel (the float64 references are CPU-bound: 224 cases
#      in 23 s on the H100 host's 16 cores; the 112 GDN cases and the repeat test in ~15 s);
#   2. linear_backward_bench at the issue-6 shapes (forward, forward+backward, backward alone);
#   3. with FLA_ROWS ("variant:B ...", e.g. "kda:4 gdn:4"): bench/peers/fla_linear.py forward and
#      forward+backward on those rows (--warmup 1 --iters 3; FLA's Triton autotuning takes ~1-2 minutes
#      per shape and direction on a cold machine).
#   bench/linear/run_device_backward.sh CARRY
# CARRY holds the stripped attnkit_gpu_tests and linear_backward_bench and the FLA wheels. Environment:
# GTEST_FILTER, GTEST_LIMIT, BENCH_ARGS (linear_backward_bench options), BENCH_LIMIT, FLA_ROWS, FLA_LIMIT,
# ATTNKIT_COMMIT (the carried binaries' commit, for the results file).
set -u
here=$(cd "${1:?usage: run_device_backward.sh CARRY}" && pwd)
out=${OUT:-/tmp/linearbwd_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv > "$out/gpu.txt"
start=$(date +%s)
pids=()
for i in 0 1 2 3 4 5 6 7; do
  GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout "${GTEST_LIMIT:-150}" "$here/attnkit_gpu_tests" \
    --gtest_filter="${GTEST_FILTER:-Linear/LinearBackward.*Sm80*:LinearBackwardRepeat.*}" > "$out/gtest_$i.log" 2>&1 &
  pids+=($!)
done
rc_all=0
for p in "${pids[@]}"; do wait "$p" || rc_all=1; done
cat "$out"/gtest_*.log > "$out/gtest.log"; rm -f "$out"/gtest_*.log
echo "gtest rc=$rc_all ($(( $(date +%s) - start )) s)" | tee "$out/summary.txt"
start=$(date +%s)
timeout "${BENCH_LIMIT:-90}" "$here/linear_backward_bench" "$out/attnkit_bwd.json" ${BENCH_ARGS:-} > "$out/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)" | tee -a "$out/summary.txt"
if [ -n "${FLA_ROWS:-}" ] && [ -f "$out/attnkit_bwd.json" ]; then
  start=$(date +%s)
  python3 - "$out" "$FLA_ROWS" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1] + "/attnkit_bwd.json"))
keep = [tuple(x.split(":")) for x in sys.argv[2].split()]  # variant:b
sel = []
for v, b in keep:
    sel += [r for r in rows["rows"] if r["op"] == "linear_fwd" and r["variant"] == v and str(r["b"]) == b]
rows["rows"] = sel
json.dump(rows, open(sys.argv[1] + "/attnkit_for_fla.json", "w"))
PY
  pip install --quiet --no-index --no-deps --target /tmp/fla "$here"/*.whl > "$out/pip.log" 2>&1
  PYTHONPATH=/tmp/fla:${PYTHONPATH:-} timeout "${FLA_LIMIT:-170}" python3 bench/peers/fla_linear.py \
    --attnkit "$out/attnkit_for_fla.json" --out "$out/fla_results.json" --warmup 1 --iters 3 \
    --commit "${ATTNKIT_COMMIT:-unknown}" --command "bench/linear/run_device_backward.sh (FLA_ROWS=$FLA_ROWS)" > "$out/fla.log" 2>&1
  echo "fla rc=$? ($(( $(date +%s) - start )) s)" | tee -a "$out/summary.txt"
fi
gzip -f "$out/gtest.log"
echo "== gtest"
zcat "$out/gtest.log.gz" | grep -E "^\[  (PASSED|FAILED|SKIPPED) " | sed 's/, where GetParam.*)//' | sort | uniq -c | sort -rn | head -40
zcat "$out/gtest.log.gz" | grep -E "^\[  FAILED  \] Linear" | sed 's/, where GetParam() =/:/' | cut -c1-260 | head -30
echo "== bench"; cat "$out/bench.log"
[ -f "$out/fla.log" ] && { echo "== fla"; grep -v "^ *$" "$out/fla.log" | tail -15; }
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
mine = json.load(open(out + "/attnkit_bwd.json"))["rows"] if os.path.exists(out + "/attnkit_bwd.json") else []
peer = json.load(open(out + "/fla_results.json"))["rows"] if os.path.exists(out + "/fla_results.json") else []
key = lambda r: (r["op"], r["variant"], r["b"], r["t"], r["h"], r["hv"])
fla = {key(r): r for r in peer if r["impl"] == "fla"}
print("== table (ms; FLA/attnkit > 1 means attnkit faster)")
for r in mine:
    p = fla.get(key(r))
    ps = ("%.3f" % p["ms"]) if p and "ms" in p else (("skipped: " + p.get("skipped", "")[:80]) if p else "not run")
    ratio = ("%.2fx" % (p["ms"] / r["ms"])) if p and "ms" in p else ""
    extra = (" (bwd alone %.3f, grad hash %s%s)" % (r["backward_alone_ms"], r.get("grad_hash", "?"),
             "" if r.get("grad_hash") == r.get("grad_hash_repeat") else " DIFFERS between calls")
             if "backward_alone_ms" in r else "")
    print(f'{r["op"]} {r["variant"]} B={r["b"]} T={r["t"]} H={r["h"]} HV={r["hv"]}: attnkit {r["ms"]:.3f}{extra}  fla {ps}  {ratio}')
PY
cat "$out/summary.txt"
