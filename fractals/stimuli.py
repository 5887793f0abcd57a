"""Ground-truth fractal generators: fGn/fBm, 1/f^beta noise with peaks, cascades, surfaces.

Every generator is seeded through a ``torch.Generator`` (``generator=``), batched through
``batch_shape=`` (or ``n_series=`` for a flat batch), returns float64 by default (``dtype=``) and
places the result on ``device=``. Random numbers are drawn on the generator's device (CPU when no
generator is given and no device is asked for), so one seed gives the same series on CPU and CUDA.

Ground truths, for checking estimators against:

- :func:`fgn`: exact fractional Gaussian noise (Davies-Harte), DFA alpha = H, PSD ~ f^(1 - 2H).
- :func:`fbm_series`: fractional Brownian motion = cumulative fGn, PSD ~ f^-(2H + 1), so
  beta = 2H + 1, DFA alpha = H + 1, Higuchi FD = 2 - H.
- :func:`one_over_f_noise`: Gaussian noise with PSD exactly 1/f^beta plus optional Gaussian peaks.
- :func:`cascade_multifractal`: binomial cascade, tau(q) = -log2(p^q + (1 - p)^q).
- surfaces (:mod:`fractals.surfaces`, reachable from here too): :func:`one_over_f_texture`,
  :func:`diamond_square`, :func:`midpoint_displacement`.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "fgn",
    "fbm_series",
    "one_over_f_noise",
    "one_over_f_psd",
    "cascade_multifractal",
    "one_over_f_texture",
    "diamond_square",
    "midpoint_displacement",
]

BatchShape = Union[int, Sequence[int], None]


# ----------------------------------------------------------------------------- helpers
def _resolve_batch(batch_shape: BatchShape, n_series: Optional[int]) -> tuple[int, ...]:
    if batch_shape is not None and n_series is not None:
        raise ValueError(
            f"batch_shape={batch_shape!r} and n_series={n_series!r}: give one of them, not both"
        )
    if n_series is not None:
        batch_shape = (n_series,)
    if batch_shape is None:
        return ()
    if isinstance(batch_shape, numbers.Integral):
        batch_shape = (batch_shape,)
    shape = tuple(batch_shape)
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"batch_shape: needs positive integers, got {batch_shape!r}")
    return tuple(int(s) for s in shape)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: needs an integer >= {minimum}, got {value!r}")
    return int(value)


def _scalar(value):
    # A 0-d tensor or array (e.g. one entry of a fitted FOUFit.H) was refused with "needs a number
    # strictly between 0 and 1, got tensor(0.7000)": a message that contradicts the value shown.
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        if getattr(value, "ndim", None) == 0 and str(value.dtype) not in ("torch.bool", "bool"):
            return value.item()
    return value


def _check_unit_open(value, name: str) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name}: needs a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_real(value, name: str) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name}: needs a finite number, got {value!r}")
    return float(value)


def _check_sigma(sigma) -> float:
    sigma = _check_real(sigma, "sigma")
    if sigma <= 0:
        raise ValueError(f"sigma: must be > 0, got {sigma!r}")
    return sigma


def _randn(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """Standard normals in float64, drawn where the generator lives (reproducible across devices)."""
    draw_device = generator.device if generator is not None else (device or "cpu")
    return torch.randn(shape, generator=generator, dtype=torch.float64, device=draw_device)


def _finish(x: torch.Tensor, dtype, device) -> torch.Tensor:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: needs a floating torch dtype (e.g. torch.float32), got {dtype!r}")
    out = x.to(device=device if device is not None else x.device, dtype=dtype)
    # Drawn in float64; a narrower dtype can overflow (fbm_series(2**20, 0.9) reaches 5e5 > float16's
    # 65504), which returned inf samples without a word.
    if dtype != x.dtype and not bool(torch.isfinite(out).all()):
        raise ValueError(f"dtype: {dtype} cannot hold the generated values (|x| up to "
                         f"{float(x.abs().max()):.3g}); use torch.float32 / float64 or a smaller sigma or n")
    return out


# ----------------------------------------------------------------------------- fGn / fBm
def _fgn_eigenvalues(n: int, H: float, device) -> torch.Tensor:
    """Eigenvalues of the 2n circulant embedding of the fGn autocovariance (float64)."""
    k = torch.arange(n + 1, dtype=torch.float64, device=device)
    two_h = 2.0 * H
    near = 0.5 * ((k + 1).pow(two_h) - 2 * k.pow(two_h) + (k - 1).abs().pow(two_h))
    # At far lags the plain second difference of k^2H cancels ~k^2 digits (k^2H ~ 1e12 for a covariance
    # ~ 1): fgn(2**20, 0.99) found a "negative eigenvalue" and refused. Factor k^2H out and difference
    # (1 +- 1/k)^2H - 1 through expm1/log1p: relative error ~ k eps instead of k^2 eps.
    kk = k.clamp_min(2.0)
    far = 0.5 * kk.pow(two_h) * (torch.expm1(two_h * torch.log1p(1.0 / kk))
                                 + torch.expm1(two_h * torch.log1p(-1.0 / kk)))
    gamma = torch.where(k >= 2, far, near)
    row = torch.cat([gamma, gamma[1:n].flip(0)])  # length 2n, symmetric circulant first row
    lam = torch.fft.fft(row).real
    # Davies-Harte is exact for fGn (the embedding is PSD for every H in (0, 1)); rounding can
    # still leave eigenvalues at -1e-15, which are zero. A clearly negative one is a real failure.
    tol = 1e-10 * float(lam.abs().max())
    if float(lam.min()) < -tol:
        raise ValueError(
            f"H={H}: circulant embedding of length {2 * n} is not positive semi-definite "
            f"(min eigenvalue {float(lam.min()):.3g}); use fbm_series(beta=...) spectral synthesis"
        )
    return lam.clamp_min(0.0)


def fgn(
    n: int,
    H: float,
    *,
    sigma: float = 1.0,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Exact fractional Gaussian noise by Davies-Harte circulant embedding.

    Parameters
    ----------
    n : int
        Number of samples (>= 2).
    H : float
        Hurst exponent in (0, 1). 0.5 is white noise, > 0.5 long-range correlated.
    sigma : float
        Standard deviation of each sample.
    batch_shape, n_series : tuple of int or int, optional
        Leading shape of the output (``n_series=B`` is ``batch_shape=(B,)``).
    generator : torch.Generator, optional
        Source of randomness; the same seed gives the same series on every device.
    dtype, device
        Output dtype (default float64) and device.

    Returns
    -------
    torch.Tensor
        ``(*batch_shape, n)``, stationary Gaussian with autocovariance
        ``sigma^2 / 2 (|k+1|^2H - 2|k|^2H + |k-1|^2H)``.

    Shape:
        ``(*batch_shape, n)``. The draw is exact (no approximation) for every H in (0, 1):
        one FFT of length 2n per batch, all series at once.
    """
    n = _check_int(n, "n", 2)
    H = _check_unit_open(H, "H")
    sigma = _check_sigma(sigma)
    batch = _resolve_batch(batch_shape, n_series)
    m = 2 * n
    work_device = generator.device if generator is not None else (device or "cpu")
    lam = _fgn_eigenvalues(n, H, work_device)
    z = torch.complex(_randn((*batch, m), generator, device), _randn((*batch, m), generator, device))
    # Re(FFT(sqrt(lam / m) * (Z1 + i Z2)))[:n] has exactly the target covariance.
    y = torch.fft.fft(z * (lam / m).sqrt(), dim=-1).real[..., :n]
    return _finish(sigma * y, dtype, device)


def fbm_series(
    n: int,
    H: Optional[float] = None,
    beta: Optional[float] = None,
    *,
    fs: float = 1.0,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Fractional Brownian motion, exact (``H=``) or by 1/f^beta spectral synthesis (``beta=``).

    For fBm the power spectrum falls as ``1/f^beta`` with ``beta = 2H + 1`` (so H in (0, 1) maps to
    beta in (1, 3)); its increments are fGn with the same H, DFA gives alpha = H + 1 and the graph
    has Higuchi/box-counting dimension ``2 - H``.

    Parameters
    ----------
    n : int
        Number of samples.
    H : float, optional
        Hurst exponent in (0, 1): the series is the cumulative sum of exact fGn (:func:`fgn`),
        starting at the first increment.
    beta : float, optional
        Spectral exponent: the series is :func:`one_over_f_noise` with that beta (periodic,
        exactly 1/f^beta at the FFT frequencies, zero mean, unit variance). Give H or beta.
    fs : float
        Sampling rate, only used with ``beta`` (the shape does not depend on it).
    batch_shape, n_series, generator, dtype, device
        As in :func:`fgn`.

    Shape:
        ``(*batch_shape, n)``.
    """
    if (H is None) == (beta is None):
        raise ValueError(f"H={H!r}, beta={beta!r}: give exactly one of H (exact fBm) or beta (spectral)")
    if H is not None:
        inc = fgn(n, H, batch_shape=batch_shape, n_series=n_series, generator=generator,
                  dtype=torch.float64, device=device)
        return _finish(inc.cumsum(-1), dtype, device)
    return one_over_f_noise(n, beta, fs=fs, batch_shape=batch_shape, n_series=n_series,
                            generator=generator, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- 1/f noise
def _check_peaks(peaks, fs: float) -> list[tuple[float, float, float]]:
    if peaks is None:
        return []
    out = []
    for i, peak in enumerate(peaks):
        try:
            freq, width, ratio = (float(v) for v in peak)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"peaks[{i}]={peak!r}: needs a (freq_hz, width_hz, amplitude_ratio) triple"
            ) from exc
        if not (0 < freq < fs / 2):
            raise ValueError(f"peaks[{i}]: freq_hz={freq} must lie in (0, fs/2={fs / 2})")
        if not (width > 0 and math.isfinite(width)):
            raise ValueError(f"peaks[{i}]: width_hz={width} must be a finite number > 0")
        if not (ratio >= 0 and math.isfinite(ratio)):
            raise ValueError(f"peaks[{i}]: amplitude_ratio={ratio} must be a finite number >= 0")
        out.append((freq, width, ratio))
    return out


def one_over_f_psd(freqs: torch.Tensor, beta: float, peaks=None) -> torch.Tensor:
    """Target PSD of :func:`one_over_f_noise`: ``f^-beta * (1 + sum_i r_i exp(-(f - f_i)^2 / 2 w_i^2))``.

    Each peak's ``amplitude_ratio`` r_i is its power relative to the aperiodic power at its own
    centre frequency (r = 1 doubles the power there). The value at f = 0 is 0 (zero-mean series).
    A NumPy array or list of frequencies gives a NumPy array back.
    """
    was_numpy = not isinstance(freqs, torch.Tensor)  # NumPy / list input was an AttributeError (.to)
    # order="C": torch.as_tensor refuses NumPy views with negative strides (freqs[::-1]).
    f = torch.as_tensor(np.asarray(freqs, dtype=np.float64, order="C") if was_numpy else freqs).to(torch.float64)
    beta = _check_real(beta, "beta")
    safe = torch.where(f > 0, f, torch.ones_like(f))
    aperiodic = torch.where(f > 0, safe.pow(-beta), torch.zeros_like(f))
    bump = torch.zeros_like(f)
    # Validated as in one_over_f_noise (no fs here): a zero width gave a NaN PSD.
    for freq, width, ratio in _check_peaks(peaks, math.inf):
        bump = bump + ratio * torch.exp(-0.5 * ((f - freq) / width) ** 2)
    out = aperiodic * (1.0 + bump)
    return out.numpy() if was_numpy else out


def one_over_f_noise(
    n: int,
    beta: float,
    fs: float = 1.0,
    peaks: Optional[Iterable[tuple[float, float, float]]] = None,
    *,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Gaussian noise with power spectrum 1/f^beta plus optional oscillatory peaks.

    beta = 0 is white, 1 pink, 2 brown (random walk). Spectral synthesis: every FFT bin gets an
    independent complex Gaussian with variance equal to the target PSD (random amplitude and phase,
    so the result is a Gaussian process, not a fixed-amplitude random-phase signal).

    Parameters
    ----------
    n : int
        Number of samples (>= 4).
    beta : float
        Aperiodic exponent; the ground truth for :func:`fractals.spectral.spectral_beta`.
    fs : float
        Sampling rate in Hz (peak frequencies and widths are in Hz).
    peaks : list of (freq_hz, width_hz, amplitude_ratio), optional
        Gaussian bumps added to the PSD in linear power on top of the aperiodic part (see
        :func:`one_over_f_psd`), so the aperiodic exponent stays exactly ``beta``.
    batch_shape, n_series, generator, dtype, device
        As in :func:`fgn`.

    Returns
    -------
    torch.Tensor
        ``(*batch_shape, n)``, zero mean, expected variance 1 (scaled by the theoretical power, not
        per series, so the series stay Gaussian).

    Shape:
        ``(*batch_shape, n)``. The series is periodic (circular synthesis); the lowest frequency
        present is fs/n.
    """
    n = _check_int(n, "n", 4)
    beta = _check_real(beta, "beta")
    fs = _check_real(fs, "fs")
    if fs <= 0:
        raise ValueError(f"fs: must be > 0 Hz, got {fs!r}")
    peak_list = _check_peaks(peaks, fs)
    batch = _resolve_batch(batch_shape, n_series)
    work_device = generator.device if generator is not None else (device or "cpu")
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs, dtype=torch.float64, device=work_device)
    # The output is normalised by its expected variance, so any constant factor of the PSD cancels: take
    # f^-beta relative to its largest value, else a steep beta (f^-200 at f = fs/n) overflowed to inf -> NaN.
    log_aperiodic = -beta * torch.log(torch.where(freqs > 0, freqs, torch.ones_like(freqs)))
    log_ref = float(log_aperiodic[1:].max())
    if abs(log_ref) < 600:  # representable as is: keep the plain formula (same values as one_over_f_psd)
        psd = one_over_f_psd(freqs, beta, peak_list)
    else:  # beta = 0 gives 1 + peaks at f > 0 and 0 at DC
        psd = torch.exp((log_aperiodic - log_ref).clamp_max(0.0)) * one_over_f_psd(freqs, 0.0, peak_list)
    for i, (freq, width, ratio) in enumerate(peak_list):
        # The bumps live on the FFT grid (spacing fs/n): a peak narrower than that between two bins vanished
        # without a word (10.3 Hz, width 0.05 Hz at 1 Hz spacing: no peak at all).
        gap = float((freqs[1:] - freq).abs().min())  # not DC: the PSD is 0 there whatever the peak
        if ratio > 0 and math.exp(-0.5 * (gap / width) ** 2) < 0.5:
            import warnings

            warnings.warn(f"peaks[{i}]: width_hz={width} is narrow for the frequency grid (spacing fs/n = {fs / n:.3g} "
                          f"Hz, nearest bin {gap:.3g} Hz from {freq} Hz): no bin gets half the peak's height; "
                          "widen it or raise n", RuntimeWarning, stacklevel=2)
    n_bins = freqs.numel()
    re = _randn((*batch, n_bins), generator, device)
    im = _randn((*batch, n_bins), generator, device)
    if n % 2 == 0:
        im[..., -1] = 0.0  # the Nyquist bin of a real series is real
        re[..., -1] *= math.sqrt(2.0)
    spec = torch.complex(re, im) * (psd / 2).sqrt()
    x = torch.fft.irfft(spec, n=n, dim=-1)
    # Parseval: Var = (2 sum_{0<k<n/2} P_k + P_nyq) / n^2 for this scaling.
    weights = torch.full_like(psd, 2.0)
    weights[0] = 0.0
    if n % 2 == 0:
        weights[-1] = 1.0
    expected_var = float((weights * psd).sum()) / n**2
    return _finish(x / math.sqrt(expected_var), dtype, device)


# ----------------------------------------------------------------------------- multifractal
def cascade_multifractal(
    n: Optional[int] = None,
    depth: Optional[int] = None,
    p: float = 0.6,
    *,
    shuffle: bool = True,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Binomial multiplicative cascade (a multifractal measure on 2**depth cells).

    At each of ``depth`` levels every interval passes a fraction ``p`` of its mass to one half and
    ``1 - p`` to the other. The box masses at scale ``eps = 2^-k`` give the partition function
    ``Z(q, eps) = sum mu_box^q ~ eps^tau(q)`` with

        tau(q) = -log2(p^q + (1 - p)^q),   tau(0) = -1, tau(1) = 0,

    and generalized Hurst exponent of the cell sequence (MFDFA) ``h(q) = (1 + tau(q)) / q``.

    Parameters
    ----------
    n : int, optional
        Output length. Without ``depth`` the depth is ``ceil(log2 n)`` and the first n cells are
        returned; with ``depth``, n must be <= 2**depth.
    depth : int, optional
        Number of cascade levels (1..26). Default 12 when n is not given either.
    p : float
        Mass fraction in (0, 1), p != 0.5 for a multifractal (0.5 gives a uniform measure).
    shuffle : bool
        True: which half gets ``p`` is drawn at random at every split (the usual random binomial
        cascade; tau(q) is unchanged because every cell mass is still p^k (1-p)^(depth-k)).
        False: the deterministic cascade (p always on the left).
    batch_shape, n_series, generator, dtype, device
        As in :func:`fgn`.

    Returns
    -------
    torch.Tensor
        ``(*batch_shape, n or 2**depth)`` cell masses; a full cascade sums to 1.

    Shape:
        ``(*batch_shape, N)`` with N = n if given else 2**depth.
    """
    p = _check_unit_open(p, "p")
    if depth is None:
        depth = 12 if n is None else max(1, math.ceil(math.log2(_check_int(n, "n", 2))))
    depth = _check_int(depth, "depth", 1)
    if depth > 26:
        raise ValueError(f"depth: {depth} gives 2**{depth} cells; use depth <= 26")
    if n is not None:
        n = _check_int(n, "n", 2)
        if n > 2**depth:
            raise ValueError(f"n={n} exceeds the 2**depth={2**depth} cells of the cascade; raise depth")
    batch = _resolve_batch(batch_shape, n_series)
    draw_device = generator.device if generator is not None else (device or "cpu")
    mass = torch.ones((*batch, 1), dtype=torch.float64, device=draw_device)
    pair = torch.tensor([p, 1.0 - p], dtype=torch.float64, device=draw_device)
    for _ in range(depth):
        if shuffle:
            flip = torch.rand(mass.shape, generator=generator, dtype=torch.float64, device=draw_device) < 0.5
            left = torch.where(flip, pair[1], pair[0])
        else:
            left = pair[0].expand(mass.shape)
        mass = torch.stack([mass * left, mass * (1.0 - left)], dim=-1).flatten(-2)
    if n is not None:
        mass = mass[..., :n]
    return _finish(mass, dtype, device)


_SURFACES = ("one_over_f_texture", "diamond_square", "midpoint_displacement")


def __getattr__(name: str):
    # The surface generators live in fractals.surfaces (they reuse this module's checks); a lazy import keeps
    # ``fractals.stimuli.diamond_square`` working without an import cycle.
    if name in _SURFACES:
        from fractals import surfaces

        return getattr(surfaces, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
