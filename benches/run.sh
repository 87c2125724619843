#!/usr/bin/env bash
# Training throughput, sweeper against PyTorch, in one invocation:
#   benches/run.sh BIN PYTHON [STEPS]
# BIN is the sweeper binary (its `bench train` subcommand) or the bench_train
# example (`cargo build --release --example bench_train`), PYTHON one with torch and
# torchvision (`make bench-setup`). Prints each figure and the ratio sweeper/PyTorch.
# CPU cases: resnet50 at 64 px and the small ResNet at 32 px (`small_resnet`,
# mirrored in reference.py), compute only and end to end.
set -euo pipefail
BIN=${1:?usage: benches/run.sh BIN PYTHON [STEPS]}
PYTHON=${2:?usage: benches/run.sh BIN PYTHON [STEPS]}
STEPS=${3:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
DEVICE=${BENCH_DEVICE:-cpu}
SMALL=${BENCH_SMALL:-small_resnet}
if ! "$BIN" bench train --backbone resnet18 --image-size 8 --batch 4 --steps 1 --warmup 0 >/dev/null 2>&1; then
  echo "note: $BIN has no working 'bench train'; using the bench_train example" >&2
  BIN="$(dirname "$BIN")/examples/bench_train"
fi
# One thread pool size for both sides.
THREADS=${BENCH_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }

run_case() {
  local backbone=$1 size=$2 batch=$3 mode=$4
  local ours theirs
  ours=$("$BIN" bench train --backbone "$backbone" --image-size "$size" --batch "$batch" \
      --steps "$STEPS" --warmup 2 --mode "$mode" --device "$DEVICE")
  theirs=$("$PYTHON" "$HERE/reference.py" --backbone "$backbone" --image-size "$size" \
      --batch "$batch" --steps "$STEPS" --warmup 2 --mode "$mode" --device "$DEVICE" \
      --workers "${BENCH_WORKERS:-2}")
  local a b
  a=$(echo "$ours" | field images_per_s)
  b=$(echo "$theirs" | field images_per_s)
  printf '%-10s %4spx batch %-4s %-10s sweeper %8.1f img/s   pytorch %8.1f img/s   ratio %.2f\n' \
    "$backbone" "$size" "$batch" "$mode" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print a / b }')"
  echo "$ours" >>"${BENCH_LOG:-/dev/null}"
  echo "$theirs" >>"${BENCH_LOG:-/dev/null}"
}

if [[ -n "${BENCH_CASES:-}" ]]; then
  eval "$BENCH_CASES"
else
  for mode in compute end_to_end; do
    run_case resnet50 64 "${BENCH_BATCH:-32}" "$mode"
    run_case "$SMALL" 32 "${BENCH_BATCH_SMALL:-64}" "$mode"
  done
fi
