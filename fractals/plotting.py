"""Figures for fractal measures: histograms, beta over time, f(alpha), attention coupling, fingerprints.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
state, works under any backend, nothing to close), so callers log it (TensorBoard/MLflow images) or
save it with :func:`save_figure`. matplotlib and pandas are imported inside the functions: importing
this module costs nothing when plots are never drawn.

Reading the plots
-----------------
- FD/H histograms: Higuchi FD lies in [1, 2] (1 smooth, 1.5 Brownian-like, 2 white noise); H in
  (0, 1) (0.5 uncorrelated, > 0.5 persistent long memory).
- Beta over time: the aperiodic 1/f slope per window; a dashed line marks the prior's target.
- f(alpha): a narrow arc means monofractal; the width ``max alpha - min alpha`` is the
  multifractal width reported by the fingerprint.
- Attention-FD coupling: Pearson r per (layer, head) between attention received and FD,
  diverging colours centred at 0.
"""
from __future__ import annotations

import os
import secrets
from typing import Any, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "plot_fd_hist",
    "plot_beta_time",
    "plot_multifractal_spectrum",
    "plot_attention_fd_coupling",
    "plot_fingerprint",
    "save_figure",
]

# Paper-ready defaults: single-column width 3.5 in, double-column 7.2 in.
_RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _numpy(v: Any, name: str) -> np.ndarray:
    if v is None:  # np.asarray(None, dtype=float) is a NaN: a one-cell figure of nothing
        raise ValueError(f"{name}: is None; needs numbers (an array, tensor or list)")
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        # NumPy has no bfloat16: widen floating tensors first (a plot needs no more than float64).
        v = (v.double() if v.is_floating_point() else v).numpy()
    try:
        arr = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as exc:  # NumPy's message named neither the argument nor what it needs
        raise ValueError(f"{name}: needs numbers (an array, tensor or list of equal-length rows), got "
                         f"{type(v).__name__} ({exc})") from None
    if arr.size == 0:
        raise ValueError(f"{name}: is empty; nothing to plot")
    return arr


def _figure(figsize):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=figsize, constrained_layout=True)
    fig.set_dpi(100)
    return fig


def _series_dict(values: Any, name: str) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{name}: empty mapping; pass label -> values")
        return {str(k): _numpy(v, f"{name}[{k!r}]").ravel() for k, v in values.items()}
    return {"": _numpy(values, name).ravel()}


def plot_fd_hist(
    values: Any,
    *,
    measure: str = "Higuchi FD",
    title: Optional[str] = None,
    bins: int = 30,
    figsize=(3.5, 2.6),
):
    """Histogram of a per-channel measure (FD, H, alpha, beta); one overlaid histogram per label.

    Parameters
    ----------
    values : array, tensor, or mapping label -> array
        Values to histogram (any shape; flattened). NaNs (flagged channels) and infs are dropped and counted
        in the legend.
    measure : str
        x-axis label, e.g. ``"Higuchi FD"`` or ``"Hurst H"``.
    """
    import matplotlib

    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: needs an integer >= 1, got {bins!r}")
    groups = _series_dict(values, "values")
    fig = _figure(figsize)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot(1, 1, 1)
        finite_all = np.concatenate([v[np.isfinite(v)] for v in groups.values()])
        if finite_all.size == 0:
            raise ValueError("values: no finite value to plot (all NaN or inf)")
        lo, hi = float(finite_all.min()), float(finite_all.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for label, v in groups.items():
            ok = v[np.isfinite(v)]
            dropped = v.size - ok.size
            kind = "NaN" if np.isnan(v).sum() == dropped else "NaN/inf"  # an inf is not a NaN: say which
            text = f"{label} (n={ok.size}" + (f", {dropped} {kind} dropped)" if dropped else ")")
            ax.hist(ok, bins=edges, alpha=0.6, label=text.strip())
        ax.set_xlabel(measure)
        ax.set_ylabel("count")
        ax.set_title(title or f"{measure} distribution")
        ax.legend(frameon=False)
    return fig


def plot_beta_time(
    beta_seq: Any,
    *,
    times: Optional[Any] = None,
    target: Optional[float] = None,
    labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    xlabel: Optional[str] = None,
    figsize=(3.5, 2.6),
):
    """Aperiodic slope beta over time (windows or training steps).

    Parameters
    ----------
    beta_seq : array (W,) or (S, W)
        One row per series (channel, layer); W windows. With more than 8 rows the mean and a
        +-1 SD band are drawn instead of one line per row.
    times : array (W,), optional
        Window centres (default 0..W-1). Use steps and ``xlabel="step"`` for training curves.
    target : float, optional
        The prior's beta target, drawn dashed.
    xlabel : str, optional
        x-axis label; default ``"time (s)"`` with ``times``, ``"window"`` without (x is then the window index).
    """
    import matplotlib

    b = np.atleast_2d(_numpy(beta_seq, "beta_seq"))
    if b.ndim != 2:
        raise ValueError(f"beta_seq: needs shape (W,) or (S, W), got {b.shape}")
    t = np.arange(b.shape[1]) if times is None else _numpy(times, "times").ravel()
    if xlabel is None:  # without times x is the window index, not seconds
        xlabel = "window" if times is None else "time (s)"
    if t.size != b.shape[1]:
        raise ValueError(f"times: has {t.size} values but beta_seq has {b.shape[1]} windows")
    if labels is not None and len(labels) != b.shape[0]:
        raise ValueError(f"labels: has {len(labels)} names for {b.shape[0]} rows of beta_seq")
    if not np.isfinite(b).any():  # else a blank figure, as plot_fd_hist refuses
        raise ValueError("beta_seq: no finite value to plot (all NaN or inf)")
    if target is not None:
        try:
            value = float(target)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):  # NaN drew no line under a legend entry "target nan"
            raise ValueError(f"target: needs a finite number (the prior's beta), got {target!r}")
        target = value
    fig = _figure(figsize)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot(1, 1, 1)
        if b.shape[0] > 8:
            mean, sd = np.nanmean(b, 0), np.nanstd(b, 0)
            ax.plot(t, mean, color="C0", label=f"mean of {b.shape[0]}", **_dots_if_isolated(mean))
            ax.fill_between(t, mean - sd, mean + sd, color="C0", alpha=0.25, label="+-1 SD")
            iso = _isolated(mean)
            if iso.any():  # a band over one window has no width: draw that window's SD as a bar
                ax.errorbar(t[iso], mean[iso], yerr=sd[iso], fmt="none", color="C0", alpha=0.5)
        else:
            for i, row in enumerate(b):
                ax.plot(t, row, label=labels[i] if labels is not None else None, **_dots_if_isolated(row))
        if target is not None:
            ax.axhline(target, ls="--", color="k", lw=0.8, label=f"target {target:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"aperiodic slope $\beta$")
        ax.set_title(title or r"$\beta$ over time")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False)
    return fig


def _isolated(row: np.ndarray) -> np.ndarray:
    """Finite values with no finite neighbour: a line draws nothing there (one window, NaN on both sides)."""
    ok = np.isfinite(row)
    prev = np.r_[False, ok[:-1]]
    nxt = np.r_[ok[1:], False]
    return ok & ~prev & ~nxt


def _dots_if_isolated(row: np.ndarray) -> dict:
    iso = _isolated(row)
    return {"marker": "o", "ms": 3, "markevery": np.flatnonzero(iso).tolist()} if iso.any() else {}


def plot_multifractal_spectrum(
    spectra: Any,
    *,
    title: Optional[str] = None,
    figsize=(7.2, 2.6),
):
    """tau(q) and the singularity spectrum f(alpha), side by side.

    Parameters
    ----------
    spectra : dict or mapping label -> dict
        Output(s) of :func:`fractals.metrics.multifractal_spectrum` with keys ``tau``, ``alpha``,
        ``falpha`` (last axis Q; leading axes are averaged) and optionally ``q``; without ``q``,
        tau is plotted against the index of q. The legend's width is the mean of the series' widths.
    """
    import matplotlib

    if isinstance(spectra, Mapping) and "alpha" in spectra:
        spectra = {"": spectra}
    if not isinstance(spectra, Mapping) or not spectra:
        raise ValueError("spectra: needs a multifractal_spectrum dict or a mapping label -> such dict")
    fig = _figure(figsize)
    with matplotlib.rc_context(_RC):
        ax_tau, ax_f = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for label, spec in spectra.items():
            if not isinstance(spec, Mapping):
                raise ValueError(f"spectra[{label!r}]: needs a multifractal_spectrum dict, got {type(spec).__name__}")
            for key in ("tau", "alpha", "falpha"):
                if key not in spec:
                    raise ValueError(f"spectra[{label!r}]: missing key {key!r} (have {sorted(spec)})")
            tau, alpha, falpha = (_mean_over_series(spec[k], k) for k in ("tau", "alpha", "falpha"))
            q = _numpy(spec["q"], "q").ravel() if "q" in spec else np.arange(tau.size)
            if not q.size == tau.size == alpha.size == falpha.size:
                raise ValueError(
                    f"spectra[{label!r}]: q, tau, alpha, falpha need the same length Q, got "
                    f"{q.size}, {tau.size}, {alpha.size}, {falpha.size}"
                )
            if not (np.isfinite(alpha) & np.isfinite(falpha)).any():  # else an empty f(alpha) panel
                raise ValueError(f"spectra[{label!r}]: alpha/falpha hold no finite pair to plot (all NaN or inf)")
            ax_tau.plot(q, tau, marker="o", ms=3, label=label or None)
            width = _mean_width(spec["alpha"])
            ax_f.plot(alpha, falpha, marker="o", ms=3, label=f"{label} width {width:.2f}".strip())
        ax_tau.set_xlabel("q" if any("q" in s for s in spectra.values()) else "q index")
        ax_tau.set_ylabel(r"$\tau(q)$")
        ax_tau.set_title("mass exponents")
        ax_f.set_xlabel(r"singularity strength $\alpha$")
        ax_f.set_ylabel(r"$f(\alpha)$")
        ax_f.set_title("singularity spectrum")
        ax_f.legend(frameon=False)
        if title:
            fig.suptitle(title)
    return fig


def _mean_width(alpha: Any) -> float:
    """Mean over series of ``max alpha - min alpha``: the fingerprint's ``mf_width`` mean. The width of the
    mean arc is smaller when the series' extremes fall at different q (eegmat sub-00: 0.69 against 0.72)."""
    a = _numpy(alpha, "alpha")
    a = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    a = a[np.isfinite(a).any(-1)]  # a failed (all-NaN) series is left out, as in the drawn mean arc
    return float(np.mean(np.nanmax(a, -1) - np.nanmin(a, -1)))


def _mean_over_series(v: Any, name: str) -> np.ndarray:
    """Mean over leading axes, skipping NaN series: one failed series must not blank the others."""
    arr = _numpy(v, name)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
    finite = np.isfinite(arr)
    count = finite.sum(0)
    return np.where(count > 0, np.where(finite, arr, 0.0).sum(0) / np.maximum(count, 1), np.nan)


def plot_attention_fd_coupling(
    couplings: Any,
    *,
    layer_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    value_label: str = "Pearson r",
    figsize=(3.5, 2.8),
):
    """Heat map of attention-FD coupling, rows layers, columns heads, colour the correlation.

    Parameters
    ----------
    couplings : array (L, H) or (H,)
        Output of :func:`fractals.probes.attention_fd_coupling`; NaN cells (constant attention)
        are shown grey.
    value_label : str
        Colour-bar label; ``"Spearman r"`` for ``method="spearman"`` couplings.
    """
    import matplotlib

    c = np.atleast_2d(_numpy(couplings, "couplings"))
    if c.ndim != 2:
        raise ValueError(f"couplings: needs shape (L, H) or (H,), got {c.shape}")
    if layer_names is not None and len(layer_names) != c.shape[0]:
        raise ValueError(f"layer_names: has {len(layer_names)} names for {c.shape[0]} layers")
    fig = _figure(figsize)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot(1, 1, 1)
        lim = max(float(np.nanmax(np.abs(c))) if np.isfinite(c).any() else 1.0, 1e-3)
        # NaN (constant attention) in grey: the default "bad" colour is transparent, i.e. the white of r = 0,
        # so a dead head read as an uncoupled one.
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")
        im = ax.imshow(c, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(c.shape[1]))
        ax.set_yticks(range(c.shape[0]))
        if layer_names is not None:
            ax.set_yticklabels(list(layer_names))
        ax.set_title(title or "attention-FD coupling")
        fig.colorbar(im, ax=ax, label=value_label)
    return fig


_FINGERPRINT_PANELS = [
    ("higuchi_fd", "Higuchi FD"),
    ("katz_fd", "Katz FD"),
    ("dfa_alpha", r"DFA $\alpha$"),
    ("hurst_rs", "Hurst H (R/S)"),
    ("spectral_beta", r"1/f slope $\beta$"),
    ("mf_width", "multifractal width"),
    ("dfa_alpha1", r"DFA $\alpha_1$ (4-16 beats)"),
    ("dfa_alpha2", r"DFA $\alpha_2$ (16-64 beats)"),
]


def _tick_label(channel, limit: int = 40) -> str:
    text = str(channel)
    # Keep both ends: recordings often differ only at the end ("...-Ref1", "...-Ref2").
    return text if len(text) <= limit else text[: limit // 2 - 1] + "..." + text[-(limit // 2 - 2):]


def plot_fingerprint(
    fingerprints: Any,
    summaries: Optional[Any] = None,
    *,
    title: Optional[str] = None,
    figsize=None,
):
    """Paper figure of one or more fingerprints: one panel per measure, channels on the x axis.

    Parameters
    ----------
    fingerprints : DataFrame or mapping label -> DataFrame
        Tidy tables from :func:`fractals.fingerprint.fingerprint`; several labels (e.g. rest vs.
        task) are drawn side by side in each panel. Rows with ``ok == False`` are drawn as open
        markers at their value when finite, so flagged channels stay visible; rows without a value
        (NaN: flat or non-finite channels) as an x on the panel's floor, counted in its title.
    summaries : dict or mapping label -> dict, optional
        The summary dicts; network measures (``fc_density``, ``graph_fd``) are added under the
        figure title.
    """
    import matplotlib

    frames = fingerprints if isinstance(fingerprints, Mapping) else {"": fingerprints}
    if not frames:
        raise ValueError("fingerprints: empty mapping; pass label -> DataFrame")
    for label, df in frames.items():
        missing = {"channel", "measure", "value"} - set(getattr(df, "columns", []))
        if missing:
            raise ValueError(f"fingerprints[{label!r}]: missing columns {sorted(missing)}")
    # A table of several recordings (leading axes of the input) holds each channel once per recording: draw
    # the recordings side by side, or their values stack on one x position as if they were one series.
    split = {}
    for label, df in frames.items():
        if "recording" in df.columns and df["recording"].astype(str).nunique() > 1:
            for rec, part in df.groupby(df["recording"].astype(str), sort=False):
                split[f"{label} recording {rec}".strip()] = part
        else:
            split[label] = df
    frames = split
    present = set().union(*(set(df["measure"]) for df in frames.values()))
    panels = [(m, lab) for m, lab in _FINGERPRINT_PANELS if m in present]
    panels += [(m, m) for m in sorted(present - {p for p, _ in _FINGERPRINT_PANELS})]
    if not panels:
        raise ValueError("fingerprints: no measure rows to plot")
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    # Channel names stand rotated under each panel (7 pt, ~0.07 in a character): a fixed 2.1 in row left
    # no room for the axes once names passed ~20 characters (constrained layout gave up, panels collapsed).
    longest = max((len(_tick_label(c)) for df in frames.values() for c in df["channel"]), default=0)
    fig = _figure(figsize or (7.2, max(2.1, 1.3 + 0.075 * longest) * nrows))
    with matplotlib.rc_context(_RC):
        n_groups = len(frames)
        offsets = np.linspace(-0.2, 0.2, n_groups) if n_groups > 1 else np.zeros(1)
        # The default cycle has 10 colours ("C10" is "C0"): more groups (subjects) take tab20, then turbo.
        if n_groups <= 10:
            colors = [f"C{g}" for g in range(n_groups)]
        elif n_groups <= 20:
            colors = [matplotlib.colormaps["tab20"](g) for g in range(n_groups)]
        else:
            colors = [matplotlib.colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n_groups)]
        for i, (measure, label) in enumerate(panels):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            channels: list = []
            for df in frames.values():
                # Keyed by name text: NaN != NaN, and 1 vs "1" across tables is one channel.
                for ch in df.loc[df["measure"] == measure, "channel"].astype(str):
                    if ch not in channels:
                        channels.append(ch)
            pos = {ch: j for j, ch in enumerate(channels)}
            n_missing = 0
            for g, (glabel, df) in enumerate(frames.items()):
                rows = df[df["measure"] == measure]
                x = np.array([pos[c] for c in rows["channel"].astype(str)], dtype=float) + offsets[g]
                y = rows["value"].to_numpy(dtype=float)
                # A missing ok (NA from a nullable/Arrow table, NaN after concatenating tables) is not ok.
                ok = rows["ok"].to_numpy(dtype=bool, na_value=False) if "ok" in rows else np.ones(len(rows), bool)
                ax.plot(x[ok], y[ok], "o", ms=3, color=colors[g], label=glabel or None)
                if (~ok).any():
                    ax.plot(x[~ok], y[~ok], "o", ms=3, mfc="none", color=colors[g])
                # No value (flat or NaN-holding channel): an x on the panel's floor, else an empty slot.
                missing = ~np.isfinite(y)
                if missing.any():
                    ax.plot(x[missing], np.zeros(int(missing.sum())), "x", ms=4, color=colors[g], clip_on=False,
                            transform=ax.get_xaxis_transform())
                    n_missing += int(missing.sum())
            ax.set_title(label + (f"\nx: {n_missing} not measured (NaN)" if n_missing else ""))
            ax.set_xticks(range(len(channels)))
            ax.set_xticklabels([_tick_label(c) for c in channels], rotation=90)
            if i == 0 and 1 < n_groups <= 4:
                ax.legend(frameon=False)
            elif i == 0 and n_groups > 4:  # inside a panel a long legend covers the points and the title
                fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False,
                           ncols=1 + (n_groups - 1) // 24)
        note = ""
        if summaries is not None:
            sums = summaries if (isinstance(summaries, Mapping) and all(
                isinstance(v, Mapping) for v in summaries.values())) else {"": summaries}
            parts = []
            for glabel, s in sums.items():
                # None (JSON null) and NaN both mean "not measured": leave them out of the note.
                vals = {k: s[k] for k in ("fc_density", "graph_fd") if k in s and s[k] is not None}
                try:
                    vals = {k: float(v) for k, v in vals.items()}
                except (TypeError, ValueError):
                    raise ValueError(f"summaries: fc_density/graph_fd need numbers, got {vals!r}") from None
                bits = [f"{k} {v:.2f}" for k, v in vals.items() if v == v]
                if bits:
                    parts.append((f"{glabel}: " if glabel else "") + ", ".join(bits))
            # Several subjects' notes on one line ran off both sides of the figure: wrap between them.
            max_chars = max(40, int(fig.get_figwidth() / 0.075))  # 9 pt title, ~0.075 in a character
            lines: list[str] = []
            for part in parts:
                if lines and len(lines[-1]) + 2 + len(part) <= max_chars:
                    lines[-1] += "; " + part
                else:
                    lines.append(part)
            note = "\n".join(lines)
        # The network summary goes under the title: below the panels it would hit the tick labels.
        fig.suptitle((title or "fractal fingerprint") + (f"\n{note}" if note else ""))
    return fig


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 300) -> str:
    """Save ``fig`` atomically (temp file then ``os.replace``); the format follows the suffix."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1] or ".png"
    # Not mkstemp: its file is 0600 and os.replace keeps that, so servers and other users could not
    # read the figure. O_EXCL with mode 0666 gives what a plain savefig would (0666 less the umask).
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(6)}.tmp{suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        fig.savefig(tmp, dpi=dpi, format=suffix.lstrip("."))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
