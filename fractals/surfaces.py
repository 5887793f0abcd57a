"""Fractal surfaces and profiles: 1/f^beta textures, diamond-square and midpoint displacement.

Same conventions as :mod:`fractals.stimuli` (seeded ``generator=``, ``batch_shape=`` / ``n_series=``,
float64 by default, ``device=``), which also exposes these three names.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch

from fractals.stimuli import (BatchShape, _check_int, _check_real, _check_sigma, _check_unit_open, _finish, _randn,
                              _resolve_batch)

__all__ = ["one_over_f_texture", "diamond_square", "midpoint_displacement"]


def one_over_f_texture(
    shape: Union[int, Sequence[int]],
    beta: float = 2.0,
    *,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """2-D Gaussian texture whose power falls as ``1/|k|^beta`` (radial spatial frequency).

    beta = 2 is the natural-image statistic; for an isotropic fBm surface with Hurst H,
    beta = 2H + 2 (surface dimension 3 - H).

    Parameters
    ----------
    shape : int or (height, width)
        Image size (each side >= 4).
    beta : float
        Spectral exponent of the 2-D power spectrum.

    Shape:
        ``(*batch_shape, height, width)``, zero mean, unit variance per image.
    """
    if isinstance(shape, numbers.Integral):
        shape = (shape, shape)
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError(f"shape: needs (height, width), got {shape!r}")
    h, w = (_check_int(s, "shape", 4) for s in shape)
    beta = _check_real(beta, "beta")
    batch = _resolve_batch(batch_shape, n_series)
    work_device = generator.device if generator is not None else (device or "cpu")
    ky = torch.fft.fftfreq(h, dtype=torch.float64, device=work_device)[:, None]
    kx = torch.fft.rfftfreq(w, dtype=torch.float64, device=work_device)[None, :]
    k = torch.sqrt(ky**2 + kx**2)
    amp = torch.where(k > 0, k.clamp_min(1e-12).pow(-beta / 2), torch.zeros_like(k))
    log_amp = -0.5 * beta * torch.log(k[k > 0])
    if float(log_amp.abs().max()) >= 600:  # a steep beta overflows or underflows k^(-beta/2) (NaN image):
        # each image is normalised below, so divide by the largest amplitude first
        amp = torch.where(k > 0, torch.exp(-0.5 * beta * torch.log(k.clamp_min(1e-12)) - log_amp.max()),
                          torch.zeros_like(k))
    z = torch.complex(_randn((*batch, h, w // 2 + 1), generator, device),
                      _randn((*batch, h, w // 2 + 1), generator, device))
    img = torch.fft.irfft2(z * amp, s=(h, w))
    img = img - img.mean(dim=(-2, -1), keepdim=True)
    img = img / img.std(dim=(-2, -1), keepdim=True).clamp_min(1e-300)
    return _finish(img, dtype, device)


def _dyadic_setup(n, H, sigma, batch_shape, n_series, generator, device):
    """Checked arguments of the dyadic generators, plus the grid size ``2**k + 1 >= n`` they build
    on, the batch shape and the device random numbers are drawn on."""
    n = _check_int(n, "n", 3)
    H = _check_unit_open(H, "H")
    sigma = _check_sigma(sigma)
    size = 2 ** max(1, math.ceil(math.log2(n - 1))) + 1
    batch = _resolve_batch(batch_shape, n_series)
    draw_device = generator.device if generator is not None else (device or "cpu")
    return n, H, sigma, size, batch, draw_device


def diamond_square(
    n: int,
    H: float = 0.7,
    *,
    sigma: float = 1.0,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Fractal surface by the diamond-square algorithm (roughness set by the Hurst exponent).

    The displacement standard deviation shrinks by ``2^-H`` per level, giving an approximately
    fBm-like surface of dimension ``3 - H`` (small H rough, large H smooth).

    Parameters
    ----------
    n : int
        Side length (>= 3). The grid is built at the next size ``2**k + 1`` and cropped to n.
    H : float
        Hurst exponent (roughness) in (0, 1).

    Shape:
        ``(*batch_shape, n, n)``.
    """
    n, H, sigma, size, batch, draw_device = _dyadic_setup(n, H, sigma, batch_shape, n_series, generator, device)
    grid = torch.zeros((*batch, size, size), dtype=torch.float64, device=draw_device)
    grid[..., :: size - 1, :: size - 1] = sigma * _randn((*batch, 2, 2), generator, device)
    scale = sigma
    step = size - 1
    while step > 1:
        half = step // 2
        scale *= 2.0 ** (-H)
        # Diamond: centre of each square = mean of its 4 corners + noise.
        corners = grid[..., ::step, ::step]
        centre = 0.25 * (corners[..., :-1, :-1] + corners[..., :-1, 1:] + corners[..., 1:, :-1] + corners[..., 1:, 1:])
        grid[..., half::step, half::step] = centre + scale * _randn(centre.shape, generator, device)
        # Square: edge midpoints = mean of their in-bounds neighbours (all corners or centres,
        # hence already set) + noise. Zero padding makes a missing neighbour add 0 to the sum and
        # 0 to the count.
        padded = torch.nn.functional.pad(grid, (half,) * 4)
        inside = torch.nn.functional.pad(torch.ones((size, size), dtype=torch.float64, device=draw_device), (half,) * 4)
        for r0, c0 in ((half, 0), (0, half)):
            nr, nc = len(range(r0, size, step)), len(range(c0, size, step))

            def near(a, dr, dc):
                r, c = r0 + half + dr, c0 + half + dc
                return a[..., r : r + step * (nr - 1) + 1 : step, c : c + step * (nc - 1) + 1 : step]

            moves = ((-half, 0), (half, 0), (0, -half), (0, half))
            total = sum(near(padded, dr, dc) for dr, dc in moves)
            count = sum(near(inside, dr, dc) for dr, dc in moves)
            grid[..., r0::step, c0::step] = total / count + scale * _randn(total.shape, generator, device)
        step = half
    return _finish(grid[..., :n, :n], dtype, device)


def midpoint_displacement(
    n: int,
    H: float = 0.7,
    *,
    sigma: float = 1.0,
    batch_shape: BatchShape = None,
    n_series: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """fBm-like series by random midpoint displacement (fast, approximate; use :func:`fbm_series`
    with ``H=`` for an exact draw).

    The level-k displacement has standard deviation ``sigma 2^(-k H) sqrt(1 - 2^(2H - 2))``, which
    makes increments over dyadic lags scale like fBm with Hurst H.

    Shape:
        ``(*batch_shape, n)``, starting at 0 (built on the next 2**k + 1 points and cropped).
    """
    n, H, sigma, size, batch, draw_device = _dyadic_setup(n, H, sigma, batch_shape, n_series, generator, device)
    x = torch.zeros((*batch, size), dtype=torch.float64, device=draw_device)
    x[..., -1] = sigma * _randn(batch, generator, device)
    step = size - 1
    level = 0
    factor = math.sqrt(1.0 - 2.0 ** (2 * H - 2))
    while step > 1:
        half = step // 2
        level += 1
        mid = 0.5 * (x[..., :-1:step] + x[..., step::step])
        std = sigma * 2.0 ** (-level * H) * factor
        x[..., half::step] = mid + std * _randn(mid.shape, generator, device)
        step = half
    return _finish(x[..., :n], dtype, device)
