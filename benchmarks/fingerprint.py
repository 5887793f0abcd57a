"""Benchmark: the fingerprint job over the 24 eegmat-dev recordings (19 channels, 60 s, 250 Hz).

Target: the whole cohort, fOU fits included, in <= 60 s on 2 CPU cores (local Ray, 2 CPUs).
Prints one JSON line per measurement; docs/benchmarks.md ("Fingerprint jobs") records them.

    .venv/bin/python benchmarks/fingerprint.py                # Ray, 2 CPUs, cold start included
    .venv/bin/python benchmarks/fingerprint.py --num-cpus 4 --repeat 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "eegmat-dev"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA), help="cohort folder (default: ../shared/data/eegmat-dev)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--config", nargs="*", default=["eeg"], help="config name and overrides")
    parser.add_argument("--repeat", type=int, default=1, help="cold runs (fresh output folder each)")
    parser.add_argument("--serial", action="store_true", help="also time the in-process serial executor")
    args = parser.parse_args()
    for flag, value in (("--repeat", args.repeat), ("--num-cpus", args.num_cpus)):
        if value < 1:
            parser.error(f"{flag}: needs >= 1, got {value}")
    if not Path(args.data).is_dir():
        print(f"data: {args.data} not found; the benchmark needs ../shared/data/eegmat-dev", file=sys.stderr)
        return 2
    from fmx.fingerprint.job import run_fingerprint_job

    machine = {"cpus_visible": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
               "python": platform.python_version()}
    executors = ["ray"] + (["serial"] if args.serial else [])
    for executor in executors:
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="fmx-bench-fp-") as out:
                start = time.perf_counter()
                res = run_fingerprint_job(args.data, out, config=args.config, executor=executor,
                                          num_cpus=args.num_cpus, log_mlflow=False, progress=False)
                wall = time.perf_counter() - start
                per = res.recordings["seconds"].dropna()
                # a resumed re-run: every part exists, nothing is refitted
                start = time.perf_counter()
                again = run_fingerprint_job(args.data, out, config=args.config, executor=executor,
                                            num_cpus=args.num_cpus, log_mlflow=False, progress=False)
                resume = time.perf_counter() - start
            print(json.dumps({
                "bench": "fingerprint_job", "executor": executor, "num_cpus": args.num_cpus, "run": i,
                "recordings": len(res.recordings), "fitted": res.n_fitted, "failed": res.n_failed,
                "channels": int(res.summary["n_channels"].max()), "measures": int(res.table["measure"].nunique()),
                "wall_s": round(wall, 2), "per_recording_s_mean": round(float(per.mean()), 3),
                "per_recording_s_max": round(float(per.max()), 3), "resume_wall_s": round(resume, 2),
                "resume_skipped": again.n_skipped, "target_s": 60, "meets_target": wall <= 60, **machine,
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
