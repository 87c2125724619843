#!/usr/bin/env bash
# Start one sweeper worker per visible GPU on this machine and restart any that
# crashes, with exponential backoff (capped at 5 minutes). Stops them all on SIGINT/SIGTERM
# (each worker then releases its job's lease so another can take it at once).
#
#   SWEEPER_DB=postgres://user@db-host/sweeper workers/launch-gpus.sh [extra worker flags]
#
# SWEEPER_BIN picks the binary (default: sweeper on PATH). GPUS overrides the list of
# device indices (default: every GPU nvidia-smi lists, else one CPU worker).
set -uo pipefail
bin=${SWEEPER_BIN:-sweeper}
: "${SWEEPER_DB:?set SWEEPER_DB to the store URL (sqlite://... or postgres://...)}"

if [ -z "${GPUS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr '\n' ' ')
  fi
fi

run_with_restarts() {
  local device=$1; shift
  local delay=5
  while true; do
    local started=$SECONDS
    "$bin" worker --device "$device" "$@"
    local status=$?
    # 0: the worker was asked to stop or ran out of work; do not restart.
    [ "$status" -eq 0 ] && return 0
    # A worker that ran for a while before dying gets a fresh backoff.
    if [ $((SECONDS - started)) -gt 600 ]; then delay=5; fi
    echo "launch-gpus: worker on $device exited with $status; restarting in ${delay}s" >&2
    sleep "$delay" & wait $!
    delay=$(( delay * 2 > 300 ? 300 : delay * 2 ))
  done
}

pids=()
stop() {
  trap - INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null
  wait
  exit 0
}
trap stop INT TERM

if [ -z "${GPUS:-}" ]; then
  echo "launch-gpus: no GPU found; starting one CPU worker" >&2
  run_with_restarts cpu "$@" &
  pids+=($!)
else
  for gpu in $GPUS; do
    run_with_restarts "cuda:$gpu" "$@" &
    pids+=($!)
  done
fi
wait
