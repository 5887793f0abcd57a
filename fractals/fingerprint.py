"""The fractal fingerprint of a recording: every per-channel measure plus the channel network.

:func:`fingerprint` is the one entry point that training callbacks, sweeps and subject jobs call.
It computes each measure once for all good channels of all recordings (one batched call per
estimator, on the input's device) and returns a tidy table plus summary scalars.

Quality policy
--------------
A bad channel never fails the recording. Each row carries ``ok`` (bool), ``flag`` (str, empty when
fine) and ``r2`` (fit quality where the measure has one, NaN otherwise):

- ``flat``: constant within numerical precision (``std <= 1e-9 * (|mean| + std)``); every measure
  of the channel is NaN.
- ``nonfinite``: contains NaN or inf; every measure NaN. Clean or interpolate before measuring.
- ``flat_segment``: a stretch of identical samples longer than ``quality.max_flat_fraction`` of
  the recording (and 8 samples): padding, a disconnected electrode or clipping. Measured, but
  ``ok`` is False; trim it (eegmat-dev rest recordings end with about 2 s of flat padding).
- ``too_short``: (intervals) fewer beats left than the measure needs; that measure NaN. When the
  ectopic filter dropped most beats and left too few for any measure, the flag goes on to say how
  many it kept (intervals in seconds lose every beat: the filter's range is in ms).
- ``poor_fit``: the 1/f fit explains less than ``quality.min_r2`` of the log-PSD variance; the
  value is kept, ``ok`` is False.
- ``error: ...``: an estimator rejected this channel (message kept) or returned inf/NaN
  (``error: non-finite result``); that measure NaN.

Channels with any NaN measure (flat, nonfinite) are left out of the channel network. Config errors
(unknown keys, values out of range such as ``higuchi_kmax < 2``, a band not inside (0, Nyquist], a
recording too short for two DFA windows or two multifractal scales) and repeated channel names raise
``ValueError`` for the whole call, since no channel could be measured.

Config (plain dict, all keys optional; defaults mirror ``platform/fmx/conf/fractals/default.yaml``
``metrics``; the whole ``fractals`` block, with ``metrics`` inside, is accepted too)::

    temporal:
      higuchi_kmax: 8               # Higuchi k_max; larger k biases FD down on short series
      dfa_orders: [4, 16, 64, 256]  # DFA window sizes in samples (kept where <= T // 2)
      psd_freq_band: [2.0, 80.0]    # Hz band of the 1/f fit (must lie below fs / 2 and inside the recording's
                                    # pass band: on eegmat-dev EEG, low-passed at 45 Hz, 2-80 Hz fits the
                                    # filter roll-off (beta ~4, no alpha peak masked); pass [2, 40] there)
      exclude_peaks: true           # mask oscillatory peaks before the fit
    multifractal:
      q_vals: [-5, -3, -1, 0, 1, 3, 5]
      scales: [8, 16, 32, 64, 128, 256]   # kept where <= T // 4
    graph:
      corr_threshold: 0.3           # |r| above which two channels are linked
      box_eps: [1, 2, 3, 4, 5, 6]   # box sizes (graph distance) of the box covering
      node_orders: 1                # colouring orders (fewest boxes kept); e.g. 16 where recordings lose
                                    # different bad channels, so graph FD does not depend on their order
    intervals:                      # kind="intervals" only
      alpha1_beats: [4, 16]         # short-range DFA (Peng 1995)
      alpha2_beats: [16, 64]        # long-range DFA
      ectopic_filter: false         # the job filters upstream; true applies clean_rr_intervals
      min_ms: 300                   # ectopic filter: physiological RR range ...
      max_ms: 2000
      window: 11                    # ... and within tolerance of a window-beat running mean
      tolerance: 0.2
    quality:
      min_r2: 0.0                   # flag 1/f fits below this r2 as poor_fit (0: off; r2 is low for
                                    # shallow spectra even when right: fGn H=0.7, beta 0.4, r2 0.44)
      max_flat_fraction: 0.01       # a constant stretch longer than this share of T: flat_segment
    measures: null                  # subset of measure names to compute (null: all)

``kind="intervals"`` (RR or inter-event intervals, one value per beat): DFA alpha1 and alpha2,
Higuchi FD and multifractal width over beat index. There is no PSD slope: intervals are not sampled
on a clock, so a slope over Hz would need resampling to an even grid first (do that and use
``kind="continuous"`` if a spectral exponent is wanted); ``fs`` is ignored.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import math
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from fractals._checks import as_tensor
from fractals._fingerprint_config import (  # re-exported: the public config API
    CONTINUOUS_MEASURES, DEFAULT_CONFIG, INTERVAL_MEASURES, resolve_config)
from fractals._fingerprint_measures import (  # noqa: F401  (the rest re-exported: this module was their home)
    _beat_range, _continuous_calls, _interval_calls, _log_windows, _network, _np, _run,
)

__all__ = ["DEFAULT_CONFIG", "CONTINUOUS_MEASURES", "INTERVAL_MEASURES", "fingerprint", "clean_rr_intervals",
           "resolve_config", "progress_hook"]

ProgressFn = Callable[[int, int, str], None]
_PROGRESS_HOOK: contextvars.ContextVar[Optional[ProgressFn]] = contextvars.ContextVar("fingerprint_progress",
                                                                                       default=None)


@contextlib.contextmanager
def progress_hook(fn: Optional[ProgressFn]):
    """Within the block, every :func:`fingerprint` call without its own ``progress`` reports to ``fn``
    (as ``fingerprint(progress=fn)``): for a caller that reaches it through code it does not control."""
    if fn is not None and not callable(fn):
        raise ValueError(f"fn: needs a callable fn(done, total, step) or None, got {fn!r}")
    token = _PROGRESS_HOOK.set(fn)
    try:
        yield
    finally:
        _PROGRESS_HOOK.reset(token)


def clean_rr_intervals(rr: Any, *, min_ms: float = 300.0, max_ms: float = 2000.0, window: int = 11,
                       tolerance: float = 0.2) -> np.ndarray:
    """Drop ectopic beats and artefacts from an RR series (ms).

    Keeps beats inside ``[min_ms, max_ms]`` that also lie within ``tolerance`` (fraction) of the
    centred ``window``-beat running mean of the in-range beats (edges use the available beats).

    Shape:
        rr: ``(N,)``. Returns ``(M,)`` float64, M <= N, order kept.
    """
    r = np.asarray(rr, dtype=np.float64)
    if sum(d > 1 for d in r.shape) > 1:  # ravel would join several subjects into one series
        raise ValueError(f"rr: needs one series (N,), got shape {r.shape}; clean each row separately")
    r = r.ravel()
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1 or window % 2 == 0:
        raise ValueError(f"window: needs an odd integer >= 1, got {window!r}")
    if not (0 <= min_ms < max_ms):
        raise ValueError(f"min_ms, max_ms: need 0 <= min_ms < max_ms, got {min_ms!r}, {max_ms!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance: needs a fraction > 0 of the running mean, got {tolerance!r}")
    r = r[np.isfinite(r) & (r >= min_ms) & (r <= max_ms)]
    if r.size == 0:
        return r
    half = window // 2
    csum = np.concatenate([[0.0], np.cumsum(r)])
    idx = np.arange(r.size)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, r.size)
    mean = (csum[hi] - csum[lo]) / (hi - lo)
    return r[np.abs(r - mean) <= tolerance * mean]


# --------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------
def fingerprint(
    x: Any,
    fs: Optional[float],
    config: Optional[Mapping[str, Any]] = None,
    channel_names: Optional[Sequence[str]] = None,
    kind: str = "continuous",
    progress: Optional[ProgressFn] = None,
):
    """Fractal fingerprint of a recording: per-channel measures and channel-network measures.

    Parameters
    ----------
    x : array or tensor (..., C, T)
        Channels by time; leading axes are independent recordings of the same channels (a
        ``recording`` column indexes them, flattened). ``kind="intervals"``: (C, N) or (N,) interval
        series (trailing NaN pads shorter rows and is dropped; a NaN inside a row flags it
        ``nonfinite``, unless the ectopic filter, which drops non-finite beats, is on).
    fs : float or None
        Sampling rate in Hz (continuous); ignored for intervals.
    config : dict, optional
        See the module docstring; missing keys take :data:`DEFAULT_CONFIG`.
    channel_names : sequence of str, optional
        One name per channel (default ``ch0``, ``ch1``, ...).
    kind : "continuous" or "intervals"
    progress : callable, optional
        Called as ``progress(done, total, step)`` when a step starts (``done`` of ``total`` steps
        finished; ``step`` names it: ``"quality"``, a measure, ``"network"``; intervals: one
        ``"measures"`` step) and once at the end as ``progress(total, total, "done")``. One big
        recording takes minutes (256 channels x 30 min at 1 kHz: ~2.5 min). Default: the function set
        by :func:`progress_hook` around the call, else none; nothing is printed.

    Returns
    -------
    table : pandas.DataFrame
        One row per (recording, channel, measure): ``channel``, ``measure``, ``value``, ``ok``,
        ``flag``, ``r2`` (``recording`` first when x has leading axes). Measures:
        :data:`CONTINUOUS_MEASURES` or :data:`INTERVAL_MEASURES`.
    summary : dict
        Floats ``{measure}_mean`` / ``{measure}_std`` over ok channels (and recordings); ints
        ``n_channels``, ``n_recordings``, ``n_flagged`` (channels, per recording, whose whole
        series is flagged: flat, nonfinite, flat_segment or too_short); the str ``kind``;
        continuous only: ``fc_density`` (fraction of channel pairs with ``|r| > corr_threshold``)
        and ``graph_fd`` (box-covering FD of that graph), NaN when fewer than 3 good channels or
        when the graph is too small to cover (``graph_flag``, a str, says why).

    Shape:
        x: ``(..., C, T)``.
    """
    if kind not in ("continuous", "intervals"):
        raise ValueError(f"kind: must be 'continuous' or 'intervals', got {kind!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress: needs a callable progress(done, total, step) or None, got {progress!r}")
    cfg = resolve_config(config)
    report = _Steps(progress if progress is not None else _PROGRESS_HOOK.get())
    t, _ = as_tensor(x, "x")
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim < 2:
        raise ValueError(f"x: needs shape (..., C, T), got {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"x: is empty (shape {tuple(t.shape)}); needs at least one channel with samples")
    lead = t.shape[:-2]
    n_ch, n = t.shape[-2], t.shape[-1]
    names = [f"ch{i}" for i in range(n_ch)] if channel_names is None else [str(c) for c in channel_names]
    if len(names) != n_ch:
        raise ValueError(f"channel_names: has {len(names)} names for {n_ch} channels (x shape {tuple(t.shape)})")
    repeated = sorted(c for c, k in collections.Counter(names).items() if k > 1)
    if repeated:  # rows are keyed by channel: two "Cz" rows would be merged by any per-channel groupby downstream
        raise ValueError(f"channel_names: {repeated} appear more than once; names must be unique (rename or drop "
                         "the duplicates)")
    rows = t.reshape(-1, n)
    n_rec = max(1, int(np.prod(lead))) if lead else 1

    if kind == "continuous":
        if not (isinstance(fs, numbers.Real) and not isinstance(fs, bool) and math.isfinite(fs) and fs > 0):
            raise ValueError(f"fs: needs a sampling rate > 0 in Hz for kind='continuous', got {fs!r}")
        calls = _continuous_calls(cfg, float(fs), n)
        # quality, the measures, the network (an unknown name in config.measures raises below)
        report.total = 2 + len(calls if cfg["measures"] is None else set(calls) & set(cfg["measures"]))
        report("quality")
        base_flags = _row_quality(rows, float(cfg["quality"]["max_flat_fraction"]))
        # flat_segment channels are still measured (and flagged); flat/nonfinite ones are not.
        good = np.array([f in ("", "flat_segment") for f in base_flags])
        series = {"all": rows}
    else:
        calls, min_len = _interval_calls(cfg)
        rows_np = rows.detach().cpu().double().numpy()
        cleaned, base_flags = [], []
        iv = cfg["intervals"]
        for r in rows_np:
            finite = np.isfinite(r)
            n_valid = int(np.nonzero(finite)[0][-1]) + 1 if finite.any() else 0
            r = r[:n_valid]  # trailing NaN pads shorter rows; a NaN inside a row is an error
            n_beats = r.size
            if iv["ectopic_filter"]:
                r = clean_rr_intervals(r, min_ms=iv["min_ms"], max_ms=iv["max_ms"], window=int(iv["window"]),
                                       tolerance=iv["tolerance"])
            if not np.isfinite(r).all():
                flag = "nonfinite"
            elif r.size < n_beats / 2 and r.size < min(min_len[m] for m in calls):
                # The filter took most beats and left nothing measurable: most often intervals in seconds.
                flag = (f"too_short: the ectopic filter kept {r.size} of {n_beats} beats ({iv['min_ms']:g}-"
                        f"{iv['max_ms']:g} ms, within {iv['tolerance']:g} of the running mean); are the intervals in ms?")
            elif r.size <= 1:
                flag = "too_short"
            elif np.ptp(r) == 0:
                flag = "flat"
            else:
                flag = ""
            cleaned.append(r)
            base_flags.append(flag)
        good = np.array([f == "" for f in base_flags])
        series = {"intervals": cleaned}

    selected = cfg["measures"]  # a list or None: resolve_config checked it
    if selected is not None and len(selected) == 0:
        raise ValueError(f"config.measures: is empty; list measures from {sorted(calls)} or use null for all")
    if selected is not None:
        unknown = set(selected) - set(calls)
        if unknown:
            raise ValueError(f"config.measures: unknown {sorted(unknown)}; allowed for kind={kind!r}: {sorted(calls)}")
        calls = {k: v for k, v in calls.items() if k in selected}

    n_rows = rows.shape[0]
    values = {m: np.full(n_rows, np.nan) for m in calls}
    r2s = {m: np.full(n_rows, np.nan) for m in calls}
    flags = {m: list(base_flags) for m in calls}
    idx_good = np.nonzero(good)[0]
    if idx_good.size:
        if kind == "continuous":
            # Indexing copies every good row: skip it when all rows are good (the usual case).
            batch = series["all"]
            if idx_good.size < n_rows:
                batch = batch[torch.as_tensor(idx_good, device=rows.device)]
            for m, fn in calls.items():
                report(m)
                v, f, r2 = _run(fn, batch)
                values[m][idx_good] = v
                for j, i in enumerate(idx_good):
                    flags[m][i] = f[j] or flags[m][i]  # keep flat_segment unless the estimator failed
                if r2 is not None:
                    r2s[m][idx_good] = r2
        else:
            report.total = 1
            report("measures")
            for i in idx_good:
                one = torch.from_numpy(series["intervals"][i])[None]
                for m, fn in calls.items():
                    if one.shape[-1] < min_len[m]:
                        flags[m][i] = "too_short"
                        continue
                    v, f, _ = _run(fn, one)
                    values[m][i], flags[m][i] = v[0], f[0]

    table = _tidy_table(calls, values, flags, r2s, names, n_rec if lead else None, float(cfg["quality"]["min_r2"]))
    summary: dict[str, Any] = {"n_channels": n_ch, "n_recordings": n_rec, "kind": kind,
                               # a series too short for every measure is as unusable as a flat one
                               "n_flagged": int(sum(1 for i, f in enumerate(base_flags)
                                                    if f or all(flags[m][i] == "too_short" for m in calls)))}
    value, ok = table["value"].to_numpy(), table["ok"].to_numpy()
    for k, m in enumerate(calls):  # the table is measure-major: measure k holds rows k*n_rows ... (k+1)*n_rows
        good_values = value[k * n_rows:(k + 1) * n_rows][ok[k * n_rows:(k + 1) * n_rows]]
        summary[f"{m}_mean"] = float(good_values.mean()) if good_values.size else float("nan")
        summary[f"{m}_std"] = float(good_values.std()) if good_values.size else float("nan")
    if kind == "continuous":
        report("network")
        summary.update(_network(rows, good, n_ch, cfg))
    report.finish()
    return table, summary


def _tidy_table(measures, values, flags, r2s, names, n_recordings, min_r2):
    """The tidy table of :func:`fingerprint`, measure-major, built from columns.

    A list of row dicts took most of a small fingerprint's time outside the estimators (256 series x 6
    measures: 6 ms of 35); whole columns give the same frame (same order, dtypes and values).
    """
    import pandas as pd

    measures = list(measures)  # never empty: fingerprint refuses an empty config.measures
    n_rows = len(values[measures[0]])
    value = np.concatenate([values[m] for m in measures])
    r2 = np.concatenate([r2s[m] for m in measures])
    flag = np.array([f for m in measures for f in flags[m]], dtype=object)
    flag[(flag == "") & ~np.isnan(r2) & (r2 < min_r2)] = "poor_fit"
    channel = np.array(names, dtype=object)[np.arange(n_rows) % len(names)]
    columns = {"channel": np.tile(channel, len(measures)),
               "measure": np.repeat(np.array(measures, dtype=object), n_rows),
               "value": value, "ok": (flag == "") & np.isfinite(value), "flag": flag, "r2": r2}
    if n_recordings is not None:
        columns = {"recording": np.tile(np.arange(n_rows) // len(names), len(measures)), **columns}
    return pd.DataFrame(columns)


class _Steps:
    """Calls a progress function, if any, as each step of :func:`fingerprint` starts."""

    def __init__(self, fn: Optional[ProgressFn]):
        self.fn, self.done, self.total = fn, 0, 1

    def __call__(self, step: str) -> None:
        if self.fn is not None:
            self.fn(min(self.done, self.total), self.total, step)
        self.done += 1

    def finish(self) -> None:
        if self.fn is not None:
            self.total = max(self.total, self.done)
            self.fn(self.total, self.total, "done")


def _longest_constant_run(rows: torch.Tensor) -> torch.Tensor:
    """Length (samples) of the longest run of exactly repeated values in each row."""
    same = rows[:, 1:] == rows[:, :-1]
    if same.shape[1] == 0:
        return torch.ones(rows.shape[0], dtype=torch.long, device=rows.device)
    # int32 counts where they fit: half the memory of int64 for the (rows, T) temporaries.
    csum = same.cumsum(1, dtype=torch.int32 if rows.shape[1] < 2**31 else torch.int64)
    # Reset the running count at every change: subtract the count reached at the last change.
    at_change = csum.masked_fill(same, 0)
    run = csum.sub_(at_change.cummax(1).values)
    return run.amax(1).long() + 1


QUALITY_BLOCK_BYTES = 8 << 20  # float64 bytes of rows per quality block; its run-length temporaries are ~3x that


def _row_quality(rows: torch.Tensor, max_flat_fraction: float) -> list[str]:
    # Row blocks: on the whole batch the float64 copy and the run-length temporaries took ~12x the
    # float32 input (3.5 GB extra for 128 channels x 10 min at 1 kHz). Every statistic is per row.
    per = max(1, QUALITY_BLOCK_BYTES // max(1, 8 * rows.shape[-1]))
    parts = []
    for block in rows.split(per):
        finite = torch.isfinite(block).all(-1)
        safe = torch.where(torch.isfinite(block), block, torch.zeros_like(block)).double()
        std = safe.std(-1, correction=0)
        flat = std <= 1e-9 * (safe.mean(-1).abs() + std)
        run = _longest_constant_run(safe)
        stuck = run > max(max_flat_fraction * rows.shape[-1], 8)
        parts.append(torch.stack([finite, flat, stuck], -1))
    out = []
    for fin, fl, st in torch.cat(parts).tolist():  # one device read for all blocks
        out.append("nonfinite" if not fin else ("flat" if fl else ("flat_segment" if st else "")))
    return out
