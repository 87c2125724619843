#!/usr/bin/env bash
# The training benchmark on a GPU machine: bf16 autocast, batch 256, ResNet-50 at
# 224 px and the small ResNet at 32 px, sweeper against PyTorch, compute only and
# end to end. Results go to OUTFILE (default bench-gpu.txt) and the JSON lines to
# OUTFILE.jsonl.
#   benches/gpu.sh BIN PYTHON [OUTFILE]
set -euo pipefail
BIN=${1:?usage: benches/gpu.sh BIN PYTHON [OUTFILE]}
PYTHON=${2:?usage: benches/gpu.sh BIN PYTHON [OUTFILE]}
OUTFILE=${3:-bench-gpu.txt}
HERE=$(cd "$(dirname "$0")" && pwd)
{
  echo "# $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
  BENCH_DEVICE=cuda BENCH_LOG="$OUTFILE.jsonl" BENCH_WORKERS=${BENCH_WORKERS:-8} \
  BENCH_CASES='for mode in compute end_to_end; do
      run_case resnet50 224 256 "$mode"
      run_case "$SMALL" 32 256 "$mode"
    done' \
    "$HERE/run.sh" "$BIN" "$PYTHON" "${STEPS:-20}"
} | tee "$OUTFILE"
