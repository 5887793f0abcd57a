"""Binned spikes / unit activity -> tokens, one token per (unit, time patch) with unit identity."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from models.tokenizers.base import ChannelPatchTokenizer, Tokens

__all__ = ["SpikesTokenizer"]


class SpikesTokenizer(nn.Module):
    """Tokenize binned spike counts with learned unit-identity embeddings.

    Counts are compressed with ``log1p`` (bursts would otherwise dominate a linear patch
    embedding); unit ids index an embedding table so the same unit gets the same identity across
    sessions and windows, and units may be padded (``spikes_mask``) to a common count per batch.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    patch_size : int
        Time bins per token.
    n_units : int
        Unit-id vocabulary size (ids in ``[0, n_units)``).
    layout : {"channel_patch", "time_mix"}
        ``channel_patch`` (default): one token per unit and patch, so PopT can aggregate units;
        ``time_mix``: one token per patch, a masked mean over units.
    dropout : float
        Token dropout.

    Shape:
        - spikes: ``(B, T, U)`` float counts; mask ``(B, U)`` bool; unit_ids ``(B, U)`` long
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, U * ceil(T / P), D)`` unit-major
          (``channel_patch``) or ``(B, ceil(T / P), D)`` (``time_mix``)
    """

    batch_key = "spikes"

    def __init__(
        self, *, d_model: int, patch_size: int, n_units: int = 1024, layout: str = "channel_patch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = ChannelPatchTokenizer(
            d_model=d_model, patch_size=patch_size, n_channel_ids=n_units, layout=layout,
            normalize="log1p", dropout=dropout, vocab_option="n_units",
        )

    def forward(self, spikes: Tensor, *, mask: Optional[Tensor] = None, unit_ids: Optional[Tensor] = None) -> Tokens:
        if not isinstance(spikes, Tensor) or spikes.ndim != 3:
            raise ValueError(f"spikes: needs a tensor (B, T, U), got {tuple(spikes.shape) if isinstance(spikes, Tensor) else type(spikes).__name__}")
        return self.embed(spikes.transpose(1, 2), mask=mask, ids=unit_ids, name="spikes", ids_name="unit_ids")

    def from_batch(self, batch: dict) -> Tokens:
        return self(batch["spikes"], mask=batch.get("spikes_mask"), unit_ids=batch.get("unit_ids"))
