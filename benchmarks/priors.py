"""Benchmark: the three fractal priors, forward plus backward, on a latent batch.

Default shape is the design's (32, 1024, 256) = (B, T, C) latent batch. Prints one JSON line per
prior (median of ``--repeat`` timed runs after ``--warmup`` untimed ones); docs/benchmarks.md
("Priors") records them.

    .venv/bin/python benchmarks/priors.py                          # CPU, full shape
    .venv/bin/python benchmarks/priors.py --shape 8 1024 64        # CPU, reduced
    .venv/bin/python benchmarks/priors.py --device cuda            # GPU
    .venv/bin/python benchmarks/priors.py --device cuda --dtype bfloat16
    .venv/bin/python benchmarks/priors.py --device cuda --compile    # eager and torch.compile rows
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from fractals.regularizers import FractalPriors, l_graph_fd, l_multifractal, l_spec_1overf

DEFAULTS = dict(fs=1000.0, band=(2.0, 80.0), q_vals=[-5, -3, -1, 0, 1, 3, 5], scales=[8, 16, 32, 64, 128, 256],
                eps_values=[1, 2, 3, 4, 5, 6], corr_threshold=0.3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, x: torch.Tensor, warmup: int, repeat: int) -> list[float]:
    out = []
    for i in range(warmup + repeat):
        x.grad = None
        _sync(x.device)
        t0 = time.perf_counter()
        loss = fn(x)
        loss.backward()
        _sync(x.device)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 1024, 256], metavar=("B", "T", "C"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="also time each prior under torch.compile (on CUDA inductor fuses the ~1000 small "
                             "ops of the three priors into Triton kernels); rows get compiled=true")
    args = parser.parse_args()
    for flag, value, low in (("--repeat", args.repeat, 1), ("--warmup", args.warmup, 0), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            parser.error(f"{flag}: needs >= {low}, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "--device cuda but torch.cuda.is_available() is False"}))
        return 2
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(*args.shape, generator=g, device=device, dtype=dtype).requires_grad_(True)
    d = DEFAULTS
    eager_priors = FractalPriors(warmup_steps=0, compile=False, **d)
    terms = {
        "spec": lambda z: l_spec_1overf(z, d["fs"], d["band"], 1.0, 0.05),
        "mf": lambda z: l_multifractal(z, d["q_vals"], d["scales"], 0.02),
        "graphfd": lambda z: l_graph_fd(z, d["eps_values"], d["corr_threshold"], None, 0.01),
        "all": lambda z: eager_priors(z)[0],
    }
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "load_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    runs = [(name, fn, False) for name, fn in terms.items()]
    if args.compile:
        runs += [(name, torch.compile(fn), True) for name, fn in terms.items() if name != "all"]
        # "all" compiled the way training runs it: FractalPriors(compile=True), fractals.priors.compile
        compiled_priors = FractalPriors(warmup_steps=0, compile=True, **d)
        runs.append(("all", lambda z: compiled_priors(z)[0], True))
    for name, fn, compiled in runs:
        try:
            times = _time(fn, x, max(args.warmup, 2 if compiled else 0), args.repeat)  # compiling is a warm-up
        except Exception as exc:  # noqa: BLE001 - report and go on with the other rows
            print(json.dumps({"bench": "priors", "term": name, "compiled": compiled,
                              "error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
            continue
        print(json.dumps({"bench": "priors", "term": name, "compiled": compiled, "shape": args.shape,
                          "dtype": args.dtype, "fwd_bwd_ms_median": round(1e3 * statistics.median(times), 2),
                          "fwd_bwd_ms_min": round(1e3 * min(times), 2), "repeat": args.repeat, **machine}), flush=True)
    if device.type == "cuda":
        print(json.dumps({"peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
