"""Time ``fractals.powerlaw_fit`` against the ``powerlaw`` package (Alstott et al.) on Pareto samples.

Usage: ``python benchmarks/powerlaw_fit.py [--sizes 2000 20000] [--bootstrap 50]``. Prints one row per size:
seconds for our fit, for theirs, and both fits' alpha and x_min (they should agree; see
tests/test_powerlaw_search.py for how the KS statistics differ).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fractals.metrics import powerlaw_fit


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="samples per fit")
    parser.add_argument("--bootstrap", type=int, default=50, help="synthetic sets for the p-value row (0 skips it)")
    args = parser.parse_args()
    if any(n < 20 for n in args.sizes) or args.bootstrap < 0:
        parser.error(f"--sizes must be >= 20 and --bootstrap >= 0, got {args.sizes} and {args.bootstrap}")
    try:
        import powerlaw
    except ImportError:
        powerlaw = None
        print("powerlaw package not installed (pip install -e '.[dev]'): timing ours only")
    rng = np.random.default_rng(0)
    print(f"{'n':>7} {'ours s':>8} {'theirs s':>9} {'alpha ours':>11} {'alpha theirs':>13} {'xmin ours':>10} {'xmin theirs':>12}")
    for n in args.sizes:
        x = (1 - rng.random(n)) ** (-1 / 1.5)  # Pareto, alpha = 2.5, x_min = 1
        t_ours, ours = _seconds(lambda: powerlaw_fit(x, min_tail=2))
        row = f"{n:>7} {t_ours:>8.3f}"
        if powerlaw is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_ref, ref = _seconds(lambda: powerlaw.Fit(x, verbose=False).power_law)
            row += f" {t_ref:>9.3f} {float(ours.alpha):>11.4f} {ref.alpha:>13.4f} {float(ours.xmin):>10.4f} {ref.xmin:>12.4f}"
        else:
            row += f" {'-':>9} {float(ours.alpha):>11.4f} {'-':>13} {float(ours.xmin):>10.4f} {'-':>12}"
        print(row)
    if args.bootstrap:
        n = min(args.sizes)
        x = (1 - rng.random(n)) ** (-1 / 1.5)
        t_boot, fit = _seconds(lambda: powerlaw_fit(x, bootstrap=args.bootstrap))
        print(f"bootstrap p-value, n={n}, {args.bootstrap} sets: {t_boot:.2f} s (p = {float(fit.p_value):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
