#!/usr/bin/env bash
# The batched device run for a session that has a GPU: CUDA tests first, then every GPU benchmark,
# each bounded so the whole script ends within 570 s: one device call (600 s at most) out of a
# session's 15 device minutes, machine start included. Logs go to $OUT (the device tool brings them
# back) or ./results: eight files, the most a device call brings back (the second pytest step and the
# acceptance append to cuda_tests.log and model.txt).
#
#   here, first:  bash benchmarks/device_wheels.sh      (fills .whl/, about 1 MB)
#   device run:   bash benchmarks/gpu_check.sh          (timeout_s 600, carry [".whl"])
#
# The device image has torch, triton, lightning, pandas, scipy, matplotlib and pytest but not
# hydra-core, omegaconf, antlr4-python3-runtime or mamba-ssm; .whl/ brings them, mamba-ssm as its
# Python and Triton sources (the fused Mamba-2 SSD; causal-conv1d stays absent, so torch's conv1d runs).
set -uo pipefail
out="${OUT:-results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD:$PWD/platform:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# CUDA-equals-CPU tests of every estimator, prior, simulator, fingerprint and the fused Mamba-2 path
# (the Triton-interpreter test is for CPU-only machines: CI runs it).
timeout 150 "$py" -m pytest -q -k "(cuda or fused) and not interpreter" -p no:cacheprovider \
  tests/test_metrics_api.py tests/test_metrics_temporal.py tests/test_metrics_dfa.py \
  tests/test_metrics_spectral.py tests/test_metrics_graph.py tests/test_metrics_windowed.py \
  tests/test_stimuli.py tests/test_regularizers.py tests/test_simulators.py tests/test_fingerprint.py \
  tests/test_perceiver_popt.py tests/test_backbone.py 2>&1 | tee "$out/cuda_tests.log"
# Later review rounds' CUDA tests (odd shapes through the Triton kernels, the fused Mamba-2 scan under bf16
# autocast as training runs it), bounded on their own: a slow first Triton compile here cannot cut the
# failure summary of the step above, which pytest prints last.
timeout 30 "$py" -m pytest -q -k "cuda or fused" -p no:cacheprovider tests/test_cuda_readiness_review.py 2>&1 \
  | tee -a "$out/cuda_tests.log"
timeout 50 "$py" benchmarks/metrics.py --device cuda 2>&1 | tee "$out/metrics.txt"
timeout 60 "$py" benchmarks/priors.py --device cuda --compile 2>&1 | tee "$out/priors.txt"
timeout 50 "$py" benchmarks/attention.py --device cuda --dtype bf16 --lengths 256 1024 4096 16384 2>&1 \
  | tee "$out/attention.txt"
timeout 120 "$py" benchmarks/model.py --device cuda --only ssd step --compile --out "$out/model.json" 2>&1 \
  | tee "$out/model.txt"
# Acceptance (small preset, 3000 steps per arm, one seed: its baseline and prior arms run first) is the
# longest part: --out is written after every arm, so the arms that finished before the timeout still come
# back in $out/acceptance.json. The tiny preset's 3-seed PASS was measured on CPU (docs/model.md).
timeout 110 "$py" benchmarks/model.py --device cuda --only acceptance --seeds 1 --out "$out/acceptance.json" 2>&1 \
  | tee -a "$out/model.txt"
echo "gpu_check done; logs in $out"
