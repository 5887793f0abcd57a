"""Bias, spread and error of the fractal estimators on exact synthetic processes of known exponent.

Usage: ``python benchmarks/estimator_accuracy.py [--series 32] [--length 8192] [--seed 0] [--only NAME ...]``

The accuracy figures quoted in docs/methods_fractals.md ("accuracy (measured)") and in the estimators'
docstrings are checked against the tables printed here, in the setting each quote names:

- ``higuchi``: Higuchi FD (kmax 8) on exact fBm against 2 - H, and its value on fGn.
- ``katz``: Katz FD on exact fGn (no ground truth: mean and sd by H).
- ``dfa``: DFA1 alpha on exact fGn against H and on exact fBm against H + 1 (default windows).
- ``rs``: corrected Hurst R/S on exact fGn against H.
- ``spectral``: ``spectral_beta`` (fs 1000 Hz, band 2-80 Hz, defaults) on 1/f^beta noise with 0-3 peaks,
  at T = 1024, ``--length`` and 2 x ``--length``, on 2 x ``--series`` series per cell.
- ``mfdfa``: MFDFA h(q) and width on fGn H = 0.7; tau(q) on binomial cascades (depth log2 ``--length``,
  scales 16..1024) against -log2(p^q + (1 - p)^q).
- ``graph``: box-covering dimension (eps 2..9) of lattices, a path, (u,v)-flowers and relabelled rings
  (deterministic: ``--series``, ``--length`` and ``--seed`` do not apply).

Each cell draws from its own ``torch.Generator`` seeded from ``--seed`` and the cell's position, so
``--only`` prints the same numbers as the full run. All series of a cell go through one batched call.
``bias`` is the mean error over series, ``se`` its standard error, ``sd`` the per-series standard
deviation and ``MAE`` the mean absolute error. Recorded runs: docs/benchmarks.md, "Estimator accuracy".
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import fractals.metrics as fm
from fractals.stimuli import cascade_multifractal, fbm_series, fgn, one_over_f_noise

HURSTS = (0.2, 0.5, 0.7, 0.9)
FS, BAND = 1000.0, (2.0, 80.0)
BETAS = (0.5, 1.0, 1.5, 2.0)
# (freq_hz, Gaussian sd in Hz, power ratio at the centre): alpha, beta and gamma-like bumps, as the docstring's.
PEAK_SETS = {
    "no peaks": None,
    "alpha peak": [(10.0, 1.5, 5.0)],
    "two peaks": [(10.0, 1.5, 5.0), (22.0, 2.5, 2.0)],
    "three peaks": [(10.0, 1.5, 5.0), (22.0, 2.5, 2.0), (45.0, 3.0, 1.5)],
}
GRAPH_EPS = list(range(2, 10))
RING_EPS = [1, 2, 3, 4, 5, 6]  # the config's graph.box_eps
MIN_LENGTH = 1024  # DFA / R/S / MFDFA default scales run 16..T/4: 1024 leaves 5 octaves


def _generator(seed: int, *cell: int) -> torch.Generator:
    # One generator per cell (not one shared stream), so a cell's numbers do not depend on which ran before.
    key = seed
    for c in cell:
        key = (key * 1009 + c) % 2**63  # manual_seed refuses keys past 64 bits (a large --seed)
    return torch.Generator().manual_seed(key)


def _stats(estimate: torch.Tensor, truth: float) -> tuple[float, float, float, float]:
    err = estimate.double() - truth
    n = err.numel()
    sd = float(err.std()) if n > 1 else float("nan")
    return float(err.mean()), sd / math.sqrt(n), sd, float(err.abs().mean())


def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    print(f"\n== {title}")
    print("  ".join(f"{h:>12}" for h in header))
    for row in rows:
        print("  ".join(f"{v:>+12.3f}" if isinstance(v, float) else f"{str(v):>12}" for v in row))


def _error_rows(label: str, values: dict, truth: dict) -> list[tuple]:
    return [(f"{label}={k}", *_stats(v, truth[k])) for k, v in values.items()]


ERROR_HEADER = ("setting", "bias", "se", "sd", "MAE")


# ----------------------------------------------------------------------------- temporal estimators
def bench_higuchi(args) -> None:
    fbm = {h: fm.higuchi_fd(fbm_series(args.length, h, n_series=args.series, generator=_generator(args.seed, 1, i)))
           for i, h in enumerate(HURSTS)}
    _table(f"higuchi_fd (kmax 8) on exact fBm, T={args.length}, {args.series} series: FD - (2 - H)",
           ERROR_HEADER, _error_rows("H", fbm, {h: 2.0 - h for h in HURSTS}))
    rows = []
    for i, h in enumerate(HURSTS):
        fd = fm.higuchi_fd(fgn(args.length, h, n_series=args.series, generator=_generator(args.seed, 2, i)))
        rows.append((f"H={h}", float(fd.mean()), float(fd.std())))
    _table("higuchi_fd on exact fGn (the increments; H=0.5 is white noise): FD", ("setting", "mean", "sd"), rows)


def bench_katz(args) -> None:
    rows = []
    for i, h in enumerate(HURSTS):
        fd = fm.katz_fd(fgn(args.length, h, n_series=args.series, generator=_generator(args.seed, 3, i)))
        rows.append((f"H={h}", float(fd.mean()), float(fd.std())))
    _table(f"katz_fd on exact fGn, T={args.length}, {args.series} series: FD (no ground truth)",
           ("setting", "mean", "sd"), rows)


def bench_dfa(args) -> None:
    hursts = (0.2, 0.3, 0.5, 0.7, 0.9)
    on_fgn = {h: fm.dfa_alpha(fgn(args.length, h, n_series=args.series, generator=_generator(args.seed, 4, i)))
              for i, h in enumerate(hursts)}
    _table(f"dfa_alpha (order 1, default windows) on exact fGn, T={args.length}, {args.series} series: alpha - H",
           ERROR_HEADER, _error_rows("H", on_fgn, {h: h for h in hursts}))
    on_fbm = {h: fm.dfa_alpha(fbm_series(args.length, h, n_series=args.series, generator=_generator(args.seed, 5, i)))
              for i, h in enumerate(HURSTS)}
    _table("dfa_alpha on exact fBm: alpha - (H + 1)", ERROR_HEADER,
           _error_rows("H", on_fbm, {h: h + 1.0 for h in HURSTS}))


def bench_rs(args) -> None:
    est = {h: fm.hurst_rs(fgn(args.length, h, n_series=args.series, generator=_generator(args.seed, 6, i)))
           for i, h in enumerate(HURSTS)}
    _table(f"hurst_rs (corrected, default windows) on exact fGn, T={args.length}, {args.series} series: H_rs - H",
           ERROR_HEADER, _error_rows("H", est, {h: h for h in HURSTS}))


# ----------------------------------------------------------------------------- spectral
def bench_spectral(args) -> None:
    n_series = 2 * args.series
    for li, length in enumerate(sorted({1024, args.length, 2 * args.length})):
        rows = []
        for pi, (name, peaks) in enumerate(PEAK_SETS.items()):
            x = torch.stack([one_over_f_noise(length, beta, FS, peaks, n_series=n_series,
                                              generator=_generator(args.seed, 7, li, pi, bi))
                             for bi, beta in enumerate(BETAS)])  # (beta, series, T): one call below
            beta_hat = fm.spectral_beta(x, FS, BAND)
            rows += [(name, f"beta={beta}", *_stats(beta_hat[bi], beta)) for bi, beta in enumerate(BETAS)]
        _table(f"spectral_beta (fs {FS:g} Hz, band {BAND[0]:g}-{BAND[1]:g} Hz, defaults) on 1/f^beta noise, "
               f"T={length}, {n_series} series per cell: beta_hat - beta",
               ("peaks", "beta", "bias", "se", "sd", "MAE"), rows)


PEAK_SEPARATIONS = (2.0, 3.0, 4.0, 5.0, 6.0)  # Hz between two sd-1 Hz peaks (power ratio 3) centred on 20 Hz


def _specparam_peaks(f, rows, centre: float, reach: float):
    """Peaks specparam finds within ``reach`` Hz of ``centre`` and its exponent, per row (None: not installed)."""
    try:
        import warnings

        from specparam import SpectralModel
    except ImportError:
        return None
    counts, betas = [], []
    for row in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SpectralModel(aperiodic_mode="fixed", verbose=False, peak_width_limits=(1.0, 12.0))
            model.fit(np.asarray(f), np.asarray(row), list(BAND))
        peaks = np.atleast_2d(model.get_params("peak"))
        found = peaks[~np.isnan(peaks).any(1)] if peaks.size else peaks
        counts.append(int(np.sum(np.abs(found[:, 0] - centre) < reach)) if found.size else 0)
        betas.append(float(model.get_params("aperiodic")[1]))
    return np.array(counts), np.array(betas)


def bench_peaks(args) -> None:
    """How close two oscillatory peaks may sit and still be told apart; the slope is unaffected either way."""
    rows = []
    for si, sep in enumerate(PEAK_SEPARATIONS):
        peaks = [(20.0 - sep / 2, 1.0, 3.0), (20.0 + sep / 2, 1.0, 3.0)]
        x = one_over_f_noise(args.length, 1.0, FS, peaks, n_series=args.series,
                             generator=_generator(args.seed, 11, si))
        fit = fm.spectral_beta(x, FS, BAND, return_fit=True)
        reach = sep / 2 + 2.0
        ours = (((fit.peak_freq - 20.0).abs() < reach) & fit.peak_valid).sum(-1)
        ref = _specparam_peaks(*fm.welch_psd(x, FS), 20.0, reach)
        theirs = ("-", "-") if ref is None else (float(np.mean(ref[0] == 2)), float(np.mean(np.abs(ref[1] - 1.0))))
        rows.append((f"{sep:g} Hz", float((ours == 2).double().mean()), float((fit.beta - 1.0).abs().mean()),
                     *theirs))
    _table(f"two Gaussian peaks (sd 1 Hz, power ratio 3) around 20 Hz on 1/f noise, T={args.length}, "
           f"{args.series} series: share of series with both found, and beta MAE; specparam 2 (Welch PSD, "
           "peak_width_limits 1-12 Hz) beside",
           ("separation", "two found", "beta MAE", "sp two found", "sp beta MAE"), rows)


# ----------------------------------------------------------------------------- multifractal
def bench_mfdfa(args) -> None:
    x = fgn(args.length, 0.7, n_series=args.series, generator=_generator(args.seed, 8))
    spec = fm.multifractal_spectrum(x)
    rows = [(f"q={float(q):g}", float(spec["h"][:, j].mean()), float(spec["h"][:, j].std()))
            for j, q in enumerate(spec["q"])]
    rows.append(("width", float(spec["width"].mean()), float(spec["width"].std())))
    _table(f"multifractal_spectrum on exact fGn H=0.7, T={args.length}, {args.series} series, default q and "
           "scales: h(q) and width (truth: h = 0.7, width 0)", ("setting", "mean", "sd"), rows)
    depth = max(1, math.ceil(math.log2(args.length)))
    scales = [s for s in (16, 32, 64, 128, 256, 512, 1024) if s <= 2**depth // 4]
    for k, p in enumerate((0.6, 0.75)):
        cells = cascade_multifractal(depth=depth, p=p, n_series=args.series, generator=_generator(args.seed, 9, k))
        spec = fm.multifractal_spectrum(cells, scales=scales)
        rows = []
        for j, q in enumerate(spec["q"].tolist()):
            theory = -math.log2(p**q + (1.0 - p) ** q)
            rows.append((f"q={q:g}", theory, *_stats(spec["tau"][:, j], theory)))
        _table(f"multifractal_spectrum on binomial cascades p={p}, depth {depth}, scales {scales[0]}..{scales[-1]}, "
               f"{args.series} series: tau(q) - theory", ("setting", "theory", "bias", "se", "sd", "MAE"), rows)


# ----------------------------------------------------------------------------- graphs
def _ordered_graph_edges(adj: dict) -> list[tuple]:
    """Edges in networkx's order for a dict-of-dicts graph (each edge once, from its first-listed end)."""
    seen, edges = set(), []
    for node, nbrs in adj.items():
        edges += [(node, nbr) for nbr in nbrs if nbr not in seen]
        seen.add(node)
    return edges


def _add_path(adj: dict, nodes: list) -> None:
    for a, b in zip(nodes, nodes[1:]):
        adj.setdefault(a, {})
        adj.setdefault(b, {})
        adj[a][b] = adj[b][a] = True


def uv_flower(u: int, v: int, generation: int) -> np.ndarray:
    """(u,v)-flower (Rozenfeld, Havlin & ben-Avraham 2007): from one edge, each generation replaces every
    edge by two parallel paths of u and v edges; d_B = ln(u + v) / ln(u) for u > 1. Nodes are numbered as
    networkx numbers tests/test_metrics_graph.py's builder (the colouring depends on node order)."""
    adj: dict = {}
    _add_path(adj, [0, 1])
    next_node = 2
    for _ in range(generation):
        grown: dict = {}
        for a, b in _ordered_graph_edges(adj):
            for length in (u, v):
                inner = list(range(next_node, next_node + length - 1))
                next_node += length - 1
                _add_path(grown, [a, *inner, b])
        adj = grown
    index = {node: i for i, node in enumerate(adj)}
    out = np.zeros((len(adj), len(adj)))
    for a, nbrs in adj.items():
        out[index[a], [index[b] for b in nbrs]] = 1.0
    return out


def lattice(side: int) -> np.ndarray:
    idx = np.arange(side * side).reshape(side, side)
    out = np.zeros((side * side, side * side))
    for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        out[a.ravel(), b.ravel()] = out[b.ravel(), a.ravel()] = 1.0
    return out


def path(n: int) -> np.ndarray:
    return np.eye(n, k=1) + np.eye(n, k=-1)


def bench_graph(args) -> None:
    graphs = [("lattice 24x24", 2.0, lattice(24)), ("lattice 32x32", 2.0, lattice(32)), ("path 128", 1.0, path(128)),
              ("(2,2) gen 4", 2.0, uv_flower(2, 2, 4)), ("(2,2) gen 5", 2.0, uv_flower(2, 2, 5)),
              ("(2,3) gen 4", math.log(5) / math.log(2), uv_flower(2, 3, 4)),
              ("(3,3) gen 3", math.log(6) / math.log(3), uv_flower(3, 3, 3))]
    rows = []
    for name, truth, a in graphs:
        d_b = float(fm.graph_fractal_dim(a, GRAPH_EPS))
        rows.append((name, a.shape[0], truth, d_b, d_b - truth))
    # Node order moves the greedy colouring: one ring, 30 random labellings, one batched call.
    ring = np.roll(np.eye(12), 1, axis=1)
    ring = torch.as_tensor(ring + ring.T)
    g = _generator(0, 10)  # fixed, not --seed: the docstring's range is over these 30 labellings
    perms = torch.stack([torch.randperm(12, generator=g) for _ in range(30)])
    rings = ring[perms[:, :, None], perms[:, None, :]]
    for name, eps in (("ring eps1-6", RING_EPS), ("ring default", None)):
        d_ring = fm.graph_fractal_dim(rings, eps)
        rows.append((name, 12, 1.0, f"{float(d_ring.min()):.2f}-{float(d_ring.max()):.2f}", "30 labellings"))
    _table(f"graph_fractal_dim (eps {GRAPH_EPS[0]}..{GRAPH_EPS[-1]}; rings: the config's 1..6 and the default "
           "2..diameter+1) on graphs of known dimension", ("graph", "nodes", "d", "d_B", "d_B - d"), rows)


BENCHES = {"higuchi": bench_higuchi, "katz": bench_katz, "dfa": bench_dfa, "rs": bench_rs,
           "spectral": bench_spectral, "peaks": bench_peaks, "mfdfa": bench_mfdfa, "graph": bench_graph}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=32, help="series per cell (spectral: twice this)")
    parser.add_argument("--length", type=int, default=8192, help="samples per series (spectral: also 1024 and 2x)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the per-cell torch.Generator")
    # A literal tuple: tests/test_benchmarks_review.py reads the choices statically to check documented commands.
    parser.add_argument("--only", nargs="+", choices=("higuchi", "katz", "dfa", "rs", "spectral", "peaks", "mfdfa",
                                                              "graph"),
                        metavar="NAME", help="run only these tables (default: all, in this order)")
    args = parser.parse_args(argv)
    if args.series < 2:
        parser.error(f"--series: needs >= 2 (a standard deviation needs two series), got {args.series}")
    if args.length < MIN_LENGTH:
        parser.error(f"--length: needs >= {MIN_LENGTH} (DFA/MFDFA scales 16..T/4), got {args.length}; "
                     f"pass --length {MIN_LENGTH} or more")
    if args.seed < 0:
        parser.error(f"--seed: needs >= 0 (torch.Generator.manual_seed), got {args.seed}")
    print(f"estimator accuracy: --series {args.series} --length {args.length} --seed {args.seed}, torch {torch.__version__}")
    for name in args.only or BENCHES:
        start = time.perf_counter()
        BENCHES[name](args)
        print(f"({name}: {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
