"""The aperiodic 1/f fit of in-band PSD bins, oscillatory peaks modelled out (fit_aperiodic, SpectralFit)."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from fractals._checks import as_tensor, autocast_off, check_finite, check_ndim
from fractals.spectral_peaks import check_peak_opts as _check_peak_opts
from fractals.spectral_peaks import find_peaks as _find_peaks

__all__ = ["fit_aperiodic", "SpectralFit"]

MIN_BAND_BINS = 6  # fewer bins than this cannot separate a slope from a peak


@dataclass
class SpectralFit:
    """Result of :func:`spectral_beta` with ``return_fit=True``.

    All per-series fields have the input's leading shape ``(...)``; peak fields add a trailing
    ``max_n_peaks`` axis. Absent peaks are padded with zeros and flagged ``False`` in
    ``peak_valid`` (never NaN).

    Attributes
    ----------
    beta : (...) aperiodic exponent, ``-slope``.
    offset : (...) intercept of the fit in log10 power at 1 Hz.
    slope : (...) slope of log10 power against log10 frequency.
    r2 : (...) coefficient of determination of the fit on the bins used.
    freqs : (F,) frequencies of the in-band bins (Hz).
    mask : (..., F) bool, True for the in-band bins the final fit used (peaks excluded).
    peak_freq : (..., P) peak centre frequency in Hz (centre of the fitted Gaussian).
    peak_power : (..., P) peak height above the aperiodic fit in log10 power.
    peak_width : (..., P) full width at half maximum of the fitted Gaussian, in Hz.
    peak_valid : (..., P) bool, which peak slots hold a detected peak (highest first).
    """

    beta: Any
    offset: Any
    slope: Any
    r2: Any
    freqs: Any
    mask: Any
    peak_freq: Any
    peak_power: Any
    peak_width: Any
    peak_valid: Any

    @property
    def n_peaks(self):
        """Number of detected peaks per series, shape ``(...)``."""
        return self.peak_valid.sum(-1)


def _check_band(freq_band, top: float, what: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in freq_band)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"freq_band: must be a pair (low_hz, high_hz), got {freq_band!r}") from exc
    if not (0 < low < high <= top):
        raise ValueError(f"freq_band: needs 0 < low < high <= {top:g} Hz ({what}), got {freq_band!r}; "
                         "pick a band inside the recorded spectrum")
    return low, high


# ----------------------------------------------------------------------------- fitting kernels
def _wls_line(lx: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least squares of ``y ~ a + b * lx`` along the last axis: returns (a, b, r2)."""
    sw = w.sum(-1, keepdim=True)
    mx = (w * lx).sum(-1, keepdim=True) / sw
    my = (w * y).sum(-1, keepdim=True) / sw
    dx, dy = lx - mx, y - my
    sxx = (w * dx * dx).sum(-1)
    slope = (w * dx * dy).sum(-1) / sxx
    offset = my.squeeze(-1) - slope * mx.squeeze(-1)
    resid = y - offset.unsqueeze(-1) - slope.unsqueeze(-1) * lx
    ss_tot = (w * dy * dy).sum(-1)
    r2 = 1.0 - (w * resid * resid).sum(-1) / ss_tot.clamp_min(torch.finfo(y.dtype).tiny)
    return offset, slope, r2


FIT_BLOCK_BYTES = 1 << 20  # CPU: float64 (series, bin) cells per peak-search block


def _fit_band(f_band, p_band, df, freq_band, exclude_peaks, return_fit, opts, was_numpy, log10_gain=None):
    """Aperiodic fit of in-band PSD bins ``(..., F)`` on a uniform grid of spacing ``df``; ``log10_gain``
    ``(...)`` is added to the offset (the PSD was computed on a rescaled series)."""
    if bool((p_band.detach() <= 0).any()):
        raise ValueError(
            "psd: some series have zero power in freq_band (piecewise-constant or band-limited signal); "
            "the log-log fit is undefined: drop those series or change freq_band"
        )
    # The peak search keeps a dozen (series, bin) temporaries, some float64 (~230 bytes a cell), and the
    # default nperseg grows with T: 128 channels x 10 min at 1 kHz took 0.6 GB extra in one pass. Every
    # step is per series, so on CPU it runs in row blocks (~30 MB of temporaries) with the same numbers.
    lead, F = p_band.shape[:-1], p_band.shape[-1]
    n_rows = math.prod(lead)
    # Never a block of one series: float32 conv1d (the peak search's smoother) rounds a batch of one
    # differently from a larger batch (1 ulp), and blocks must give the one-pass numbers.
    per = max(2, FIT_BLOCK_BYTES // (8 * F))
    if p_band.device.type != "cpu" or n_rows <= per:
        parts = _fit_rows(f_band, p_band, df, exclude_peaks, opts)
    else:
        sizes = [per] * (n_rows // per) + ([n_rows % per] if n_rows % per else [])
        if sizes[-1] == 1:
            sizes[-2:] = [sizes[-2] + 1]
        blocks = [_fit_rows(f_band, b, df, exclude_peaks, opts) for b in p_band.reshape(-1, F).split(sizes)]
        parts = [torch.cat(field, 0).reshape(*lead, *field[0].shape[1:]) for field in zip(*blocks)]
    offset, slope, r2, use, peak_f, peak_h, peak_w, peak_valid = parts
    if log10_gain is not None:
        offset = offset + log10_gain
    beta = -slope
    if not return_fit:
        return beta.detach().cpu().numpy() if was_numpy else beta
    fit = SpectralFit(
        beta=beta, offset=offset, slope=slope, r2=r2, freqs=f_band, mask=use, peak_freq=peak_f,
        peak_power=peak_h, peak_width=peak_w, peak_valid=peak_valid,
    )
    if was_numpy:
        for fld in fields(fit):
            setattr(fit, fld.name, getattr(fit, fld.name).detach().cpu().numpy())
    return fit


def _fit_rows(f_band, p_band, df, exclude_peaks, opts):
    """The fit of :func:`_fit_band` on PSD bins ``(..., F)``: offset, slope, r2, mask and the peak fields."""
    lx = torch.log10(f_band)
    y = torch.log10(p_band)
    batch_shape, F = y.shape[:-1], y.shape[-1]
    n_slots = min(opts["max_n_peaks"], F)
    use = torch.ones_like(y, dtype=torch.bool)
    peak_model = torch.zeros_like(y)
    peak_f = torch.zeros((*batch_shape, n_slots), dtype=y.dtype, device=y.device)
    peak_h, peak_w = torch.zeros_like(peak_f), torch.zeros_like(peak_f)  # separate arrays: no aliasing
    peak_valid = peak_f.bool()
    if exclude_peaks:
        # Discrete choices (which bins, which peaks) carry no gradient; everything continuous does:
        # the robust line, the fitted Gaussians and their subtraction, so d beta / d x is the
        # derivative of the whole estimator for perturbations that keep the choices.
        a, b, _ = _wls_line(lx, y, torch.ones_like(y))
        for _ in range(2):  # lower-envelope refits: robust to peaks covering < 70 % of the band
            resid = y - a.unsqueeze(-1) - b.unsqueeze(-1) * lx
            lower = resid.detach() <= torch.quantile(resid.detach(), 0.3, dim=-1, keepdim=True)
            a, b, _ = _wls_line(lx, y, lower.to(y.dtype))
        for _ in range(opts["n_iter"]):
            resid = y - a.unsqueeze(-1) - b.unsqueeze(-1) * lx
            mask, peak_model, peak_f, peak_h, peak_w, peak_valid = _find_peaks(
                resid, use, f_band, df, opts["threshold"], opts["min_height"], opts["max_n_peaks"],
                opts["mask_level"],
            )
            # Short windows with several peaks: if the cores would leave under a quarter of the
            # band, keep every bin and rely on the subtracted Gaussians alone (fit.mask shows it).
            too_few = (~mask).sum(-1, keepdim=True) < max(3, math.ceil(F / 4))
            use = ~mask | too_few
            a, b, _ = _wls_line(lx, y - torch.log1p(peak_model) / math.log(10.0), use.to(y.dtype))
    # Peak shoulders removed with their fitted Gaussians, peak cores masked.
    target = y - torch.log1p(peak_model) / math.log(10.0)
    offset, slope, r2 = _wls_line(lx, target, use.to(y.dtype))
    return offset, slope, r2, use, peak_f, peak_h, peak_w, peak_valid


@autocast_off
def fit_aperiodic(
    freqs,
    psd,
    freq_band: tuple[float, float] = (2.0, 80.0),
    exclude_peaks: bool = True,
    return_fit: bool = False,
    *,
    peak_threshold: float = 2.5,
    min_peak_height: float = 0.1,
    max_n_peaks: int = 6,
    peak_mask_level: float = 0.5,
    n_iter: int = 2,
):
    """The aperiodic fit of :func:`spectral_beta` on a PSD you already have.

    Parameters
    ----------
    freqs : torch.Tensor or np.ndarray
        ``(F,)`` uniformly spaced frequencies in Hz (e.g. from :func:`welch_psd`).
    psd : torch.Tensor or np.ndarray
        ``(..., F)`` power spectral density, linear units, > 0 inside the band.
    freq_band, exclude_peaks, return_fit, peak_threshold, min_peak_height, max_n_peaks, peak_mask_level, n_iter
        As in :func:`spectral_beta`.

    Returns
    -------
    beta ``(...)`` or a :class:`SpectralFit`, same kind as ``psd``.

    Shape:
        ``(F,), (..., F) -> (...)``. Differentiable with respect to ``psd``. Peak smoothing and
        widths work in bins, so the grid must be uniform.
    """
    p, was_numpy = as_tensor(psd, "psd")
    f_in, _ = as_tensor(freqs, "freqs")
    f = f_in.to(dtype=p.dtype, device=p.device)
    check_ndim(p, 1, "psd", "(..., F)")
    if p.numel() == 0:
        raise ValueError(f"psd: is empty (shape {tuple(p.shape)}); needs at least one spectrum")
    if f.ndim != 1 or f.numel() != p.shape[-1]:
        raise ValueError(f"freqs: needs shape ({p.shape[-1]},) to match psd's last axis, got {tuple(f.shape)}")
    check_finite(p, "psd")
    check_finite(f, "freqs")
    if f.numel() < 2:
        raise ValueError("freqs: needs at least two frequencies")
    # Grid values carry the rounding of the coarser dtype (float32 Welch freqs: 60 Hz as 59.99998),
    # so steps may differ by a few ulps and a bin within a few ulps of a band edge is on the edge.
    eps = max(torch.finfo(f_in.dtype).eps, torch.finfo(p.dtype).eps)
    ulps = 8 * eps * float(f.abs().max())
    step = f[1:] - f[:-1]
    df = float(step[0])
    if df <= 0 or not bool(torch.allclose(step, step[0].expand_as(step), rtol=1e-6, atol=ulps)):
        raise ValueError("freqs: must be uniformly spaced and increasing (a Welch or FFT grid)")
    tol = 1e-9 * df + ulps
    low, high = _check_band(freq_band, float(f[-1]) * (1 + 1e-9) + tol, "the top of freqs")
    opts = _check_peak_opts(peak_threshold, min_peak_height, max_n_peaks, peak_mask_level, n_iter)
    fd = f.double()
    in_band = (fd > 0) & (fd >= low - tol) & (fd <= high + tol)  # never DC: log10(0)
    n_in_band = int(in_band.sum())
    if n_in_band < MIN_BAND_BINS:
        raise ValueError(
            f"freq_band: {freq_band!r} holds {n_in_band} bin(s) of freqs (spacing {df:g} Hz); needs >= {MIN_BAND_BINS}: "
            "widen the band or use a finer frequency grid"
        )
    return _fit_band(f[in_band], p[..., in_band], df, freq_band, exclude_peaks, return_fit, opts, was_numpy)
