#!/usr/bin/env bash
# `make demo`: the report's pipeline at demo scale, end to end, on the CPU.
#   scripts/demo.sh BIN OUT_DIR WORKERS
# Generates a small cytology-like dataset (once), submits sweeps/demo.toml into a fresh
# SQLite file, runs WORKERS CPU workers until the sweep is done, prints the report and
# writes its plots.
set -euo pipefail
bin=${1:-target/release/sweeper}
out=${2:-demo-out}
workers=${3:-2}
db="sqlite://$out/demo.db"

mkdir -p "$out"
if [ ! -d "$out/data/setA" ]; then
  "$bin" make-dataset "$out/data"
fi
rm -f "$out"/demo.db "$out"/demo.db-wal "$out"/demo.db-shm
rm -rf "$out/artifacts" "$out/plots"

"$bin" submit sweeps/demo.toml --db "$db" --data-root "$out/data"

# Two CPU workers share the machine's cores between them.
threads=$(( $(nproc) / workers )); [ "$threads" -ge 1 ] || threads=1
pids=()
for i in $(seq 1 "$workers"); do
  OMP_NUM_THREADS=$threads "$bin" worker --db "$db" --device cpu --exit-when-idle \
    --artifacts "$out/artifacts" --name "demo-$i" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done

"$bin" status demo --db "$db"
echo
"$bin" report demo --db "$db" --plots "$out/plots"
echo
echo "plots: $out/plots   database: $out/demo.db   artifacts: $out/artifacts"
exit "$status"
