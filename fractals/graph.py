"""Functional connectivity graphs, their box-covering fractal dimension, and power-law fits.

- :func:`functional_connectivity_latents`: ``(..., T, C)`` latents to thresholded ``(..., C, C)``
  adjacency from Pearson or partial correlation.
- :func:`graph_fractal_dim`: box dimension d_B of graphs (Song, Havlin & Makse, Nature 2005;
  J. Stat. Mech. 2007), implemented in :mod:`fractals.box_covering` and re-exported here.
- :func:`powerlaw_fit`: Clauset, Shalizi & Newman (SIAM Review 2009): x_min by minimum KS
  distance, MLE exponent, KS statistic and a bootstrap goodness-of-fit p-value.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from fractals._checks import as_tensor, autocast_off, check_finite
from fractals.box_covering import BoxCounts, graph_fractal_dim
from fractals.powerlaw import PowerLawFit, powerlaw_fit

__all__ = ["functional_connectivity_latents", "graph_fractal_dim", "powerlaw_fit", "PowerLawFit", "BoxCounts"]


# ----------------------------------------------------------------------------- connectivity
@autocast_off
def functional_connectivity_latents(latents, method: str = "pearson", thresh: float = 0.3, weighted: bool = False,
                                    *, ridge: Optional[float] = None):
    """Thresholded functional-connectivity adjacency between latent channels.

    Parameters
    ----------
    latents : torch.Tensor or np.ndarray
        ``(..., T, C)``: time on the second-to-last axis, channels last (the model's layout).
    method : {'pearson', 'partial'}
        Pearson correlation, or partial correlation ``-P_ij / sqrt(P_ii P_jj)`` from the precision
        matrix ``P = inv((1 - ridge) R + ridge I)`` of the correlation matrix ``R``.
    thresh : float
        Edge where ``|r| > thresh`` (0 <= thresh < 1).
    weighted : bool
        Return ``|r|`` on the edges instead of 1.
    ridge : float, optional
        Shrinkage for the partial correlation. Default: 0 when ``T > C`` (the sample correlation
        matrix is invertible), else 0.1, because with ``C >= T`` it is singular and the partial
        correlations would be undefined.

    Returns
    -------
    adjacency : same kind as ``latents``, ``(..., C, C)``, zero diagonal, symmetric.

    Shape:
        ``(..., T, C) -> (..., C, C)``. Differentiable in ``latents`` with ``weighted=True``.
        A constant channel raises ``ValueError`` (its correlation is undefined).
    """
    t, was_numpy = as_tensor(latents, "latents")
    if t.ndim < 2:
        raise ValueError(f"latents: needs shape (..., T, C), got {tuple(t.shape)}")
    check_finite(t, "latents")
    if method not in ("pearson", "partial"):
        raise ValueError(f"method: must be 'pearson' or 'partial', got {method!r}")
    if not (isinstance(thresh, (int, float, np.integer, np.floating)) and 0 <= thresh < 1):
        raise ValueError(f"thresh: must be a number in [0, 1), got {thresh!r}")
    T, C = t.shape[-2], t.shape[-1]
    if T < 3:
        raise ValueError(f"latents: needs at least 3 time steps on axis -2, got shape {tuple(t.shape)}")
    if C < 2:
        raise ValueError(f"latents: needs at least 2 channels on the last axis, got shape {tuple(t.shape)}")
    if t.numel() == 0:  # as every estimator: an empty batch is a caller bug, not an empty answer
        raise ValueError(f"latents: is empty (shape {tuple(t.shape)}); needs at least one (T, C) series")
    hi, lo = t.detach().amax(-2, keepdim=True), t.detach().amin(-2, keepdim=True)
    const = (hi == lo).squeeze(-2)  # not std == 0: the mean of a constant has rounding residue
    # Correlations are scale- and offset-free, float32 Gram matrices are not: each channel is scaled
    # by a power of two (exact; pow2_scale from the extremes at hand), so the Gram matrix cannot
    # overflow (|x| >= 1e19 gave NaN r, silently no edges) or underflow, and centred twice (the
    # float32 mean of an offset of 1e6 is off by ~0.1, which cost 2e-3 in r; the second mean, of
    # the small residuals, is exact to rounding).
    top = torch.maximum(hi, -lo).clamp_min(torch.finfo(t.dtype).tiny)
    xc = t / torch.exp2(torch.floor(torch.log2(top)))
    # In place: two more (T, C) copies took 3x the input (0.9 GB extra for 128 channels x 10 min at 1 kHz).
    xc.sub_(xc.mean(-2, keepdim=True))
    xc.sub_(xc.mean(-2, keepdim=True))
    if method == "partial":  # the inverse amplifies float32 rounding of r by cond(R): 0.02 off at cond 3e6
        xc = xc.to(torch.float64)
    gram = _gram(xc)  # the norms are its diagonal
    std = gram.diagonal(dim1=-2, dim2=-1).sqrt()  # (..., C)
    if bool(const.any()):
        flat = const.reshape(-1, C)
        row, col = (int(v) for v in torch.nonzero(flat)[0])
        raise ValueError(f"latents: channel {col} of series {row} (flattened) is constant; drop it before FC")
    r = (gram / (std.unsqueeze(-1) * std.unsqueeze(-2))).clamp(-1.0, 1.0)
    eye = torch.eye(C, dtype=r.dtype, device=t.device)
    if method == "partial":
        numeric = isinstance(ridge, (int, float, np.integer, np.floating)) and not isinstance(ridge, bool)
        lam = (0.0 if T > C else 0.1) if ridge is None else float(ridge) if numeric else math.nan
        if not 0 <= lam < 1:
            raise ValueError(f"ridge: must be in [0, 1), got {ridge!r}")
        prec, info = torch.linalg.inv_ex((1 - lam) * r + lam * eye)
        d = prec.diagonal(dim1=-2, dim2=-1).sqrt()
        r = (-prec / (d.unsqueeze(-1) * d.unsqueeze(-2))).clamp(-1.0, 1.0)
        bad = (info != 0) | ~torch.isfinite(r.detach()).flatten(-2).all(-1)
        if bool(bad.any()):
            row = int(torch.nonzero(bad.reshape(-1))[0])
            raise ValueError(
                f"latents: the correlation matrix of series {row} (flattened) is singular (collinear or duplicate "
                f"channels) at ridge={lam:g}; pass ridge > 0 (e.g. ridge=0.1) or drop the redundant channels"
            )
    r = (0.5 * (r + r.transpose(-1, -2))).to(t.dtype)  # matmul and inverse round (i, j) and (j, i) differently
    absr = r.abs() * (1 - eye.to(t.dtype))
    edge = absr > thresh
    adj = torch.where(edge, absr, torch.zeros_like(absr)) if weighted else edge.to(t.dtype)
    return adj.detach().cpu().numpy() if was_numpy else adj


_GRAM_ROWS = 16384  # float32 rows per partial Gram matrix; the partials are summed in float64


def _gram(xc: torch.Tensor) -> torch.Tensor:
    """``xc^T xc`` over the time axis, float64 for float32 input of more than ``_GRAM_ROWS`` steps.

    One float32 matmul's rounding grows with T: r was 2e-4 off at T = 6e5 (10 min at 1 kHz) and
    1e-3 at 2e6, enough to flip edges near ``thresh``. Partial products of 16384 rows stay at
    ~2e-6, and summing them in float64 keeps that, without a float64 copy of the whole series.
    """
    T = xc.shape[-2]
    if xc.dtype == torch.float64 or T <= _GRAM_ROWS:
        return xc.transpose(-1, -2) @ xc
    gram = None
    for lo in range(0, T, _GRAM_ROWS):
        part = xc[..., lo:lo + _GRAM_ROWS, :]
        part = (part.transpose(-1, -2) @ part).to(torch.float64)
        gram = part if gram is None else gram + part
    return gram
