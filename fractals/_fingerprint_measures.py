"""The measures of :func:`fractals.fingerprint.fingerprint`: batched estimator calls and the channel network."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch


# --------------------------------------------------------------------------------------------------
# measure runners: one batched call, per-row fallback on rejection
# --------------------------------------------------------------------------------------------------
def _run(fn: Callable[[torch.Tensor], Any], rows: torch.Tensor) -> tuple[np.ndarray, list[str], Optional[np.ndarray]]:
    """Apply ``fn`` to all rows at once; if it rejects the batch, row by row to isolate the culprit.

    Before going row by row, one row of white noise of the same length goes through ``fn``: when even that is
    rejected, the rows' length (or the measure's settings) is the reason, every row gets that error at once, and
    no row is tried alone (latents of 64 samples made R/S refuse each of 256 rows in turn: 20 % of a fingerprint).

    ``fn`` returns values (R,) or (values, r2). Returns (values, flags, r2 or None)."""
    n = rows.shape[0]
    flags = [""] * n
    try:
        out = fn(rows)
        vals, r2 = out if isinstance(out, tuple) else (out, None)
        vals = _np(vals)
        bad = ~np.isfinite(vals)
        if bad.any():  # an estimator returned inf/NaN instead of raising: report it, never pass it on
            vals = np.where(bad, np.nan, vals)
            flags = ["error: non-finite result" if b else "" for b in bad]
        return vals, flags, None if r2 is None else _np(r2)
    except (ValueError, torch.linalg.LinAlgError):
        pass
    if n > 1:
        noise = torch.randn(1, rows.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        try:
            fn(noise.to(dtype=rows.dtype, device=rows.device))
        except (ValueError, torch.linalg.LinAlgError) as exc:
            return np.full(n, np.nan), [f"error: {exc}"[:200]] * n, None
    vals = np.full(n, np.nan)
    r2 = np.full(n, np.nan)
    has_r2 = False
    for i in range(n):
        try:
            out = fn(rows[i:i + 1])
        except (ValueError, torch.linalg.LinAlgError) as exc:
            flags[i] = f"error: {exc}"[:200]
            continue
        v, r = out if isinstance(out, tuple) else (out, None)
        vals[i] = float(_np(v).ravel()[0])
        if not math.isfinite(vals[i]):
            vals[i], flags[i] = np.nan, "error: non-finite result"
            continue
        if r is not None:
            has_r2 = True
            r2[i] = float(_np(r).ravel()[0])
    return vals, flags, r2 if has_r2 else None


def _np(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64).reshape(-1)


def _beat_range(value: Any, key: str) -> tuple[int, int]:
    lo, hi = (int(v) for v in value)  # a pair of numbers: resolve_config checked it
    if not 3 <= lo < hi:
        raise ValueError(f"config.intervals.{key}: needs [lo, hi] with 3 <= lo < hi (beats), got {value!r}")
    return lo, hi


def _log_windows(lo: int, hi: int, max_n: int = 12) -> list[int]:
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, min(max_n, hi - lo + 1))})


def _continuous_calls(cfg: Mapping[str, Any], fs: float, n: int) -> dict[str, Callable]:
    from fractals import metrics as fm

    temporal, mf = cfg["temporal"], cfg["multifractal"]
    band = (float(temporal["psd_freq_band"][0]), float(temporal["psd_freq_band"][1]))
    if not 0 < band[0] < band[1] <= fs / 2:  # lo = 0 would put the DC bin in a log-log fit
        raise ValueError(
            f"config.temporal.psd_freq_band: {list(band)} Hz must satisfy 0 < lo < hi <= fs/2 = {fs / 2}; "
            "set a band below Nyquist (e.g. [2, 40] for 250 Hz EEG)"
        )
    windows = [int(w) for w in temporal["dfa_orders"] if 3 <= int(w) <= n // 2]
    if len(windows) < 2:
        raise ValueError(f"config.temporal.dfa_orders: {temporal['dfa_orders']} leaves < 2 windows <= T/2 = {n // 2}")
    scales = [int(s) for s in mf["scales"] if 3 <= int(s) <= n // 4]
    if len(scales) < 2:
        raise ValueError(f"config.multifractal.scales: {mf['scales']} leaves < 2 scales <= T/4 = {n // 4}")
    kmax = int(temporal["higuchi_kmax"])
    excl = bool(temporal["exclude_peaks"])

    def beta(rows):
        fit = fm.spectral_beta(rows, fs, band, excl, return_fit=True)
        return fit.beta, fit.r2

    return {
        "higuchi_fd": lambda rows: fm.higuchi_fd(rows, kmax=kmax),
        "katz_fd": lambda rows: fm.katz_fd(rows),
        "dfa_alpha": lambda rows: fm.dfa_alpha(rows, windows=windows),
        "hurst_rs": lambda rows: fm.hurst_rs(rows),
        "spectral_beta": beta,
        "mf_width": lambda rows: fm.multifractal_spectrum(rows, list(mf["q_vals"]), scales)["width"],
    }


def _interval_calls(cfg: Mapping[str, Any]) -> tuple[dict[str, Callable], dict[str, int]]:
    """Interval measures and the fewest beats each needs (4 windows of the largest size)."""
    from fractals import metrics as fm

    iv, mf = cfg["intervals"], cfg["multifractal"]
    a1 = _log_windows(*_beat_range(iv["alpha1_beats"], "alpha1_beats"), max_n=13)
    a2 = _log_windows(*_beat_range(iv["alpha2_beats"], "alpha2_beats"))
    kmax = int(cfg["temporal"]["higuchi_kmax"])
    mf_scales = sorted(int(s) for s in mf["scales"])
    if len(mf_scales) < 2:
        raise ValueError(f"config.multifractal.scales: needs >= 2 scales (beats) for a slope, got {mf['scales']!r}")

    def mf_width(rows):
        scales = [s for s in mf_scales if s <= rows.shape[-1] // 4]
        return fm.multifractal_spectrum(rows, list(mf["q_vals"]), scales)["width"]

    calls = {
        "dfa_alpha1": lambda rows: fm.dfa_alpha(rows, windows=a1),
        "dfa_alpha2": lambda rows: fm.dfa_alpha(rows, windows=a2),
        "higuchi_fd": lambda rows: fm.higuchi_fd(rows, kmax=kmax),
        "mf_width": mf_width,
    }
    min_len = {"dfa_alpha1": 4 * a1[-1], "dfa_alpha2": 4 * a2[-1], "higuchi_fd": 4 * kmax,
               "mf_width": 4 * mf_scales[min(1, len(mf_scales) - 1)]}
    return calls, min_len


def _network(rows: torch.Tensor, good: np.ndarray, n_ch: int, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """FC density and graph FD per recording over its good channels, averaged over recordings.

    Recordings whose channels are all good (the usual case) share one batched FC and one batched box covering;
    a recording with flagged channels, or one the batch's covering rejects, is measured alone.
    """
    from fractals import metrics as fm

    thresh = float(cfg["graph"]["corr_threshold"])
    eps = [int(e) for e in cfg["graph"]["box_eps"]]
    orders = int(cfg["graph"].get("node_orders", 1))
    dens, fds, why = [], [], ""
    good_rec = good.reshape(-1, n_ch)
    recs = rows.reshape(-1, n_ch, rows.shape[-1])
    alone = list(range(recs.shape[0]))
    whole = np.nonzero(good_rec.all(1))[0] if n_ch >= 3 else np.zeros(0, dtype=int)
    if whole.size > 1:
        x = recs if whole.size == recs.shape[0] else recs[torch.as_tensor(whole, device=rows.device)]
        adj = torch.as_tensor(fm.functional_connectivity_latents(x.transpose(1, 2), thresh=thresh))  # (R, C, C)
        off = ~torch.eye(n_ch, dtype=torch.bool, device=adj.device)
        try:
            fd = torch.as_tensor(fm.graph_fractal_dim(adj, eps, node_orders=orders)).reshape(-1)
        except ValueError:  # one graph the covering refuses: each recording alone says which
            pass
        else:
            dens += ((adj != 0) & off).double().sum((-2, -1)).div(n_ch * (n_ch - 1)).tolist()
            fds += fd.tolist()
            alone = sorted(set(alone) - set(whole.tolist()))
    for r in alone:
        keep = np.nonzero(good_rec[r])[0]
        if keep.size < 3:
            why = f"recording {r}: {keep.size} good channel(s), need >= 3"
            continue
        x = recs[r] if keep.size == n_ch else recs[r, torch.as_tensor(keep, device=rows.device)]  # all good: a view
        adj = torch.as_tensor(fm.functional_connectivity_latents(x.transpose(0, 1)[None], thresh=thresh))[0]
        c = adj.shape[-1]
        off = ~torch.eye(c, dtype=torch.bool, device=adj.device)
        dens.append(float((adj[off] != 0).double().mean()))
        try:
            fd = fm.graph_fractal_dim(adj, eps, node_orders=orders)
            fds.append(float(torch.as_tensor(fd).reshape(-1)[0]))
        except ValueError as exc:
            why = f"graph_fd: {exc}"[:200]
    out = {"fc_density": float(np.mean(dens)) if dens else float("nan"),
           "graph_fd": float(np.nanmean(fds)) if fds else float("nan")}
    if why:
        out["graph_flag"] = why
    return out
