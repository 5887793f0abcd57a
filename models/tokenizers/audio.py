"""Audio / vocalisations (log-mel spectrogram) -> one token per time patch of frames."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole
from models.tokenizers.base import Tokens, causal_zscore_channels, patchify, sinusoidal_encoding

__all__ = ["AudioTokenizer", "rescale_time_index"]


def rescale_time_index(n_tokens: int, num_time_tokens: Optional[int], device, *,
                       frames_per_token: Optional[int] = None, n_frames: Optional[int] = None) -> Tensor:
    """Map ``n_tokens`` tokens spread over a window onto ``num_time_tokens`` common token bins.

    Audio and video run at their own frame rates; each token gets the common bin holding its
    *last* frame, so no token sits in a bin earlier than frames it has seen (causal chunks stay
    causal). Token ``n`` ends at window fraction ``(n + 1) / n_tokens``, or, when
    ``frames_per_token`` and ``n_frames`` are given (a partial last patch), at
    ``min((n + 1) * frames_per_token, n_frames) / n_frames``.
    """
    steps = torch.arange(n_tokens, device=device)
    if num_time_tokens is None:
        return steps
    if frames_per_token is not None and n_frames is not None:
        end_frame, total = ((steps + 1) * int(frames_per_token)).clamp_(max=int(n_frames)), int(n_frames)
    else:
        end_frame, total = steps + 1, n_tokens
    end = -(-end_frame * num_time_tokens // total) - 1  # integer ceil: exact, no float rounding
    return end.clamp_(0, max(num_time_tokens - 1, 0))


class AudioTokenizer(nn.Module):
    """Tokenize a ``(B, n_mels, T_a)`` log-mel spectrogram with a strided 1-D conv over frames.

    Each mel band is z-scored by its running statistics (microphone gain differs between rigs;
    running, not whole-window, statistics keep a token blind to later frames); a conv with
    kernel = stride = ``patch_size`` frames mixes all bands of a patch into one token, followed by an
    MLP. Token time indices are rescaled to the common token grid when ``num_time_tokens`` is given.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    n_mels : int
        Mel bands.
    patch_size : int
        Spectrogram frames per token.
    dropout : float
        Token dropout.

    Shape:
        - audio: ``(B, n_mels, T_a)``
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, ceil(T_a / P), D)``, channel_index -1
    """

    batch_key = "audio"

    def __init__(self, *, d_model: int, n_mels: int = 64, patch_size: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if not _is_whole(n_mels, 1):  # 0 built a projection of nothing; -1 failed as a negative torch shape
            raise ValueError(f"n_mels: must be an integer >= 1 (mel bands per frame), got {n_mels!r}")
        if not _is_whole(patch_size, 1):  # 0 failed in forward with ZeroDivisionError; 2.5 was read as 2
            raise ValueError(f"patch_size: must be an integer >= 1 (spectrogram frames per token), got {patch_size!r}")
        self.d_model, self.n_mels, self.patch_size = int(d_model), int(n_mels), int(patch_size)
        self.proj = nn.Linear(self.n_mels * self.patch_size, self.d_model)
        self.mlp = nn.Sequential(nn.LayerNorm(self.d_model), nn.Linear(self.d_model, 2 * self.d_model), nn.GELU(),
                                 nn.Linear(2 * self.d_model, self.d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, audio: Tensor, *, num_time_tokens: Optional[int] = None) -> Tokens:
        if not isinstance(audio, Tensor) or audio.ndim != 3 or audio.shape[1] != self.n_mels:
            raise ValueError(
                f"audio: needs a tensor (B, n_mels={self.n_mels}, T_a), got {tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__}"
            )
        b = audio.shape[0]
        patches = patchify(causal_zscore_channels(audio.to(self.proj.weight.dtype)), self.patch_size)  # (B, M, Na, P)
        n = patches.shape[2]
        tok = self.proj(patches.permute(0, 2, 1, 3).reshape(b, n, -1))
        tok = tok + self.mlp(tok)
        time_index = rescale_time_index(n, num_time_tokens, audio.device, frames_per_token=self.patch_size,
                                        n_frames=audio.shape[-1])
        tok = tok + sinusoidal_encoding(time_index, self.d_model).to(tok.dtype)
        minus_one = torch.full((b, n), -1, dtype=torch.long, device=audio.device)
        return Tokens(
            self.dropout(tok), torch.ones(b, n, dtype=torch.bool, device=audio.device), time_index.expand(b, n),
            minus_one, torch.zeros_like(minus_one),
        )

    def from_batch(self, batch: dict, *, num_time_tokens: Optional[int] = None) -> Tokens:
        return self(batch["audio"], num_time_tokens=num_time_tokens)
