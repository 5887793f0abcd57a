"""Calcium imaging traces (dF/F) -> per-neuron time-patch tokens."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from models.tokenizers.base import ChannelPatchTokenizer, Tokens

__all__ = ["CalciumTokenizer"]


class CalciumTokenizer(nn.Module):
    """Tokenize ``(B, T, N)`` calcium traces: per-neuron patches plus neuron identity.

    Traces are z-scored per neuron by running (causal) statistics (dF/F baselines and indicator
    brightness vary by cell). Neuron ids come from ``calcium_ids`` when the batch has them, else the
    neuron position.

    Parameters
    ----------
    d_model, patch_size : int
        Token width and frames per token.
    n_neurons : int
        Neuron-id vocabulary size.
    layout : {"channel_patch", "time_mix"}
        Token layout, see :mod:`models.tokenizers.base`.
    dropout : float
        Token dropout.

    Shape:
        - calcium: ``(B, T, N)``; mask ``(B, N)`` bool; neuron_ids ``(B, N)`` long
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, N * ceil(T / P), D)`` neuron-major
          (``channel_patch``) or ``(B, ceil(T / P), D)`` (``time_mix``)
    """

    batch_key = "calcium"

    def __init__(
        self, *, d_model: int, patch_size: int, n_neurons: int = 1024, layout: str = "channel_patch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = ChannelPatchTokenizer(
            d_model=d_model, patch_size=patch_size, n_channel_ids=n_neurons, layout=layout,
            normalize="causal_zscore", dropout=dropout, vocab_option="n_neurons",
        )

    def forward(self, calcium: Tensor, *, mask: Optional[Tensor] = None, neuron_ids: Optional[Tensor] = None) -> Tokens:
        if not isinstance(calcium, Tensor) or calcium.ndim != 3:
            raise ValueError(f"calcium: needs a tensor (B, T, N), got {tuple(calcium.shape) if isinstance(calcium, Tensor) else type(calcium).__name__}")
        return self.embed(calcium.transpose(1, 2), mask=mask, ids=neuron_ids, name="calcium", ids_name="calcium_ids")

    def from_batch(self, batch: dict) -> Tokens:
        return self(batch["calcium"], mask=batch.get("calcium_mask"), neuron_ids=batch.get("calcium_ids"))
