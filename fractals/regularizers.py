"""Differentiable fractal priors on latent time series: 1/f slope, multifractal tau(q), graph FD.

Each term is a closed-form, fully vectorised kernel that autograd differentiates with respect to
the latents; the estimators in :mod:`fractals.metrics` stay the reference (the tests pin these
kernels to them) but carry choices a loss cannot (iterative peak search, hard thresholds, box
covering). A term whose weight is zero returns a zero tensor without touching the latents.

Latents layout: ``(B, T, C)``, time on axis 1, as NeuroFMx returns them. Every function takes
``time_dim`` (default 1) and moves that axis last internally; pass ``time_dim=-1`` for ``(B, C, T)``.

Terms
-----
- :func:`l_spec_1overf`: ``weight * mean((beta - beta_target)^2)`` with ``beta`` the least-squares
  log-log slope of Welch PSDs in ``band`` at several resolutions (so descent cannot satisfy one
  frequency grid only); optionally oscillatory peaks are masked so rhythms are left alone.
- :func:`l_multifractal`: MFDFA mass exponents ``tau(q) = q h(q) - 1``; penalises the curvature of
  tau(q) (divided second differences over the possibly uneven q grid) plus ``match_weight`` times
  the squared distance to ``tau_target``. Zero curvature means a linear tau, i.e. monofractal
  scaling: use the match term to ask for a specific multifractal shape.
- :func:`l_graph_fd`: a soft cluster-growing dimension of the latent correlation graph (below),
  pulled to ``D_target`` or, without a target, its variance across the batch.

Graph surrogate and its relation to the hard graph FD
-----------------------------------------------------
:func:`fractals.metrics.graph_fractal_dim` thresholds ``|corr|`` and box-covers the graph
(``N_B(l) ~ l^-D``). Neither step has a gradient, so the prior uses: soft edges
``A = sigmoid((|r| - thresh) / temperature)``; soft reachability within ``l`` hops
``R_l = g(R_{l-1} (A + I))`` with ``g`` a sigmoid step of slope ``sharpness`` at 1/2, rescaled so
``g(0) = 0`` and ``g(1) = 1`` (``R_0 = I``: ``j`` is reached when at least one path arrives); ball mass ``M(l) = mean_i sum_j R_l[i, j]``; ``D = slope of log M(l) on log l`` over
``eps_values``. As ``temperature -> 0`` and ``sharpness -> inf`` ``R_l`` is exact ``l``-hop
reachability and ``D`` the cluster-growing dimension, which equals the box-covering dimension on
homogeneous fractal networks (Song, Havlin & Makse, Nature 2005); on small-world graphs both
saturate (``M`` reaches ``C``). Finite ``l`` biases it low on lattices (ring: ``M = 2l + 1``).
"""
from __future__ import annotations

import contextvars
import math
import numbers
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fractals._checks import autocast_off, check_finite, check_positive, pow2_scale
from fractals.spectral import band_bin_range, welch_segments

__all__ = [
    "l_spec_1overf",
    "l_multifractal",
    "l_graph_fd",
    "latent_beta",
    "latent_tau",
    "soft_graph_dimension",
    "FractalPriors",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
# Set by FractalPriors while its terms run on latents it has checked once: each term's own check is a host
# sync, so three terms cost three per training step in eager mode.
_LATENTS_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("fractals_latents_checked", default=False)


def _check_latents(latents: torch.Tensor, time_dim: int, name: str = "latents") -> None:
    """The input checks of :func:`_time_last`, without its copy (FractalPriors runs them before a compiled call)."""
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"{name}: needs a torch.Tensor (B, T, C), got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise ValueError(f"{name}: needs a floating tensor, got dtype {latents.dtype}")
    if latents.ndim < 2:
        raise ValueError(f"{name}: needs at least 2 dims (B, T, C with time_dim={time_dim}), got shape {tuple(latents.shape)}")
    if latents.numel() == 0:  # else an MKL "inconsistent configuration" RuntimeError from the FFT
        raise ValueError(f"{name}: is empty (shape {tuple(latents.shape)}); needs at least one (T, C) series")
    _check_time_dim(time_dim, latents.shape, name)
    if not torch.compiler.is_compiling() and not _LATENTS_CHECKED.get():
        # NaN/inf channels read as dead (left out: a silently smaller loss) or gave a finite tau. One
        # host sync, so it is skipped inside a torch.compile graph (there NaN latents make the loss NaN).
        check_finite(latents, name)


def _time_last(latents: torch.Tensor, time_dim: int, name: str = "latents") -> torch.Tensor:
    _check_latents(latents, time_dim, name)
    x = latents.movedim(time_dim, -1).contiguous()  # strided unfold/FFT on (B, T, C) is 3-4x slower
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # log-spectra and cumulative sums lose too much in half precision
    return x


def _check_time_dim(time_dim, shape, name: str = "latents") -> None:
    """An axis of ``shape``; else movedim / shape[time_dim] raised an IndexError naming no argument."""
    nd = len(shape)
    if isinstance(time_dim, bool) or not isinstance(time_dim, numbers.Integral) or not -nd <= time_dim < nd:
        raise ValueError(f"time_dim: needs an axis of {name} with shape {tuple(shape)} (an integer in "
                         f"[{-nd}, {nd - 1}]), got {time_dim!r}")


def _finite(value, name: str) -> float:
    """A target or weight given as a number: NaN or inf would make the loss NaN without a word."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v):
        raise ValueError(f"{name}: must be finite (a real number), got {value!r}")
    return v


def _zero_like(latents: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=latents.dtype, device=latents.device)


def _check_weight(weight, name: str = "weight") -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        w = math.nan
    # True is not a weight: `lambda_mf: true` (meaning "on") ran the prior at 1.0, 50x its default.
    if isinstance(weight, bool) or not (math.isfinite(w) and w >= 0):
        raise ValueError(f"{name}: must be a finite number >= 0, got {weight!r}")
    return w


def _lstsq_slope(x: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted least-squares slope of ``y`` on ``x`` along the last axis (x broadcast)."""
    if w is None:
        w = torch.ones_like(y)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    xm = (w * x).sum(-1, keepdim=True)
    ym = (w * y).sum(-1, keepdim=True)
    dx = x - xm
    return (w * dx * (y - ym)).sum(-1) / (w * dx * dx).sum(-1).clamp_min(1e-12)


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


# --------------------------------------------------------------------------------------------------
# multifractal prior
# --------------------------------------------------------------------------------------------------
@autocast_off
def latent_tau(
    latents: torch.Tensor,
    q_vals: Sequence[float],
    scales: Sequence[int],
    *,
    time_dim: int = 1,
    order: int = 1,
) -> torch.Tensor:
    """Differentiable MFDFA mass exponents ``tau(q) = q h(q) - 1`` per latent channel.

    The kernel of :func:`fractals.dfa.multifractal_spectrum` (profile ``y = cumsum(x - mean)``;
    segments from both ends of each scale detrended by an order-``order`` polynomial;
    ``log F_q(s) = (1/q) log mean_v F^2(v, s)^(q/2)``, q = 0 the log-mean), accumulated in float64,
    with segment variances floored at 1e-12 of their mean so an exactly linear segment cannot make
    the gradient infinite; ``h(q)`` is the least-squares slope of ``log F_q`` on ``log s``.

    Shape:
        latents: ``(B, T, C)`` (time on ``time_dim``). Returns ``(B, C, Q)``.
    """
    x = _time_last(latents, time_dim)
    n = x.shape[-1]
    q_list = [float(v) for v in (q_vals.tolist() if isinstance(q_vals, torch.Tensor) else q_vals)]
    if not all(math.isfinite(v) for v in q_list):  # a NaN / inf q gave a NaN tau, a NaN loss
        raise ValueError(f"q_vals: needs finite moment orders, got {q_list}")
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 0:
        raise ValueError(f"order: needs an integer >= 0 (detrending polynomial order), got {order!r}")
    q = torch.tensor(q_list, dtype=x.dtype, device=x.device)
    sc = [int(s) for s in scales]
    if any(isinstance(v, bool) or s != v for s, v in zip(sc, scales)):  # 8.7 would truncate to 8
        raise ValueError(f"scales: needs integer segment sizes, got {list(scales)}")
    if len(set(sc)) != len(sc):  # [8, 8] fitted h on one scale: slope 0, tau = -1 for every q, no gradient
        raise ValueError(f"scales: sizes must be distinct, got {list(scales)}")
    if q.numel() < 1:
        raise ValueError("q_vals: needs at least one value")
    if len(sc) < 2 or min(sc) < order + 2 or max(sc) > n // 2:
        raise ValueError(
            f"scales: needs >= 2 sizes, all in [{order + 2}, T/2 = {n // 2}] (time axis dim {time_dim} of "
            f"shape {tuple(latents.shape)}), got {list(scales)}; drop the sizes outside it (FractalPriors "
            f"drops those above T/2 per call)"
        )
    from fractals.dfa import _log_fq_all  # the MFDFA kernel itself (one pass on octave grids)

    # Variances floored at 1e-12 of their mean: an exactly linear segment would give log 0 and an
    # infinite gradient.
    log_fq = _log_fq_all(x, q.double(), sc, order, True, floor=1e-12, q_list=q_list)  # (..., Q, S)
    log_s = torch.log(torch.as_tensor(sc, dtype=x.dtype, device=x.device))
    h = _lstsq_slope(log_s, log_fq)
    return q * h - 1.0


@autocast_off
def l_multifractal(
    latents: torch.Tensor,
    q_vals: Sequence[float],
    scales: Sequence[int],
    weight: float,
    tau_target: Optional[Any] = None,
    *,
    time_dim: int = 1,
    match_weight: float = 0.1,
    order: int = 1,
) -> torch.Tensor:
    """Multifractal prior: ``weight * (curvature(tau) + match_weight * mean((tau - tau_target)^2))``.

    ``curvature`` is the mean square divided second difference of tau over q (exact for uneven
    q grids; with unit spacing it is the plain second difference). Without ``tau_target`` only the
    smoothness term applies. Zero ``weight`` returns 0 without computing anything.

    Shape:
        latents: ``(B, T, C)``; tau_target: ``(Q,)`` or broadcastable to ``(B, C, Q)``. Returns a scalar.
    """
    w = _check_weight(weight)
    if w == 0.0:
        return _zero_like(latents)
    qv = [float(v) for v in q_vals]
    if len(qv) < 3 and tau_target is None:
        raise ValueError(f"q_vals: the smoothness term needs >= 3 values, got {qv}")
    if any(b <= a for a, b in zip(qv, qv[1:])):
        raise ValueError(f"q_vals: must be strictly increasing, got {qv}")
    tau = latent_tau(latents, qv, scales, time_dim=time_dim, order=order)
    loss = _zero_like(tau)
    if len(qv) >= 3:
        q = torch.as_tensor(qv, dtype=tau.dtype, device=tau.device)
        d1 = (tau[..., 1:] - tau[..., :-1]) / (q[1:] - q[:-1])
        d2 = (d1[..., 1:] - d1[..., :-1]) / (0.5 * (q[2:] - q[:-2]))
        loss = loss + d2.square().mean()
    if tau_target is not None:
        mw = _check_weight(match_weight, "match_weight")
        try:
            # order="C": torch.as_tensor refuses NumPy views with negative strides (tau_target[::-1]).
            target = torch.as_tensor(np.asarray(tau_target, order="C") if isinstance(tau_target, np.ndarray)
                                     else tau_target, dtype=tau.dtype, device=tau.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"tau_target: needs numbers (one per q), got {tau_target!r}") from exc
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(target).all()):  # one host sync
            raise ValueError(f"tau_target: must be finite, got {tau_target!r}")
        try:
            diff = tau - target
        except RuntimeError as exc:
            raise ValueError(
                f"tau_target: shape {tuple(target.shape)} does not broadcast to tau {tuple(tau.shape)}"
            ) from exc
        loss = loss + mw * diff.square().mean()
    return w * loss


# --------------------------------------------------------------------------------------------------
# graph fractal-dimension prior
# --------------------------------------------------------------------------------------------------
@autocast_off
def soft_graph_dimension(
    latents: torch.Tensor,
    eps_values: Sequence[int],
    thresh: float,
    *,
    time_dim: int = 1,
    temperature: float = 0.02,
    sharpness: float = 20.0,
) -> torch.Tensor:
    """Differentiable cluster-growing dimension of the latent correlation graph (module docstring).

    Shape:
        latents: ``(B, T, C)`` (time on ``time_dim``). Returns ``(B,)`` (leading axes except C).
    """
    x = _time_last(latents, time_dim)
    if x.ndim < 3:
        x = x.unsqueeze(0)
    n = x.shape[-1]
    if x.shape[-2] < 3 or n < 3:
        raise ValueError(
            f"latents: needs >= 3 channels and >= 3 time points (time on dim {time_dim}), got shape "
            f"{tuple(latents.shape)}"
        )
    raw = list(eps_values.tolist() if isinstance(eps_values, torch.Tensor) else eps_values)
    try:
        fractional = any(isinstance(e, bool) or not float(e).is_integer() for e in raw)  # 1.5 would truncate to 1
    except (TypeError, ValueError):
        fractional = True
    if fractional:
        raise ValueError(f"eps_values: needs integer hop radii, got {raw}")
    eps = sorted(int(e) for e in raw)
    if len(eps) < 2 or eps[0] < 1:
        raise ValueError(f"eps_values: needs >= 2 integer hop radii >= 1, got {raw}")
    if len(set(eps)) != len(eps):  # one mass per radius: a repeat would not line up with log l
        raise ValueError(f"eps_values: hop radii must be distinct, got {raw}")
    try:  # None or a list was a TypeError from float()
        inside = 0.0 < float(thresh) < 1.0
    except (TypeError, ValueError):
        inside = False
    if not inside:
        raise ValueError(f"thresh: must lie in (0, 1), got {thresh!r}")
    check_positive(temperature, "temperature")
    check_positive(sharpness, "sharpness")
    z = x - x.mean(-1, keepdim=True)
    # Centred twice: the float32 mean of an offset of 1e6 is off by ~0.03, a bias of 1e-3 in |r|
    # that the sigmoid edges amplify; the mean of the small residuals is exact to rounding.
    z = z - z.mean(-1, keepdim=True)
    z = z / pow2_scale(z)  # exact; else the float32 norm overflows (|x| >= 1e19) or underflows (<= 1e-20)
    z = z / z.square().sum(-1, keepdim=True).add(torch.finfo(x.dtype).tiny).sqrt()
    # An exactly constant channel correlates with nothing; z-scoring would blow its rounding noise
    # up to unit norm (spurious |r| and gradients of 1e3-1e8 on it).
    live = x.detach().amax(-1, keepdim=True) > x.detach().amin(-1, keepdim=True)
    z = torch.where(live, z, torch.zeros_like(z))
    corr = z @ z.transpose(-1, -2)
    eye = torch.eye(corr.shape[-1], dtype=x.dtype, device=x.device)
    adj = torch.sigmoid((corr.abs() - float(thresh)) / float(temperature)) * (1.0 - eye) + eye
    reach = eye.expand_as(adj)
    k = float(sharpness)
    tail = math.exp(-0.5 * k)  # g(0) and g(1) of the plain sigmoid, without overflow for large k
    lo, hi = tail / (1.0 + tail), 1.0 / (1.0 + tail)
    masses = []
    for hop in range(1, eps[-1] + 1):
        # A soft step at half a path: sub-threshold leakage shrinks each hop instead of compounding.
        reach = (torch.sigmoid(k * (reach @ adj - 0.5)) - lo) / (hi - lo)
        if hop in eps:
            masses.append(reach.sum(-1).mean(-1))
    log_m = torch.log(torch.stack(masses, dim=-1))
    log_l = torch.log(torch.as_tensor(eps, dtype=x.dtype, device=x.device))
    return _lstsq_slope(log_l, log_m)


@autocast_off
def l_graph_fd(
    latents: torch.Tensor,
    eps_values: Sequence[int],
    thresh: float,
    D_target: Optional[float],
    weight: float,
    *,
    time_dim: int = 1,
    temperature: float = 0.02,
    sharpness: float = 20.0,
) -> torch.Tensor:
    """Graph-FD prior: ``weight * mean((D - D_target)^2)``, or ``weight * var(D)`` over the batch
    when ``D_target`` is None (stabilise D across samples; zero for a batch of one).

    ``D`` is :func:`soft_graph_dimension`. Zero ``weight`` returns 0 without computing anything.

    Shape:
        latents: ``(B, T, C)`` (time on ``time_dim``). Returns a scalar.
    """
    w = _check_weight(weight)
    if w == 0.0:
        return _zero_like(latents)
    target = None if D_target is None else _finite(D_target, "D_target")
    d = soft_graph_dimension(latents, eps_values, thresh, time_dim=time_dim, temperature=temperature,
                             sharpness=sharpness).flatten()
    if D_target is None:
        return w * d.var(unbiased=False)
    return w * (d - target).square().mean()


# --------------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------------


def __getattr__(name: str):
    # FractalPriors lives in fractals.priors (the config-driven module beside these functional terms);
    # a lazy import keeps ``from fractals.regularizers import FractalPriors`` working without a cycle.
    if name == "FractalPriors":
        from fractals.priors import FractalPriors

        return FractalPriors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
