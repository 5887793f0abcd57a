# One command per job; see README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup test test-fast demo bench clean

setup: ## create .venv with CPU torch and the project (editable) plus dev extras
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"

test: ## the whole test suite on CPU
	$(BIN)/python -m pytest -q tests

test-fast: ## everything except the tests that start Ray, MLflow or S3 servers
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: ## a small sweep on local Ray + local MLflow + local checkpoints
	$(BIN)/fmx sweep run sweeps/smoke.yaml

bench: ## print benchmark numbers (see docs/benchmarks.md)
	$(BIN)/python benchmarks/metrics.py

clean:
	rm -rf .pytest_cache build *.egg-info
