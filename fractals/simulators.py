"""Differentiable fractal simulators: fractional Ornstein-Uhlenbeck drives and dendrite-like arbors.

- :func:`fractional_ou` draws fractional OU series by spectral shaping of seeded Gaussian noise, so
  samples are differentiable in ``H``, ``theta`` and ``sigma`` (reparameterisation).
- :func:`fit_fractional_ou` recovers ``(H, theta, sigma)`` from recordings, batched over channels,
  by minimising a log-binned Whittle likelihood of the same spectrum (the subject's "fractal
  fingerprint" in simulator parameters).
- :func:`dendrite_growth` grows a 3-D binary arbor whose box-counting dimension follows a target
  ``D``, and reports its wire length and a coverage payoff (defined in :mod:`fractals.dendrites`).

The fOU spectrum (two-sided, per Hz, so that ``Var x = integral of S over [-fs/2, fs/2]``) is

    S(w) = sigma^2 * Gamma(2H + 1) * sin(pi H) * |w|^(1 - 2H) / (theta^2 + w^2),   w = 2 pi f,

the OU filter ``1 / (theta + i w)`` applied to fractional Gaussian noise of Hurst index ``H``.
Above the corner frequency ``theta / (2 pi)`` it falls like fBm (1/f^(2H+1)); below it, like fGn
(1/f^(2H-1)). ``H = 0.5`` is the classical OU process with variance ``sigma^2 / (2 theta)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np
import torch

from fractals._checks import (
    as_tensor, check_finite, check_min_length, check_not_constant, check_positive, pow2_scale,
)
from fractals.dendrites import box_counting_dimension_3d, dendrite_growth  # re-exported: one simulators API
from fractals.stimuli import _scalar

__all__ = [
    "fou_log_spectrum",
    "fractional_ou",
    "FOUFit",
    "fit_fractional_ou",
    "box_counting_dimension_3d",
    "dendrite_growth",
]


# --------------------------------------------------------------------------------------------------
# fractional OU: spectrum and sampler
# --------------------------------------------------------------------------------------------------
def _log_shape(log_w: torch.Tensor, H: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log of S / sigma^2 at angular frequencies ``exp(log_w)``; broadcasts H/theta against w."""
    log_c = torch.lgamma(2.0 * H + 1.0) + torch.log(torch.sin(math.pi * H))
    return log_c + (1.0 - 2.0 * H) * log_w - torch.logaddexp(2.0 * log_theta, 2.0 * log_w)


def fou_log_spectrum(freqs_hz, H, theta, sigma) -> torch.Tensor:
    """Natural log of the fractional OU power spectral density at ``freqs_hz`` (> 0).

    Parameters
    ----------
    freqs_hz : tensor (F,)
        Frequencies in Hz, all > 0.
    H, theta, sigma : float or tensor (...)
        Hurst index in (0, 1), mean-reversion rate in 1/s, noise scale (units/s^H).

    Returns
    -------
    tensor (..., F)
        ``log S(2 pi f)`` with the normalisation in the module docstring.
    """
    # order="C" (ascontiguousarray would make 0-d arrays 1-d): torch.as_tensor refuses NumPy views with
    # negative strides (freqs[::-1]).
    f, H, theta, sigma = (np.asarray(v, order="C") if isinstance(v, np.ndarray) else v
                          for v in (freqs_hz, H, theta, sigma))
    f = torch.as_tensor(f)
    H, theta, sigma = (torch.as_tensor(v, dtype=f.dtype if f.is_floating_point() else torch.float64)
                       for v in (H, theta, sigma))
    # Outside the domain the log spectrum is NaN or inf (f = 0: log 0); say which argument instead.
    fd = f.detach()
    if not bool((torch.isfinite(fd) & (fd > 0)).all()):
        bad = fd[~(torch.isfinite(fd) & (fd > 0))].flatten()[0].item()
        raise ValueError(f"freqs_hz: every frequency must be a finite number > 0 Hz, got {bad!r}; drop the DC bin")
    for v, name, lo, hi in ((H, "H", 0.0, 1.0), (theta, "theta", 0.0, math.inf), (sigma, "sigma", 0.0, math.inf)):
        d = v.detach()
        ok = torch.isfinite(d) & (d > lo) & (d < hi)
        if not bool(ok.all()):
            raise ValueError(f"{name}: every value must lie in ({lo}, {hi}), got {d[~ok].flatten()[0].item()!r}")
    log_w = torch.log(2.0 * math.pi * f)
    return 2.0 * torch.log(sigma)[..., None] + _log_shape(log_w, H[..., None], torch.log(theta)[..., None])


def _param(v, name: str, lo: float, hi: float, dtype, device) -> torch.Tensor:
    # .to keeps the autograd graph; a CPU tensor with device="cuda" would otherwise mix devices.
    if isinstance(v, np.ndarray):  # torch.as_tensor refuses NumPy views with negative strides (H[::-1])
        v = np.asarray(v, order="C")
    t = v.to(device=device) if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=dtype, device=device)
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(dtype)
    d = t.detach()
    if not bool(torch.isfinite(d).all()) or bool((d <= lo).any()) or bool((d >= hi).any()):
        bad = d[(~torch.isfinite(d)) | (d <= lo) | (d >= hi)].flatten()[0].item()
        raise ValueError(f"{name}: every value must lie in ({lo}, {hi}), got {bad!r}")
    return t


def fractional_ou(
    n: int,
    H,
    theta,
    sigma,
    fs: float,
    *,
    batch_shape: Sequence[int] = (),
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    oversample: int = 2,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Sample fractional Ornstein-Uhlenbeck series by frequency-domain shaping.

    Complex Gaussian noise on the rFFT grid of ``oversample * n`` points is scaled by the square
    root of the fOU spectrum (module docstring) and inverted; the first ``n`` samples are kept, which
    removes the periodic wrap-around of plain spectral synthesis. The noise does not depend on the
    parameters, so the output is differentiable in ``H``, ``theta`` and ``sigma``. The DC bin is
    zero (zero-mean series); power below ``fs / (oversample * n)`` is absent.

    Parameters
    ----------
    n : int
        Samples per series (>= 2).
    H : float or tensor
        Hurst index in (0, 1); 0.7-0.9 gives the long memory typical of neural drives.
    theta : float or tensor
        Mean-reversion rate in 1/s (> 0); corner frequency ``theta / (2 pi)`` Hz.
    sigma : float or tensor
        Noise scale (> 0).
    fs : float
        Sampling rate in Hz.
    batch_shape : int or tuple of int
        Extra leading shape, broadcast with the parameter shapes.
    seed, generator
        Reproducibility: a ``torch.Generator`` (used as is) or an integer seed (a fresh CPU
        generator). With neither, the global torch RNG is used.
    oversample : int
        Synthesis length factor (>= 1); 2 keeps wrap-around correlations out of the kept part.

    Returns
    -------
    tensor (*broadcast(batch_shape, H, theta, sigma), n)

    Shape:
        H, theta, sigma: scalars or tensors broadcastable to each other and to ``batch_shape``.
        Output: ``(*batch, n)``.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n: needs an integer >= 2, got {n!r}")
    fs = _scalar(fs)  # a 0-d tensor (fs from a collated batch) was refused as "got tensor(10.)"
    check_positive(fs, "fs")
    if not isinstance(oversample, (int, np.integer)) or oversample < 1:
        raise ValueError(f"oversample: needs an integer >= 1, got {oversample!r}")
    if isinstance(batch_shape, (int, np.integer)):
        batch_shape = (batch_shape,)
    batch_shape = tuple(batch_shape)
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in batch_shape):
        raise ValueError(f"batch_shape: needs positive integers (an int or a tuple), got {batch_shape!r}")
    batch_shape = tuple(int(s) for s in batch_shape)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: needs a floating torch dtype (e.g. torch.float64), got {dtype!r}")
    dev = device
    for v in (H, theta, sigma):
        if isinstance(v, torch.Tensor):
            dev = v.device if dev is None else dev
            dtype = v.dtype if v.is_floating_point() else dtype
    if dtype in (torch.float16, torch.bfloat16):  # the CPU FFT has no half precision: sample in float32
        dtype = torch.float32
    dev = torch.device("cpu") if dev is None else torch.device(dev)
    H = _param(H, "H", 0.0, 1.0, dtype, dev)
    theta = _param(theta, "theta", 0.0, math.inf, dtype, dev)
    sigma = _param(sigma, "sigma", 0.0, math.inf, dtype, dev)
    try:
        shape = torch.broadcast_shapes(tuple(batch_shape), H.shape, theta.shape, sigma.shape)
    except RuntimeError as exc:
        raise ValueError(
            f"batch_shape: {tuple(batch_shape)} does not broadcast with the shapes of H {tuple(H.shape)}, "
            f"theta {tuple(theta.shape)} and sigma {tuple(sigma.shape)}; make them broadcastable"
        ) from exc

    m = int(oversample) * int(n)
    freqs = torch.fft.rfftfreq(m, d=1.0 / fs, dtype=dtype, device=dev)[1:]
    log_w = torch.log(2.0 * math.pi * freqs)
    log_s = 2.0 * torch.log(sigma)[..., None] + _log_shape(log_w, H[..., None], torch.log(theta)[..., None])
    # E|X_k|^2 = m * fs * S(w_k); interior bins carry it in two real Gaussians, Nyquist in one.
    scale = torch.full((freqs.numel(),), 0.5, dtype=dtype, device=dev)
    if m % 2 == 0:
        scale[-1] = 1.0
    amp = torch.exp(0.5 * log_s) * torch.sqrt(m * fs * scale)

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"seed: needs an integer (or a torch.Generator via generator=), got {seed!r}")
    if generator is not None and seed is not None:  # the seed was ignored without a word
        raise ValueError(f"seed={seed!r} and generator: give one of them, not both")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    gen_dev = generator.device if generator is not None else dev
    noise_shape = (*shape, freqs.numel())
    # Drawn in float64 whatever the output dtype (as fractals.stimuli does): one seed, one series in float32
    # and float64; drawing in dtype gave a float32 run an unrelated series.
    re = torch.randn(noise_shape, generator=generator, dtype=torch.float64, device=gen_dev).to(dev, dtype)
    im = torch.randn(noise_shape, generator=generator, dtype=torch.float64, device=gen_dev).to(dev, dtype)
    if m % 2 == 0:
        im[..., -1] = 0.0
    spec = torch.complex(re * amp, im * amp)
    zero = torch.zeros((*shape, 1), dtype=spec.dtype, device=dev)
    x = torch.fft.irfft(torch.cat([zero, spec], dim=-1), n=m, dim=-1)
    return x[..., :n]


# --------------------------------------------------------------------------------------------------
# fractional OU: Whittle fit
# --------------------------------------------------------------------------------------------------
@dataclass
class FOUFit:
    """Fitted fractional OU parameters, one value per series (leading shape of the input).

    ``loss`` is the profile Whittle negative log-likelihood per frequency at the optimum (lower is a
    better fit; comparable across series fitted over the same band); ``n_freqs`` is the number of
    periodogram frequencies the fit used.
    """

    H: torch.Tensor
    theta: torch.Tensor
    sigma: torch.Tensor
    loss: torch.Tensor
    n_freqs: int

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PERIODOGRAM_BLOCK_BYTES = 32 << 20  # float64 bytes of input rows per periodogram block (its temporaries ~3x that)
GRID_BLOCK_SERIES = 64  # series per block of the grid start: its (series, 576, n_bins) likelihood is ~0.6 MB a series


def _binned_periodogram(x: torch.Tensor, fs: float, band: tuple[float, float], n_bins: int):
    """Hann-windowed periodogram averaged in log-spaced bins of ``x`` (R, n), each row divided by its own
    power of two first: (log_w (K,), Ibar (R, K), counts (K,), n_freqs, scale (R,)).

    Rows in blocks of :data:`PERIODOGRAM_BLOCK_BYTES`: every step is per row, so the numbers are those of
    one pass, while one pass held ~4.5 float64 copies of the input (+1.3 GB for 20 x 30 min at 1 kHz).
    """
    n = x.shape[-1]
    dt, dev = torch.float64, x.device
    win = torch.hann_window(n, periodic=False, dtype=dt, device=dev)
    norm = fs * win.square().sum()
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs, dtype=dt, device=dev)
    keep = (freqs >= band[0]) & (freqs <= band[1]) & (freqs > 0)
    n_keep = int(keep.sum())
    if n_keep < 8:
        raise ValueError(
            f"freq_band: {band} Hz holds {n_keep} periodogram frequencies for n={n} at fs={fs}; "
            "need at least 8: widen the band or pass longer series"
        )
    kept = torch.nonzero(keep)[:, 0]
    lo_k, hi_k = int(kept[0]), int(kept[-1]) + 1  # freqs increase: the band is one run of bins
    f = freqs[lo_k:hi_k]
    edges = torch.logspace(math.log10(f[0]), math.log10(f[-1]), n_bins + 1, dtype=dt, device=dev)
    idx = torch.bucketize(f, edges[1:-1], right=True)  # 0 .. n_bins-1
    counts = torch.bincount(idx, minlength=n_bins).to(dt)
    used = counts > 0
    per = max(1, PERIODOGRAM_BLOCK_BYTES // (8 * n))
    sums, scales = [], []
    for block in x.split(per):
        work = block.to(dt)
        # H and theta are scale-free and sigma scales with x: fit x / 2^k (exact) and scale sigma back. Else
        # float64 |x| <= 1e-150 had its periodogram clamped at the smallest double (H off by 0.34).
        scale = pow2_scale(work)[:, 0]
        work = work / scale[:, None]  # a new tensor: the in-place steps below never touch the caller's x
        work.sub_(work.mean(-1, keepdim=True)).mul_(win)
        spec = torch.fft.rfft(work, dim=-1)[:, lo_k:hi_k]
        del work
        # Normalised so that E[I] ~ S (two-sided, per Hz) under the module's convention.
        pgram = spec.real.square() + spec.imag.square()
        del spec
        pgram = pgram / norm
        sums.append(torch.zeros((pgram.shape[0], n_bins), dtype=dt, device=dev).index_add_(-1, idx, pgram))
        scales.append(scale)
    sums = torch.cat(sums)
    log_f = torch.zeros(n_bins, dtype=dt, device=dev).index_add_(0, idx, torch.log(f))
    log_f = log_f[used] / counts[used]
    return math.log(2.0 * math.pi) + log_f, sums[..., used] / counts[used], counts[used], n_keep, torch.cat(scales)


def _profile_whittle(log_w, ibar, counts, H, log_theta):
    """Profile (sigma-free) Whittle NLL per frequency and the profiled sigma^2; H/log_theta (..., G)."""
    log_g = _log_shape(log_w, H[..., None], log_theta[..., None])  # (..., G, K)
    total = counts.sum()
    ratio = ibar[..., None, :] * torch.exp(-log_g)
    sigma2 = (counts * ratio).sum(-1) / total
    nll = (counts * log_g).sum(-1) / total + torch.log(sigma2) + 1.0
    return nll, sigma2


def _adam(loss_fn, params: torch.Tensor, *, steps: int, lr: float) -> None:
    """Adam with cosine-decayed step size, in place on ``params``.

    Hand-written because each series' parameters are independent (no coupling to tune) and the
    first ``torch.optim`` construction in a process costs seconds of lazy imports, which every
    fresh fingerprint worker would pay.
    """
    m = torch.zeros_like(params)
    v = torch.zeros_like(params)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for i in range(steps):
        p = params.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(p), p)
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_lr = lr * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1)))
        m_hat = m / (1 - b1 ** (i + 1))
        v_hat = v / (1 - b2 ** (i + 1))
        params.sub_(step_lr * m_hat / (v_hat.sqrt() + eps))


def fit_fractional_ou(
    x,
    fs: float,
    *,
    freq_band: Optional[tuple[float, float]] = None,
    n_bins: int = 96,
    steps: int = 150,
    lr: float = 0.05,
) -> FOUFit:
    """Fit fractional OU parameters to each series by a log-binned Whittle likelihood.

    The Hann-windowed periodogram inside ``freq_band`` is averaged in ``n_bins`` log-spaced bins
    (bin ``b`` holding ``m_b`` frequencies contributes ``m_b (log S_b + I_b / S_b)``), ``sigma`` is
    profiled out in closed form, a coarse grid over ``(H, log theta)`` picks the start, and Adam
    refines all series at once. Cost is independent of the series length after one rFFT.

    Parameters
    ----------
    x : array or tensor (..., T)
        Recordings, time last; every leading index is fitted independently.
    fs : float
        Sampling rate in Hz.
    freq_band : (lo, hi) in Hz, optional
        Frequencies used by the fit; default ``(fs / T, fs / 2)``. Restrict it to the band a
        recording's filters left untouched (e.g. ``(1, 40)`` for 0.5-45 Hz band-passed EEG).
    n_bins : int
        Log-spaced frequency bins (>= 8); more bins, finer spectral detail, slower.
    steps, lr : int, float
        Adam iterations and step size after the grid start.

    Returns
    -------
    FOUFit
        ``H``, ``theta`` (1/s), ``sigma``, ``loss`` with the input's leading shape, and ``n_freqs``.
        ``theta`` is only identifiable when the corner frequency ``theta / (2 pi)`` lies inside the
        band; outside it, ``theta`` is pinned near the grid edge (``0.1 x`` the lowest or ``10 x``
        the highest band frequency, in rad/s) and ``sigma`` absorbs the difference.
    """
    t, was_numpy = as_tensor(x, "x")
    if t.numel() == 0:  # else an MKL "inconsistent configuration" RuntimeError from the FFT
        raise ValueError(f"x: is empty (shape {tuple(t.shape)}); needs at least one series")
    check_finite(t, "x")
    check_min_length(t, 16, "x", "the Whittle fit needs a periodogram")
    check_not_constant(t, "x")
    fs = _scalar(fs)
    check_positive(fs, "fs")
    fs = float(fs)
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 8:
        raise ValueError(f"n_bins: needs an integer >= 8, got {n_bins!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps: needs an integer >= 0 (0 keeps the grid start), got {steps!r}")
    check_positive(lr, "lr")
    n = t.shape[-1]
    if freq_band is not None and (not hasattr(freq_band, "__len__") or len(freq_band) != 2):
        raise ValueError(f"freq_band: needs a (lo, hi) pair in Hz, got {freq_band!r}")
    band = (fs / n, fs / 2.0) if freq_band is None else (float(freq_band[0]), float(freq_band[1]))
    if not (0 <= band[0] < band[1] <= fs / 2.0):
        raise ValueError(f"freq_band: needs 0 <= lo < hi <= fs/2 = {fs / 2}, got {freq_band!r}")
    lead = t.shape[:-1]
    log_w, ibar, counts, n_freqs, scale = _binned_periodogram(t.reshape(-1, n), fs, band, n_bins)
    ibar = ibar.clamp_min(torch.finfo(ibar.dtype).tiny)

    lo_th, hi_th = float(log_w[0]) - math.log(10.0), float(log_w[-1]) + math.log(10.0)
    with torch.no_grad():
        h_grid = torch.linspace(0.04, 0.96, 24, dtype=ibar.dtype, device=ibar.device)
        th_grid = torch.linspace(lo_th, hi_th, 24, dtype=ibar.dtype, device=ibar.device)
        hh, tt = torch.meshgrid(h_grid, th_grid, indexing="ij")
        # Series in blocks (each row's grid is its own): all at once took ~0.6 MB a series (20k epochs: +2 GB).
        best = torch.cat([_profile_whittle(log_w, rows, counts, hh.reshape(-1), tt.reshape(-1))[0].argmin(-1)
                          for rows in ibar.split(GRID_BLOCK_SERIES)])
        h0, th0 = hh.reshape(-1)[best], tt.reshape(-1)[best]

    params = torch.stack([torch.logit(h0), th0], dim=-1)  # (R, 2): logit H, log theta
    # The refinement differentiates the likelihood: under torch.no_grad() or inference_mode (an eval or
    # validation loop) it raised "element 0 of tensors does not require grad". Autograd is switched back
    # on here, on clones (tensors made in inference mode can be neither saved for backward nor updated).
    with torch.inference_mode(False), torch.enable_grad():
        log_w, ibar, counts, params = log_w.clone(), ibar.clone(), counts.clone(), params.clone()
        _adam(lambda p: _profile_whittle(log_w, ibar, counts, torch.sigmoid(p[:, 0]).clamp(1e-3, 1 - 1e-3)[:, None],
                                         p[:, 1].clamp(lo_th, hi_th)[:, None])[0].sum(),
              params, steps=int(steps), lr=float(lr))
    a, lt = params[:, 0], params[:, 1]
    with torch.no_grad():
        H = torch.sigmoid(a).clamp(1e-3, 1 - 1e-3)
        lt_c = lt.clamp(lo_th, hi_th)
        nll, sigma2 = _profile_whittle(log_w, ibar, counts, H[:, None], lt_c[:, None])
    out_dtype = t.dtype if t.is_floating_point() else torch.float64
    sigma, loss = torch.sqrt(sigma2[:, 0]) * scale, nll[:, 0] + 2.0 * torch.log(scale)  # nll has + log sigma^2
    res = [v.reshape(lead).to(out_dtype) for v in (H, torch.exp(lt_c), sigma, loss)]
    if was_numpy:
        res = [r.cpu().numpy() for r in res]
    return FOUFit(H=res[0], theta=res[1], sigma=res[2], loss=res[3], n_freqs=n_freqs)
