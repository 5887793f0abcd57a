"""Shared pieces of every tokenizer: the :class:`Tokens` output and the per-channel patch embedder.

Every tokenizer maps one modality of a batch (see :mod:`models.data.batch`) to a set of tokens of
one shared width ``D`` plus a padding mask and per-token time indices, so the Perceiver can fuse any
mix of modalities and still keep time structure. Time indices are in *token bins*: token bin ``n``
covers samples ``[n * patch_size, (n + 1) * patch_size)`` of the batch's common time axis.

Two token layouts exist (``layout=``):

``"channel_patch"``
    One token per (channel, time patch): ``N = C * ceil(T / P)``, channel-major. Keeps channel
    identity per token, so PopT can pool per unit/channel and padded channels are simply masked.
``"time_mix"``
    One token per time patch: the per-channel tokens are averaged over the real channels (a masked
    mean, so padded channels never count). ``N = ceil(T / P)``, far fewer tokens for wide arrays.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from models._config_options import _is_whole

__all__ = [
    "Tokens",
    "ChannelPatchTokenizer",
    "sinusoidal_encoding",
    "zscore_channels",
    "causal_zscore_channels",
    "patchify",
    "check_channel_input",
    "value_range",
    "LAYOUTS",
    "NORMALIZATIONS",
]

LAYOUTS = ("channel_patch", "time_mix")
NORMALIZATIONS = ("none", "zscore", "causal_zscore", "log1p")


class Tokens(NamedTuple):
    """Tokens of one or several modalities.

    Shape:
        - tokens: ``(B, N, D)``
        - mask: ``(B, N)`` bool, True for real tokens (False = padding, never attended to)
        - time_index: ``(B, N)`` long, token time bin of each token
        - channel_index: ``(B, N)`` long, which input channel/unit the token belongs to
          (unique across modalities after :class:`models.tokenizers.MultimodalTokenizer`);
          ``-1`` for tokens that mix channels (``time_mix`` layout, behaviour, audio, video)
        - modality_index: ``(B, N)`` long, index of the modality the token came from
    """

    tokens: Tensor
    mask: Tensor
    time_index: Tensor
    channel_index: Tensor
    modality_index: Tensor


def sinusoidal_encoding(positions: Tensor, dim: int, *, max_period: float = 10_000.0) -> Tensor:
    """Fixed sin/cos encoding of (possibly fractional) positions.

    Shape:
        positions: ``(...)`` -> ``(..., dim)``
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1)
    )
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        enc = torch.nn.functional.pad(enc, (0, 1))
    return enc


def zscore_channels(x: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Standardise each channel over time (last axis); flat or padded channels become ~zeros.

    Recordings arrive in volts, microvolts or arbitrary units; per-window z-scoring puts every
    dataset on one scale without a dataset-wide pass. The floor on the std is relative to the
    channel's peak amplitude (``eps * max|x|``), so volt-scale data is not clamped while a flat
    channel's rounding noise is not blown up to unit variance.

    Shape:
        x: ``(..., T)`` -> ``(..., T)``
    """
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    tiny = torch.finfo(x.dtype).tiny
    floor = eps * x.abs().amax(-1, keepdim=True) + tiny
    # max(std, floor) taken under the root: sqrt'(0) is inf, and inf * 0 made the input gradient of a flat
    # channel (or of the first sample, below) NaN; the clamp keeps the root's argument off 0.
    return (x - mean) / torch.maximum(var, floor.square()).clamp_min(tiny).sqrt()


def causal_zscore_channels(x: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Standardise each sample by the mean and std of its channel *up to that sample*.

    Whole-window z-scoring lets every token see statistics of the future, which breaks the
    forecasting head's causality; running statistics keep token ``t`` a function of samples
    ``<= t`` only. Sums accumulate in float64 so long windows with large offsets do not cancel.
    The std floor follows :func:`zscore_channels` with the running peak amplitude.

    Shape:
        x: ``(..., T)`` -> ``(..., T)``
    """
    xd = x.double()
    n = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=torch.float64)
    mean = xd.cumsum(-1) / n
    var = (xd.square().cumsum(-1) / n - mean.square()).clamp_min(0)
    tiny = torch.finfo(torch.float64).tiny
    floor = eps * xd.abs().cummax(-1).values + tiny
    return ((xd - mean) / torch.maximum(var, floor.square()).clamp_min(tiny).sqrt()).to(x.dtype)


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Cut the last axis into patches, right-padding with zeros to a whole number of patches.

    Shape:
        x: ``(..., T)`` -> ``(..., ceil(T / P), P)``
    """
    t = x.shape[-1]
    n = -(-t // patch_size)
    if n * patch_size != t:
        x = nn.functional.pad(x, (0, n * patch_size - t))
    return x.reshape(*x.shape[:-1], n, patch_size)


def value_range(t: Tensor) -> tuple[int, int]:
    """``(min, max)`` of an integer tensor with one device sync (for id range checks)."""
    lo, hi = torch.stack(torch.aminmax(t)).tolist()  # one copy to the host, not one per int()
    return int(lo), int(hi)


def check_channel_input(x: Tensor, mask: Optional[Tensor], ids: Optional[Tensor], name: str,
                        ids_name: Optional[str] = None) -> None:
    """Validate a ``(B, C, T)`` input with its ``(B, C)`` mask and ids; raise ``ValueError`` naming the key."""
    if not isinstance(x, Tensor):  # a numpy array has the right shape yet fails: say it is the type
        raise ValueError(f"{name}: needs a torch.Tensor (B, C, T), got {type(x).__name__}; convert with "
                         "torch.as_tensor")
    if x.ndim != 3:
        raise ValueError(f"{name}: needs a tensor (B, C, T), got shape {tuple(x.shape)}")
    for what, t in ((f"{name}_mask", mask), (ids_name or f"{name}_ids", ids)):
        if t is not None and not isinstance(t, Tensor):  # a list or numpy mask failed as "'list' has no .shape"
            raise ValueError(f"{what}: needs a torch.Tensor (B, C), got {type(t).__name__}; convert with "
                             "torch.as_tensor")
        if t is not None and tuple(t.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{what}: needs shape (B, C) = {tuple(x.shape[:2])} to match {name}, got {tuple(t.shape)}"
            )


class ChannelPatchTokenizer(nn.Module):
    """Embed ``(B, C, T)`` multichannel series as per-channel time patches.

    Each channel's window is cut into patches of ``patch_size`` samples; a patch becomes
    ``u = Linear(P, D)(patch) + channel_embedding[id]``. ``channel_patch`` tokens are
    ``u + MLP(u)``; ``time_mix`` tokens are a DeepSets pooling ``t = Linear(mean_c GELU(u_c))``
    followed by ``t + MLP(t)`` (the GELU before the mean lets channel identity interact with the
    values; the MLP runs once per time bin, not once per channel, which keeps wide arrays cheap).
    A sinusoidal encoding of the token time bin is added last.

    Parameters
    ----------
    d_model : int
        Token width ``D``.
    patch_size : int
        Samples per token ``P``; the token rate is ``fs / P``.
    n_channel_ids : int
        Size of the channel/unit identity vocabulary; 0 disables identity embeddings.
    layout : {"channel_patch", "time_mix"}
        Token layout (module docstring).
    normalize : {"none", "zscore", "causal_zscore", "log1p"}
        Per-channel input transform: ``causal_zscore`` (the default) standardises by running
        statistics so tokens never see the future; ``zscore`` by whole-window statistics (not
        causal: use only without forecasting) for continuous signals of unknown units,
        ``log1p`` for spike counts (compresses bursts), ``none`` for pre-normalised data.
    dropout : float
        Dropout on the output tokens.
    vocab_option : str
        Name of the config option that sets ``n_channel_ids`` (``n_channels``, ``n_units``...), named
        in the error for an out-of-vocabulary id; ``forward(..., ids_name=)`` names the batch key of the ids.

    Shape:
        - x: ``(B, C, T)``; mask ``(B, C)`` bool (True = real channel); ids ``(B, C)`` long
        - output :class:`Tokens` with ``N = C * ceil(T / P)`` (``channel_patch``, channel-major:
          token ``c * n_patches + n``) or ``N = ceil(T / P)`` (``time_mix``)
    """

    def __init__(
        self,
        *,
        d_model: int,
        patch_size: int,
        n_channel_ids: int = 0,
        layout: str = "channel_patch",
        normalize: str = "causal_zscore",
        dropout: float = 0.0,
        vocab_option: str = "n_channel_ids",
    ) -> None:
        super().__init__()
        if not _is_whole(patch_size, 1):  # int() read 2.5 as 2 and failed on "abc" without a name
            raise ValueError(f"patch_size: must be an integer >= 1, got {patch_size!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: must be one of {LAYOUTS}, got {layout!r}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize: must be one of {NORMALIZATIONS}, got {normalize!r}")
        if not _is_whole(n_channel_ids, 0):  # named as the config option that sets it (n_channels, n_units...)
            raise ValueError(f"{vocab_option}: must be an integer >= 0 (the channel-id vocabulary; 0 = no channel "
                             f"ids), got {n_channel_ids!r}")
        self.d_model = int(d_model)
        self.patch_size = int(patch_size)
        self.n_channel_ids = int(n_channel_ids)
        self.vocab_option = vocab_option  # the config option that sets n_channel_ids, named in id errors
        self.layout = layout
        self.normalize = normalize
        self.value_proj = nn.Linear(self.patch_size, self.d_model)
        self.channel_embedding = nn.Embedding(self.n_channel_ids, self.d_model) if self.n_channel_ids else None
        self.mlp = nn.Sequential(
            nn.LayerNorm(self.d_model), nn.Linear(self.d_model, 2 * self.d_model), nn.GELU(),
            nn.Linear(2 * self.d_model, self.d_model),
        )
        self.mix_out = nn.Linear(self.d_model, self.d_model) if layout == "time_mix" else None
        self.dropout = nn.Dropout(dropout)

    def _ids(self, ids: Optional[Tensor], mask: Tensor, name: str, key: str) -> Optional[Tensor]:
        if self.channel_embedding is None:
            return None
        b, c = mask.shape
        if ids is None:
            ids = torch.arange(c, device=mask.device).expand(b, c)
        elif ids.is_floating_point() and not bool((ids[mask] == ids[mask].round()).all()):
            # .long() read unit 3.5 as unit 3
            raise ValueError(f"{name}: channel/unit ids must be integers, got non-integer values "
                             f"{ids[mask][ids[mask] != ids[mask].round()].tolist()[:5]}")
        ids = torch.where(mask, ids.long(), torch.zeros((), dtype=torch.long, device=mask.device))
        if ids.numel():
            lo, hi = value_range(ids)
            if lo < 0:  # no vocabulary size fixes a negative id
                raise ValueError(
                    f"{name}: channel/unit ids must lie in [0, {self.n_channel_ids}), got range [{lo}, {hi}]; "
                    f"negative ids are not allowed: mark padded channels False in {key}_mask instead"
                )
            if hi >= self.n_channel_ids:
                raise ValueError(
                    f"{name}: channel/unit ids must lie in [0, {self.n_channel_ids}), got range [{lo}, {hi}]; "
                    f"raise the tokenizer's {self.vocab_option} (model.tokenizers.{key}.{self.vocab_option}) to "
                    f"at least {hi + 1}"
                )
        return ids

    def forward(
        self, x: Tensor, *, mask: Optional[Tensor] = None, ids: Optional[Tensor] = None, name: str = "x",
        ids_name: Optional[str] = None,
    ) -> Tokens:
        check_channel_input(x, mask, ids, name, ids_name)
        b, c, _ = x.shape
        if mask is None:
            mask = torch.ones(b, c, dtype=torch.bool, device=x.device)
        mask = mask.bool()
        # Zero padded channels first (where, not multiply: NaN * 0 is NaN) so whatever sits in the
        # padding can never reach real tokens.
        # Normalise in float32 at least (float64 when the module is float64), embed in the weights' dtype.
        work = torch.promote_types(self.value_proj.weight.dtype, torch.float32)
        x = torch.where(mask.unsqueeze(-1), x.to(work), torch.zeros((), device=x.device))
        if self.normalize == "zscore":
            x = zscore_channels(x)
        elif self.normalize == "causal_zscore":
            x = causal_zscore_channels(x)
        elif self.normalize == "log1p":
            x = torch.log1p(x.clamp_min(0))
        patches = patchify(x, self.patch_size)  # (B, C, Np, P)
        n_patches = patches.shape[2]
        tok = self.value_proj(patches.to(self.value_proj.weight.dtype))
        ids = self._ids(ids, mask, ids_name or f"{name}_ids", name)
        if ids is not None:
            tok = tok + self.channel_embedding(ids).unsqueeze(2)
        steps = torch.arange(n_patches, device=x.device)
        time_enc = sinusoidal_encoding(steps, self.d_model).to(tok.dtype)
        if self.layout == "time_mix":
            w = mask.to(tok.dtype)
            count = w.sum(1)  # (B,)
            # The channel sum as (B, 1, C) @ (B, C, Np * D): einsum("bcnd,bc->bnd") ran it as a
            # matrix-vector product on a permuted copy, ~4x slower forward + backward on CPU.
            summed = torch.bmm(w.unsqueeze(1), nn.functional.gelu(tok).reshape(b, c, n_patches * self.d_model))
            pooled = summed.reshape(b, n_patches, self.d_model) / count.clamp_min(1.0)[:, None, None]
            tok = self.mix_out(pooled)
            tok = tok + self.mlp(tok) + time_enc  # (B, Np, D)
            tok_mask = (count > 0)[:, None].expand(b, n_patches)
            time_index = steps.expand(b, n_patches)
            channel_index = torch.full((b, n_patches), -1, dtype=torch.long, device=x.device)
        else:
            tok = tok + self.mlp(tok)  # (B, C, Np, D)
            tok = (tok + time_enc).reshape(b, c * n_patches, self.d_model)
            tok_mask = mask.unsqueeze(-1).expand(b, c, n_patches).reshape(b, -1)
            time_index = steps.repeat(c).expand(b, -1)
            channel_index = torch.arange(c, device=x.device).repeat_interleave(n_patches).expand(b, -1)
        modality_index = torch.zeros_like(time_index)
        return Tokens(self.dropout(tok), tok_mask, time_index, channel_index, modality_index)
