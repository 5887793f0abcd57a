"""The graph fractal-dimension prior: a soft cluster-growing dimension of the latent correlation graph."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from fractals._checks import autocast_off, check_open_unit, check_positive, pow2_scale
from fractals._prior_common import _check_weight, _finite, _lstsq_slope, _time_last, _zero_like

__all__ = ["l_graph_fd", "soft_graph_dimension"]


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
    """Differentiable cluster-growing dimension of the latent correlation graph (see :mod:`fractals.regularizers`).

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
    check_open_unit(thresh, "thresh")
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
