#!/usr/bin/env bash
# GPU checks for the batched engine, in one go, for a machine with a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# 1. the tests marked `cuda` (skipped on machines without a GPU);
# 2. benchmarks/batched_throughput.py on cuda: runs per hour, batched engine
#    against the one-at-a-time harness, 32 instances of track 4;
# 3. a bench-sized timing: adam, 32 seeds, all five tracks, the full loop
#    with early stopping, batched, plus 2 seeds per track one at a time.
# Results land in benchmarks/results/batched_cuda.json and
# batched_bench_cuda.json; the log in benchmarks/results/gpu_check.log.
# Step 3 takes the longest (minutes); set BENCH_SEEDS or BENCH_MAX_EPOCHS to
# shorten it, e.g. BENCH_MAX_EPOCHS=100 bash benchmarks/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
LOG=benchmarks/results/gpu_check.log
mkdir -p benchmarks/results

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device visible to torch; nothing to check" >&2
    exit 2
fi
{
    echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
} | tee "$LOG"

failed=()
step() {  # step NAME COMMAND...: run, log, and go on if it fails
    local name=$1
    shift
    echo "== $name" | tee -a "$LOG"
    if ! "$@" 2>&1 | tee -a "$LOG"; then
        failed+=("$name")
        echo "== $name FAILED" | tee -a "$LOG"
    fi
}

step "1/3 cuda tests" "$PYTHON" -m pytest -m cuda -q -rs tests
step "2/3 throughput, cuda" "$PYTHON" benchmarks/batched_throughput.py \
    --device cuda --instances 32 --epochs 5 --repeats 5
step "3/3 bench timing: adam, ${BENCH_SEEDS:-32} seeds, five tracks" \
    "$PYTHON" benchmarks/batched_bench_timing.py --device cuda --optimizer adam \
    --seeds "${BENCH_SEEDS:-32}" --max-epochs "${BENCH_MAX_EPOCHS:-1000}" \
    --reference-seeds 2

if [ ${#failed[@]} -gt 0 ]; then
    echo "== failed: ${failed[*]}; see $LOG" | tee -a "$LOG"
    exit 1
fi
echo "== done; results in benchmarks/results/" | tee -a "$LOG"
