"""`fmx fingerprint`: per-subject fractal fingerprint jobs and cohort comparisons.

    fmx fingerprint fit ../shared/data/eegmat-dev --out runs/eegmat --config eeg
    fmx fingerprint compare runs/eegmat --contrast condition=rest,arithmetic --mixed
    fmx fingerprint fit ../shared/data/hrv_rr_dev.npz --out runs/hrv --config hrv
    fmx fingerprint compare runs/hrv --group-by group --levels NSR,CHF
"""
from __future__ import annotations

import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Per-subject fractal fingerprints and cohort comparisons.", no_args_is_help=True)
# Wide tables when piped (CI logs, `| tee`): 80 columns cut measure names to "higuchi…"; else the terminal's.
console = Console(width=None if sys.stdout.isatty() else 160)


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
    from fmx.tracking import TrackingServerUnreachable

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
    except TrackingServerUnreachable as exc:  # checked at the job's last step: the tables are written
        _fail(ValueError(f"MLflow logging failed: no MLflow server answers at {exc.uri} ({exc.reason}); the tables "
                         f"are in {out}: re-run the same command when the tracking server is reachable (finished "
                         "recordings are skipped), or add --no-mlflow"))
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
        f"(done before), {result.n_failed} failed, in {result.seconds:.1f} s -> {result.out}", soft_wrap=True
    )  # soft_wrap: a path longer than the line stays whole, copyable
    left_out = _left_out_line(result.recordings, result.out)
    if left_out:
        console.print(left_out, soft_wrap=True, markup=False, highlight=False)
    if result.n_failed:
        console.print("[red]failures[/] (also in failures.parquet):")
        for row in result.failures.itertuples():
            # plain lines, not a table: full paths stay copyable whatever the terminal width
            console.print(f"  {row.path}{'#' + row.member if row.member else ''}: {row.error}", soft_wrap=True,
                          markup=False, highlight=False)
    if result.mlflow_run_id:
        from fmx.commands.sweep import ui_command

        # the store by name: the default is ./mlflow.db, not the runs/mlflow.db a bare `fmx ui` opens
        store = _mlflow_store(mlflow)
        console.print(f"MLflow run {result.mlflow_run_id} in {store}; open the MLflow UI: {ui_command(store)}",
                      soft_wrap=True, markup=False, highlight=False)
    if result.n_failed and not (result.n_fitted or result.n_skipped):
        # A script or a cluster job must see that nothing was measured (exit 0 read as success).
        console.print("[red]error:[/] every recording failed; see the reasons above")
        raise typer.Exit(code=1)


def _mlflow_store(option: Optional[str]) -> str:
    """The tracking URI the job logged to: --mlflow, else MLFLOW_TRACKING_URI, else MLflow's default, as the job
    resolves them."""
    import os
    from urllib.parse import unquote

    import mlflow

    from fmx.tracking import resolve_tracking_uri

    uri = option or (os.environ.get("MLFLOW_TRACKING_URI") or "").strip()
    uri = resolve_tracking_uri(uri) if uri else mlflow.get_tracking_uri()
    # MLflow's default quotes the folder (sqlite:////a/wd%20x/mlflow.db), as SQLite reads it; `fmx ui` would take
    # %20 literally and open a new empty store in a folder named wd%20x
    return unquote(uri) if uri.startswith("sqlite:") else uri


def _left_out_line(recordings, out: str) -> str | None:
    """One line on the data the measures did not see (spans annotated BAD, epoch tails, clean pieces too short),
    or None when every measured recording was measured whole."""
    import pandas as pd

    measured = recordings[recordings["status"] != "failed"] if "status" in recordings else recordings
    if measured.empty or "excluded_fraction" not in measured:
        return None
    excluded = pd.to_numeric(measured["excluded_fraction"], errors="coerce").fillna(0.0)
    bad = pd.to_numeric(measured.get("bad_fraction", pd.Series(0.0, index=measured.index)), errors="coerce").fillna(0)
    marked = bad > 0
    where = f"per recording: bad_fraction, excluded_fraction in {out.rstrip('/')}/recordings.parquet"
    if not (excluded > 0).any():
        if not marked.any():
            return None
        return (f"spans annotated BAD in {int(marked.sum())} of {len(measured)} recordings were measured through "
                f"(preprocess.reject_by_annotation=false); {where}")
    duration = pd.to_numeric(measured.get("duration_s", pd.Series(float("nan"), index=measured.index)),
                             errors="coerce")
    weights = duration if duration.notna().all() and duration.sum() > 0 else pd.Series(1.0, index=measured.index)
    share = float((excluded * weights).sum() / weights.sum())
    marked_share = float((excluded * weights)[marked].sum() / weights[marked].sum()) if marked.any() else 0.0
    # facts, not causes: with reject_by_annotation=false a marked recording loses only its epoch tail
    which = (f", {_percent(marked_share)} in the {int(marked.sum())} of {len(measured)} recordings with spans "
             "annotated BAD" if marked.any() else " (epoch tails)")
    return f"left out of the measures: {_percent(share)} of the recorded time{which}; {where}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%" if fraction >= 1e-5 else "<0.001%"


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
        mt = Table("measure", "coef", "se", "p", "converged", "note",
                   title="mixed model value ~ level + (1|subject)")
        for row in result.mixed.itertuples():  # the note says why a p is NaN (a between-subject contrast)
            mt.add_row(row.measure, f"{row.coef:.4g}", f"{row.se:.3g}", f"{row.p:.3g}", str(row.converged),
                       str(getattr(row, "note", "") or ""))
        console.print(mt)
    console.print(f"tables and {len(result.figures)} figures in {result.out}", soft_wrap=True)
