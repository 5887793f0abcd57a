"""Contrastive InfoNCE alignment of neural latents with behaviour or stimulus embeddings (CLIP-style)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_real, _is_whole
from models.heads.base import HeadOutput, masked_mean

__all__ = ["ContrastiveHead", "info_nce", "PAIRINGS"]

PAIRINGS = ("sample", "time")


def info_nce(za: Tensor, zb: Tensor, temperature: Tensor | float,
             valid: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over a batch of ``N`` positive pairs (row ``i`` of ``za`` with row ``i`` of ``zb``).

    ``valid`` ``(N,)`` bool leaves pairs out: neither a positive nor anyone's negative (a sample whose
    second view is missing). The loss is 0 when no pair is valid.

    Shape:
        za, zb ``(N, E)`` (L2-normalised inside); valid ``(N,)`` -> loss scalar, logits ``(N, N)``
    """
    za = nn.functional.normalize(za, dim=-1)
    zb = nn.functional.normalize(zb, dim=-1)
    logits = za @ zb.T / temperature
    labels = torch.arange(za.shape[0], device=za.device)
    if valid is None:
        loss = 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))
        return loss, logits
    valid = valid.bool()
    # Left-out pairs get the lowest logit (not -inf, so their own rows stay finite), then weight 0.
    logits = logits.masked_fill(~(valid[:, None] & valid[None, :]), torch.finfo(logits.dtype).min)
    per = (nn.functional.cross_entropy(logits, labels, reduction="none")
           + nn.functional.cross_entropy(logits.T, labels, reduction="none"))
    return 0.5 * masked_mean(per, valid), logits


def _pool(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    if x.ndim == 2:
        return x
    if mask is None:
        return x.mean(1)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def _match_steps(x: Tensor, mask: Optional[Tensor], steps: int) -> tuple[Tensor, Optional[Tensor]]:
    """Average-pool ``x (B, T, F)`` to ``steps`` when ``T`` is a whole multiple of it (samples -> steps)."""
    t = x.shape[1]
    if t <= steps or t % steps:
        return x, mask
    k = t // steps
    if mask is None:
        return x.reshape(x.shape[0], steps, k, -1).mean(2), None
    w = mask.to(x.dtype).reshape(x.shape[0], steps, k, 1)
    pooled = (x.reshape(x.shape[0], steps, k, -1) * w).sum(2) / w.sum(2).clamp_min(1.0)
    return pooled, w.sum(2)[..., 0] > 0


class ContrastiveHead(nn.Module):
    """Project two views to a shared space and pull matching pairs together with InfoNCE.

    Views are neural latents and a second modality: behaviour ``(B, T, F)``, or a stimulus embedding
    ``(B, D_s)``. With ``pairing="sample"`` sequences are mean-pooled over time (masks respected)
    and the negatives are the other samples; ``pairing="time"`` pairs every time step of both
    sequences so other times act as negatives too (a view sampled ``k`` times finer, e.g. behaviour
    at ``T = S * patch_size``, is average-pooled to the ``S`` latent steps first).
    The temperature is learned in log space, clamped to [0.01, 1] for stability.

    Parameters
    ----------
    dim_a, dim_b : int
        Feature widths of the two views.
    proj_dim : int
        Shared embedding width.
    temperature : float
        Initial softmax temperature.
    learn_temperature : bool
        Learn the temperature (CLIP) or keep it fixed.
    pairing : {"sample", "time"}
        What counts as one positive pair.

    Shape:
        - a ``(B, S, dim_a)`` or ``(B, dim_a)``; b ``(B, S', dim_b)`` or ``(B, dim_b)``;
          a_mask ``(B, S)``, b_mask ``(B, S')``, sample_mask ``(B,)`` optional
        - prediction: similarity logits ``(N, N)``, ``N = B`` (sample) or ``B * S`` (time)
    """

    def __init__(self, *, dim_a: int, dim_b: int, proj_dim: int = 64, temperature: float = 0.1,
                 learn_temperature: bool = True, pairing: str = "sample") -> None:
        super().__init__()
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing: must be one of {PAIRINGS}, got {pairing!r}")
        if not _is_real(temperature, 0.0, open_low=True):  # inf made every logit 0: a constant loss
            raise ValueError(f"temperature: must be a finite number > 0, got {temperature!r}")
        if not _is_whole(proj_dim, 1):  # 0 projected both views to nothing: a constant loss
            raise ValueError(f"proj_dim: must be an integer >= 1, got {proj_dim!r}")
        temperature, proj_dim = float(temperature), int(proj_dim)
        self.pairing = pairing
        self.proj_a = nn.Sequential(nn.LayerNorm(dim_a), nn.Linear(dim_a, proj_dim))
        self.proj_b = nn.Sequential(nn.LayerNorm(dim_b), nn.Linear(dim_b, proj_dim))
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp().clamp(0.01, 1.0)

    def forward(self, a: Tensor, b: Tensor, *, a_mask: Optional[Tensor] = None,
                b_mask: Optional[Tensor] = None, sample_mask: Optional[Tensor] = None) -> HeadOutput:
        """``sample_mask`` ``(B,)``: False leaves a sample (all its steps with ``pairing="time"``) out of the pairs."""
        if sample_mask is not None and tuple(sample_mask.shape) != (a.shape[0],):
            raise ValueError(f"sample_mask: needs shape (B,) = ({a.shape[0]},), got {tuple(sample_mask.shape)}")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a, b: need the same batch size, got {a.shape[0]} and {b.shape[0]}")
        for name, x, proj, m in (("a", a, self.proj_a, a_mask), ("b", b, self.proj_b, b_mask)):
            width = proj[0].normalized_shape[0]
            if x.ndim not in (2, 3) or x.shape[-1] != width:  # failed inside LayerNorm without naming the view
                raise ValueError(f"{name}: has {x.shape[-1] if x.ndim else 0} features on the last axis, the head "
                                 f"takes dim_{name}={width}; shape (B, S, {width}) or (B, {width}), got "
                                 f"{tuple(x.shape)}")
            if m is not None and x.ndim == 3 and tuple(m.shape) != tuple(x.shape[:2]):  # failed in a reshape
                dims = "(B, S)" if name == "a" else "(B, S')"
                raise ValueError(f"{name}_mask: needs shape {dims} = {tuple(x.shape[:2])}, one flag per step of "
                                 f"{name}, got {tuple(m.shape)}")
        # A view straight from numpy is float64: LayerNorm refuses a dtype other than its weights'.
        a, b = a.to(self.proj_a[1].weight.dtype), b.to(self.proj_b[1].weight.dtype)
        if self.pairing == "time":
            if a.ndim != 3 or b.ndim != 3:
                raise ValueError(f"a, b: pairing='time' needs (B, S, *) views, got {tuple(a.shape)} and {tuple(b.shape)}")
            a, a_mask = _match_steps(a, a_mask, b.shape[1])
            b, b_mask = _match_steps(b, b_mask, a.shape[1])
            if a.shape[1] != b.shape[1]:
                raise ValueError(
                    f"a, b: pairing='time' needs equal lengths or one a multiple of the other, got "
                    f"{a.shape[1]} and {b.shape[1]}"
                )
            keep = torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
            for m in (a_mask, b_mask, None if sample_mask is None else sample_mask[:, None]):
                if m is not None:
                    keep = keep & m.bool()
            if not bool(keep.any()):  # InfoNCE over no pairs is 0/0: a NaN loss would poison training
                raise ValueError("a_mask, b_mask: no time step is valid in both views, so there is no pair to "
                                 "contrast; drop such batches or use pairing='sample'")
            za, zb = self.proj_a(a)[keep], self.proj_b(b)[keep]
        else:
            za, zb = self.proj_a(_pool(a, a_mask)), self.proj_b(_pool(b, b_mask))
        valid = None
        if sample_mask is not None and self.pairing == "sample":
            valid = sample_mask.bool().to(za.device)
        loss, logits = info_nce(za, zb, self.temperature, valid)
        with torch.no_grad():
            labels = torch.arange(logits.shape[0], device=logits.device)
            hit = (logits.argmax(-1) == labels).float()
            acc = hit.mean() if valid is None else masked_mean(hit, valid)
        return HeadOutput(logits, loss, {"accuracy": acc, "temperature": self.temperature.detach()})
