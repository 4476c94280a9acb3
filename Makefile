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

.PHONY: setup demo report-real test test-unit test-integration test-cluster lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The main job on the embedded default (local Ray, local store, a small synthetic shop):
# every window test-then-train for every method, the report, then Serve answering until
# Ctrl-C (add --once to DEMO_ARGS to exit after the sample queries). Rerun = resume.
DEMO_SHOP ?= --synth-n-windows 4 --synth-interactions-per-window 2500 \
	--synth-transactions-per-window 1200 --synth-n-users 600 --synth-n-items 300 \
	--synth-fraud-rate 0.04
DEMO_ARGS ?=
demo: setup
	$(PY) -m cluster.pipeline $(DEMO_SHOP) --model-finetune-layers 0 \
		--store runs/demo/store --report-dir runs/demo/report --work-dir runs/demo/work \
		--storage-path runs/demo/ray $(DEMO_ARGS)

# The report on the real data in ../shared/data, with default training settings: Online
# Retail weekly and monthly windows (recommendation), then ULB hourly windows (fraud).
# Reports land in $(REAL_OUT)/<source>-<freq>/report.
SHARED_DATA ?= ../shared/data
REAL_OUT ?= runs/real
REAL_ARGS ?= --model-finetune-layers 0 --num-workers 2 --once
REAL_RETAIL_FREQS ?= week month
# Online Retail: a folder of daily CSVs. ULB: a CSV, or a folder whose every *.csv is loaded
# (slices of the published file side by side; row ids then name their file).
RETAIL_PATH ?= $(SHARED_DATA)/online_retail
ULB_PATH ?= $(SHARED_DATA)/ulb_creditcard
report-real: setup
	for freq in $(REAL_RETAIL_FREQS); do \
		$(PY) -m cluster.pipeline --source online_retail --path $(RETAIL_PATH) \
			--freq $$freq --store $(REAL_OUT)/online_retail-$$freq/store \
			--report-dir $(REAL_OUT)/online_retail-$$freq/report \
			--work-dir $(REAL_OUT)/online_retail-$$freq/work \
			--storage-path $(REAL_OUT)/online_retail-$$freq/ray $(REAL_ARGS) || exit 1; \
	done
	$(PY) -m cluster.pipeline --source ulb \
		--path $(ULB_PATH) --freq hour \
		--store $(REAL_OUT)/ulb-hour/store --report-dir $(REAL_OUT)/ulb-hour/report \
		--work-dir $(REAL_OUT)/ulb-hour/work --storage-path $(REAL_OUT)/ulb-hour/ray $(REAL_ARGS)

# The unit tier runs on both cores (pytest-xdist); the integration tier shares one local
# Ray and one moto server, so it runs in one process.
test: setup
	$(PY) -m pytest tests -m "not integration" -n 2
	$(PY) -m pytest tests -m "integration and not cluster" --durations=25

test-unit: setup
	$(PY) -m pytest tests -m unit -n 2

test-integration: setup
	$(PY) -m pytest tests -m "integration and not cluster" --durations=25

# Cluster operations (~4 min, outside `make test` for the suite's time budget): a head from
# cluster/start_local.sh with the README's `ray job submit`, and a two-node cluster on S3.
test-cluster: setup
	$(PY) -m pytest tests -m cluster --durations=5

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy training serving tuning cluster

bench: setup
	$(PY) benchmarks/synthetic_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
