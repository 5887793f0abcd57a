"""The multifractal prior: differentiable MFDFA mass exponents tau(q) of the latents and their curvature/match loss."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fractals._checks import autocast_off
from fractals._prior_common import _check_weight, _lstsq_slope, _time_last, _zero_like

__all__ = ["l_multifractal", "latent_tau"]


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
