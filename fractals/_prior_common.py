"""Shared helpers of the prior terms: latent input checks, weight/target checks, a weighted least-squares slope."""
from __future__ import annotations

import contextvars
import math
import numbers
from typing import Optional

import torch

from fractals._checks import check_finite


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
