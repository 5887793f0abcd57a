"""Cohort and comparison figures (matplotlib, Agg backend, no display needed).

Per-subject fingerprints are drawn by :func:`fractals.plotting.plot_fingerprint`.

Every function returns a :class:`matplotlib.figure.Figure`; callers save and close it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["plot_cohort", "plot_channel_effects", "plot_scalp_map", "scalp_positions", "save"]


def _figure(figsize):
    # A Figure pyplot never sees: no backend to switch (matplotlib.use("Agg") replaced a notebook's inline
    # backend), nothing to close, and safe in worker threads.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _grid(n: int, width: float = 3.2, height: float = 2.4):
    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig = _figure((width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def save(fig, path) -> None:
    """Save the figure (built outside pyplot: nothing to close)."""
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_cohort(means, *, by: str = "condition", measures: Sequence[str] | None = None,
                levels: Sequence[str] | None = None):
    """One panel per measure: per-subject values grouped by ``by``; paired subjects joined by lines.

    ``means`` is long: ``subject``, ``by``, ``measure``, ``value`` (e.g. channel means per subject).
    """
    measures = list(measures or sorted(means["measure"].unique()))
    fig, axes = _grid(max(1, len(measures)))
    levels = list(levels or sorted(means[by].astype(str).unique()))
    for ax, measure in zip(axes, measures):
        part = means[means["measure"] == measure]
        wide = part.pivot_table(index="subject", columns=part[by].astype(str), values="value", aggfunc="mean")
        wide = wide.reindex(columns=levels)
        groups = [wide[lv].dropna().to_numpy() for lv in levels]
        ax.boxplot(groups, widths=0.5, showfliers=False)
        ax.set_xticks(range(1, len(levels) + 1))
        ax.set_xticklabels(levels, fontsize=8)
        if len(levels) > 1:
            for _, row in wide.dropna().iterrows():
                ax.plot(range(1, len(levels) + 1), row.to_numpy(), color="0.6", lw=0.7, alpha=0.7)
        for i, values in enumerate(groups, start=1):
            jitter = np.linspace(-0.08, 0.08, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(i + jitter, values, s=10, zorder=3)
        ax.set_title(measure, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"cohort fingerprint by {by} (channel means)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_channel_effects(stats, measure: str, *, effect: str = "cohens_d", q_col: str = "q_fdr", alpha: float = 0.05):
    """Effect size per channel for one measure; filled bars pass the corrected threshold."""
    part = stats[stats["measure"] == measure]
    fig = _figure((max(4.0, 0.32 * len(part) + 1.5), 2.8))
    ax = fig.subplots()
    sig = part[q_col].to_numpy() < alpha
    colors = ["tab:red" if s else "0.75" for s in sig]
    values = part[effect].to_numpy(dtype=float)
    # d is +-inf for a constant non-zero shift (zero spread): matplotlib drew no bar, so the largest effect looked
    # like none. Draw it past the largest finite bar, hatched and labelled.
    infinite = np.isinf(values)
    if infinite.any():
        finite = np.abs(values[np.isfinite(values)])
        top = 1.25 * (finite.max() if finite.size and finite.max() > 0 else 1.0)
        values = np.where(infinite, np.sign(values) * top, values)
    bars = ax.bar(range(len(part)), values, color=colors)
    for i in np.flatnonzero(infinite):
        bars[i].set_hatch("//")
        ax.annotate("inf" if values[i] > 0 else "-inf", (i, values[i]), ha="center",
                    va="bottom" if values[i] > 0 else "top", fontsize=7)
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

    Returns None when fewer than 3 channels have a 10-20 position and a finite effect (e.g. RR series).
    """
    import mne

    part = stats[(stats["measure"] == measure) & (stats["channel"].str.lower() != "network")]
    pos = scalp_positions(list(part["channel"]))
    part = part[part["channel"].isin(pos) & np.isfinite(part[effect].to_numpy(np.float64))]
    if len(part) < 3:
        return None
    values = part[effect].to_numpy(np.float64)
    xy = np.array([pos[c] for c in part["channel"]])
    limit = float(np.nanmax(np.abs(values))) or 1.0
    fig = _figure((3.6, 3.4))
    ax = fig.subplots()
    mask = (part[q_col].to_numpy() < alpha)
    image, _ = mne.viz.plot_topomap(values, xy, axes=ax, show=False, cmap="RdBu_r", vlim=(-limit, limit),
                                    mask=mask, names=list(part["channel"]), sensors=True,
                                    mask_params={"marker": "o", "markerfacecolor": "k", "markersize": 5})
    fig.colorbar(image, ax=ax, shrink=0.7, label=effect)
    ax.set_title(f"{measure}", fontsize=9)
    return fig
