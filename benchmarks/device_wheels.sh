#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what the GPU machine's image lacks for benchmarks/gpu_check.sh, run here
# before the device call, which then names .whl in `carry`:
#   - hydra-core, omegaconf, antlr4-python3-runtime: pure-Python wheels, the versions .venv has;
#   - mamba-ssm built from source without its CUDA extensions (MAMBA_SKIP_CUDA_BUILD): its Mamba-2 SSD is
#     Triton and compiles there on first use, which models.backbones.mamba2 loads even though the
#     package's own __init__ fails on the missing Mamba-1 extension. A CUDA build would outlast the
#     device budget.
# About 1 MB in all, well inside the 64 MiB that a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
mamba_version="${MAMBA_SSM_VERSION:-2.3.2.post1}"
mkdir -p .whl
rm -f .whl/*.whl
# The versions this checkout's .venv runs; antlr4 4.9.3 (what omegaconf needs) is an sdist: pip builds it.
pins=$("$py" -m pip list --format=freeze 2>/dev/null | grep -i -E '^(hydra-core|omegaconf|antlr4-python3-runtime)==')
# shellcheck disable=SC2086  # one argument per pin
"$py" -m pip wheel -q --no-deps -w .whl $pins
MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE "$py" -m pip wheel -q --no-deps --no-build-isolation \
  -w .whl "mamba-ssm==${mamba_version}"
ls -l .whl
