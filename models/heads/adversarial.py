"""Domain-adversarial head: a species/subject classifier behind a gradient-reversal layer (DANN)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_real, _is_whole
from models.heads.base import HeadOutput
from models.tokenizers.base import value_range

__all__ = ["DomainAdversarialHead", "GradientReversal", "grad_reverse", "dann_schedule"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale`` (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Gradient reversal: ``x`` forward, ``-scale * grad`` backward."""
    return GradientReversal.apply(x, scale)


def dann_schedule(progress: float, *, gamma: float = 10.0, max_scale: float = 1.0) -> float:
    """Reversal strength ramp of Ganin et al.: ``max_scale * (2 / (1 + exp(-gamma * p)) - 1)``.

    Starts at 0 (the classifier learns first, before it pushes the encoder) and approaches
    ``max_scale``; ``progress`` is the fraction of training done, clipped to [0, 1].
    """
    p = min(max(float(progress), 0.0), 1.0)
    return max_scale * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainAdversarialHead(nn.Module):
    """Classify the domain (species or subject) of pooled latents through gradient reversal.

    The classifier learns to tell domains apart while the reversed gradient pushes the encoder to
    make them indistinguishable, so the latents align across subjects/species. ``scale`` (the DANN
    lambda) can be ramped during training by setting :attr:`scale` (e.g. to :func:`dann_schedule`).

    Parameters
    ----------
    d_model : int
        Latent width.
    n_domains : int
        Number of subjects or species.
    hidden : int
        Classifier hidden width.
    scale : float
        Gradient reversal strength (lambda >= 0).

    Shape:
        - latents ``(B, S, D)`` (mean-pooled over steps, ``mask`` ``(B, S)`` respected) or ``(B, D)``;
          target ``(B,)`` long in ``[0, n_domains)``
        - prediction: logits ``(B, n_domains)``
    """

    def __init__(self, *, d_model: int, n_domains: int, hidden: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        if not _is_whole(n_domains, 2):
            raise ValueError(f"n_domains: needs >= 2 domains to be adversarial about, got {n_domains!r}")
        if not _is_whole(hidden, 1):  # 0 built a classifier that ignores the latents
            raise ValueError(f"hidden: must be an integer >= 1 (classifier width), got {hidden!r}")
        if not _is_real(scale, 0.0):  # NaN or inf reversed NaN/inf gradients into the whole encoder
            raise ValueError(f"scale: gradient reversal strength must be a finite number >= 0, got {scale!r}")
        hidden = int(hidden)
        self.n_domains, self.scale = int(n_domains), float(scale)
        self.classifier = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU(),
                                        nn.Linear(hidden, self.n_domains))

    def forward(self, latents: Tensor, *, target: Tensor, mask: Optional[Tensor] = None) -> HeadOutput:
        if latents.ndim == 3:
            if mask is None:
                pooled = latents.mean(1)
            else:
                if tuple(mask.shape) != tuple(latents.shape[:2]):  # failed as a broadcast RuntimeError
                    raise ValueError(f"mask: needs shape (B, S) = {tuple(latents.shape[:2])}, one flag per latent "
                                     f"step, got {tuple(mask.shape)}")
                w = mask.to(latents.dtype).unsqueeze(-1)
                pooled = (latents * w).sum(1) / w.sum(1).clamp_min(1.0)
        elif latents.ndim == 2:
            pooled = latents
        else:
            raise ValueError(f"latents: needs (B, S, D) or (B, D), got {tuple(latents.shape)}")
        target = torch.as_tensor(target, device=pooled.device)  # a bare int gets the shape error below
        if target.is_floating_point() and not bool((target == target.round()).all()):  # .long() truncated 1.5 to 1
            raise ValueError(f"target: domain labels must be integers, got non-integer values {target.tolist()[:8]}")
        target = target.long().reshape(-1)
        if target.shape[0] != pooled.shape[0]:
            raise ValueError(f"target: needs shape (B,) = ({pooled.shape[0]},), got {tuple(target.shape)}")
        if target.numel():
            lo, hi = value_range(target)
            if lo < 0 or hi >= self.n_domains:
                raise ValueError(f"target: domain labels must lie in [0, {self.n_domains}), got [{lo}, {hi}]; raise n_domains")
        logits = self.classifier(grad_reverse(pooled, self.scale))
        loss = nn.functional.cross_entropy(logits, target)
        acc = (logits.detach().argmax(-1) == target).float().mean()
        return HeadOutput(logits, loss, {"accuracy": acc})
