"""Log a fingerprint job to MLflow: params, counts, cohort means, tables and plots.

One run per job, created and ended here (``fmx.kind=fingerprint`` tag). Artifacts:
``tables/`` (parquet and CSV of the tidy table, summary, recordings, failures),
``plots/subjects/<subject>.png`` (per-subject fingerprints) and ``plots/cohort.png``.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

__all__ = ["log_job", "flatten_params", "metric_name"]

MAX_SUBJECT_PLOTS = 64  # one PNG each; beyond this the cohort plot says more than a wall of images


def flatten_params(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}} -> {"a.b": "1"}``; a value over MLflow's limit is cut with a note (``OUT/job.json`` has
    the whole config)."""
    from fmx.tracking import MAX_PARAM_LEN

    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            text = str(value)
            if len(text) > MAX_PARAM_LEN:
                note = f"... [truncated from {len(text)} chars; whole config in job.json]"
                text = text[:MAX_PARAM_LEN - len(note)] + note
            out[name] = text
    return out


def metric_name(*parts: str) -> str:
    """An MLflow-safe metric name (letters, digits, ``_ - . /`` and spaces)."""
    return "/".join(re.sub(r"[^0-9A-Za-z_\-. ]", "_", p) for p in parts if p)


def log_job(result, cfg: Mapping[str, Any], *, data: str, uri: str | None, experiment: str) -> str:
    """Log ``result`` (a :class:`fmx.fingerprint.job.JobResult`); returns the run id."""
    import mlflow

    from fractals.plotting import save_figure

    from fmx.fingerprint import plots

    previous = mlflow.get_tracking_uri()
    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        from fmx.tracking import default_artifact_location, ensure_experiment

        if uri:  # a chosen local sqlite store keeps its artifacts beside it, as sweeps do, not in ./mlruns
            ensure_experiment(mlflow.MlflowClient(uri), experiment,
                              artifact_location=default_artifact_location(uri, experiment))
        exp = mlflow.set_experiment(experiment)
        params = flatten_params(cfg)
        params["data"] = str(data)
        unfinished = _unfinished_run(mlflow.MlflowClient(), exp.experiment_id, out=result.out, params=params)
        with mlflow.start_run(run_id=unfinished, run_name=None if unfinished else
                              f"fingerprint {Path(str(data).rstrip('/')).name}") as run:
            mlflow.set_tags({"fmx.kind": "fingerprint", "fmx.data": str(data), "fmx.out": result.out})
            mlflow.log_params(params)
            metrics = {"n_recordings": len(result.recordings), "n_fitted": result.n_fitted,
                       "n_skipped": result.n_skipped, "n_failed": result.n_failed, "seconds": result.seconds}
            metrics.update(_cohort_means(result.summary))
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory(prefix="fmx-fp-mlflow-") as tmp:
                tables = Path(tmp, "tables")
                tables.mkdir()
                for name in ("table", "summary", "recordings", "failures"):
                    frame = getattr(result, name)
                    stem = "fingerprint" if name == "table" else name
                    frame.to_parquet(tables / f"{stem}.parquet", index=False)
                    frame.to_csv(tables / f"{stem}.csv", index=False)
                mlflow.log_artifacts(str(tables), "tables")
                figures = Path(tmp, "plots")
                (figures / "subjects").mkdir(parents=True)
                marked = with_ok_column(result.table, result.flags)
                for subject in sorted(result.table["subject"].unique())[:MAX_SUBJECT_PLOTS]:
                    rows = marked[marked["subject"] == subject]
                    save_figure(_subject_figure(rows, subject), figures / "subjects" / plot_file_name(subject),
                                dpi=110)
                if not result.table.empty:
                    by = "condition" if result.summary["condition"].nunique() > 1 else _group_column(result.summary)
                    plots.save(plots.plot_cohort(_long_means(result, by), by=by), figures / "cohort.png")
                mlflow.log_artifacts(str(figures), "plots")
            return run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)


def _unfinished_run(client, experiment_id: str, *, out: str, params: Mapping[str, str]) -> str | None:
    """The run the last job into ``out`` left unfinished, when it logged these ``params``: the re-run ends it.

    A job stopped while logging (SIGKILL: RUNNING; SIGTERM, Ctrl-C, a server gone: FAILED or KILLED) is
    continued by running it again; a new run beside the old one would leave a RUNNING or FAILED duplicate.
    Older runs of such jobs still RUNNING become KILLED. FINISHED runs, and runs with other params (the config
    changed), stay as they are.
    """
    if "'" in out:  # cannot be quoted in a filter string: a new run, as before
        return None
    try:
        runs = client.search_runs([experiment_id], filter_string=f"tags.`fmx.kind` = 'fingerprint' and "
                                  f"tags.`fmx.out` = '{out}'", max_results=50,
                                  order_by=["attributes.start_time DESC"])
        unfinished = [r for r in runs if r.info.status != "FINISHED" and dict(r.data.params) == dict(params)]
        if not runs or not unfinished or unfinished[0].info.run_id != runs[0].info.run_id:
            return None  # the last job into out finished (or had another config): a new job, a new run
        for stale in unfinished[1:]:
            if stale.info.status == "RUNNING":
                client.set_terminated(stale.info.run_id, status="KILLED")
        return unfinished[0].info.run_id
    except Exception:  # noqa: BLE001 - finding it is a nicety; logging a new run is always possible
        return None


def with_ok_column(table, flags):
    """``table`` with ``ok``: False where ``flags`` (flags.parquet rows) flags that subject/session/condition,
    channel and measure (``poor_fit``, ``flat_segment``...), so plots draw those values as open markers."""
    keys = ["subject", "session", "condition", "channel", "measure"]
    table = table.assign(ok=True)
    if flags is None or len(flags) == 0:
        return table
    flagged = flags.loc[flags["flag"].astype(str) != "", keys].drop_duplicates().assign(_flagged=True)
    merged = table.merge(flagged, on=keys, how="left")
    return merged.assign(ok=merged["_flagged"].isna()).drop(columns="_flagged")


def plot_file_name(subject: Any) -> str:
    """``<subject>.png`` with anything but letters, digits, ``.``, ``-`` and ``_`` replaced: a subject id with
    ``/`` or ``..`` (from a manifest) must not make folders or write outside ``plots/subjects``."""
    return (re.sub(r"[^\w.-]", "_", str(subject)).lstrip(".") or "subject") + ".png"


def _subject_figure(rows, subject: str):
    """fractals.plotting's fingerprint figure, one colour per session/condition of the subject."""
    from fractals.plotting import plot_fingerprint

    frames = {}
    for (session, condition), group in rows.groupby(["session", "condition"], sort=True):
        frames["/".join(x for x in (session, condition) if x) or subject] = group[["channel", "measure", "value", "ok"]]
    return plot_fingerprint(frames, title=f"fingerprint of {subject}")


def _long_means(result, by: str):
    """Channel means per subject and ``by`` level, long (subject, by, measure, value)."""
    from fmx.fingerprint.compare import _channel_means

    means = _channel_means(result.table, include_network=True)
    if by not in means.columns:
        means = means.merge(result.summary[["subject", by]].drop_duplicates("subject"), on="subject", how="left")
    return means


def _group_column(summary) -> str:
    """The participants column that best splits a one-condition cohort (e.g. ``group``), else ``condition``."""
    for column in ("group", "diagnosis", "sex"):
        if column in summary.columns and summary[column].nunique() > 1:
            return column
    return "condition"


def _cohort_means(summary) -> dict[str, float]:
    import numpy as np

    from fmx.fingerprint.job import measure_columns

    out: dict[str, float] = {}
    if summary.empty:
        return out
    measures = measure_columns(summary)
    by = "condition" if summary["condition"].nunique() > 1 else _group_column(summary)
    for level, group in summary.groupby(by):
        for measure in measures:
            value = float(group[measure].mean())
            if np.isfinite(value):
                out[metric_name("mean", str(level) or "all", measure)] = value
    return out
