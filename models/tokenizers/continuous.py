"""Continuous multichannel signals (EEG, ECoG, iEEG, LFP, EMG) -> per-channel time-patch tokens."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from models.tokenizers.base import ChannelPatchTokenizer, Tokens

__all__ = ["ContinuousTokenizer", "CONTINUOUS_KEYS"]

CONTINUOUS_KEYS = ("lfp", "eeg", "ecog", "ieeg", "emg")


class ContinuousTokenizer(nn.Module):
    """Tokenize a ``(B, C, T)`` continuous recording: time patches plus channel embeddings.

    Each channel is z-scored (by default with running, causal statistics; recordings come in
    volts, microvolts or arbitrary units), cut into patches of ``patch_size`` samples and embedded
    with its channel identity (``<key>_channel_ids`` when the batch has them, else the channel
    position). Channel counts may differ between recordings: pad to a common ``C`` and mark the
    padding in ``<key>_mask``.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    patch_size : int
        Samples per token.
    n_channels : int
        Channel-id vocabulary (ids in ``[0, n_channels)``); e.g. a montage or electrode table.
    key : str
        Batch key this tokenizer reads (one of :data:`CONTINUOUS_KEYS` or any custom key).
    layout : {"channel_patch", "time_mix"}
        Token layout, see :mod:`models.tokenizers.base`.
    normalize : {"causal_zscore", "zscore", "none", "log1p"}
        Per-channel transform before patching.
    dropout : float
        Token dropout.

    Shape:
        - x: ``(B, C, T)``; mask ``(B, C)`` bool; channel_ids ``(B, C)`` long
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, C * ceil(T / P), D)`` channel-major
          (``channel_patch``) or ``(B, ceil(T / P), D)`` (``time_mix``)
    """

    def __init__(
        self, *, d_model: int, patch_size: int, n_channels: int = 256, key: str = "lfp",
        layout: str = "channel_patch", normalize: str = "causal_zscore", dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.batch_key = key
        self.embed = ChannelPatchTokenizer(
            d_model=d_model, patch_size=patch_size, n_channel_ids=n_channels, layout=layout,
            normalize=normalize, dropout=dropout, vocab_option="n_channels",
        )

    def forward(self, x: Tensor, *, mask: Optional[Tensor] = None, channel_ids: Optional[Tensor] = None) -> Tokens:
        return self.embed(x, mask=mask, ids=channel_ids, name=self.batch_key, ids_name=f"{self.batch_key}_channel_ids")

    def from_batch(self, batch: dict) -> Tokens:
        k = self.batch_key
        return self(batch[k], mask=batch.get(f"{k}_mask"), channel_ids=batch.get(f"{k}_channel_ids"))
