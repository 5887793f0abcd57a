#!/usr/bin/env bash
# The batched device run for a session that has a GPU: CUDA tests first, then every GPU benchmark,
# each bounded so the whole script fits one device call (~9 minutes). Logs go to $OUT (the device
# tool brings them back) or ./results.
#
#   device run:  bash benchmarks/gpu_check.sh          (timeout_s 600, carry [".whl"] if wheels are needed)
#
# The device image has torch, lightning, pandas, scipy, matplotlib and pytest but not hydra-core,
# omegaconf, antlr4-python3-runtime or mamba-ssm: carry the first three as wheels in .whl/ (see the
# device tool's README); without mamba-ssm the fused-kernel checks skip and the portable path is timed.
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
# CUDA-equals-CPU tests of every estimator, prior, simulator, fingerprint and the fused Mamba-2 path.
timeout 180 "$py" -m pytest -q -k "cuda or fused" -p no:cacheprovider \
  tests/test_metrics_api.py tests/test_metrics_temporal.py tests/test_metrics_dfa.py \
  tests/test_metrics_spectral.py tests/test_metrics_graph.py tests/test_metrics_windowed.py \
  tests/test_stimuli.py tests/test_regularizers.py tests/test_simulators.py tests/test_fingerprint.py \
  tests/test_perceiver_popt.py tests/test_backbone.py 2>&1 | tee "$out/cuda_tests.log"
timeout 90 "$py" benchmarks/metrics.py --device cuda 2>&1 | tee "$out/metrics.txt"
timeout 60 "$py" benchmarks/priors.py --device cuda 2>&1 | tee "$out/priors.txt"
timeout 90 "$py" benchmarks/attention.py --device cuda --dtype bf16 --lengths 256 1024 4096 16384 2>&1 \
  | tee "$out/attention.txt"
timeout 90 "$py" benchmarks/model.py --device cuda --only ssd step --compile --out "$out/model.json" 2>&1 \
  | tee "$out/model.txt"
# Acceptance (small preset, 3000 steps per arm) is the longest part: --out is written after every arm,
# so the arms that finished before the timeout still come back in $out/acceptance.json.
timeout 150 "$py" benchmarks/model.py --device cuda --only acceptance --seeds 2 --out "$out/acceptance.json" 2>&1 \
  | tee "$out/acceptance.txt"
echo "gpu_check done; logs in $out"
