"""Behaviour decoding: latents -> kinematics / pose at the sample rate, with R^2."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.heads.base import HeadOutput, check_latents, fit_time, masked_mean

__all__ = ["BehaviorHead", "r2_score"]


def r2_score(pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Coefficient of determination averaged over features (last axis), over valid samples.

    Features without a single valid sample have no R^2 and are left out of the mean. A constant
    feature (no variance to explain) scores 1 when predicted exactly and 0 otherwise, as
    scikit-learn's ``r2_score(force_finite=True)``.

    Shape:
        pred, target ``(B, T, F)``; weight ``(B, T, F)`` bool or None -> scalar
    """
    if weight is None:
        weight = torch.ones_like(target, dtype=torch.bool)
    w = weight.to(target.dtype)
    count = w.sum((0, 1))
    n = count.clamp_min(1.0)
    mean = (target * w).sum((0, 1)) / n
    ss_res = (((pred - target) ** 2) * w).sum((0, 1))
    ss_tot = (((target - mean) ** 2) * w).sum((0, 1))
    info = torch.finfo(target.dtype)
    energy = ((target**2) * w).sum((0, 1))
    # Constant up to rounding: the spread is below what the dtype resolves at this magnitude.
    constant = ss_tot <= info.eps * energy
    exact = (ss_res <= info.eps * energy).to(target.dtype)
    r2 = torch.where(constant, exact, 1.0 - ss_res / ss_tot.clamp_min(info.tiny))
    scored = count > 0
    return (r2 * scored).sum() / scored.sum().clamp_min(1)


class BehaviorHead(nn.Module):
    """Decode ``(B, T, F)`` behaviour from the latent steps (each step -> its ``P`` samples).

    A per-step MLP (pointwise in time, so causal) emits ``P x F`` values; MSE over real features and
    samples is the loss and R^2 a metric. ``behavior_mask`` (B, F) excludes missing features.

    Parameters
    ----------
    d_model, patch_size, n_features : int
        Latent width, samples per step, behaviour features ``F``.
    hidden : int
        MLP hidden width (0 = linear decoder, the classic linear-probe setting).

    Shape:
        - latents ``(B, S, D)``; target ``(B, T, F')``, ``F' <= n_features``; mask ``(B, F')``
        - prediction ``(B, T, F')``
    """

    def __init__(self, *, d_model: int, patch_size: int, n_features: int, hidden: int = 0) -> None:
        super().__init__()
        if not _is_whole(n_features, 1):
            raise ValueError(f"n_features: must be an integer >= 1, got {n_features!r}")
        if not _is_whole(hidden, 0):
            raise ValueError(f"hidden: must be >= 0 (0 = linear decoder), got {hidden!r}")
        hidden = int(hidden)
        self.d_model, self.patch_size, self.n_features = int(d_model), int(patch_size), int(n_features)
        out = self.patch_size * self.n_features
        self.net = (nn.Linear(d_model, out) if not hidden
                    else nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, out)))

    def forward(self, latents: Tensor, *, target: Tensor, mask: Optional[Tensor] = None) -> HeadOutput:
        check_latents(latents, self.d_model)
        if target.ndim != 3 or target.shape[0] != latents.shape[0] or target.shape[2] > self.n_features:
            raise ValueError(
                f"target: needs shape (B={latents.shape[0]}, T, F<={self.n_features}), got {tuple(target.shape)}"
            )
        b, s, _ = latents.shape
        _, t, f = target.shape
        p = self.patch_size
        if t > s * p:
            raise ValueError(f"target: has {t} time samples, more than the {s} latent steps of {p} samples cover "
                             f"({s * p}); its tail would be dropped unseen: crop the target to the latents' window, "
                             "or pass the latents of the whole window")
        if mask is not None and not isinstance(mask, Tensor):  # a list failed as "no attribute 'shape'"
            raise ValueError(f"mask: needs a torch.Tensor (B, F) = {(b, f)}, got {type(mask).__name__}")
        if mask is not None and tuple(mask.shape) != (b, f):  # failed as a broadcast RuntimeError
            raise ValueError(f"mask: needs shape (B, F) = {(b, f)}, one flag per target feature, got "
                             f"{tuple(mask.shape)}")
        pred = self.net(latents).view(b, s * self.patch_size, self.n_features)[..., :f]
        tgt, valid = fit_time(target.float().transpose(1, 2), s * self.patch_size)
        tgt = tgt.transpose(1, 2)
        weight = valid[None, :, None].expand(b, -1, f)
        if mask is not None:
            weight = weight & mask.bool()[:, None, :]
        tgt = torch.where(weight, tgt, torch.zeros((), device=tgt.device))
        loss = masked_mean((pred - tgt) ** 2, weight)
        return HeadOutput(pred[:, :t], loss, {"r2": r2_score(pred.detach(), tgt, weight)})
