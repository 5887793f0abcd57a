"""PopT: permutation-invariant aggregation of per-unit / per-channel tokens into K summary tokens.

A population transformer in the set-transformer style: ``n_layers`` self-attention blocks among the
units (permutation *equivariant*, padded units masked out as keys), then pooling by multi-head
attention from ``K`` learned seed vectors (permutation *invariant*). No positional information over
units enters, so reordering units (and their padding) leaves the K summary tokens unchanged; unit
identity reaches PopT only through the tokens themselves (the tokenizers' unit embeddings).

:func:`channel_summaries` turns a tokenizer's ``channel_patch`` tokens into one token per channel
(masked mean over time), the usual PopT input.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.perceiver import AttentionOption, _Block
from models.tokenizers.base import Tokens

__all__ = ["PopT", "channel_summaries"]


def channel_summaries(tokens: Tokens, n_channels: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Average each channel's tokens over time: one token per channel/unit.

    Tokens with ``channel_index == -1`` (channel-mixing tokens) and padded tokens are ignored.

    Shape:
        - tokens: :class:`~models.tokenizers.base.Tokens` ``(B, N, D)``
        - output: ``(B, C, D)`` summaries and ``(B, C)`` bool mask (True = channel has real tokens)
    """
    x, mask, chan = tokens.tokens, tokens.mask.bool(), tokens.channel_index
    b, _, d = x.shape
    if n_channels is None:
        n_channels = int(chan.max()) + 1 if chan.numel() else 0
    n_channels = max(int(n_channels), 1)
    keep = mask & (chan >= 0)
    idx = torch.where(keep, chan, torch.zeros_like(chan))
    w = keep.to(x.dtype)
    sums = x.new_zeros(b, n_channels, d).scatter_add_(1, idx.unsqueeze(-1).expand(-1, -1, d), x * w.unsqueeze(-1))
    counts = x.new_zeros(b, n_channels).scatter_add_(1, idx, w)
    return sums / counts.clamp_min(1.0).unsqueeze(-1), counts > 0


class PopT(nn.Module):
    """Population transformer: set attention over units, then K-seed attention pooling.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    n_summary_tokens : int
        ``K``, the number of summary tokens.
    n_heads : int
        Attention heads.
    n_layers : int
        Set self-attention blocks among units before pooling (0 = pooling only).
    attention : str, mapping or callable
        Attention kernel, as in :class:`models.perceiver.PerceiverIOEncoder` (note: position-based
        fractal patterns see unit order, so only ``"sdpa"`` keeps PopT permutation invariant).
    dropout : float
        Attention/MLP dropout.

    Shape:
        - x: ``(B, U, D)`` per-unit tokens; mask ``(B, U)`` bool, True = real unit
        - output: ``(B, K, D)``
    """

    def __init__(self, *, d_model: int, n_summary_tokens: int = 4, n_heads: int = 4, n_layers: int = 1,
                 attention: AttentionOption = "sdpa", dropout: float = 0.0, mlp_ratio: int = 2) -> None:
        super().__init__()
        if not _is_whole(n_summary_tokens, 1):
            raise ValueError(f"n_summary_tokens: must be >= 1, got {n_summary_tokens!r}")
        if not _is_whole(n_layers, 0):  # range(-1) silently built no set-attention block
            raise ValueError(f"n_layers: must be an integer >= 0 (set-attention blocks before pooling), "
                             f"got {n_layers!r}")
        n_layers = int(n_layers)
        opts = dict(d_model=d_model, n_heads=n_heads, attention=attention, dropout=dropout, mlp_ratio=mlp_ratio)
        self.d_model = int(d_model)
        self.set_blocks = nn.ModuleList([_Block(cross=False, **opts) for _ in range(n_layers)])
        self.seeds = nn.Parameter(torch.randn(int(n_summary_tokens), self.d_model) * 0.02)
        self.pool = _Block(cross=True, **opts)
        self.norm = nn.LayerNorm(self.d_model)

    def forward(self, x: Tensor, *, mask: Optional[Tensor] = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: needs shape (B, U, {self.d_model}), got {tuple(x.shape)}")
        b, u, _ = x.shape
        if mask is None:
            mask = torch.ones(b, u, dtype=torch.bool, device=x.device)
        if tuple(mask.shape) != (b, u):
            raise ValueError(f"mask: needs shape (B, U) = {(b, u)}, got {tuple(mask.shape)}")
        key_mask = mask.bool()[:, None, :]
        for block in self.set_blocks:
            x = block(x, mask=key_mask)
        seeds = self.seeds.to(x.dtype).expand(b, -1, -1)
        return self.norm(self.pool(seeds, x, mask=key_mask))

    def from_tokens(self, tokens: Tokens, n_channels: Optional[int] = None) -> Tensor:
        """PopT over :func:`channel_summaries` of tokenizer output (``channel_patch`` layout: per-channel tokens)."""
        if not bool((tokens.channel_index >= 0).any()):  # all ignored: the K tokens did not depend on the input
            raise ValueError("tokens: no token belongs to a channel (channel_index is -1 throughout, e.g. the "
                             "'time_mix' layout or behaviour/audio/video tokens); PopT pools channels: tokenize with "
                             "layout='channel_patch', or call PopT on your own (B, U, D) tokens")
        summaries, mask = channel_summaries(tokens, n_channels)
        return self(summaries, mask=mask)
