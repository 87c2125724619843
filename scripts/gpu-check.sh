#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a CUDA machine that has Python with
# torch 2.11.0 but no Rust toolchain: binaries are built elsewhere and brought along.
#
#   scripts/gpu-check.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds `sweeper` and `it`, the integration-test binary (scripts/gpu-bundle.sh
# makes it); wheels for torchvision and pillow may sit in .gpu-wheels/ for the PyTorch
# reference when the machine has no torchvision. Results go to OUT_DIR.
set -uo pipefail
bin_dir=${1:?usage: scripts/gpu-check.sh BIN_DIR OUT_DIR}
out=${2:?usage: scripts/gpu-check.sh BIN_DIR OUT_DIR}
mkdir -p "$out"
python=${PYTHON:-python3}
torch_lib=$("$python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin="$bin_dir/sweeper"
failures=0
step() { echo; echo "=== $*"; }
check() { "$@" || { echo "FAILED: $*"; failures=$((failures + 1)); }; }

step "devices"
check "$bin" devices | tee "$out/devices.txt"
grep -q "CUDA: available" "$out/devices.txt" || { echo "FAILED: CUDA is not available to sweeper"; failures=$((failures + 1)); }

step "GPU tests (backbones: CUDA features match the CPU's, a GPU training step)"
check "$bin_dir/it" --ignored --exact backbones::cuda_features_match_cpu --test-threads=1 2>&1 | tee "$out/gpu-tests.txt"

step "demo pipeline on cuda:0"
demo="$out/demo"
rm -rf "$demo"; mkdir -p "$demo"
check "$bin" make-dataset "$demo/data" >/dev/null
check "$bin" submit sweeps/demo.toml --db "sqlite://$demo/demo.db" --data-root "$demo/data"
check timeout 300 "$bin" worker --db "sqlite://$demo/demo.db" --device cuda:0 --exit-when-idle \
  --artifacts "$demo/artifacts" 2> "$demo/worker.log"
tail -n 5 "$demo/worker.log"
check "$bin" status demo --db "sqlite://$demo/demo.db" | tee "$out/demo-status.txt"
check "$bin" report demo --db "sqlite://$demo/demo.db" > "$out/demo-report.md"
grep -q "failed  *[1-9]" "$out/demo-status.txt" && { echo "FAILED: demo jobs failed on the GPU"; failures=$((failures + 1)); }

step "training benchmark against PyTorch (bf16, batch 256)"
if ! "$python" -c 'import torchvision' 2>/dev/null; then
  if ls .gpu-wheels/*.whl >/dev/null 2>&1; then
    "$python" -m pip install --quiet --no-deps --no-index --target "$out/pylib" .gpu-wheels/*.whl \
      && export PYTHONPATH="$out/pylib${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
STEPS=${STEPS:-20} BENCH_SMALL=small_resnet check benches/gpu.sh "$bin" "$python" "$out/bench-gpu.txt"
rm -rf "$out/pylib"

echo
echo "gpu-check: $failures failure(s)"
exit $(( failures > 0 ))
