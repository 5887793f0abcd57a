"""The 1/f spectral prior: differentiable Welch slope ``beta`` of the latents and the loss pulling it to a target."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from fractals._checks import autocast_off, check_positive, pow2_scale
from fractals._prior_common import _check_weight, _finite, _lstsq_slope, _time_last, _zero_like
from fractals.spectral import band_bin_range, welch_segments

__all__ = ["l_spec_1overf", "latent_beta"]


# --------------------------------------------------------------------------------------------------
# 1/f spectral prior
# --------------------------------------------------------------------------------------------------
def _resolutions(n: int, nperseg) -> list[int]:
    if nperseg is None:
        # Several resolutions: a gradient that fits one Welch grid can leave the slope seen by
        # another untouched (measured: descent on nperseg=T alone ends at beta 0.26 for nperseg=T/4).
        res = [n // d for d in (1, 2, 4, 8) if n // d >= 64] or [n]
    else:
        values = nperseg if isinstance(nperseg, (list, tuple)) else [nperseg]
        for v in values:  # inf was an OverflowError, NaN / arrays a message naming no argument, 64.5 truncated
            try:
                ok = not isinstance(v, bool) and float(v).is_integer()
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"nperseg: needs integer Welch segment lengths (or None), got {nperseg!r}")
        res = [int(v) for v in values]
        if not res:  # else "stack expects a non-empty TensorList"
            raise ValueError(f"nperseg: needs at least one Welch segment length (or None), got {nperseg!r}")
    return res


def _band_bins(n, fs, lo, hi, nper, time_dim, shape, band) -> tuple[int, int]:
    """First Welch bin of the fit band and its bin count at segment length ``nper`` (on the host)."""
    if not 8 <= nper <= n:
        raise ValueError(
            f"nperseg: needs 8 <= nperseg <= T = {n} (time axis is dim {time_dim} of shape {shape}), got {nper}"
        )
    k_lo, k_hi = band_bin_range(lo, hi, fs / nper)  # on the host: no device sync, static slices
    n_bins = max(0, min(k_hi, nper // 2) - k_lo + 1)
    if n_bins < 4:
        raise ValueError(
            f"band: {tuple(band)} Hz holds {n_bins} Welch bins (nperseg={nper}, fs={fs}, time axis dim "
            f"{time_dim} of shape {shape}); need >= 4: widen the band, raise nperseg, or check that "
            "time is on time_dim"
        )
    return k_lo, n_bins


def _band_hz(fs, band) -> tuple[float, float]:
    """``band`` as finite (lo, hi) Hz, hi clipped to 0.45 fs."""
    check_positive(fs, "fs")
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError):  # (2.0,) was an IndexError, "ab" a bare float() message
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN was "cannot convert float NaN to integer"
        raise ValueError(f"band: needs a (low_hz, high_hz) pair of finite numbers, got {band!r}")
    return lo, min(hi, 0.45 * fs)


def _welch_power(x, nper):
    """Welch spectra ``(..., S, nperseg // 2 + 1)`` (Hann, 50 % overlap, each segment's mean removed)."""
    segs = welch_segments(x, nper, max(nper // 2, 1))
    segs = segs - segs.mean(-1, keepdim=True)
    win = torch.hann_window(nper, periodic=True, dtype=x.dtype, device=x.device)
    return torch.fft.rfft(segs * win, dim=-1)


def _welch_beta(x, fs, lo, hi, nper, exclude_peaks, peak_threshold, time_dim, shape, band):
    k_lo, n_bins = _band_bins(x.shape[-1], fs, lo, hi, nper, time_dim, shape, band)
    spec = _welch_power(x, nper)[..., k_lo : k_lo + n_bins]
    power = (spec.real.square() + spec.imag.square()).mean(-2)
    # A tiny floor relative to each series' power keeps log finite for dead channels.
    floor = 1e-12 * power.detach().mean(-1, keepdim=True) + torch.finfo(x.dtype).tiny
    logp = torch.log10(power + floor)
    freqs = torch.arange(k_lo, k_lo + n_bins, dtype=torch.float64, device=x.device) * (fs / nper)
    logf = torch.log10(freqs).to(x.dtype)
    slope = _lstsq_slope(logf, logp)
    if exclude_peaks:
        with torch.no_grad():
            ym = logp.mean(-1, keepdim=True) - slope[..., None] * logf.mean()
            resid = logp - (ym + slope[..., None] * logf)
            mask = (resid <= peak_threshold).to(x.dtype)
        slope = _lstsq_slope(logf, logp, mask)
    return -slope


def _betas(latents, fs, band, time_dim, nperseg, exclude_peaks, peak_threshold, drop_dead=False):
    """Betas ``(R, ...)`` per resolution and, with ``drop_dead``, also the live-series mask ``(...)``."""
    check_positive(fs, "fs")
    x, live = _spectral_input(latents, time_dim, drop_dead)
    lo, hi = _band_hz(fs, band)
    shape = tuple(latents.shape)
    betas = torch.stack([_welch_beta(x, fs, lo, hi, r, exclude_peaks, peak_threshold, time_dim, shape, band)
                         for r in _resolutions(x.shape[-1], nperseg)])
    return (betas, live) if drop_dead else betas


def _spectral_input(latents, time_dim, drop_dead):
    x = _time_last(latents, time_dim)
    live = None
    if drop_dead:
        live = x.detach().amax(-1) > x.detach().amin(-1)
        # An exactly constant series has no spectrum: the mean removal would leave rounding noise,
        # whose slope has gradients of 1e12 (float32) to 1e30 (float64). Zeroed, its beta is 0
        # with zero gradient; the caller leaves it out.
        x = torch.where(live[..., None], x, torch.zeros_like(x))
    # beta is scale- and offset-free; float32 power is not: centred with a float64 mean (an offset of
    # 1e6 moved beta by 0.01) and scaled by a power of two (exact), so power cannot overflow
    # (|x| >= 1e19 gave a NaN loss) or underflow into the floor (|x| <= 1e-20 gave beta 0).
    x = x - x.mean(-1, keepdim=True, dtype=torch.float64).to(x.dtype)
    return x / pow2_scale(x), live


def _spec_bins(latents: torch.Tensor, fs: float, band: Sequence[float], *, time_dim: int = 1) -> list[torch.Tensor]:
    """The fit band of :func:`l_spec_1overf` (default resolutions) as tensors, one ``(2, nperseg // 2 + 1)`` per
    Welch resolution: row 0 weighs the bins inside the band 1 (others 0), row 1 holds log10 of their frequency.

    With the band given this way, fs and band are tensor values rather than Python numbers, so a
    torch.compile graph of :func:`_spec_loss_binned` is not specialised on them (one graph for every
    modality's rate). Raises as :func:`l_spec_1overf` does for a bad fs, band or too short a series.
    """
    lo, hi = _band_hz(fs, band)
    n, shape = latents.shape[time_dim], tuple(latents.shape)
    dtype = latents.dtype if latents.dtype in (torch.float32, torch.float64) else torch.float32
    out = []
    for nper in _resolutions(n, None):
        k_lo, n_bins = _band_bins(n, fs, lo, hi, nper, time_dim, shape, band)
        # Built on the device (no host-to-device copy, which would sync); float64 frequencies as in _welch_beta.
        k = torch.arange(nper // 2 + 1, dtype=torch.float64, device=latents.device)
        weight = ((k >= k_lo) & (k < k_lo + n_bins)).to(dtype)
        out.append(torch.stack([weight, torch.log10(k.clamp_min(1.0) * (fs / nper)).to(dtype)]))
    return out


def _welch_beta_binned(x, nper, bins, exclude_peaks, peak_threshold):
    """:func:`_welch_beta` with the band as a 0/1 weight over every bin (see :func:`_spec_bins`)."""
    weight, logf = bins[0], bins[1]
    spec = _welch_power(x, nper)
    power = (spec.real.square() + spec.imag.square()).mean(-2)
    mean_w = weight / weight.sum()
    floor = 1e-12 * (power.detach() * mean_w).sum(-1, keepdim=True) + torch.finfo(x.dtype).tiny
    logp = torch.log10(power + floor)
    slope = _lstsq_slope(logf, logp, weight)
    if exclude_peaks:
        with torch.no_grad():
            ym = (logp * mean_w).sum(-1, keepdim=True) - slope[..., None] * (logf * mean_w).sum()
            resid = logp - (ym + slope[..., None] * logf)
            mask = (resid <= peak_threshold).to(x.dtype) * weight
        slope = _lstsq_slope(logf, logp, mask)
    return -slope


@autocast_off
def _spec_loss_binned(latents, bins, beta_target, weight, *, time_dim=1, exclude_peaks=False, peak_threshold=0.3):
    """:func:`l_spec_1overf` (default resolutions) with its band from :func:`_spec_bins` on the same latents."""
    x, live = _spectral_input(latents, time_dim, True)
    res = _resolutions(x.shape[-1], None)
    if len(res) != len(bins):
        raise ValueError(f"bins: needs one band per Welch resolution {res} (_spec_bins on these latents), "
                         f"got {len(bins)}")
    betas = torch.stack([_welch_beta_binned(x, r, b, exclude_peaks, peak_threshold) for r, b in zip(res, bins)])
    sq = (betas - float(beta_target)).square() * live
    return float(weight) * sq.sum() / (betas.shape[0] * live.sum()).clamp_min(1)


@autocast_off
def latent_beta(
    latents: torch.Tensor,
    fs: float,
    band: Sequence[float],
    *,
    time_dim: int = 1,
    nperseg=None,
    exclude_peaks: bool = False,
    peak_threshold: float = 0.3,
) -> torch.Tensor:
    """Differentiable aperiodic slope ``beta`` per latent channel (``P ~ 1/f^beta``).

    Least-squares slope of log10 Welch power (Hann, 50 % overlap, constant detrend) on log10
    frequency inside ``band``, averaged over the Welch resolutions ``nperseg`` (default: T, T/2,
    T/4, T/8, those >= 64 samples). With ``exclude_peaks`` the bins lying more than
    ``peak_threshold`` decades (0.3 = 2x power) above a first fit are masked (mask without
    gradient) and the line refit. The band's upper edge is clipped to 0.45 fs when it lies above
    (latents often run slower than the input); fewer than 4 bins at any resolution raises.

    Shape:
        latents: ``(B, T, C)`` (time on ``time_dim``). Returns ``(B, C)`` (the non-time axes).
    """
    return _betas(latents, fs, band, time_dim, nperseg, exclude_peaks, peak_threshold).mean(0)


@autocast_off
def l_spec_1overf(
    latents: torch.Tensor,
    fs: float,
    band: Sequence[float],
    beta_target: float,
    weight: float,
    *,
    time_dim: int = 1,
    nperseg=None,
    exclude_peaks: bool = False,
    peak_threshold: float = 0.3,
) -> torch.Tensor:
    """1/f prior: ``weight * mean over resolutions and channels of (beta - beta_target)^2``.

    ``beta`` per Welch resolution as in :func:`latent_beta`. Exactly constant (dead) channels
    have no spectrum: they are left out of the mean and get no gradient. ``exclude_peaks=True`` masks
    oscillatory peaks so the prior leaves rhythms alone; it is off by default because a hard mask
    inside a loss can be gamed: measured on white-noise latents (2 x 1024 x 4, 60 Adam steps), the
    masked prior ends with beta 0.94 +- 0.06 by the unmasked estimator, the unmasked one at
    1.00. Zero ``weight`` returns 0 without computing anything.

    Shape:
        latents: ``(B, T, C)`` (time on ``time_dim``). Returns a scalar.
    """
    w = _check_weight(weight)
    if w == 0.0:
        return _zero_like(latents)
    target = _finite(beta_target, "beta_target")
    betas, live = _betas(latents, fs, band, time_dim, nperseg, exclude_peaks, peak_threshold, drop_dead=True)
    sq = (betas - target).square() * live
    return w * sq.sum() / (betas.shape[0] * live.sum()).clamp_min(1)
