"""`fmx fingerprint`: per-subject fractal fingerprint jobs and cohort comparisons.

    fmx fingerprint fit ../shared/data/eegmat-dev --out runs/eegmat --config eeg
    fmx fingerprint compare runs/eegmat --contrast condition=rest,arithmetic --mixed
    fmx fingerprint fit ../shared/data/hrv_rr_dev.npz --out runs/hrv --config hrv
    fmx fingerprint compare runs/hrv --group-by group --levels NSR,CHF
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Per-subject fractal fingerprints and cohort comparisons.", no_args_is_help=True)
console = Console()


def _fail(exc: Exception) -> None:
    from rich.markup import escape

    from fmx.storage import redact

    # unwrapped: paths stay copyable; redacted: a data path or --mlflow URI may carry a password
    console.print(f"[red]error:[/] {escape(redact(str(exc)))}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command("fit")
def fit(
    data: str = typer.Argument(..., help="Folder or s3:// prefix (BIDS-like), manifest CSV, or RR cohort .npz."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder or s3:// prefix."),
    channels: Optional[List[str]] = typer.Option(None, "--channels",
                                                 help="Channels to keep (repeat or comma-separate)."),
    resample: Optional[float] = typer.Option(None, "--resample", help="Resample to this rate (Hz)."),
    band: Optional[tuple[float, float]] = typer.Option(None, "--band", help="Band-pass LOW HIGH (Hz)."),
    notch: Optional[float] = typer.Option(None, "--notch", help="Notch this line frequency (Hz) and its harmonics."),
    epoch: Optional[float] = typer.Option(None, "--epoch", help="Epoch length (s); measures are averaged over epochs."),
    config: Optional[List[str]] = typer.Option(None, "--config", "-c",
                                               help="Config NAME (default|eeg|hrv) and/or key=value overrides."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Only files of this BIDS modality (eeg, ieeg...)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local one)."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs of the local Ray instance."),
    gpus_per_task: float = typer.Option(0.25, "--gpus-per-task",
                                        help="GPU share per recording when the cluster has GPUs."),
    serial: bool = typer.Option(False, "--serial", help="Run in this process without Ray (debugging)."),
    mlflow: Optional[str] = typer.Option(None, "--mlflow",
                                         help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not log to MLflow."),
    experiment: str = typer.Option("fingerprint", "--experiment", help="MLflow experiment name."),
) -> None:
    """Fingerprint every recording of DATA; resumable (finished recordings are skipped)."""
    from fmx.fingerprint.job import run_fingerprint_job

    if not no_mlflow:  # before the job: MLflow would refuse the URI only when logging, after every recording
        import os

        from fmx.targets import TRACKING_ENV, TRACKING_URI_FORMS, mask_uri_password, tracking_uri_problem

        uri, field = (mlflow, "--mlflow") if mlflow else ((os.environ.get(TRACKING_ENV) or "").strip(), TRACKING_ENV)
        problem = tracking_uri_problem(uri) if uri else None
        if problem:
            _fail(ValueError(f"{field}={mask_uri_password(uri)!r}: the tracking URI {problem}; use "
                             f"{TRACKING_URI_FORMS}, or add --no-mlflow"))
    picked = [c.strip() for item in (channels or []) for c in item.split(",") if c.strip()] or None
    band_pair = list(band) if band and band[0] is not None else None
    try:
        result = run_fingerprint_job(
            data, out, config=config or None, channels=picked, resample=resample, band=band_pair, notch=notch,
            epoch=epoch, modality=modality, executor="serial" if serial else "ray", address=address,
            num_cpus=num_cpus, gpus_per_task=gpus_per_task, mlflow_uri=mlflow, log_mlflow=not no_mlflow,
            experiment=experiment,
        )
    except ValueError as exc:
        _fail(exc)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException):
            raise
        from fmx.storage import redact

        # logging is the job's last step: the tables are written and a re-run skips every finished recording
        first = redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
        _fail(ValueError(f"MLflow logging failed ({first}); the tables are in {out}: re-run the same command when "
                         "the tracking server is reachable (finished recordings are skipped), or add --no-mlflow"))
    console.print(
        f"[bold]{len(result.recordings)}[/] recordings: {result.n_fitted} fitted, {result.n_skipped} skipped "
        f"(done before), {result.n_failed} failed, in {result.seconds:.1f} s -> {result.out}"
    )
    if result.n_failed:
        console.print("[red]failures[/] (also in failures.parquet):")
        for row in result.failures.itertuples():
            # plain lines, not a table: full paths stay copyable whatever the terminal width
            console.print(f"  {row.path}{'#' + row.member if row.member else ''}: {row.error}", soft_wrap=True,
                          markup=False, highlight=False)
    if result.mlflow_run_id:
        console.print(f"MLflow run {result.mlflow_run_id}")
    if result.n_failed and not (result.n_fitted or result.n_skipped):
        # A script or a cluster job must see that nothing was measured (exit 0 read as success).
        console.print("[red]error:[/] every recording failed; see the reasons above")
        raise typer.Exit(code=1)


@app.command("compare")
def compare_cmd(
    out: str = typer.Argument(..., help="Output of `fmx fingerprint fit`."),
    contrast: Optional[str] = typer.Option(None, "--contrast", help="COLUMN=A,B, e.g. condition=rest,arithmetic."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Participants column for a group contrast."),
    levels: Optional[str] = typer.Option(None, "--levels", help="With --group-by: the two levels A,B."),
    paired: Optional[bool] = typer.Option(None, "--paired/--unpaired", help="Override the automatic choice."),
    test: str = typer.Option("rank", "--test", help="rank (Wilcoxon/Mann-Whitney) or t (paired/Welch t-test)."),
    family: str = typer.Option("measure", "--family", help="FDR/Holm family: measure (channels) or all."),
    mixed: bool = typer.Option(False, "--mixed", help="Also fit value ~ level + (1|subject) per measure."),
    alpha: float = typer.Option(0.05, "--alpha", help="Threshold for the figures' markers and the printout."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Tables only."),
) -> None:
    """Test a contrast per measure and channel, with effect sizes and FDR/Holm correction."""
    from fmx.fingerprint.compare import MEAN_CHANNEL, compare

    try:
        result = compare(out, contrast=contrast, group_by=group_by,
                         levels=[lv.strip() for lv in levels.split(",")] if levels else None, paired=paired,
                         test=test, family=family, mixed=mixed, alpha=alpha, figures=not no_figures)
    except ValueError as exc:
        _fail(exc)
    stats = result.stats
    means = stats[stats["channel"].isin([MEAN_CHANNEL, "network"])]  # channel means and whole-montage measures
    if stats["p"].isna().all():  # the table holds only NaN: say why (e.g. one subject in a group)
        from rich.markup import escape

        console.print(f"[yellow]no test could run:[/] {escape(str(stats['note'].iloc[0]))}", soft_wrap=True)
    kind = "paired" if result.paired else "unpaired"
    table = Table("measure", "mean a", "mean b", "d", "r_rb", "p", "q_fdr", "channels q<alpha",
                  title=f"{result.name} ({kind}; channel means and network)")
    for row in means.itertuples():
        hits = stats[(stats["measure"] == row.measure) & ~stats["channel"].isin([MEAN_CHANNEL, "network"])
                     & (stats["q_fdr"] < alpha)]
        table.add_row(row.measure, f"{row.mean_a:.4g}", f"{row.mean_b:.4g}", f"{row.cohens_d:+.2f}",
                      f"{row.rank_biserial:+.2f}", f"{row.p:.3g}", f"{row.q_fdr:.3g}", str(len(hits)))
    console.print(table)
    if result.mixed is not None:
        mt = Table("measure", "coef", "se", "p", "converged", title="mixed model value ~ level + (1|subject)")
        for row in result.mixed.itertuples():
            mt.add_row(row.measure, f"{row.coef:.4g}", f"{row.se:.3g}", f"{row.p:.3g}", str(row.converged))
        console.print(mt)
    console.print(f"tables and {len(result.figures)} figures in {result.out}")
