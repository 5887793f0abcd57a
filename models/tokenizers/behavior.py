"""Behaviour (pose keypoints, kinematics) -> one token per time patch, mixing all features."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.tokenizers.base import Tokens, patchify, sinusoidal_encoding

__all__ = ["BehaviorTokenizer"]


class BehaviorTokenizer(nn.Module):
    """Tokenize ``(B, T, F)`` behaviour: per-time-step mixing of all features in a patch.

    Behavioural features (x/y of each keypoint, velocities, pupil size) only mean something
    together, so each token is an MLP of the whole ``P x F`` patch rather than one token per
    feature. Fewer features than ``n_features`` are zero-padded; ``mask`` marks missing features
    (e.g. an occluded keypoint), which are zeroed so they cannot affect the token. A sample with no
    real feature has no behaviour: its tokens are padding, as a channel modality's with every channel masked.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    patch_size : int
        Time bins per token.
    n_features : int
        Maximum feature count ``F`` (flattened keypoints x coordinates).
    dropout : float
        Token dropout.

    Shape:
        - behavior: ``(B, T, F')`` with ``F' <= n_features``; mask ``(B, F')`` bool
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, ceil(T / P), D)``, channel_index -1
    """

    batch_key = "behavior"

    def __init__(self, *, d_model: int, patch_size: int, n_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not _is_whole(n_features, 1):  # 2.5 was read as 2, "abc" failed in int() without a name
            raise ValueError(f"n_features: must be >= 1, got {n_features!r}")
        self.d_model, self.patch_size, self.n_features = int(d_model), int(patch_size), int(n_features)
        self.proj = nn.Sequential(
            nn.Linear(self.patch_size * self.n_features, 2 * self.d_model), nn.GELU(),
            nn.Linear(2 * self.d_model, self.d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, behavior: Tensor, *, mask: Optional[Tensor] = None) -> Tokens:
        if not isinstance(behavior, Tensor) or behavior.ndim != 3:
            raise ValueError(f"behavior: needs a tensor (B, T, F), got {tuple(behavior.shape) if isinstance(behavior, Tensor) else type(behavior).__name__}")
        b, _, f = behavior.shape
        if f > self.n_features:
            raise ValueError(f"behavior: has {f} features, the tokenizer takes at most n_features={self.n_features}")
        x = behavior.to(self.proj[0].weight.dtype).transpose(1, 2)  # (B, F, T)
        if mask is not None:
            if not isinstance(mask, Tensor):  # a list failed as "'list' object has no attribute 'shape'"
                raise ValueError(f"behavior_mask: needs a torch.Tensor (B, F) = {(b, f)}, got {type(mask).__name__}; "
                                 "convert with torch.as_tensor")
            if tuple(mask.shape) != (b, f):
                raise ValueError(f"behavior_mask: needs shape (B, F) = {(b, f)}, got {tuple(mask.shape)}")
            x = torch.where(mask.bool().unsqueeze(-1), x, torch.zeros((), device=x.device))
        if f < self.n_features:
            x = nn.functional.pad(x, (0, 0, 0, self.n_features - f))
        patches = patchify(x, self.patch_size)  # (B, F, Np, P)
        n = patches.shape[2]
        flat = patches.permute(0, 2, 1, 3).reshape(b, n, -1)
        steps = torch.arange(n, device=x.device)
        tok = self.proj(flat)
        tok = tok + sinusoidal_encoding(steps, self.d_model).to(tok.dtype)
        minus_one = torch.full((b, n), -1, dtype=torch.long, device=x.device)
        # Every feature masked (the sample lacks behaviour) was read as real input "all features 0".
        # No features at all ((B, T, 0)) is no behaviour either, not "every feature 0".
        real = (torch.full((b,), f > 0, dtype=torch.bool, device=x.device) if mask is None or f == 0
                else mask.bool().any(1).to(x.device))
        return Tokens(
            self.dropout(tok), real[:, None].expand(b, n), steps.expand(b, n), minus_one, torch.zeros_like(minus_one),
        )

    def from_batch(self, batch: dict) -> Tokens:
        return self(batch["behavior"], mask=batch.get("behavior_mask"))
