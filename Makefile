# sweeper: `make demo` runs the whole pipeline on a small generated dataset,
# `make test` runs every test. libtorch comes from PyPI's torch wheel in $(VENV).

VENV          ?= .venv
TORCH_VERSION := 2.11.0
TORCHVISION_VERSION := 0.26.0
PYTHON        ?= python3
CARGO         ?= cargo
TORCH_STAMP   := $(VENV)/.torch-$(TORCH_VERSION)
# Point torch-sys at the wheel's libtorch; evaluated in the recipe, after `setup`.
TORCH_ENV      = LIBTORCH="$$(ls -d $(CURDIR)/$(VENV)/lib/python3*/site-packages/torch | head -n1)" LIBTORCH_CXX11_ABI=1
BIN           := target/release/sweeper
DEMO_DIR      ?= demo-out
DEMO_WORKERS  ?= 2
# The offline validator of workers/k8s and the Kubernetes version checked against.
KUBERNETES_VALIDATE_VERSION := 1.37.0
K8S_VERSION   := 1.33.0
K8S_STAMP     := $(VENV)/.kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)
# Real images for the science check and the accuracy benchmark: Debian's Fashion-MNIST.
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
SUDO          := $(shell test "$$(id -u)" -eq 0 || echo sudo)

.PHONY: setup build test browser lint lint-k8s demo bench bench-setup bench-accuracy clean-demo real-data

setup: $(TORCH_STAMP)

# About 4.6 GB: installed once, only when missing.
$(TORCH_STAMP):
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@if $(VENV)/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "$(TORCH_VERSION)")' 2>/dev/null; then \
		echo "torch $(TORCH_VERSION) already in $(VENV)"; \
	else \
		echo "installing torch==$(TORCH_VERSION) into $(VENV) (about 4.6 GB, once)"; \
		$(VENV)/bin/pip install --disable-pip-version-check --quiet torch==$(TORCH_VERSION); \
	fi
	@touch $@

build: setup
	$(TORCH_ENV) $(CARGO) build --release --locked

test: setup real-data browser
	SWEEPER_TEST_FASHION_MNIST=$(FASHION_MNIST) \
	$(TORCH_ENV) $(CARGO) test --release --locked -- --test-threads=2

# The dashboard's browser tests drive Debian's Chromium through chromedriver; they
# fail without them.
browser: /usr/bin/chromium /usr/bin/chromedriver

/usr/bin/chromium /usr/bin/chromedriver:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver || \
		{ $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# 30 MB of IDX files, installed once; the science check fails without them.
real-data: $(FASHION_MNIST)/train-images-idx3-ubyte.gz

$(FASHION_MNIST)/train-images-idx3-ubyte.gz:
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

lint: setup lint-k8s
	$(CARGO) fmt --all -- --check
	$(TORCH_ENV) $(CARGO) clippy --release --locked --all-targets -- -D warnings

# The validator ships the Kubernetes JSON schemas, so linting needs no network.
$(K8S_STAMP):
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --disable-pip-version-check --quiet kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)
	@touch $@

lint-k8s: $(K8S_STAMP)
	./scripts/lint-k8s.sh $(VENV) $(K8S_VERSION)

demo: build
	./scripts/demo.sh $(BIN) $(DEMO_DIR) $(DEMO_WORKERS)

clean-demo:
	rm -rf $(DEMO_DIR)

# The PyTorch reference for the benchmarks needs torchvision beside torch.
bench-setup: setup
	@$(VENV)/bin/python -c 'import torchvision' 2>/dev/null || \
		$(VENV)/bin/pip install --disable-pip-version-check --quiet torchvision==$(TORCHVISION_VERSION)

bench: build bench-setup
	./benches/run.sh $(BIN) $(VENV)/bin/python

# Accuracy parity on Fashion-MNIST: sweeper against benches/accuracy.py (torch only).
bench-accuracy: build real-data
	BENCH_IDX=$(FASHION_MNIST) ./benches/accuracy.sh $(BIN) $(VENV)/bin/python target/fashion-mnist 0,1,2
