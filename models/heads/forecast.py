"""Forecasting: predict a modality ``horizon`` steps ahead, causally (never reading later latents)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.heads.base import ChannelReadout, HeadOutput, check_latents, fit_time, masked_mean
from models.heads.reconstruction import LOSSES
from models.tokenizers.base import zscore_channels

__all__ = ["ForecastHead", "CausalConv1d"]


class CausalConv1d(nn.Module):
    """Depthwise conv over steps with left padding only: output ``s`` depends on inputs ``<= s``.

    Shape:
        ``(B, S, D)`` -> ``(B, S, D)``
    """

    def __init__(self, *, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.conv = nn.Conv1d(channels, channels, self.kernel_size, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))
        return self.conv(y).transpose(1, 2)


class ForecastHead(nn.Module):
    """Forecast the samples of step ``s + horizon`` from latents ``0..s``.

    A causal depthwise conv (``kernel_size`` steps of context) and an MLP feed the channel readout;
    ``prediction[..., s*P:(s+1)*P]`` is the forecast of target samples
    ``[(s+horizon)*P, (s+horizon+1)*P)``. The loss covers steps ``0 .. S-horizon-1`` (whose future is
    inside the window). ``loss`` as in :class:`~models.heads.reconstruction.MaskedReconstructionHead`.
    The ``mse`` target is z-scored over the whole window: one scale per channel and window, which
    fixes the loss's units and reveals nothing to the predictions (they never read the target).
    Standardising each future block by running statistics up to its step instead was measured on
    the synthetic LFP (tiny preset, 4-sample steps): step 0's targets then had mean square ~95
    against ~1.8 from step 4 on, so the first steps would dominate the loss.
    The head is causal; the whole model is causal when the backbone is (Mamba) and the Perceiver
    uses ``latent_attention="causal"`` or ``"local"``.

    Parameters
    ----------
    d_model, patch_size, n_channel_ids : int
        Latent width, samples per step, channel id vocabulary.
    horizon : int
        Steps ahead (>= 1).
    kernel_size : int
        Causal context of the head itself, in steps.
    loss : {"mse", "poisson"}
        Forecast loss.

    Shape:
        - latents ``(B, S, D)``; target ``(B, C, T)``; channel_mask, channel_ids ``(B, C)``
        - prediction ``(B, C, S * P)``, shifted by ``horizon`` steps as described
    """

    def __init__(self, *, d_model: int, patch_size: int, n_channel_ids: int, horizon: int = 1,
                 kernel_size: int = 4, loss: str = "mse", embed_dim: int = 32) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss: must be one of {LOSSES}, got {loss!r}")
        if not _is_whole(horizon, 1):  # 1.5 was read as 1
            raise ValueError(f"horizon: must be an integer >= 1 step, got {horizon!r}")
        if not _is_whole(kernel_size, 1):  # 0 failed in the first forward inside oneDNN's convolution
            raise ValueError(f"kernel_size: must be >= 1 step, got {kernel_size!r}")
        self.d_model, self.patch_size, self.horizon, self.loss_kind = int(d_model), int(patch_size), int(horizon), loss
        self.conv = CausalConv1d(channels=d_model, kernel_size=kernel_size)
        self.mlp = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(),
                                 nn.Linear(2 * d_model, d_model))
        self.readout = ChannelReadout(d_model=d_model, patch_size=patch_size, n_channel_ids=n_channel_ids,
                                      embed_dim=embed_dim)

    def forward(self, latents: Tensor, *, target: Tensor, channel_mask: Optional[Tensor] = None,
                channel_ids: Optional[Tensor] = None) -> HeadOutput:
        check_latents(latents, self.d_model)
        if target.ndim != 3 or target.shape[0] != latents.shape[0]:
            raise ValueError(f"target: needs shape (B={latents.shape[0]}, C, T), got {tuple(target.shape)}")
        b, c, _ = target.shape
        s, p, h = latents.shape[1], self.patch_size, self.horizon
        t = target.shape[-1]
        if t > s * p:
            raise ValueError(f"target: has {t} time samples, more than the {s} latent steps of {p} samples cover "
                             f"({s * p}); its tail would be dropped unseen: crop the target to the latents' window, "
                             "or pass the latents of the whole window")
        z = latents + self.conv(latents)
        z = z + self.mlp(z)
        pred = self.readout(z, n_channels=c, channel_ids=channel_ids, channel_mask=channel_mask)
        if channel_mask is None:
            channel_mask = torch.ones(b, c, dtype=torch.bool, device=target.device)
        target = torch.where(channel_mask.bool().unsqueeze(-1), target.float(), torch.zeros((), device=target.device))
        if self.loss_kind == "mse":
            target = zscore_channels(target)
        target, valid = fit_time(target, s * p)
        n_scored = max(s - h, 0) * p
        future, future_valid = target[..., h * p:], valid[h * p:]
        guess = pred[..., :n_scored]
        if self.loss_kind == "poisson":
            per = nn.functional.poisson_nll_loss(guess, future, log_input=True, full=False, reduction="none")
        else:
            per = (guess - future) ** 2
        weight = channel_mask.bool()[:, :, None] & future_valid[None, None, :]
        return HeadOutput(pred, masked_mean(per, weight), {})
