"""Worked example: fractal fingerprints of 12 subjects at rest and during mental arithmetic.

Runs the two commands a user would run, through their Python API:

    fmx fingerprint fit ../shared/data/eegmat-dev --out runs/fingerprint-eegmat --config eeg
    fmx fingerprint compare runs/fingerprint-eegmat --contrast condition=rest,arithmetic --mixed

and prints the channel-mean contrast per measure (the table in docs/fingerprint.md) plus the
channels that survive FDR correction. With ``--hrv`` it also runs the RR-interval cohort
(healthy vs heart failure, DFA alpha1). Output folders hold every table and figure.

    .venv/bin/python examples/fingerprint_eegmat.py [--out runs/fingerprint-eegmat] [--hrv] [--mlflow URI]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _print_contrast(stats, alpha: float = 0.05) -> None:
    # channel means of per-channel measures, and the whole-montage (network) measures
    means = stats[stats["channel"].isin(["mean", "network"])].sort_values("p")
    print(f"{'measure':<14}{'mean A':>11}{'mean B':>11}{'d':>7}{'r_rb':>7}{'p':>9}{'q_fdr':>9}  channels q<{alpha}")
    for row in means.itertuples():
        hits = stats[(stats["measure"] == row.measure) & ~stats["channel"].isin(["mean", "network"])
                     & (stats["q_fdr"] < alpha)]
        print(f"{row.measure:<14}{row.mean_a:>11.4g}{row.mean_b:>11.4g}{row.cohens_d:>7.2f}{row.rank_biserial:>7.2f}"
              f"{row.p:>9.3g}{row.q_fdr:>9.3g}  {len(hits):>2} {','.join(hits['channel'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "runs" / "fingerprint-eegmat"))
    parser.add_argument("--hrv", action="store_true", help="also run the RR cohort (NSR vs CHF)")
    parser.add_argument("--mlflow", default=None, help="MLflow tracking URI (default: no MLflow logging)")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    if not (SHARED / "eegmat-dev").is_dir():
        print(f"needs the real recordings in {SHARED} (../shared/data beside the checkout)", file=sys.stderr)
        return 2
    from fmx.fingerprint.compare import compare
    from fmx.fingerprint.job import run_fingerprint_job

    res = run_fingerprint_job(str(SHARED / "eegmat-dev"), args.out, config=["eeg"], num_cpus=args.num_cpus,
                              log_mlflow=args.mlflow is not None, mlflow_uri=args.mlflow)
    print(f"eegmat-dev: {res.n_fitted} fitted, {res.n_skipped} resumed, {res.n_failed} failed in {res.seconds:.1f} s")
    result = compare(args.out, contrast="condition=rest,arithmetic", mixed=True)
    print(f"\nrest (A) vs arithmetic (B), paired Wilcoxon, BH-FDR over channels per measure ({result.out}):")
    _print_contrast(result.stats)
    print("\nmixed model value ~ condition + (1|subject), channel means:")
    print(result.mixed[["measure", "coef", "se", "p", "converged"]].to_string(index=False, float_format="%.4g"))
    if args.hrv:
        hrv_out = str(Path(args.out).with_name("fingerprint-hrv"))
        hrv = run_fingerprint_job(str(SHARED / "hrv_rr_dev.npz"), hrv_out, config=["hrv"], num_cpus=args.num_cpus,
                                  log_mlflow=args.mlflow is not None, mlflow_uri=args.mlflow)
        print(f"\nhrv_rr_dev: {hrv.n_fitted} fitted, {hrv.n_skipped} resumed, {hrv.n_failed} failed "
              f"in {hrv.seconds:.1f} s")
        group = compare(hrv_out, group_by="group", levels=["NSR", "CHF"])
        print("\nNSR (A) vs CHF (B), Mann-Whitney U, RR series after ectopic filtering:")
        _print_contrast(group.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
