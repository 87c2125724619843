#!/usr/bin/env bash
# Collects what scripts/gpu-check.sh needs on a CUDA machine without Rust: the release
# binary and the integration-test binary (which holds the GPU tests), stripped, into
# gpu-bin/.
#   scripts/gpu-bundle.sh   (after `make build` and `cargo test --release --no-run`)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu-bin
cp target/release/sweeper gpu-bin/sweeper
test_bin=$(ls -t target/release/deps/it-* | grep -v '\.d$' | head -n1)
cp "$test_bin" gpu-bin/it
strip gpu-bin/sweeper gpu-bin/it
ls -la gpu-bin
