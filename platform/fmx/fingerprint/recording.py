"""Fingerprint one recording: read, preprocess, measure, return tidy rows.

This is the unit of work a Ray task runs (see :mod:`fmx.fingerprint.job`). It reads the file with
:func:`models.data.readers.read_recording`, applies the ``preprocess``/``intervals`` sections of the
job config, runs :func:`fractals.fingerprint.fingerprint` (per channel and for the channel network)
and, for continuous recordings, :func:`fractals.simulators.fit_fractional_ou` (``fou_H``, ``fou_theta``,
``fou_sigma`` per channel), per epoch when epoching is on, and averages epochs per channel and measure.

Spans annotated as bad (MNE's ``BAD_...`` annotations, :mod:`models.data.bad_spans`) are not measured
(``preprocess.reject_by_annotation``, on by default). Joining the clean pieces would put a jump at
every join, which reads as extra roughness (Higuchi/Katz FD up) and as a break in the fluctuation
function (DFA, multifractal width), so each clean piece is measured on its own and the values are
averaged per channel and measure weighted by the piece's length: every clean sample counts once, as in
a recording without bad spans. A piece must hold the longest window the config asks for (``2 x`` the
largest DFA window and ``4 x`` the largest multifractal scale, the limits below which
:func:`fractals.fingerprint.fingerprint` drops scales), so that every piece is measured with the same
scales; shorter pieces are left out. With epoching, epochs are cut inside clean pieces.
"""
from __future__ import annotations

import math
import tempfile
import time
from typing import Any, Mapping

import numpy as np

from fmx.fingerprint import storage
from models.data import readers
from models.data.bad_spans import bad_spans, clean_segments, longest_clean
from models.data.readers import Recording

__all__ = ["load_recording", "measure_recording", "fit_recording", "TIDY_COLUMNS", "NETWORK_CHANNEL"]

TIDY_COLUMNS = ("subject", "session", "condition", "channel", "measure", "value")
NETWORK_CHANNEL = "network"  # channel label of whole-montage measures (functional-connectivity graph)
NETWORK_MEASURES = ("fc_density", "graph_fd")


def load_recording(entry: Mapping[str, Any], cfg: Mapping[str, Any]) -> Recording:
    """Read ``entry['path']`` (local or s3://) and apply the config's preprocessing."""
    pre = cfg.get("preprocess", {}) or {}
    with tempfile.TemporaryDirectory(prefix="fmx-fp-") as tmp:
        local = storage.fetch_local(entry["path"], tmp)
        # EDF/BDF channels at mixed rates are refused unless the channels picked share one rate, read at that rate
        mixed_rates_possible = str(local).lower().endswith((".edf", ".bdf"))
        rec = readers.read_recording(local, subject=entry.get("member") or None,
                                     channels=pre.get("channels") if mixed_rates_possible else None)
    rec = rec.replace(meta={"path": str(entry["path"])})
    if rec.kind == "intervals":
        # these act on signals sampled on a clock; an RR series would pass through them unchanged, unnoticed
        given = [name for name in ("channels", "notch", "band", "resample", "epoch") if pre.get(name)]
        if given:
            raise ValueError(f"preprocess.{given[0]}={pre[given[0]]!r} applies to continuous recordings; "
                             f"{entry['path']} is an interval (RR) series: drop --{given[0]} (config "
                             f"preprocess.{given[0]}) for it")
        iv = cfg.get("intervals", {}) or {}
        if iv.get("ectopic_filter", True):
            rec = readers.filter_ectopic(rec, min_ms=iv.get("min_ms", 300.0), max_ms=iv.get("max_ms", 2000.0),
                                         window=iv.get("window", 11), tolerance=iv.get("tolerance", 0.2))
        return rec
    if pre.get("channels"):
        rec = readers.pick_channels(rec, list(pre["channels"]))
    if pre.get("trim_flat_edges", True):
        rec = readers.trim_flat_edges(rec)
    if pre.get("notch"):
        rec = readers.notch(rec, float(pre["notch"]))
    if pre.get("band"):
        low, high = pre["band"]
        rec = readers.bandpass(rec, low, high)
    if pre.get("resample"):
        rec = readers.resample(rec, float(pre["resample"]))
    return rec


def _to_device(data: np.ndarray, device: str):
    if device == "cpu":
        return data
    import torch

    return torch.as_tensor(data, device=device)


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def measure_recording(rec: Recording, cfg: Mapping[str, Any], *, device: str = "cpu"):
    """Tidy ``(channel, measure, value)`` rows for one (pre-processed) recording.

    Returns
    -------
    rows : pandas.DataFrame
        Columns ``channel``, ``measure``, ``value``; epochs averaged (mean) per channel and measure.
    info : dict
        ``n_epochs``, ``duration_s``, ``fs``, ``n_channels`` and the fingerprint summary of the
        last epoch under ``summary``.
    """
    import pandas as pd
    from fractals.fingerprint import fingerprint

    segments, clean = _clean_segments(rec, cfg)
    fou_cfg = cfg.get("fou", {}) or {}
    frames, flagged, summary, fou = [], [], {}, []
    for k, seg in enumerate(segments):
        x = _to_device(seg.data, device)
        table, summary = fingerprint(x, seg.fs, config=cfg.get("fingerprint") or None,
                                     channel_names=list(seg.channel_names), kind=seg.kind)
        rows, flags = _tidy(table, summary)
        parts = [rows]
        flagged.extend({**f, "epoch": k} for f in flags)
        # an interval series is not sampled on a clock: a Whittle fit over Hz of its mean beat rate is meaningless
        # (as fractals.fingerprint has no PSD slope for it)
        if fou_cfg.get("enable", True) and seg.kind == "continuous":
            if len(fou) <= k:  # this segment and the equal-shape ones after it, in one fit
                fou.extend(_fou_group(segments, k, fou_cfg, device))
            parts.append(fou[k])
        weight = float(seg.data.shape[-1])  # clean pieces differ in length: each sample counts once
        frames.extend(part.assign(weight=weight) for part in parts)
    rows = pd.concat(frames, ignore_index=True)
    finite = np.isfinite(rows["value"].to_numpy(np.float64))
    rows = rows[finite].assign(weighted=lambda f: f["value"] * f["weight"])
    sums = rows.groupby(["channel", "measure"], sort=False, as_index=False)[["weighted", "weight"]].sum()
    rows = sums.assign(value=sums["weighted"] / sums["weight"])[["channel", "measure", "value"]]
    if rows.empty:
        raise ValueError(
            f"{rec.meta.get('path')}: no finite measure on any channel (flags: "
            f"{sorted({f['flag'] for f in flagged})[:3]}); check for flat, clipped or too short channels"
        )
    info = {"n_epochs": len(segments), "duration_s": rec.duration_s, "fs": rec.fs, "n_channels": rec.n_channels,
            "trimmed_s": float(sum(rec.meta.get("trimmed_s", [0.0, 0.0]))), "flags": flagged, "summary": summary,
            **clean}
    return rows, info


def _clean_segments(rec: Recording, cfg: Mapping[str, Any]) -> tuple[list[Recording], dict[str, Any]]:
    """The pieces to measure (clean segments, or epochs cut inside them) and how much of ``rec`` they leave out.

    ``bad_fraction`` is the share of ``rec`` annotated bad (measured or not), ``excluded_fraction`` the share
    not measured (bad spans, clean pieces too short to measure, epoch tails), ``n_segments`` the clean pieces
    measured.
    """
    pre = cfg.get("preprocess", {}) or {}
    epoch_s = pre.get("epoch")
    if rec.kind != "continuous":
        return [rec], {"n_segments": 1, "bad_fraction": 0.0, "excluded_fraction": 0.0}
    n = rec.data.shape[-1]
    reject = pre.get("reject_by_annotation", True)
    marked = bad_spans(rec)
    bad = int((marked[:, 1] - marked[:, 0]).sum())  # reported with reject_by_annotation=false too
    spans = marked if reject else marked[:0]
    if epoch_s:
        need, why = int(round(float(epoch_s) * rec.fs)), f"one epoch (preprocess.epoch={epoch_s} s; lower it)"
    elif len(spans):
        need, why = _longest_window(cfg)
    else:
        need, why = 0, ""
    pieces = clean_segments(rec, min_samples=max(need, 1)) if len(spans) else [rec]
    if not pieces:
        longest = longest_clean(rec)
        raise ValueError(
            f"{rec.meta.get('path')}: too little clean data: {(n - bad) / rec.fs:.1f} s of {n / rec.fs:.1f} s lie "
            f"outside the spans annotated BAD, the longest clean piece {longest / rec.fs:.1f} s; measuring needs "
            f"{need} samples ({need / rec.fs:.1f} s) in one piece for {why}, or set "
            "preprocess.reject_by_annotation=false to measure through the marked artefacts"
        )
    segments = [e for piece in pieces for e in readers.epoch(piece, float(epoch_s))] if epoch_s else pieces
    measured = sum(seg.data.shape[-1] for seg in segments)
    return segments, {"n_segments": len(pieces), "bad_fraction": bad / n, "excluded_fraction": 1.0 - measured / n}


def _longest_window(cfg: Mapping[str, Any]) -> tuple[int, str]:
    """Samples one clean piece needs so that every configured DFA window and multifractal scale is used."""
    from fractals._fingerprint_config import CONTINUOUS_MEASURES
    from fractals.fingerprint import resolve_config

    resolved = resolve_config(cfg.get("fingerprint") or None)
    measures = resolved["measures"] or CONTINUOUS_MEASURES
    # A measure left out needs none of its windows; the fingerprint still checks its two smallest ones.
    dfa_windows = sorted(int(v) for v in resolved["temporal"]["dfa_orders"])
    scales = sorted(int(v) for v in resolved["multifractal"]["scales"])
    dfa = 2 * (dfa_windows[-1] if "dfa_alpha" in measures else dfa_windows[min(1, len(dfa_windows) - 1)])
    multifractal = 4 * (scales[-1] if "mf_width" in measures else scales[min(1, len(scales) - 1)])
    if multifractal >= dfa:
        return multifractal, (f"4 x the largest multifractal scale ({multifractal // 4}; lower "
                              "fingerprint.multifractal.scales)")
    return dfa, f"2 x the largest DFA window ({dfa // 2}; lower fingerprint.temporal.dfa_orders)"


def _tidy(table, summary: Mapping[str, Any]):
    """fractals.fingerprint's table and summary -> tidy ``channel, measure, value`` rows plus flags.

    Per-channel rows keep their value when it is finite (a ``poor_fit`` 1/f fit is kept, with its
    flag reported); NaN rows (flat, non-finite, too short, rejected) are dropped and reported.
    The network measures of the summary (``fc_density``, ``graph_fd``) become rows of channel
    ``network`` when finite.
    """
    import pandas as pd

    missing = {"channel", "measure", "value"} - set(table.columns)
    if missing:
        raise ValueError(f"fractals.fingerprint returned no {sorted(missing)} column(s); got {list(table.columns)}")
    frame = table.copy()
    frame["channel"] = frame["channel"].astype(str)
    frame["value"] = frame["value"].astype(np.float64)
    flag = frame["flag"].astype(str) if "flag" in frame.columns else pd.Series("", index=frame.index)
    flags = [{"channel": c, "measure": m, "flag": f}
             for c, m, f in zip(frame["channel"], frame["measure"], flag) if f]
    rows = frame.loc[np.isfinite(frame["value"].to_numpy()), ["channel", "measure", "value"]]
    network = [(name, float(summary[name])) for name in NETWORK_MEASURES
               if isinstance(summary.get(name), (int, float)) and math.isfinite(summary[name])]
    if network:
        rows = pd.concat([rows, pd.DataFrame({"channel": NETWORK_CHANNEL, "measure": [n for n, _ in network],
                                              "value": [v for _, v in network]})], ignore_index=True)
    if summary.get("graph_flag"):
        flags.append({"channel": NETWORK_CHANNEL, "measure": "graph_fd", "flag": str(summary["graph_flag"])})
    return rows, flags


FOU_BATCH_BYTES = 64 << 20  # epoch data per batched fOU fit
FOU_BATCH_SERIES = 256  # series per batched fOU fit: bounds the fit's working set (it blocks inside too)


def _fou_group(segments: list[Recording], k: int, fou_cfg: Mapping[str, Any], device: str) -> list:
    """fOU rows of ``segments[k]`` and of the equal-shape segments (epochs) after it, fitted in one call.

    Each series' fit is independent (the same numbers as one call per epoch), and a call's 150 Adam steps
    cost about the same for 64 series as for 256 (1.7 vs 0.9 ms a series). A call holds at most
    :data:`FOU_BATCH_SERIES` series and :data:`FOU_BATCH_BYTES` of data, so a long recording's epochs are
    never copied all at once.
    """
    first = segments[k]
    per = max(1, min(FOU_BATCH_BYTES // max(1, first.data.nbytes), FOU_BATCH_SERIES // max(1, first.data.shape[0])))
    group = [first]
    while (k + len(group) < len(segments) and len(group) < per
           and segments[k + len(group)].data.shape == first.data.shape and segments[k + len(group)].fs == first.fs):
        group.append(segments[k + len(group)])
    x = first.data if len(group) == 1 else np.stack([seg.data for seg in group])
    fits = _fou_fit(_to_device(x, device), first, fou_cfg)
    if len(group) == 1:
        return [_fou_table(fits, first)]
    return [_fou_table({p: v[i] for p, v in fits.items()}, first) for i in range(len(group))]


def _fou_fit(x, seg: Recording, fou_cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    import torch
    from fractals.simulators import fit_fractional_ou

    band = fou_cfg.get("freq_band")
    if band is not None:
        nyq = seg.fs / 2
        band = (float(band[0]), min(float(band[1]), nyq))

    def fit(series):
        res = fit_fractional_ou(series, seg.fs, freq_band=band, n_bins=int(fou_cfg.get("n_bins", 96)),
                                steps=int(fou_cfg.get("steps", 150)))
        return {param: _numpy(getattr(res, param)) for param in ("H", "theta", "sigma")}

    # A flat or non-finite channel (fractals.fingerprint flags it) is left out here too: the fit refuses
    # it, and that failed the whole recording.
    flat = torch.as_tensor(x).reshape(-1, x.shape[-1])
    usable = (torch.isfinite(flat).all(-1) & (flat.amax(-1) != flat.amin(-1))).cpu().numpy()
    # Rows in blocks of FOU_BATCH_SERIES / FOU_BATCH_BYTES (each series' fit is independent: the same
    # numbers), so the float64 copy of one block, not of the recording, is alive at a time.
    per = max(1, min(FOU_BATCH_SERIES, FOU_BATCH_BYTES // (8 * flat.shape[-1])))
    keep = np.nonzero(usable)[0]
    out = {param: np.full(usable.shape, np.nan) for param in ("H", "theta", "sigma")}
    for start in range(0, keep.size, per):
        sel = keep[start:start + per]
        contiguous = sel[-1] - sel[0] + 1 == sel.size
        rows = flat[int(sel[0]):int(sel[-1]) + 1] if contiguous else flat[torch.as_tensor(sel, device=flat.device)]
        for param, values in fit(rows).items():
            out[param][sel] = values
    return {param: v.reshape(x.shape[:-1]) for param, v in out.items()}


def _fou_table(fits: Mapping[str, np.ndarray], seg: Recording):
    import pandas as pd

    names = list(seg.channel_names)
    out = [pd.DataFrame({"channel": names, "measure": f"fou_{param}", "value": fits[param].reshape(-1)})
           for param in ("H", "theta", "sigma")]
    return pd.concat(out, ignore_index=True)


def fit_recording(entry: Mapping[str, Any], cfg: Mapping[str, Any], *, device: str = "cpu",
                  threads: int | None = None) -> dict[str, Any]:
    """Read, measure and label one recording; never raises (a failure comes back as ``error``).

    Returns a dict with ``key``, ``rows`` (tidy DataFrame with :data:`TIDY_COLUMNS`, or None),
    ``info``, ``error`` (``"Type: message"`` or None) and ``seconds``.
    """
    start = time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # one Ray task per core: stop BLAS/torch oversubscription
    try:
        rec = load_recording(entry, cfg)
        rows, info = measure_recording(rec, cfg, device=device)
        for column in ("subject", "session", "condition"):
            rows[column] = str(entry.get(column, "") or "")
        rows = rows[list(TIDY_COLUMNS)]
        return {"key": entry.get("key"), "rows": rows, "info": _jsonable(info), "error": None,
                "seconds": time.perf_counter() - start}
    except Exception as exc:  # one bad file must not stop the cohort: report it, keep going
        message = f"{type(exc).__name__}: {exc}"
        return {"key": entry.get("key"), "rows": None, "info": {}, "error": message,
                "seconds": time.perf_counter() - start}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
