"""Video (behaviour camera) -> one token per group of frames, via a small 3-D conv."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.tokenizers.audio import rescale_time_index
from models.tokenizers.base import Tokens, sinusoidal_encoding

__all__ = ["VideoTokenizer"]


class VideoTokenizer(nn.Module):
    """Tokenize ``(B, 3, T_v, H, W)`` video with two 3-D convolutions and spatial mean pooling.

    The first conv (3x3x3, spatial stride 2, causal in time) sees short motion; the second
    (``patch_size`` frames x 3x3, stride ``(patch_size, 2, 2)``) groups frames into tokens. Spatial
    positions are averaged, so any frame size works and cost stays small; token time indices are
    rescaled to the common grid when ``num_time_tokens`` is given. Frames are expected in [0, 1] or
    standardised.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    patch_size : int
        Frames per token.
    hidden : int
        Channels of the first conv.
    dropout : float
        Token dropout.

    Shape:
        - video: ``(B, 3, T_v, H, W)``
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, floor((T_v - P) / P) + 1, D)``,
          channel_index -1
    """

    batch_key = "video"

    def __init__(self, *, d_model: int, patch_size: int = 4, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        if not _is_whole(hidden, 1):  # 0 built an empty conv; -1, 2.5 and "abc" failed inside torch
            raise ValueError(f"hidden: must be an integer >= 1 (channels of the first conv), got {hidden!r}")
        if not _is_whole(patch_size, 1):  # 0 built a conv of kernel 0 that failed in forward; 1.5 was read as 1
            raise ValueError(f"patch_size: must be an integer >= 1 (frames per token), got {patch_size!r}")
        hidden = int(hidden)
        self.d_model, self.patch_size = int(d_model), int(patch_size)
        self.net = nn.Sequential(
            nn.Conv3d(3, hidden, kernel_size=3, stride=(1, 2, 2), padding=(0, 1, 1)), nn.GELU(),
            nn.Conv3d(hidden, self.d_model, kernel_size=(self.patch_size, 3, 3), stride=(self.patch_size, 2, 2),
                      padding=(0, 1, 1)), nn.GELU(),
        )
        self.out = nn.Linear(self.d_model, self.d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, video: Tensor, *, num_time_tokens: Optional[int] = None) -> Tokens:
        if not isinstance(video, Tensor) or video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video: needs a tensor (B, 3, T_v, H, W), got {tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__}")
        if video.shape[2] < self.patch_size:
            raise ValueError(f"video: has {video.shape[2]} frames, needs at least patch_size={self.patch_size}")
        b = video.shape[0]
        # Pad two frames on the left only: the 3-frame conv is causal in time (frame t sees t-2..t).
        causal = nn.functional.pad(video.to(self.out.weight.dtype), (0, 0, 0, 0, 2, 0))
        feat = self.net(causal).mean(dim=(-1, -2)).transpose(1, 2)  # (B, Nv, D)
        n = feat.shape[1]
        # The strided conv drops a partial last patch: token n ends at frame (n + 1) * P, not at (n + 1) / n of the
        # window (which put tokens of a window of 7 frames, P=4, in a later chunk than their frames).
        time_index = rescale_time_index(n, num_time_tokens, video.device, frames_per_token=self.patch_size,
                                        n_frames=video.shape[2])
        tok = self.out(feat)
        tok = tok + sinusoidal_encoding(time_index, self.d_model).to(tok.dtype)
        minus_one = torch.full((b, n), -1, dtype=torch.long, device=video.device)
        return Tokens(
            self.dropout(tok), torch.ones(b, n, dtype=torch.bool, device=video.device), time_index.expand(b, n),
            minus_one, torch.zeros_like(minus_one),
        )

    def from_batch(self, batch: dict, *, num_time_tokens: Optional[int] = None) -> Tokens:
        return self(batch["video"], num_time_tokens=num_time_tokens)
