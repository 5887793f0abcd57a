#!/usr/bin/env bash
# Issue 5 on the GPU machine, in one device call: `benchmarks/orchestration.py packing` (tiny-model trials,
# one per GPU against four sharing it with gpus_per_worker 0.25) plus how busy the GPU was during each sweep.
#
#   here, first:  bash benchmarks/device_packing_wheels.sh     (fills .whlpack/, about 50 MiB)
#   device run:   bash benchmarks/device_packing.sh             (timeout_s 600, carry [".whlpack"])
#
# The image lacks Ray, MLflow, Optuna, Hydra and pydantic; .whlpack/site*.tar.xz holds them for its
# Python 3.12 and is untarred into /tmp/site (a few seconds). orchestration.py reports trials per minute
# only, so the benchmark runs in-process here with its run_sweep wrapped: each sweep's start and end
# are recorded, and an NVML sampler (utilization.gpu, every 0.5 s: the share of time a kernel ran)
# gives each sweep's busy %. Everything lands in $OUT (or ./results):
#   packing.json         orchestration.py's own --out (written only when both sweeps finish)
#   packing_phases.json  per sweep: wall s, trials, errors, trials/min, GPU busy % (mean, median, share
#                        of samples >= 80 %); rewritten after each sweep, so a timeout keeps what finished
#   gpu_nvml.csv         every sample: unix time, utilization.gpu %, memory used MiB
#   gpu_smi.csv          nvidia-smi's own 1 s log, a cross-check of the NVML samples
#   run.log, env.txt     the benchmark's output; versions, nvidia-smi, pip check
#   ray_logs.tgz         Ray's session logs (worker errors), when under 16 MiB
# Overrides: ORCH_ARGS (default "packing"; e.g. "packing --trials 4"), BENCH_TIMEOUT (s, default 470),
# PACK_DIR (default .whlpack; a folder without packs skips the unpacking and reuses SITE as it is),
# SITE (default /tmp/site), PYTHON (default python3, the image's torch Python).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out="${OUT:-results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
site="${SITE:-/tmp/site}"
pack_dir="${PACK_DIR:-.whlpack}"
t_start=$SECONDS
started=$(mktemp)  # Ray sessions newer than this are this run's
trap 'rm -f "$started"' EXIT

packs=("$pack_dir"/site*.tar.xz)
if [ -e "${packs[0]}" ]; then
  mkdir -p "$site"
  for f in "${packs[@]}"; do
    if command -v xz >/dev/null; then
      tar -xJf "$f" -C "$site" || exit 2
    else  # no xz binary: Python's lzma reads it too
      "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$f" "$site" \
        || exit 2
    fi
  done
  echo "unpacked ${packs[*]} into $site in $((SECONDS - t_start)) s ($(du -sm "$site" | cut -f1) MiB)"
elif [ -d "$site/ray" ]; then  # a warm machine keeps /tmp/site: a second call needs no carry
  echo "no $pack_dir/site*.tar.xz: reusing $site from an earlier call"
else
  echo "no $pack_dir/site*.tar.xz and no $site: using $py's own packages"
fi
# /tmp/site first: its packages are absent from the image by construction, so the order only matters if
# the image gains one (then the version CI tests wins). Ray's workers inherit this environment.
export PYTHONPATH="$site:$PWD:$PWD/platform${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${1:-}" = "--unpack-only" ]; then exit 0; fi  # first of two calls when the pack had to be split

{
  nvidia-smi 2>&1
  "$py" - <<'EOF' 2>&1
import importlib
for m in ("torch", "pytorch_lightning", "ray", "mlflow", "optuna", "hydra", "omegaconf", "pydantic", "sqlalchemy",
          "alembic", "pandas", "pyarrow", "numpy", "pynvml", "fmx.runner"):
    try:
        mod = importlib.import_module(m)
        print(f"{m} {getattr(mod, '__version__', '')} {getattr(mod, '__file__', '')}")
    except Exception as e:  # noqa: BLE001 - report every missing piece, not just the first
        print(f"IMPORT FAILED {m}: {type(e).__name__}: {e}")
EOF
  echo "--- pip check (image and /tmp/site together)"
  timeout 30 "$py" -m pip check 2>&1
} > "$out/env.txt"
grep -E "IMPORT FAILED|^(torch|ray|mlflow|fmx.runner) " "$out/env.txt"
# pynvml only feeds the busy %; without anything else the benchmark cannot start: stop, sparing device time
if grep "IMPORT FAILED" "$out/env.txt" | grep -qv "IMPORT FAILED pynvml"; then
  echo "device_packing: imports failed after $((SECONDS - t_start)) s (env.txt lists them)"; exit 3
fi

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,nounits -l 1 > "$out/gpu_smi.csv" 2>&1 &
smi_pid=$!
# shellcheck disable=SC2086  # ORCH_ARGS is a word list
OUT_DIR="$out" timeout -k 15 "${BENCH_TIMEOUT:-470}" "$py" - --out "$out/packing.json" ${ORCH_ARGS:-packing} <<'EOF' 2>&1 | tee "$out/run.log"
"""Run benchmarks/orchestration.py (argv as given) with each fmx.runner.run_sweep call timed and GPU-sampled."""
import json, os, runpy, statistics, sys, threading, time

out = os.environ["OUT_DIR"]
samples: list[tuple[float, float, float]] = []  # (unix s, utilization.gpu %, memory used MiB)
stop = threading.Event()


def nvml_sampler() -> None:
    try:
        try:
            import pynvml
        except ImportError:
            from ray._private.thirdparty import pynvml  # Ray vendors one
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception as e:  # noqa: BLE001 - no NVML: trials per minute still come out, busy % does not
        print(f"GPU sampler off: {type(e).__name__}: {e}", flush=True)
        return
    with open(os.path.join(out, "gpu_nvml.csv"), "w") as f:
        f.write("unix_s,util_gpu_pct,mem_used_mib\n")
        while not stop.is_set():
            u, m = pynvml.nvmlDeviceGetUtilizationRates(h), pynvml.nvmlDeviceGetMemoryInfo(h)
            s = (time.time(), float(u.gpu), m.used / 2**20)
            samples.append(s)
            f.write("%.3f,%g,%.0f\n" % s)
            f.flush()
            stop.wait(0.5)


def busy(t0: float, t1: float) -> dict:
    u = [s[1] for s in samples if t0 <= s[0] <= t1]
    if not u:
        return {"gpu_samples": 0}
    return {"gpu_samples": len(u), "gpu_busy_pct_mean": statistics.fmean(u), "gpu_busy_pct_median": statistics.median(u),
            "gpu_share_of_samples_ge_80pct": sum(x >= 80 for x in u) / len(u),
            "gpu_mem_used_mib_max": max(s[2] for s in samples if t0 <= s[0] <= t1)}


phases: list[dict] = []


def write_phases() -> None:
    tmp = os.path.join(out, "packing_phases.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"phases": phases, "nvml_samples": len(samples)}, f, indent=2)
    os.replace(tmp, os.path.join(out, "packing_phases.json"))


import fmx.runner as runner  # noqa: E402 - after the sampler's definitions

real_run_sweep = runner.run_sweep


def timed_run_sweep(sweep, *args, **kwargs):
    t0 = time.time()
    res = real_run_sweep(sweep, *args, **kwargs)
    t1 = time.time()
    ph = {"sweep": sweep.name, "gpus_per_worker": sweep.resources.gpus_per_worker,
          "max_concurrent": sweep.max_concurrent, "start_unix_s": t0, "wall_s": t1 - t0,
          "trials": res.n_trials, "errors": res.n_errors, "trials_per_min": 60 * res.n_trials / (t1 - t0),
          **busy(t0, t1)}
    phases.append(ph)
    write_phases()
    print("phase " + json.dumps(ph), flush=True)
    return res


runner.run_sweep = timed_run_sweep
sampler = threading.Thread(target=nvml_sampler, daemon=True)
sampler.start()
sys.argv = ["benchmarks/orchestration.py", *sys.argv[1:]]
try:
    runpy.run_path("benchmarks/orchestration.py", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
finally:
    stop.set()
    sampler.join(timeout=2)
    write_phases()
sys.exit(code)
EOF
rc=${PIPESTATUS[0]}
kill "$smi_pid" 2>/dev/null
[ "$rc" -eq 124 ] && echo "device_packing: benchmark stopped at ${BENCH_TIMEOUT:-470} s; packing_phases.json has the sweeps that finished"
# every sweep starts its own Ray session: keep the logs of those this run started
sessions=$(cd /tmp/ray 2>/dev/null && find . -maxdepth 1 -name "session_2*" -newer "$started" -printf "%f/logs\n")
# shellcheck disable=SC2086  # one argument per session
[ -n "$sessions" ] && tar -czf "$out/ray_logs.tgz" -C /tmp/ray $sessions 2>/dev/null
[ -f "$out/ray_logs.tgz" ] && [ "$(stat -c %s "$out/ray_logs.tgz")" -gt 16000000 ] && rm "$out/ray_logs.tgz"
echo "device_packing: rc $rc after $((SECONDS - t_start)) s; results in $out"
exit "$rc"
