"""Platform benchmarks: orchestration overhead and GPU packing with fractional GPUs.

``python benchmarks/orchestration.py overhead``  epoch time of the tiny NeuroFMx preset under Ray Train + Tune + MLflow
                                            (one trial, one worker, local Ray, sqlite MLflow) against a plain
                                            Lightning loop on the same machine, same config and batches.
``python benchmarks/orchestration.py packing``   CUDA only: sweep throughput (trials per minute) and GPU busy % (mean
                                            NVML utilization over the sweep's wall time) with 4 trials sharing
                                            one GPU (gpus_per_worker=0.25) against one trial per GPU.

Prints one line per number and, with ``--out FILE``, writes them as JSON. Numbers are recorded in the
"Platform" section of docs/benchmarks.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Drop this script's folder from the import path: Ray workers and libraries must not import its sibling
# scripts (metrics.py, model.py, ...) in place of modules of the same name.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import json
import os
import statistics
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
BASE = ["model=tiny", "data=synthetic", "trainer.log_every_n_steps=5", "fractals.priors.warmup_steps=4"]


def _sweep_dict(name: str, *, epochs: int, batches: int, root: Path, **over) -> dict:
    d = {"name": name, "method": "random", "metric": {"name": "val/loss", "goal": "minimize"},
         # 8 samples a batch: the synthetic set must hold `batches` of them, or an epoch stops at 64 / 8 = 8
         "base": BASE + [f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}",
                         f"data.n_train={max(64, 8 * batches)}",
                         "trainer.limit_val_batches=2"],
         "parameters": {"fractals.priors.spectral_beta_target": {"value": 1.0}},
         "run_cap": 1, "max_concurrent": 1, "resources": {"workers": 1, "cpus_per_worker": 1},
         "storage": {"path": str(root / "ray")}, "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}
    d.update(over)
    return d


def plain_lightning(*, epochs: int, batches: int) -> dict:
    """Per-epoch wall time of a plain Lightning fit (no Ray, no MLflow)."""
    import pytorch_lightning as pl

    from fmx.config import compose
    from models.registry import build_datamodule, build_lightning_module

    cfg = compose(BASE + [f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}",
                          f"data.n_train={max(64, 8 * batches)}", "trainer.limit_val_batches=2"])
    times: list[float] = []

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            times.append(time.perf_counter() - self.t0)

    t0 = time.perf_counter()
    pl.seed_everything(0, verbose=False)
    module, data = build_lightning_module(cfg), build_datamodule(cfg)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=batches,
                         limit_val_batches=2, num_sanity_val_steps=0, callbacks=[EpochTimer()])
    trainer.fit(module, datamodule=data)
    return {"epoch_s": statistics.median(times[1:] or times), "total_s": time.perf_counter() - t0}


def platform_run(*, epochs: int, batches: int) -> dict:
    """Per-epoch time (Tune's time_this_iter_s between epoch reports) and total wall time of a one-trial sweep."""
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    with tempfile.TemporaryDirectory(prefix="fmx_bench_") as tmp:
        root = Path(tmp)
        sweep = parse_sweep(_sweep_dict("bench", epochs=epochs, batches=batches, root=root))
        t0 = time.perf_counter()
        out = run_sweep(sweep, root=root, progress=False)
        total = time.perf_counter() - t0
        import pandas as pd

        trial_dirs = [p for p in (root / "ray" / out.sweep_id).iterdir() if p.name.startswith("trial_fn")]
        progress = pd.read_csv(trial_dirs[0] / "progress.csv")
        epoch_rows = progress[progress["epoch"].notna()] if "epoch" in progress else progress
        per_epoch = epoch_rows["time_this_iter_s"].tolist()
    import ray

    ray.shutdown()
    return {"epoch_s": statistics.median(per_epoch[1:] or per_epoch), "total_s": total}


def overhead(args) -> dict:
    plain = plain_lightning(epochs=args.epochs, batches=args.batches)
    plat = platform_run(epochs=args.epochs, batches=args.batches)
    res = {"epochs": args.epochs, "batches_per_epoch": args.batches, "cpus": os.cpu_count(),
           "plain_epoch_s": plain["epoch_s"], "platform_epoch_s": plat["epoch_s"],
           "epoch_overhead_pct": 100 * (plat["epoch_s"] / plain["epoch_s"] - 1),
           "plain_total_s": plain["total_s"], "platform_total_s": plat["total_s"],
           "fixed_overhead_s": plat["total_s"] - plain["total_s"]}
    for k, v in res.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    return res


def _busy_sampler(interval_s: float = 0.5):
    """Sample GPU 0's utilization.gpu (NVML: the share of time a kernel ran) every ``interval_s`` in a thread.

    Returns ``stop()``, which ends the sampling and gives the mean busy % over the samples, or None when NVML
    answered none (pynvml missing): the caller reports it as unmeasured, never as 0.
    """
    import threading

    import torch

    samples: list[float] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            try:
                samples.append(float(torch.cuda.utilization(0)))
            except Exception:  # noqa: BLE001 - no NVML here: the busy % stays unmeasured
                return
            done.wait(interval_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop() -> float | None:
        done.set()
        thread.join()
        return statistics.fmean(samples) if samples else None

    return stop


def packing(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        print("packing: skipped (needs CUDA; run on a GPU machine)")
        return {"skipped": "needs CUDA"}
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    res: dict = {"gpu": torch.cuda.get_device_name(0), "trials": args.trials}
    for label, gpus, conc in (("one_per_gpu", 1.0, 1), ("packed_quarter", 0.25, 4)):
        with tempfile.TemporaryDirectory(prefix="fmx_pack_") as tmp:
            root = Path(tmp)
            d = _sweep_dict(f"pack-{label}", epochs=args.epochs, batches=args.batches, root=root, run_cap=args.trials,
                            max_concurrent=conc, resources={"workers": 1, "cpus_per_worker": 1,
                                                            "gpus_per_worker": gpus})
            d["base"] = d["base"] + ["trainer.precision=bf16-mixed"]
            stop_sampler = _busy_sampler()
            t0 = time.perf_counter()
            out = run_sweep(parse_sweep(d), root=root, progress=False)
            wall = time.perf_counter() - t0
            res[f"{label}_gpu_busy_pct"] = stop_sampler()  # issue 5 target: >= 80 with packing
            res[f"{label}_trials_per_min"] = 60 * out.n_trials / wall
            res[f"{label}_errors"] = out.n_errors
        import ray

        ray.shutdown()
    res["packing_speedup"] = res["packed_quarter_trials_per_min"] / res["one_per_gpu_trials_per_min"]
    for k, v in res.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["overhead", "packing", "all"], nargs="?", default="overhead")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batches", type=int, default=16, help="training batches per epoch")
    p.add_argument("--trials", type=int, default=8, help="packing: trials per configuration")
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    results = {}
    if args.which in ("overhead", "all"):
        results["overhead"] = overhead(args)
    if args.which in ("packing", "all"):
        results["packing"] = packing(args)
    if args.out:  # atomically: a reader never sees half a file
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
