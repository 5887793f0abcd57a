"""Benchmark: the full fractal metric pass, ours against the reference libraries.

``--device cuda`` times every metric on the design doc's workload, a batch of 32 x 256 channels x
8192 samples (section 14: "metrics pass on 32 x (T=8192, C=256) < 300 ms on A100"), per metric
and in total, with CUDA synchronisation, warm-up runs and the median of repeats. ``--device cpu``
times a reduced batch of the same series and, for the same series, the reference libraries
(antropy, nolds, neurokit2, MFDFA, specparam, networkx), one series at a time as they work, and
prints series per second side by side with the speedup. Output is a markdown table (and
``--json PATH`` writes the raw numbers); docs/benchmarks.md ("Fractal metrics") records runs.

    .venv/bin/python benchmarks/metrics.py --device cpu                      # reduced, + references
    .venv/bin/python benchmarks/metrics.py --device cuda                     # 32 x 256 x 8192
    .venv/bin/python benchmarks/metrics.py --device cuda --dtype float64
    .venv/bin/python benchmarks/metrics.py --device cpu --threads 1 --clock thread --graph-shape 32 256
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fractals import _box_triton, _rs_triton  # noqa: E402
from fractals import metrics as fm  # noqa: E402
from fractals.stimuli import fgn  # noqa: E402
from fractals.temporal import default_windows  # noqa: E402

# Settings from platform/fmx/conf/fractals/default.yaml (the design config).
FS = 1000.0
BAND = (2.0, 80.0)
KMAX = 8
Q_VALS = [-5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0]
SCALES = [8, 16, 32, 64, 128, 256]
EPS = [1, 2, 3, 4, 5, 6]
CORR_THRESHOLD = 0.3
# With fewer than 8 channels the FC graph of these series (a ring, ~1 shortcut per channel, chance
# correlations of long-memory series) is complete or nearly so (measured: C = 5 always, C = 6 for some
# B and T): one box covers it from eps = 2 and its graph FD is undefined.
MIN_CHANNELS = 8
MIN_SAMPLES = 256  # DFA's default windows: octaves 16 .. T/4, at least 3 of them


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter  # --clock thread: CPU time of this thread (robust to other jobs' load)


def _median_seconds(fn, device: torch.device, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = CLOCK()
        fn()
        _sync(device)
        times.append(CLOCK() - t0)
    return statistics.median(times)


def our_metrics(x: torch.Tensor) -> dict:
    """name -> zero-argument callable running our estimator on the whole batch ``(B, C, T)``."""
    dfa_windows = None  # default: octaves 16 .. T/4 (the windows the nolds references get too)
    latents = x.transpose(-1, -2)  # the model's (B, T, C) layout

    def fc_graph():
        adj = fm.functional_connectivity_latents(latents, "pearson", thresh=CORR_THRESHOLD)
        return fm.graph_fractal_dim(adj, EPS, components="sum")

    return {
        "higuchi_fd": lambda: fm.higuchi_fd(x, kmax=KMAX),
        "katz_fd": lambda: fm.katz_fd(x),
        "dfa_alpha": lambda: fm.dfa_alpha(x, windows=dfa_windows),
        "hurst_rs": lambda: fm.hurst_rs(x),
        "spectral_beta": lambda: fm.spectral_beta(x, FS, BAND),
        "multifractal_spectrum": lambda: fm.multifractal_spectrum(x, Q_VALS, SCALES),
        "fc_graph_fd": fc_graph,
    }


def reference_metrics(series: np.ndarray, graph_channels: np.ndarray) -> dict:
    """name -> list of (library, callable over all ``series`` one at a time, series count).

    ``graph_channels`` ``(C, T)`` is one recording whose FC graph the networkx reference covers
    (counted as C series, to compare per series)."""
    refs: dict = {}

    def add(metric, lib, per_series):
        refs.setdefault(metric, []).append((lib, lambda: [per_series(s) for s in series], len(series)))

    try:
        import antropy

        add("higuchi_fd", "antropy", lambda s: antropy.higuchi_fd(s, kmax=KMAX))
        add("katz_fd", "antropy", antropy.katz_fd)
        add("dfa_alpha", "antropy", antropy.detrended_fluctuation)
    except ImportError:
        pass
    try:
        import nolds

        # The windows ours use by default (octaves 16 .. T/4), so both sides do the same work.
        windows = default_windows(series.shape[-1], 16)
        add("dfa_alpha", "nolds", lambda s: nolds.dfa(s, nvals=windows, overlap=False, fit_exp="poly"))
        add("hurst_rs", "nolds", lambda s: nolds.hurst_rs(s, nvals=windows, fit="poly"))
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import neurokit2 as nk

        add("higuchi_fd", "neurokit2", lambda s: nk.fractal_higuchi(s, k_max=KMAX)[0])
        add("katz_fd", "neurokit2", lambda s: nk.fractal_katz(s)[0])
        add("dfa_alpha", "neurokit2", lambda s: nk.fractal_dfa(s)[0])
    except ImportError:
        pass
    try:
        from MFDFA import MFDFA

        add("multifractal_spectrum", "MFDFA", lambda s: MFDFA(s, np.array(SCALES), q=np.array(Q_VALS), order=1))
    except ImportError:
        pass
    try:
        import scipy.signal
        from specparam import SpectralModel

        def specparam_beta(s):
            f, p = scipy.signal.welch(s, FS, nperseg=2048)
            model = SpectralModel(aperiodic_mode="fixed", verbose=False, peak_width_limits=(1.0, 12.0))
            model.fit(f, p, list(BAND))
            return model.get_params("aperiodic")[1]

        add("spectral_beta", "scipy welch + specparam", specparam_beta)
    except ImportError:
        pass
    try:
        import networkx as nx

        def nx_graph_fd(latent):  # one (T, C) latent matrix -> FC -> greedy box covering
            r = np.abs(np.corrcoef(latent.T))
            np.fill_diagonal(r, 0)
            g = nx.from_numpy_array((r > CORR_THRESHOLD).astype(int))
            dist = dict(nx.all_pairs_shortest_path_length(g))
            counts = []
            for l_b in EPS:
                dual = nx.Graph()
                dual.add_nodes_from(g)
                dual.add_edges_from((i, j) for i in g for j in g if i < j and dist[i].get(j, 1 << 30) >= l_b)
                counts.append(max(nx.greedy_color(dual, strategy="largest_first").values()) + 1)
            return -np.polyfit(np.log(EPS), np.log(counts), 1)[0]

        graph = graph_channels.T  # (T, C), the layout nx_graph_fd takes
        refs.setdefault("fc_graph_fd", []).append(("numpy + networkx", lambda: nx_graph_fd(graph), graph.shape[1]))
    except ImportError:
        pass
    return refs


def make_series(b: int, c: int, t: int) -> torch.Tensor:
    """Long-memory channels (fGn, H = 0.7) coupled like a cortical sheet: each channel mixes in its
    ring neighbours and, rarely, a distant channel, so the FC graph at |r| > 0.3 has structure
    at several scales (a ring with shortcuts) instead of being empty or complete."""
    gen = torch.Generator().manual_seed(0)
    sources = fgn(t, 0.7, batch_shape=(b, c), generator=gen)
    mix = torch.eye(c, dtype=torch.float64)
    idx = torch.arange(c)
    mix[idx, (idx + 1) % c] = mix[idx, (idx - 1) % c] = 0.6
    shortcuts = torch.rand((c, c), generator=gen) < 1.0 / c
    mix = mix + 0.6 * shortcuts
    return mix @ sources


def _speedup(ratio: float) -> str:
    """``12x`` from 10x up; two significant digits below, so a slower run reads 0.25x, not 0x."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop on options that would fail only after minutes of timing, with the option and the fix."""
    for flag, value, low in (("--repeat", args.repeat, 1), ("--ref-repeat", args.ref_repeat, 1),
                             ("--warmup", args.warmup, 0), ("--ref-series", args.ref_series, 0),
                             ("--threads", args.threads, 1)):
        if value is not None and value < low:
            parser.error(f"{flag}: needs >= {low}, got {value}")
    if args.shape:
        b, c, t = args.shape
        for name, value, low, why in (("B", b, 1, "a batch"), ("C", c, MIN_CHANNELS, "a graph FD of the FC graph"),
                                      ("T", t, MIN_SAMPLES, "DFA's default windows")):
            if value < low:
                parser.error(f"--shape: {name} = {value} is too small: {why} needs {name} >= {low}")
    if args.graph_shape:
        gb, gc = args.graph_shape
        if gb < 1 or gc < MIN_CHANNELS:
            parser.error(f"--graph-shape: B = {gb}, C = {gc}: needs B >= 1 and C >= {MIN_CHANNELS} "
                         "(a graph FD of the FC graph)")


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("B", "C", "T"),
                        help="batch, channels, samples (default: 32 256 8192 on cuda, 2 32 8192 on cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ref-series", type=int, default=8,
                        help="series per reference library (CPU mode; they run one series at a time)")
    parser.add_argument("--ref-repeat", type=int, default=3,
                        help="timed runs per reference library (median; after one warm-up run)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference libraries")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers here (atomically)")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"],
                        help="thread: CPU seconds of the calling thread (needs --device cpu --threads 1, so all "
                             "work runs on it; on a shared machine other jobs' load then barely moves the numbers, "
                             "and idle library threads that spin are not counted)")
    parser.add_argument("--graph-shape", type=int, nargs=2, default=None, metavar=("B", "C"),
                        help="also time FC + graph FD on B graphs of C nodes (T = 2048) against networkx on "
                             "one such graph (CPU; e.g. 32 256, the design batch)")
    args = parser.parse_args()
    _check_args(parser, args)
    global CLOCK
    if args.clock == "thread":
        if args.device != "cpu" or args.threads != 1:
            parser.error("--clock thread: needs --device cpu --threads 1 (work on other threads would not count)")
        CLOCK = time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
        try:  # the references' NumPy/SciPy BLAS too, so both sides get the same cores
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads)
        except ImportError:
            print("  (threadpoolctl not installed: NumPy's BLAS keeps its own thread count)", file=sys.stderr)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    b, c, t = args.shape or ((32, 256, 8192) if device.type == "cuda" else (2, 32, 8192))
    dtype = getattr(torch, args.dtype)

    x64 = make_series(b, c, t)
    x = x64.to(device=device, dtype=dtype)
    n_series = b * c
    print(f"# fractal metric pass: {b} x {c} x {t} ({n_series} series), {args.dtype}, {device.type}", file=sys.stderr)

    ours = {}
    for name, fn in our_metrics(x).items():
        print(f"  ours {name} ...", file=sys.stderr, flush=True)
        ours[name] = _median_seconds(fn, device, args.warmup, args.repeat)
    total = sum(ours.values())

    theirs: dict = {}
    if device.type == "cpu" and not args.no_reference:
        series = x64.reshape(-1, t)[: args.ref_series].numpy()
        for name, entries in reference_metrics(series, x64[0].numpy()).items():
            for lib, fn, count in entries:
                print(f"  {lib} {name} ...", file=sys.stderr, flush=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs.setdefault(name, []).append((lib, _median_seconds(fn, device, 1, args.ref_repeat), count))

    host = f"{_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    if device.type == "cuda":
        host = f"{torch.cuda.get_device_name(device)}; {host}"
    print(f"\nShape {b} x {c} x {t}, {args.dtype}, {device.type} ({host}); median of {args.repeat} after {args.warmup} warm-up.\n")
    print("| metric | ours: ms per batch | ours: series/s | reference | reference: series/s | speedup |")
    print("|---|---:|---:|---|---:|---:|")
    rows = []
    for name, sec in ours.items():
        ours_rate = n_series / sec
        refs = theirs.get(name) or [("-", None, 0)]
        for lib, ref_sec, count in refs:
            ref_rate = count / ref_sec if ref_sec else None
            speed = _speedup(ours_rate / ref_rate) if ref_rate else "-"
            ref_txt = f"{ref_rate:.1f}" if ref_rate else "-"
            print(f"| {name} | {sec * 1e3:.1f} | {ours_rate:.0f} | {lib} | {ref_txt} | {speed} |")
            rows.append(dict(metric=name, ours_s=sec, ours_series_per_s=ours_rate, reference=lib,
                             reference_series_per_s=ref_rate))
    print(f"| **total pass** | {total * 1e3:.1f} | {n_series / total:.0f} | | | |")
    # What each Triton kernel saves: the same metric with the kernel switched off (CUDA only).
    for kernel, on, metric, label in (
        (_box_triton, _box_triton.available(device, c), "fc_graph_fd", "torch colouring loop"),
        (_rs_triton, _rs_triton.available(device, default_windows(t)), "hurst_rs", "torch path"),
    ):
        if not on:
            continue
        kernel.ENABLED = False
        try:
            torch_s = _median_seconds(our_metrics(x)[metric], device, args.warmup, args.repeat)
        finally:
            kernel.ENABLED = True
        print(f"| {metric}, {label} instead of Triton | {torch_s * 1e3:.1f} | {n_series / torch_s:.0f} "
              f"| - | - | Triton {torch_s / ours[metric]:.1f}x faster |")
        rows.append(dict(metric=f"{metric}_without_triton", ours_s=torch_s, ours_series_per_s=n_series / torch_s))
    if args.graph_shape and device.type == "cpu":
        gb, gc = args.graph_shape
        print(f"  FC + graph FD on {gb} graphs of {gc} nodes ...", file=sys.stderr, flush=True)
        big = make_series(gb, gc, 2048)
        ours_g = _median_seconds(our_metrics(big.to(dtype))["fc_graph_fd"], device, args.warmup, args.repeat)
        ref = reference_metrics(big[0, :1].numpy(), big[0].numpy()).get("fc_graph_fd", [])
        for lib, fn, count in ref:
            ref_sec = _median_seconds(fn, device, 1, args.ref_repeat)
            speed = (gb / ours_g) / (1 / ref_sec)
            print(f"| fc_graph_fd, {gb} graphs x {gc} nodes | {ours_g * 1e3:.1f} | {gb * gc / ours_g:.0f} | {lib} "
                  f"| {count / ref_sec:.1f} | {_speedup(speed)} |")
            rows.append(dict(metric=f"fc_graph_fd_{gb}x{gc}", ours_s=ours_g, ours_series_per_s=gb * gc / ours_g,
                             reference=lib, reference_series_per_s=count / ref_sec))
    if args.json:
        payload = dict(shape=[b, c, t], dtype=args.dtype, device=device.type, host=host, rows=rows, total_s=total)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False, suffix=".tmp") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(fh.name, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
