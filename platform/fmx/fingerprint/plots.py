"""Figures of fingerprint jobs and comparisons (matplotlib, Agg backend, no display needed).

Every function returns a :class:`matplotlib.figure.Figure`; callers save and close it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["plot_subject", "plot_cohort", "plot_channel_effects", "plot_scalp_map", "scalp_positions", "save"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float = 3.2, height: float = 2.4):
    plt = _plt()
    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def save(fig, path) -> None:
    """Save and close (figures hold memory until closed)."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)


def plot_subject(rows, subject: str):
    """One panel per measure: value per channel, one line per condition/session of ``subject``.

    ``rows`` is the tidy table restricted to one subject.
    """
    measures = sorted(rows["measure"].unique())
    fig, axes = _grid(len(measures), width=3.6)
    for ax, measure in zip(axes, measures):
        part = rows[rows["measure"] == measure]
        channels = list(dict.fromkeys(part["channel"]))
        for (session, condition), group in part.groupby(["session", "condition"], sort=True):
            values = group.set_index("channel")["value"].reindex(channels)
            label = "/".join(x for x in (session, condition) if x) or "all"
            ax.plot(range(len(channels)), values.to_numpy(), marker="o", ms=3, lw=1, label=label)
        ax.set_title(measure, fontsize=9)
        ax.set_xticks(range(len(channels)))
        ax.set_xticklabels(channels, rotation=90, fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
    if measures:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"fingerprint of {subject}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_cohort(summary, measures: Sequence[str] | None = None, *, by: str = "condition"):
    """Channel-mean of each measure per subject, grouped by ``by`` (paired subjects joined by lines)."""
    from fmx.fingerprint.job import measure_columns

    measures = list(measures or [c for c in measure_columns(summary) if summary[c].notna().any()])
    fig, axes = _grid(max(1, len(measures)))
    levels = sorted(summary[by].astype(str).unique()) if by in summary.columns else [""]
    for ax, measure in zip(axes, measures):
        groups = [summary.loc[summary[by].astype(str) == lv, measure].dropna().to_numpy() if by in summary.columns
                  else summary[measure].dropna().to_numpy() for lv in levels]
        ax.boxplot(groups, widths=0.5, showfliers=False)
        ax.set_xticks(range(1, len(levels) + 1))
        ax.set_xticklabels(levels, fontsize=8)
        if by in summary.columns and len(levels) > 1 and summary["subject"].duplicated().any():
            wide = summary.pivot_table(index="subject", columns=by, values=measure, aggfunc="mean")
            wide = wide.reindex(columns=levels)
            for _, row in wide.iterrows():
                ax.plot(range(1, len(levels) + 1), row.to_numpy(), color="0.6", lw=0.7, alpha=0.7)
        for i, values in enumerate(groups, start=1):
            jitter = np.linspace(-0.08, 0.08, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(i + jitter, values, s=10, zorder=3)
        ax.set_title(measure, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"cohort fingerprint by {by}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_channel_effects(stats, measure: str, *, effect: str = "cohens_d", q_col: str = "q_fdr", alpha: float = 0.05):
    """Effect size per channel for one measure; filled bars pass the corrected threshold."""
    plt = _plt()
    part = stats[stats["measure"] == measure]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(part) + 1.5), 2.8))
    sig = part[q_col].to_numpy() < alpha
    colors = ["tab:red" if s else "0.75" for s in sig]
    ax.bar(range(len(part)), part[effect].to_numpy(), color=colors)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(part)))
    ax.set_xticklabels(part["channel"], rotation=90, fontsize=7)
    ax.set_ylabel(effect)
    contrast = part["contrast"].iloc[0] if "contrast" in part.columns and len(part) else ""
    ax.set_title(f"{measure}: {contrast} (red: {q_col} < {alpha})", fontsize=9)
    fig.tight_layout()
    return fig


def scalp_positions(channels: Sequence[str]) -> dict[str, tuple[float, float]]:
    """2-D head positions of 10-20 channel names from MNE's template montage (offline).

    Unknown names are left out. Old 10-20 names (T3/T4/T5/T6) are in the template.
    """
    import warnings

    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MNE 1.13 renamed standard_1020 (deprecation warning)
        names = mne.channels.get_builtin_montages()
        montage = mne.channels.make_standard_montage("colin27_1020" if "colin27_1020" in names else "standard_1020")
    lookup = {name.lower(): name for name in montage.ch_names}
    keep = [c for c in channels if c.lower() in lookup]
    if not keep:
        return {}
    info = mne.create_info([lookup[c.lower()] for c in keep], 100.0, "eeg")
    info.set_montage(montage, verbose="error")
    from mne.channels.layout import _find_topomap_coords

    xy = _find_topomap_coords(info, picks=list(range(len(keep))))
    return {c: (float(x), float(y)) for c, (x, y) in zip(keep, xy)}


def plot_scalp_map(stats, measure: str, *, effect: str = "cohens_d", q_col: str = "q_fdr", alpha: float = 0.05):
    """Scalp map of the effect size per channel (10-20 positions); marked channels pass ``alpha``.

    Returns None when fewer than 3 channels have a 10-20 position (e.g. RR series).
    """
    import mne

    plt = _plt()
    part = stats[(stats["measure"] == measure) & (stats["channel"].str.lower() != "network")]
    pos = scalp_positions(list(part["channel"]))
    part = part[part["channel"].isin(pos)]
    if len(part) < 3:
        return None
    values = part[effect].to_numpy(np.float64)
    xy = np.array([pos[c] for c in part["channel"]])
    limit = float(np.nanmax(np.abs(values))) or 1.0
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    mask = (part[q_col].to_numpy() < alpha)
    image, _ = mne.viz.plot_topomap(values, xy, axes=ax, show=False, cmap="RdBu_r", vlim=(-limit, limit),
                                    mask=mask, names=list(part["channel"]), sensors=True,
                                    mask_params={"marker": "o", "markerfacecolor": "k", "markersize": 5})
    fig.colorbar(image, ax=ax, shrink=0.7, label=effect)
    ax.set_title(f"{measure}", fontsize=9)
    return fig
