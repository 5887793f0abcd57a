# One command per job; see README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
MAMBA_SSM_VERSION ?= 2.3.2.post1
# pytest-xdist workers for `make test`: the tests that start Ray or servers stay in one of them, in order
# (tests/conftest.py); the CPU-only tests run beside them. 2 matches CI's 2 cores.
TEST_WORKERS ?= 2

.PHONY: setup test test-fast demo bench clean

setup: ## create .venv with CPU torch and the project (editable) plus dev extras
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# mamba_ssm's Python and Triton sources only (seconds; no CUDA build): CI runs its Mamba-2 kernels in
	# Triton's interpreter against the portable path. --no-deps: its transformers dependency is unused here.
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(BIN)/python -m pip install -q --no-build-isolation --no-deps mamba-ssm==$(MAMBA_SSM_VERSION)

test: ## the whole test suite on CPU
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

test-fast: ## everything except the tests that start Ray, MLflow or S3 servers
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow" tests

demo: ## a small sweep on local Ray + local MLflow + local checkpoints
	$(BIN)/fmx sweep run sweeps/smoke.yaml

bench: ## print benchmark numbers (see docs/benchmarks.md)
	$(BIN)/python benchmarks/metrics.py

clean:
	rm -rf .pytest_cache build *.egg-info

# ---- Deployment: docs/deploy.md --------------------------------------------------------------
REGISTRY ?=
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
PROVIDER ?=

.PHONY: image deploy undeploy validate-deploy

image: ## build and push the training and MLflow images: make image REGISTRY=registry.example.com/team TAG=0.1.0
	@test -n "$(REGISTRY)" || { echo "make image: REGISTRY is empty; run: make image REGISTRY=registry.example.com/team TAG=0.1.0" >&2; exit 2; }
	docker build --platform linux/amd64 -f docker/Dockerfile -t $(REGISTRY)/neurofmx:$(TAG) .
	docker build --platform linux/amd64 -f docker/mlflow.Dockerfile -t $(REGISTRY)/neurofmx-mlflow:$(TAG) .
	docker push $(REGISTRY)/neurofmx:$(TAG)
	docker push $(REGISTRY)/neurofmx-mlflow:$(TAG)

deploy: ## terraform apply, KubeRay + chart via helm, wait for Ray: make deploy PROVIDER=coreweave|crusoe REGISTRY=... TAG=...
	PROVIDER=$(PROVIDER) REGISTRY=$(REGISTRY) TAG=$(TAG) bash infra/deploy.sh

undeploy: ## helm uninstall and terraform destroy: make undeploy PROVIDER=coreweave|crusoe
	PROVIDER=$(PROVIDER) bash infra/undeploy.sh

validate-deploy: ## offline checks of docker/, helm/, terraform/ and infra/ (no cluster, no cloud account)
	$(BIN)/python -m pytest -q tests/test_docker.py tests/test_deploy_manifests.py tests/test_terraform.py
