"""Perceiver-IO encoder that keeps time: latents per time chunk cross-attend to that chunk's tokens.

Design choice (time structure). A plain Perceiver squeezes all tokens into one unordered latent
array, which leaves the Mamba backbone nothing to scan over time. Here the latent array is
replicated per *time chunk* of ``chunk_size`` token bins: chunk ``c`` owns ``n_latents`` latents
(shared learned vectors plus a sinusoidal chunk encoding) that cross-attend only to tokens whose
``time_index // chunk_size == c`` (any modality, any channel). Latent self-attention then mixes
chunks under ``latent_attention``: ``"causal"`` (chunk ``c`` sees chunks ``<= c``, the default, so
forecasting stays causal end to end), ``"local"`` (within a chunk) or ``"full"``. The output is a
sequence over time, ``(B, n_chunks * n_latents, D)``, chunk-major, which the backbone scans.

Attention is pluggable: ``attention=`` takes a name registered with :func:`register_attention`
(default ``"sdpa"``, torch's fused scaled-dot-product attention), the name of a fractal pattern of
:mod:`models.attention` (``hilbert``, ``cantor``, ``dragon``, ``julia``, ``fractal_blend``; one
instance per attention block, so learned pattern parameters are per block), a mapping
``{"name": ..., **pattern options}``, or a callable with the signature of :func:`sdpa_attention`.

Cross-attention runs per chunk on the chunk's own tokens (:func:`group_by_chunk` gathers them into
padded rows), so its cost is linear in the number of tokens rather than ``n_chunks x N``.

Every attention appends one learned *null* key/value (after the real keys, so key positions seen
by position-based patterns are unchanged) that every query may attend to, so a chunk with no real
tokens (all channels padded, or past the end of a shorter modality) yields a defined output instead
of a NaN from a fully masked softmax row.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from models._config_options import _is_real, _is_whole
from models.tokenizers.base import sinusoidal_encoding

__all__ = [
    "PerceiverIOEncoder",
    "PerceiverOutput",
    "MultiheadAttention",
    "sdpa_attention",
    "register_attention",
    "get_attention",
    "ATTENTION_FUNCTIONS",
    "LATENT_ATTENTION",
    "group_by_chunk",
    "AttentionOption",
]

AttentionFn = Callable[..., Tensor]
LATENT_ATTENTION = ("causal", "local", "full")


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor] = None, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention through ``torch.nn.functional.scaled_dot_product_attention``.

    Shape:
        - q: ``(B, H, Lq, E)``; k, v: ``(B, H, Lk, E)``
        - mask: bool broadcastable to ``(B, H, Lq, Lk)``, True = may attend
        - output: ``(B, H, Lq, E)``
    """
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


ATTENTION_FUNCTIONS: dict[str, AttentionFn] = {"sdpa": sdpa_attention}


def register_attention(name: str, fn: AttentionFn) -> AttentionFn:
    """Make ``fn`` selectable as ``attention=name`` (same signature as :func:`sdpa_attention`)."""
    ATTENTION_FUNCTIONS[name] = fn
    return fn


AttentionOption = Union[str, Mapping[str, Any], AttentionFn]


def get_attention(attention: AttentionOption, *, n_heads: int = 1) -> AttentionFn:
    """Resolve an attention option: a callable, a registered name, or a fractal pattern name/mapping.

    Fractal patterns are built fresh on every call (``n_heads`` sizes their per-head parameters).
    """
    if callable(attention):
        return attention
    if isinstance(attention, Mapping):
        opts = dict(attention)
        name = opts.pop("name", None)
    else:
        name, opts = attention, {}
    if name in ATTENTION_FUNCTIONS and not opts:
        return ATTENTION_FUNCTIONS[name]
    try:
        from models.attention import PATTERNS, build_pattern
    except ImportError:  # the fractal patterns are optional for this module
        PATTERNS, build_pattern = {}, None
    if build_pattern is None or (name not in PATTERNS and name != "fractal_blend"):
        known = sorted(ATTENTION_FUNCTIONS) + sorted(PATTERNS) + (["fractal_blend"] if PATTERNS else [])
        raise ValueError(f"attention: unknown {attention!r}; choose from {known} or pass a callable")
    try:
        return build_pattern(name, n_heads=n_heads, **opts)
    except (TypeError, ValueError) as exc:  # "window: ..." alone pointed at model.perceiver.window, which is no option
        raise ValueError(f"attention ({name}): {exc}") from exc


class MultiheadAttention(nn.Module):
    """Multi-head attention with a pluggable kernel and a learned null key/value.

    Shape:
        - query ``(B, Lq, D)``, context ``(B, Lk, D)``, mask bool ``(B | 1, Lq | 1, Lk)``, True = attend
        - output ``(B, Lq, D)``
    """

    def __init__(self, *, d_model: int, n_heads: int, attention: AttentionOption = "sdpa",
                 dropout: float = 0.0, cross: bool = False) -> None:
        super().__init__()
        if not _is_whole(n_heads, 1):  # 0 divided by zero; -1 failed in the first forward with a negative shape
            raise ValueError(f"n_heads: must be an integer >= 1 dividing d_model={d_model}, got {n_heads!r}")
        n_heads = int(n_heads)
        if d_model % n_heads:
            raise ValueError(f"n_heads: d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.attn_fn = get_attention(attention, n_heads=n_heads)  # an nn.Module pattern registers as a child
        if cross and isinstance(self.attn_fn, nn.Module):
            # A fractal pattern cannot tell latents from padded self-attention queries when the counts
            # match (one latent per chunk, one token per chunk): tell it every query is real.
            from models.attention import mark_cross_attention

            mark_cross_attention(self.attn_fn)
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.null_kv = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(self, query: Tensor, context: Tensor, *, mask: Optional[Tensor] = None) -> Tensor:
        b, lq, d = query.shape
        context = torch.cat([context, self.null_kv.expand(b, 1, d).to(context.dtype)], dim=1)
        h = self.n_heads
        q = self.q(query).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        if mask is not None:
            mask = mask.bool()
            null = torch.ones(*mask.shape[:-1], 1, dtype=torch.bool, device=mask.device)
            mask = torch.cat([mask, null], dim=-1).unsqueeze(1)  # (B, 1, Lq, Lk + 1)
        y = self.attn_fn(q, k, v, mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, lq, d))


class _Block(nn.Module):
    """Pre-norm attention (cross or self) followed by a GELU MLP, both residual."""

    def __init__(self, *, d_model: int, n_heads: int, attention, dropout: float, mlp_ratio: int, cross: bool) -> None:
        super().__init__()
        # NaN passed nn.Dropout and failed in the first attention call; "abc" as "'<' not supported"
        if not (_is_real(dropout, 0.0) and float(dropout) < 1):
            raise ValueError(f"dropout: must be a number in [0, 1), got {dropout!r}")
        if not _is_whole(mlp_ratio, 1):  # PopT's 0 built an MLP of nothing, 2.5 failed inside torch
            raise ValueError(f"mlp_ratio: must be an integer >= 1, got {mlp_ratio!r}")
        dropout, mlp_ratio = float(dropout), int(mlp_ratio)
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model) if cross else None
        self.attn = MultiheadAttention(d_model=d_model, n_heads=n_heads, attention=attention, dropout=dropout,
                                       cross=cross)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Optional[Tensor] = None, *, mask: Optional[Tensor] = None) -> Tensor:
        q = self.norm_q(x)
        kv = q if context is None else self.norm_kv(context)
        x = x + self.attn(q, kv, mask=mask)
        return x + self.mlp(self.norm_mlp(x))


def group_by_chunk(tokens: Tensor, mask: Tensor, chunk: Tensor, n_chunks: int) -> tuple[Tensor, Tensor]:
    """Gather each chunk's real tokens into its own padded row, so cross-attention costs O(N), not O(T N).

    Tokens outside ``[0, n_chunks)`` or masked out are dropped; ``M`` is the largest number of real
    tokens in one chunk of one sample.

    Shape:
        - tokens ``(B, N, D)``, mask ``(B, N)`` bool, chunk ``(B, N)`` long
        - output ``(B * n_chunks, M, D)`` tokens and ``(B * n_chunks, M)`` bool mask
    """
    b, n, d = tokens.shape
    keep = mask & (chunk >= 0) & (chunk < n_chunks)
    bucket = torch.where(keep, chunk, torch.full_like(chunk, n_chunks))  # dropped tokens -> spare bucket
    counts = torch.zeros(b, n_chunks + 1, dtype=torch.long, device=tokens.device)
    counts.scatter_add_(1, bucket, torch.ones_like(bucket))
    m = max(int(counts[:, :n_chunks].max()) if n_chunks else 0, 1)
    order = torch.argsort(bucket, dim=1, stable=True)
    sorted_bucket = bucket.gather(1, order)
    starts = counts.cumsum(1) - counts
    slot = torch.arange(n, device=tokens.device) - starts.gather(1, sorted_bucket)
    spare = n_chunks * m  # one extra slot per sample collects the dropped tokens
    flat = torch.where(sorted_bucket < n_chunks, sorted_bucket * m + slot, torch.full_like(slot, spare))
    grouped = tokens.new_zeros(b, spare + 1, d).scatter_(1, flat.unsqueeze(-1).expand(-1, -1, d),
                                                          tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, d)))
    valid = torch.zeros(b, spare + 1, dtype=torch.bool, device=tokens.device).scatter_(1, flat, True)
    return grouped[:, :spare].reshape(b * n_chunks, m, d), valid[:, :spare].reshape(b * n_chunks, m)


class PerceiverOutput(NamedTuple):
    """Shape:
        - latents: ``(B, n_chunks * n_latents, D)`` chunk-major
        - time_index: ``(n_chunks * n_latents,)`` long, first token bin of each latent's chunk
        - chunk_index: ``(n_chunks * n_latents,)`` long
    """

    latents: Tensor
    time_index: Tensor
    chunk_index: Tensor


class PerceiverIOEncoder(nn.Module):
    """Cross-attention from per-chunk latents to all modality tokens, then latent self-attention.

    Parameters
    ----------
    d_model : int
        Token and latent width ``D``.
    n_latents : int
        Latents per time chunk (1 gives exactly one latent per chunk: a plain time series).
    chunk_size : int
        Token time bins per chunk; the latent sequence has ``ceil(n_time / chunk_size)`` chunks.
    n_heads : int
        Attention heads.
    n_self_layers : int
        Latent self-attention blocks after the cross-attention.
    latent_attention : {"causal", "local", "full"}
        Which chunks a latent may see in self-attention (module docstring).
    attention : str, mapping or callable
        Attention kernel (module docstring), default ``"sdpa"``.
    dropout : float
        Attention and MLP dropout.
    mlp_ratio : int
        MLP hidden width as a multiple of ``D``.

    Shape:
        - tokens ``(B, N, D)``, mask ``(B, N)`` bool, time_index ``(B, N)`` long
        - output :class:`PerceiverOutput`, latents ``(B, ceil(n_time / chunk_size) * n_latents, D)``
    """

    def __init__(
        self, *, d_model: int, n_latents: int = 1, chunk_size: int = 1, n_heads: int = 4, n_self_layers: int = 1,
        latent_attention: str = "causal", attention: AttentionOption = "sdpa", dropout: float = 0.0,
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        if latent_attention not in LATENT_ATTENTION:
            raise ValueError(f"latent_attention: must be one of {LATENT_ATTENTION}, got {latent_attention!r}")
        for name, value, least in (("n_latents", n_latents, 1), ("chunk_size", chunk_size, 1),
                                   ("n_self_layers", n_self_layers, 0), ("mlp_ratio", mlp_ratio, 1)):
            # int() would turn chunk_size 2.5 into 2 and n_self_layers -1 into no layers, silently
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"{name}: must be an integer >= {least}, got {value!r}")
        self.d_model, self.n_latents, self.chunk_size = int(d_model), int(n_latents), int(chunk_size)
        self.latent_attention = latent_attention
        self.latent_array = nn.Parameter(torch.randn(self.n_latents, self.d_model) * 0.02)
        opts = dict(d_model=d_model, n_heads=n_heads, attention=attention, dropout=dropout, mlp_ratio=mlp_ratio)
        self.cross = _Block(cross=True, **opts)
        self.self_blocks = nn.ModuleList([_Block(cross=False, **opts) for _ in range(n_self_layers)])
        self.norm = nn.LayerNorm(self.d_model)

    def forward(self, tokens: Tensor, *, mask: Optional[Tensor] = None, time_index: Tensor,
                n_time: Optional[int] = None) -> PerceiverOutput:
        if tokens.ndim != 3 or tokens.shape[-1] != self.d_model:
            raise ValueError(f"tokens: needs shape (B, N, {self.d_model}), got {tuple(tokens.shape)}")
        b, n, _ = tokens.shape
        if tuple(time_index.shape) != (b, n):
            raise ValueError(f"time_index: needs shape (B, N) = {(b, n)}, got {tuple(time_index.shape)}")
        if time_index.is_floating_point() or time_index.is_complex():  # failed inside scatter() without a name
            raise ValueError(f"time_index: needs an integer (long) tensor of token time bins, got {time_index.dtype}")
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
        if tuple(mask.shape) != (b, n):  # a (B, N') mask failed as a broadcast RuntimeError in group_by_chunk
            raise ValueError(f"mask: needs shape (B, N) = {(b, n)}, one flag per token, got {tuple(mask.shape)}")
        if n_time is None:  # a host sync; pass n_time from the tokenizer to avoid it
            n_time = int(time_index.max()) + 1 if n else 1
        elif isinstance(n_time, str) or not _is_whole(n_time, 1):  # 0 dropped every token, 2.5 the bins from 2 on
            raise ValueError(f"n_time: must be an integer >= 1 (token time bins of the window), got {n_time!r}")
        n_chunks = -(-int(n_time) // self.chunk_size)
        chunk_of_latent = torch.arange(n_chunks, device=tokens.device).repeat_interleave(self.n_latents)
        queries = self.latent_array.repeat(n_chunks, 1) + sinusoidal_encoding(chunk_of_latent, self.d_model)
        token_chunk = torch.div(time_index, self.chunk_size, rounding_mode="floor")
        context, context_mask = group_by_chunk(tokens, mask.bool(), token_chunk, n_chunks)  # (B*C, M, D)
        q = queries.to(tokens.dtype).view(1, n_chunks, self.n_latents, self.d_model).expand(b, -1, -1, -1)
        x = self.cross(q.reshape(b * n_chunks, self.n_latents, self.d_model), context, mask=context_mask[:, None, :])
        x = x.reshape(b, n_chunks * self.n_latents, self.d_model)
        if self.self_blocks:
            ci, cj = chunk_of_latent[:, None], chunk_of_latent[None, :]
            self_mask = {"causal": ci >= cj, "local": ci == cj, "full": torch.ones_like(ci >= cj)}[self.latent_attention]
            for block in self.self_blocks:
                x = block(x, mask=self_mask[None])
        return PerceiverOutput(self.norm(x), chunk_of_latent * self.chunk_size, chunk_of_latent)
