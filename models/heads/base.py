"""Shared pieces of the task heads: the :class:`HeadOutput`, a channel-identity readout, masked losses.

Heads read the backbone's latent sequence ``(B, S, D)``, one latent per *step* of
``patch_size`` samples of the batch's time axis (with the Perceiver's ``n_latents=1``, ``S`` is the
number of token bins and ``patch_size`` the tokenizer patch; with ``chunk_size > 1`` use
``patch_size * chunk_size``). Per-channel targets are ``(B, C, T)``; :func:`channel_view` gets that
view of any batch modality.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.tokenizers.base import value_range

__all__ = ["HeadOutput", "ChannelReadout", "channel_view", "masked_mean", "TIME_MAJOR_KEYS", "check_latents"]

# Batch keys stored (B, T, C); every other channel modality is (B, C, T). See models.data.batch.
TIME_MAJOR_KEYS = ("spikes", "calcium", "fmri", "behavior")
_ID_KEYS = {"spikes": "unit_ids", "calcium": "calcium_ids", "fmri": "fmri_roi_ids"}


class HeadOutput(NamedTuple):
    """What every head returns: its prediction, a scalar loss and detached metrics (floats as tensors)."""

    prediction: Tensor
    loss: Tensor
    metrics: dict


def check_latents(latents: Tensor, d_model: int) -> None:
    if not isinstance(latents, Tensor) or latents.ndim != 3 or latents.shape[-1] != d_model:
        raise ValueError(f"latents: needs shape (B, S, {d_model}), got {getattr(latents, 'shape', type(latents))}")


def channel_view(batch: Mapping[str, Any], key: str) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """``(x (B, C, T), mask (B, C) or None, ids (B, C) or None)`` for modality ``key`` of a batch."""
    if key not in batch:
        raise ValueError(f"batch: has no {key!r} modality; keys: {sorted(batch)}")
    x = batch[key]
    if key in TIME_MAJOR_KEYS and isinstance(x, Tensor) and x.ndim == 3:  # else the caller names the bad shape
        x = x.transpose(1, 2)
    ids = batch.get(_ID_KEYS.get(key, f"{key}_channel_ids"))
    return x, batch.get(f"{key}_mask"), ids


def masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(values * weights) / sum(weights)``; 0 (with gradient) when nothing is selected."""
    weights = weights.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class ChannelReadout(nn.Module):
    """Latent steps -> per-channel samples through channel-identity embeddings.

    ``y[b, c, s * P + p] = <h(z[b, s])_p, e[id_c]> + bias[id_c]`` with ``h = Linear(D, P * E)``:
    any number and order of channels can be read out, and a channel keeps its readout across batches.

    Shape:
        - latents ``(B, S, D)``; channel_ids ``(B, C)`` long (or None: ``0 .. C-1``)
        - output ``(B, C, S * P)``
    """

    def __init__(self, *, d_model: int, patch_size: int, n_channel_ids: int, embed_dim: int = 32) -> None:
        super().__init__()
        if not _is_whole(n_channel_ids, 1):
            raise ValueError(f"n_channel_ids: must be >= 1, got {n_channel_ids!r}")
        if not _is_whole(embed_dim, 1):  # 0 built a readout that ignores the latents; -1 a torch shape error
            raise ValueError(f"embed_dim: must be an integer >= 1 (channel readout width), got {embed_dim!r}")
        self.patch_size, self.embed_dim, self.n_channel_ids = int(patch_size), int(embed_dim), int(n_channel_ids)
        self.proj = nn.Linear(d_model, self.patch_size * self.embed_dim)
        self.channel_embedding = nn.Embedding(self.n_channel_ids, self.embed_dim)
        self.channel_bias = nn.Embedding(self.n_channel_ids, 1)
        # Small readout at init: predictions start near the bias, so a Poisson head (exp of the
        # output) does not begin with exploding rates and losses in the hundreds.
        nn.init.normal_(self.channel_embedding.weight, std=0.02)
        nn.init.zeros_(self.channel_bias.weight)

    def forward(self, latents: Tensor, *, n_channels: int, channel_ids: Optional[Tensor] = None,
                channel_mask: Optional[Tensor] = None) -> Tensor:
        b, s, _ = latents.shape
        for name, t in (("channel_ids", channel_ids), ("channel_mask", channel_mask)):
            if t is not None and tuple(t.shape) != (b, n_channels):  # failed as a broadcast RuntimeError
                raise ValueError(f"{name}: needs shape (B, C) = {(b, n_channels)}, one entry per target channel, "
                                 f"got {tuple(t.shape)}")
        if channel_ids is None:
            channel_ids = torch.arange(n_channels, device=latents.device).expand(b, n_channels)
        if channel_mask is not None:
            channel_ids = torch.where(channel_mask.bool(), channel_ids, torch.zeros_like(channel_ids))
        if channel_ids.is_floating_point() and not bool((channel_ids == channel_ids.round()).all()):
            # .long() read channel 2.5 as channel 2
            bad = channel_ids[channel_ids != channel_ids.round()]
            raise ValueError(f"channel_ids: must be integers, got non-integer values {bad.tolist()[:5]}")
        channel_ids = channel_ids.long()
        if channel_ids.numel():
            lo, hi = value_range(channel_ids)
            if lo < 0 or hi >= self.n_channel_ids:
                raise ValueError(
                    f"channel_ids: must lie in [0, {self.n_channel_ids}), got [{lo}, {hi}]; raise n_channel_ids "
                    "(NeuroFMx sets it from the modality's tokenizer: model.tokenizers.<key>.n_channels or n_units)"
                )
        h = self.proj(latents).view(b, s, self.patch_size, self.embed_dim)
        y = torch.einsum("bspe,bce->bcsp", h, self.channel_embedding(channel_ids))
        return y.reshape(b, y.shape[1], s * self.patch_size) + self.channel_bias(channel_ids)


def fit_time(target: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Crop or zero-pad the last axis of ``target`` to ``length``; also a bool mask of real samples."""
    t = target.shape[-1]
    valid = torch.arange(length, device=target.device) < t
    if t >= length:
        return target[..., :length], valid
    return nn.functional.pad(target, (0, length - t)), valid
