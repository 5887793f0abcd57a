"""Compare the trials of a sweep from MLflow: a table and plots, logged to the sweep's parent run.

:func:`trials_frame` reads the child runs of a parent run into a DataFrame (one row per trial: sampled values,
final metrics, status). :func:`log_sweep_summary` logs that table (parquet + CSV) and three plots to
the parent run: best trials, parallel coordinates over the sampled values, and beta* against the loss and the
latent beta the trials reached. ``fmx compare NAME`` prints the table with rich.
"""
from __future__ import annotations

import math
import re
import sys
from typing import Any

from fmx import tracking

BETA_KEY = "fractals.priors.spectral_beta_target"
CONFIG_COLUMNS = ("fractals.priors.lambda_spec", "fractals.priors.lambda_graphfd", "seed")


def find_parent(c, name_or_id: str, *, experiment_ids: list[str] | None = None):
    """The latest parent run of a sweep named ``name_or_id`` (or with that sweep id)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name_or_id):  # no sweep has it (schema's name rule); a
        return None  # quote in it broke the filter string, which read as an unreadable store
    exps = experiment_ids or [e.experiment_id for e in c.search_experiments()]
    for tag in (tracking.TAG_SWEEP_ID, tracking.TAG_SWEEP):
        runs = c.search_runs(exps, filter_string=f"tags.`{tag}` = '{name_or_id}' and tags.`{tracking.TAG_KIND}` = "
                             "'sweep'", max_results=1, order_by=["attributes.start_time DESC"])
        if runs:
            return runs[0]
    return None


def trials_frame(c, experiment_id: str, parent_run_id: str):
    """One row per trial: ``trial_id, run_id, status, stopped_early, error, sweep.<param>..., <metric>...`` (latest
    values; ``error`` is the reason a FAILED trial's run records, else empty)."""
    import pandas as pd

    rows = []
    for run in tracking.child_runs(c, experiment_id, parent_run_id):
        row: dict[str, Any] = {"trial_id": run.data.tags.get(tracking.TAG_TRIAL, ""), "run_id": run.info.run_id,
                               "status": run.info.status,
                               "stopped_early": run.data.tags.get("fmx.stopped_early") == "true",
                               "error": run.data.tags.get("fmx.error", "")}  # why a FAILED trial failed
        for k, v in run.data.params.items():
            if k.startswith("sweep."):
                row[k] = v
            elif k in CONFIG_COLUMNS:  # fixed by the base config but needed for baselines across trials
                row[f"cfg.{k}"] = v
        row.update({k: _unclamped(v) for k, v in run.data.metrics.items() if not k.startswith("system/")})
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in df.columns:
        if col.startswith(("sweep.", "cfg.")):
            # numbers only when every trial's value is one: a choice like [16, "bf16-mixed"] stays text, so the
            # column has one type (parquet refuses mixed columns)
            parsed = df[col].map(lambda v: _number(v) if isinstance(v, str) else v)
            if not any(isinstance(v, str) for v in parsed):
                df[col] = parsed.infer_objects()
    return df


def _unclamped(v: Any) -> Any:
    """A metric as logged: an MLflow server stores +-inf as +-1.7976931348623157e308 (the largest float64),
    so a diverged trial's loss read back as a huge finite number that ranked and plotted as one."""
    if isinstance(v, float) and abs(v) >= sys.float_info.max:
        return math.copysign(math.inf, v)
    return v


def _number(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _is_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ranked(df, metric: str, mode: str):
    """Trials best first by ``metric``; diverged trials (NaN, +-inf) last: -inf used to rank first for min."""
    import pandas as pd

    if df.empty or metric not in df:
        return df
    finite = df[metric].map(_is_finite).astype(bool)
    order = df[finite].sort_values(metric, ascending=(mode == "min"))
    return pd.concat([order, df[~finite]]).reset_index(drop=True)


def log_sweep_summary(c, experiment_id: str, parent_run_id: str, *, metric: str, mode: str) -> Any:
    """Log the comparison table and plots to the parent run; returns the ranked DataFrame."""
    df = ranked(trials_frame(c, experiment_id, parent_run_id), metric, mode)
    if df.empty:
        return df
    across = sweep_acceptance(df)
    if across:
        tracking.log_metrics(c, parent_run_id, across)
    tracking.log_dataframe_parquet(c, parent_run_id, df, "comparison/trials.parquet")
    tracking.log_text(c, parent_run_id, df.to_csv(index=False), "comparison/trials.csv")
    if metric in df and _is_finite(df.iloc[0][metric]):  # no best when every trial diverged
        best = df.iloc[0]
        tracking.log_metrics(c, parent_run_id, {f"best/{metric}": float(best[metric]),
                                                "sweep/n_trials": float(len(df))})
        c.set_tag(parent_run_id, "fmx.best_trial", str(best["trial_id"]))
    for name, make in (("best_trials", best_trials_figure), ("parallel_coordinates", parallel_coordinates_figure),
                       ("beta_star", beta_star_figure)):
        fig = make(df, metric)
        if fig is not None:
            tracking.log_figure(c, parent_run_id, fig, f"comparison/{name}.png")
    return df


def sweep_acceptance(df, *, task_metric: str = "val/loss") -> dict[str, float]:
    """Section-14 verdicts that need several trials; adds ``acceptance/training_baseline_ratio`` to ``df``.

    training: trials with ``lambda_spec = 0`` are the baseline; a prior trial passes when it keeps more than 99 %
    of the baseline's performance (``baseline loss / trial loss > 0.99``, the design's ">99% baseline").
    stability: the variance across trials (seeds) of the latent graph FD with ``lambda_graphfd > 0`` against
    ``lambda_graphfd = 0``; passes when it is smaller (needs two trials on each side).
    """
    import numpy as np
    import pandas as pd

    out: dict[str, float] = {}
    lam, lam_g = "cfg.fractals.priors.lambda_spec", "cfg.fractals.priors.lambda_graphfd"

    def weight(col):  # a text value (a null weight logged as "None") compared with 0 raised a TypeError
        return pd.to_numeric(df[col], errors="coerce")

    if lam in df and task_metric in df:
        # finite losses only: a diverged (inf) baseline made every prior trial's ratio inf, a pass
        finite = df[task_metric].map(_is_finite).astype(bool)
        base = df[(weight(lam) == 0) & finite]
        if not base.empty:
            b = float(base[task_metric].min())
            df["acceptance/training_baseline_ratio"] = b / df[task_metric]
            prior = df[(weight(lam) > 0) & finite]
            out["acceptance/training_baseline_loss"] = b
            if not prior.empty:
                best_ratio = float(df.loc[prior.index, "acceptance/training_baseline_ratio"].max())
                out["acceptance/training_best_prior_ratio"] = best_ratio
                out["acceptance/training_baseline_pass"] = float(best_ratio > 0.99)
    gfd = next((c for c in ("fingerprint/graph_fd", "acceptance/stability_graphfd_mean") if c in df), None)
    if gfd and lam_g in df:
        on, off = df[weight(lam_g) > 0][gfd].dropna(), df[weight(lam_g) == 0][gfd].dropna()
        if len(on) >= 2 and len(off) >= 2:
            v_on, v_off = float(np.var(on, ddof=1)), float(np.var(off, ddof=1))
            out.update({"acceptance/stability_graphfd_var_prior": v_on, "acceptance/stability_graphfd_var_baseline":
                        v_off, "acceptance/stability_pass": float(v_on < v_off)})
    return out


def _figure(**kwargs):
    """A figure pyplot never sees: the caller's backend stays as it is (switching a notebook's inline backend to
    Agg stopped its later plots from showing), and it works in any thread (Ray workers). Saved with ``savefig``;
    shown in a notebook as the value of a cell."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def best_trials_figure(df, metric: str, top: int = 10):
    import numpy as np

    if metric not in df or df[metric].isna().all():
        return None
    d = df.dropna(subset=[metric]).head(top)
    values = d[metric].to_numpy(float)
    finite = np.isfinite(values)
    # A diverged trial (+-inf) has no bar length: an inf bar vanished with its label. Name its value instead.
    names = [str(t) if ok else f"{t} ({v:g})" for t, v, ok in zip(d["trial_id"], values, finite)]
    fig = _figure(figsize=(6, 0.4 * len(d) + 1.5))
    ax = fig.subplots()
    # Positions, not categories: two trials with the same id (an untagged run) drew on one bar.
    ax.barh(np.arange(len(d))[::-1], np.where(finite, values, 0.0), color="tab:blue")
    ax.set_yticks(np.arange(len(d))[::-1], names)
    ax.set_xlabel(metric)
    ax.set_title("best trials")
    fig.tight_layout()
    return fig


def parallel_coordinates_figure(df, metric: str):
    """Sampled values and the metric, each axis min-max scaled, one line per trial coloured by the metric.

    A categorical value (an option name, a text choice) gets an axis of its sorted levels, labelled on the plot.
    """
    import matplotlib
    import numpy as np
    import pandas as pd

    cols = [c for c in df.columns if c.startswith("sweep.")]
    if not cols or metric not in df or df[metric].isna().all():
        return None
    cols = cols + [metric]
    # Only trials with a finite metric: one diverged (inf) trial made the metric axis' span inf, which put
    # every other trial at 0 and coloured them alike.
    keep = np.isfinite(pd.to_numeric(df[metric], errors="coerce").to_numpy(float))
    if not keep.any():
        return None
    d = df[keep]
    data = np.full((len(d), len(cols)), np.nan)
    levels: dict[int, list[str]] = {}
    for j, c in enumerate(cols):
        if pd.api.types.is_numeric_dtype(d[c]):
            data[:, j] = d[c].to_numpy(float, na_value=np.nan)
        else:
            levels[j] = sorted({str(v) for v in d[c] if pd.notna(v)})
            codes = {lv: i for i, lv in enumerate(levels[j])}
            data[:, j] = [codes[str(v)] if pd.notna(v) else np.nan for v in d[c]]
    finite_data = np.where(np.isfinite(data), data, np.nan)
    low = np.array([np.nanmin(col) if np.isfinite(col).any() else 0.0 for col in finite_data.T])
    span = np.array([np.nanmax(col) if np.isfinite(col).any() else 0.0 for col in finite_data.T]) - low
    scaled = (data - low) / np.where(span > 0, span, 1)
    m = d[metric].to_numpy(float)
    colors = matplotlib.colormaps["viridis"]((m - m.min()) / (np.ptp(m) or 1))
    fig = _figure(figsize=(1.8 * len(cols) + 2, 4))
    ax = fig.subplots()
    for row, color in zip(scaled, colors):
        ax.plot(range(len(cols)), row, color=color, alpha=0.8)
    for j, names in levels.items():
        for i, name in enumerate(names):
            ax.text(j, (i - low[j]) / (span[j] if span[j] > 0 else 1), f" {name}", fontsize=7, va="center")
    ax.set_xticks(range(len(cols)), _short_names([c.removeprefix("sweep.") for c in cols]), rotation=20)
    ax.set_yticks([])
    left_out = len(df) - len(d)
    note = f"; {left_out} trial(s) without a finite value left out" if left_out else ""
    ax.set_title(f"parallel coordinates (colour: {metric}{note})")
    fig.tight_layout()
    return fig


def _short_names(paths: list[str]) -> list[str]:
    """The shortest dotted suffix of each path that no other path shares (model.encoder.dropout and
    model.decoder.dropout both read "dropout" before)."""
    out = []
    for p in paths:
        parts = p.split(".")
        for k in range(1, len(parts) + 1):
            name = ".".join(parts[-k:])
            if sum(q == name or q.endswith("." + name) for q in paths) == 1:
                break
        out.append(name)
    return out


def beta_star_figure(df, metric: str):
    """beta* (the prior's target) against the sweep metric and against the latent beta the trial reached."""
    key = f"sweep.{BETA_KEY}"
    if key not in df:
        return None
    fig = _figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    if metric in df:
        axes[0].scatter(df[key], df[metric])
    axes[0].set_xlabel("beta*")
    axes[0].set_ylabel(metric)
    latent = next((c for c in ("val/latent_beta", "fingerprint/spectral_beta_mean") if c in df), None)
    if latent:
        axes[1].scatter(df[key], df[latent], color="tab:orange")
        lo, hi = float(df[key].min()), float(df[key].max())
        axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8, label="latent beta = beta*")
        axes[1].legend()
        axes[1].set_ylabel(latent)
    else:  # an empty panel read as "no trial reached any beta"
        axes[1].text(0.5, 0.5, "no latent beta logged\n(val/latent_beta or the latent fingerprint)",
                     ha="center", va="center", transform=axes[1].transAxes, color="0.4")
    axes[1].set_xlabel("beta*")
    fig.suptitle(f"beta* against {metric} and latent beta")
    fig.tight_layout()
    return fig


def fingerprint_figure(df):
    """The latent fingerprint over evaluations: per measure, mean +- std across channels against epoch.

    ``df`` is tidy: ``epoch, channel, measure, value`` (and ``ok``: flagged rows are left out).
    """
    import matplotlib.ticker

    if "ok" in df:
        # A missing ok (NA in a nullable table, NaN after concatenating tables) is not ok, as in
        # fractals.plotting.plot_fingerprint; astype(bool) raised on NA and kept NaN rows as ok.
        df = df[df["ok"].to_numpy(dtype=bool, na_value=False)]
    measures = sorted(df["measure"].unique())
    n = max(1, len(measures))
    fig = _figure(figsize=(3.2 * n, 3))
    axes = fig.subplots(1, n, squeeze=False)
    for ax, m in zip(axes[0], measures):
        g = df[df["measure"] == m].groupby("epoch")["value"]
        mean, std = g.mean(), g.std().fillna(0)
        ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"latent {m}")
    fig.suptitle("latent fractal fingerprint (mean +- std over channels)")
    fig.tight_layout()
    return fig


def summary_lines(df, metric: str, n: int = 5) -> list[str]:
    """Plain lines for the best trials (used by ``make demo`` output and ``fmx compare`` without a TTY)."""
    out = []
    for _, row in df.head(n).iterrows():
        vals = ", ".join(f"{k.removeprefix('sweep.')}={_fmt(row[k])}" for k in df.columns if k.startswith("sweep."))
        out.append(f"{row['trial_id']}  {metric}={_fmt(row.get(metric))}  {vals}")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
