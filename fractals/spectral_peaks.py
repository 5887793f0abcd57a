"""Oscillatory peaks on a log-power residual, for :func:`fractals.spectral.spectral_beta`.

Peaks are found greedily on the smoothed residual of a robust aperiodic line: the highest bin above
threshold, its half-height crossings, and a parabola through the log of its top bins, which gives a
Gaussian (amplitude, centre, sd) with the smoother's own width removed. The discrete choices carry
no gradient; the Gaussian parameters are differentiable in the residual.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fractals._checks import check_positive

__all__ = ["find_peaks", "check_peak_opts"]

_FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SMOOTH_VAR_BINS = 12.0 / 9.0  # variance (bins^2) of the 5-bin triangular smoother


def _smooth(r: torch.Tensor) -> torch.Tensor:
    """Triangular 5-bin moving average along the last axis (edge bins replicated)."""
    kernel = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0], dtype=r.dtype, device=r.device) / 9.0
    flat = r.reshape(-1, 1, r.shape[-1])
    padded = torch.nn.functional.pad(flat, (2, 2), mode="replicate")
    return torch.nn.functional.conv1d(padded, kernel.view(1, 1, -1)).reshape(r.shape)


def _crossing(excess: torch.Tensor, k: torch.Tensor, half: torch.Tensor, side: int) -> torch.Tensor:
    """Fractional bin where ``excess`` first drops below ``half`` walking from ``k`` (side -1 or +1)."""
    F = excess.shape[-1]
    idx = torch.arange(F, device=excess.device)
    below = excess < half.unsqueeze(-1)
    kk = k.unsqueeze(-1)
    if side < 0:
        j = torch.where(below & (idx < kk), idx, -1).amax(-1)
        inner = (j + 1).clamp_max(F - 1)
    else:
        j = torch.where(below & (idx > kk), idx, F).amin(-1)
        inner = (j - 1).clamp_min(0)
    hit = (j >= 0) & (j < F)
    jc = j.clamp(0, F - 1)
    e_out, e_in = excess.gather(-1, jc.unsqueeze(-1)).squeeze(-1), excess.gather(-1, inner.unsqueeze(-1)).squeeze(-1)
    frac = ((e_in - half) / (e_in - e_out).clamp_min(1e-12)).clamp(0, 1)
    pos = inner.to(excess.dtype) + side * frac
    edge = torch.full_like(pos, -0.5 if side < 0 else F - 0.5)
    return torch.where(hit, pos, edge)


def _gaussian_from_parabola(excess: torch.Tensor, in_run: torch.Tensor, k: torch.Tensor, df: float):
    """Guo's weighted Caruana fit: ``ln excess`` of a Gaussian bump is a parabola around bin ``k``.

    Returns ``(amp, centre_shift_bins, sd_hz, ok)`` per series; ``ok`` is False where the fit is
    degenerate (too few bins, not concave, centre more than 2 bins away).
    """
    out_dtype = excess.dtype
    excess = excess.double()  # 3x3 normal equations with u^4 terms: float32 is not enough
    F = excess.shape[-1]
    u = (torch.arange(F, device=excess.device) - k.unsqueeze(-1)).to(excess.dtype)
    basis = torch.stack([torch.ones_like(u), u, u * u], -1)  # (..., F, 3)
    w = torch.where(in_run, excess, torch.zeros_like(excess)).square()  # Guo: weight by signal^2
    lne = torch.log(excess.clamp_min(1e-12))
    wb = w.unsqueeze(-1) * basis
    lhs = wb.transpose(-1, -2) @ basis
    ridge = 1e-9 * lhs.diagonal(dim1=-2, dim2=-1).amax(-1) + 1e-12
    lhs = lhs + ridge[..., None, None] * torch.eye(3, dtype=excess.dtype, device=excess.device)
    rhs = (wb * lne.unsqueeze(-1)).sum(-2)
    sol, info = torch.linalg.solve_ex(lhs, rhs.unsqueeze(-1))
    c0, c1, c2 = sol.squeeze(-1).unbind(-1)
    ok = (in_run.sum(-1) >= 3) & (c2 < 0) & (info == 0) & torch.isfinite(sol).all(-2).squeeze(-1)
    c2 = torch.where(ok, c2, -torch.ones_like(c2))
    var_bins = -1.0 / (2 * c2) - _SMOOTH_VAR_BINS
    shift = -c1 / (2 * c2)
    ok = ok & ((var_bins > 0.25) & (shift.abs() <= 2))
    amp = torch.exp((c0 - c1 * c1 / (4 * c2)).clamp(max=30.0))
    sd = var_bins.clamp_min(0.25).sqrt() * df
    return amp.to(out_dtype), shift.to(out_dtype), sd.to(out_dtype), ok


def find_peaks(resid: torch.Tensor, keep: torch.Tensor, f_band: torch.Tensor, df: float, threshold: float,
                min_height: float, max_n_peaks: int, mask_level: float):
    """Greedy peak detection and Gaussian modelling on a log10 residual ``(..., F)``.

    The residual (data minus aperiodic line) is smoothed; background level and noise sigma come
    from its lower tail. Then up to ``max_n_peaks`` times, as in specparam: take the highest bin;
    if it exceeds ``max(threshold * sigma, min_height)`` it is a peak; fit a Gaussian to the excess
    linear power around it (Guo's weighted parabola on ``ln``, FWHM crossings as a fallback),
    subtract it and search again. Returns ``(mask, model, freq, height, fwhm, valid)`` where
    ``model`` is the summed relative peak power ``sum_i A_i g_i(f)`` and ``mask`` marks the peak
    cores where ``model > mask_level`` (plus the peak bin and its two neighbours).
    """
    F, lead = resid.shape[-1], resid.shape[:-1]
    rs = _smooth(resid)
    # Background level and noise from the lower tail only (peaks only ever add power), so they
    # stay right even when peaks cover most of the band: for a Gaussian, q30 - q10 = 0.757 sigma.
    levels = torch.tensor([0.1, 0.3], dtype=rs.dtype, device=rs.device)
    q10, q30 = torch.nanquantile(torch.where(keep, rs, torch.nan), levels, dim=-1)  # one sort for both
    sigma = ((q30 - q10) / 0.7572).clamp_min(torch.finfo(rs.dtype).eps)
    rs = rs - (q30 + 0.5244 * sigma).unsqueeze(-1)
    thr = torch.clamp(threshold * sigma, min=min_height).reshape(-1)
    ln10 = math.log(10.0)
    idx = torch.arange(F, device=rs.device)
    work = rs.reshape(-1, F)  # the rows still searched (`active`): a row without a peak never gets one
    active = torch.arange(work.shape[0], device=rs.device)
    mask = torch.zeros_like(work, dtype=torch.bool)
    model = torch.zeros_like(work)
    zero = torch.zeros_like(work[:, 0])
    n_slots = min(max_n_peaks, F)
    freqs, heights, widths, valids = [], [], [], []
    for _ in range(n_slots):
        height, k = work.max(-1)
        found = torch.nonzero(height > thr).squeeze(-1)  # the one host sync of an iteration (CUDA)
        if found.numel() == 0:
            break
        if found.numel() < height.shape[0]:
            # A row's residual changes only where a peak is subtracted, so a row below threshold now stays
            # below it: later searches run on the rows that found one (a third of the work on 1/f noise).
            active, work, thr, height, k = (t.index_select(0, found) for t in (active, work, thr, height, k))
        amp = torch.expm1(height * ln10)  # peak power / aperiodic power
        excess = torch.expm1(work * ln10)
        fwhm_bins = (_crossing(excess, k, amp / 2, +1) - _crossing(excess, k, amp / 2, -1)).clamp_min(1.0)
        kk = k.unsqueeze(-1)
        run_left = torch.where((work < 0) & (idx < kk), idx, -1).amax(-1, keepdim=True)
        run_right = torch.where((work < 0) & (idx > kk), idx, F).amin(-1, keepdim=True)
        in_run = (idx > run_left) & (idx < run_right) & (excess > 0.05 * amp.unsqueeze(-1))
        g_amp, shift, g_sd, ok = _gaussian_from_parabola(excess, in_run, k, df)
        sd_cross = fwhm_bins * df / _FWHM_PER_SD
        # A parabola spanning two merged peaks comes out far wider than the half-maximum width.
        ok = ok & ((g_sd <= 2.0 * sd_cross) & (g_sd >= 0.5 * sd_cross))
        amp = torch.where(ok, g_amp, amp)
        sd = torch.where(ok, g_sd, sd_cross)
        f_peak = f_band[k] + torch.where(ok, shift, torch.zeros_like(shift)) * df
        gauss = amp.unsqueeze(-1) * torch.exp(-0.5 * ((f_band - f_peak.unsqueeze(-1)) / sd.unsqueeze(-1)) ** 2)
        core = (gauss > mask_level) | ((idx - kk).abs() <= 1)
        mask[active] = mask[active] | core
        model = model.index_add(0, active, gauss)  # out of place: the Gaussians carry the gradient
        # Subtract this peak so its shoulders are not found again; its core is never re-picked.
        work = (work - torch.log1p(gauss) / ln10).masked_fill(core, -math.inf)
        freqs.append(zero.index_put((active,), f_peak))
        heights.append(zero.index_put((active,), torch.log1p(amp) / ln10))
        widths.append(zero.index_put((active,), sd * _FWHM_PER_SD))
        valids.append(torch.zeros_like(zero, dtype=torch.bool).index_fill(0, active, True))
    while len(freqs) < n_slots:
        freqs.append(zero), heights.append(zero), widths.append(zero), valids.append(zero.bool())
    stack = lambda seq: torch.stack(seq, -1).reshape(*lead, n_slots)  # noqa: E731
    return (mask.reshape(*lead, F), model.reshape(*lead, F), stack(freqs), stack(heights), stack(widths),
            stack(valids))


def check_peak_opts(peak_threshold, min_peak_height, max_n_peaks, peak_mask_level, n_iter) -> dict:
    """The peak-masking options of the aperiodic fit, checked by name; the dict :func:`find_peaks` takes."""
    for name, value in (("peak_threshold", peak_threshold), ("peak_mask_level", peak_mask_level)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
        check_positive(float(value), name)
    if not (isinstance(min_peak_height, (int, float, np.integer, np.floating)) and min_peak_height >= 0):
        raise ValueError(f"min_peak_height: must be a number >= 0 (log10 power), got {min_peak_height!r}")
    for name, value in (("max_n_peaks", max_n_peaks), ("n_iter", n_iter)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    return dict(threshold=float(peak_threshold), min_height=float(min_peak_height), max_n_peaks=int(max_n_peaks),
                mask_level=float(peak_mask_level), n_iter=int(n_iter))
