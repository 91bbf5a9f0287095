#!/usr/bin/env bash
# One-shot GPU check of medjax (see benchmarks/gpu_check.py for what it measures).
#
#   OUT=/path/to/results bash benchmarks/gpu.sh          # on the GPU machine
#   GPU_CHECK_DRY=1 OUT=/tmp/gpuout bash benchmarks/gpu.sh   # CPU dry run, tiny shapes
#
# Writes $OUT/gpu.log (everything printed) and $OUT/gpu.json (every measurement,
# rewritten as results arrive, so a run cut short still leaves what it measured).
# Stages run in their own processes under a global deadline
# (GPU_CHECK_DEADLINE_S, default 340 s from the start of the driver).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
echo "gpu.sh: $(date -u +%FT%TZ) in $PWD, OUT=$OUT, python=$(command -v "$PY")"
echo "gpu.sh: PYTHONPATH=${PYTHONPATH:-}"
exec "$PY" benchmarks/gpu_check.py "$@"
