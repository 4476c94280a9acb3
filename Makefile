# ShopStream: two commands on a fresh machine.
#   make demo   - set up .venv if needed, then run the main job on the embedded default
#   make test   - set up .venv if needed, then run the whole test suite (unit + integration)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; installing it before the
# project keeps pip from resolving the multi-GB CUDA build. GPU users: set
# TORCH_SPEC to your CUDA build (or install it yourself first).
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false
# A single-node Ray started here binds to 127.0.0.1 only (read when ray is imported).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: setup demo test test-unit test-integration lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The main job on the embedded default: the synthetic drifting shop, trained on one
# window and evaluated on the next.
DEMO_ARGS ?= --source synthetic --epochs 3 --metrics-out runs/demo/metrics.json

demo: setup
	$(PY) -m training.train $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests -m unit

test-integration: setup
	$(PY) -m pytest tests -m integration

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy training serving tuning cluster

bench: setup
	$(PY) benchmarks/synthetic_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
