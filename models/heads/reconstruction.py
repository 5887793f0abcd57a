"""Masked reconstruction: rebuild a modality's samples from the latents (masked-autoencoder style)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models.heads.base import ChannelReadout, HeadOutput, check_latents, fit_time, masked_mean
from models.tokenizers.base import zscore_channels

__all__ = ["MaskedReconstructionHead", "LOSSES"]

LOSSES = ("mse", "poisson")


class MaskedReconstructionHead(nn.Module):
    """Reconstruct ``(B, C, T)`` targets from latent steps, scoring only the masked steps.

    The caller hides some token steps from the encoder (``step_mask``: True = hidden, scored) and
    this head reconstructs every channel there. ``loss="mse"`` compares with the per-channel
    z-scored target (the tokenizers' view of continuous data); ``loss="poisson"`` reads the output
    as a log-rate and scores raw counts with the Poisson NLL (spikes). Padded channels never count.

    Parameters
    ----------
    d_model : int
        Latent width ``D``.
    patch_size : int
        Samples per latent step ``P``.
    n_channel_ids : int
        Channel/unit id vocabulary of the readout.
    loss : {"mse", "poisson"}
        Reconstruction loss.
    embed_dim : int
        Width of the channel readout embeddings.

    Shape:
        - latents ``(B, S, D)``; target ``(B, C, T)``; channel_mask, channel_ids ``(B, C)``;
          step_mask ``(B, S)`` bool
        - prediction ``(B, C, T)`` (z-scored units for mse, log-rate for poisson)
    """

    def __init__(self, *, d_model: int, patch_size: int, n_channel_ids: int, loss: str = "mse",
                 embed_dim: int = 32) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss: must be one of {LOSSES}, got {loss!r}")
        self.d_model, self.patch_size, self.loss_kind = int(d_model), int(patch_size), loss
        self.readout = ChannelReadout(d_model=d_model, patch_size=patch_size, n_channel_ids=n_channel_ids,
                                      embed_dim=embed_dim)

    def forward(self, latents: Tensor, *, target: Tensor, channel_mask: Optional[Tensor] = None,
                channel_ids: Optional[Tensor] = None, step_mask: Optional[Tensor] = None) -> HeadOutput:
        check_latents(latents, self.d_model)
        if target.ndim != 3 or target.shape[0] != latents.shape[0]:
            raise ValueError(f"target: needs shape (B={latents.shape[0]}, C, T), got {tuple(target.shape)}")
        b, c, t = target.shape
        s, p = latents.shape[1], self.patch_size
        if t > s * p:
            raise ValueError(f"target: has {t} time samples, more than the {s} latent steps of {p} samples cover "
                             f"({s * p}); its tail would be dropped unseen: crop the target to the latents' window, "
                             "or pass the latents of the whole window")
        pred = self.readout(latents, n_channels=c, channel_ids=channel_ids, channel_mask=channel_mask)
        if channel_mask is None:
            channel_mask = torch.ones(b, c, dtype=torch.bool, device=target.device)
        target = torch.where(channel_mask.bool().unsqueeze(-1), target.float(), torch.zeros((), device=target.device))
        if self.loss_kind == "mse":
            target = zscore_channels(target)
        target, valid = fit_time(target, s * self.patch_size)
        weight = channel_mask.bool()[:, :, None] & valid[None, None, :]
        if step_mask is not None:
            if tuple(step_mask.shape) != (b, s):
                raise ValueError(f"step_mask: needs shape (B, S) = {(b, s)}, got {tuple(step_mask.shape)}")
            weight = weight & step_mask.bool().repeat_interleave(self.patch_size, dim=1)[:, None, :]
        if self.loss_kind == "poisson":
            per = nn.functional.poisson_nll_loss(pred, target, log_input=True, full=False, reduction="none")
        else:
            per = (pred - target) ** 2
        loss = masked_mean(per, weight)
        return HeadOutput(pred[..., :t], loss, {"n_scored": weight.sum().detach()})
