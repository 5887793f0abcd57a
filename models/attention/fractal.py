"""Fractal attention patterns, batched over every query at once, selectable wherever NeuroFMx attends.

Each pattern is an ``nn.Module`` with the attention-kernel signature of
:func:`models.perceiver.sdpa_attention` -- ``forward(q, k, v, *, mask=None, dropout_p=0.0)`` on
``(B, H, L, E)`` tensors, ``mask`` bool and True where a query may attend -- so the Perceiver and
PopT take them by name (``attention: hilbert | cantor | dragon | julia | fractal_blend``).

Measured complexity (``benchmarks/attention.py``, ``docs/attention.md``), not the design material's
O(log n) claims:

=================  =====================================  ==========================================
pattern            time                                   memory
=================  =====================================  ==========================================
hilbert            ``O(n w^2 E)``: ``w x w`` Hilbert-grid  ``O(n w^2 E)`` for gathered keys/values
                   cells per query
cantor             ``O(n 2^d log3(n) E)``: Cantor offsets  ``O(n 2^d log3(n) E)``
                   at every power-of-3 scale
dragon             ``O(n^2 E)``: dense attention plus a    ``O(n^2)`` bias
                   paperfolding bias
julia              ``O(n^2 E + n k)``: dense attention     ``O(n^2)`` bias
                   plus a soft escape-time bias over the
                   ``2n - 1`` relative offsets (k steps)
fractal_blend      the sum of its parts                    the sum of its parts
=================  =====================================  ==========================================

Only the two sparse patterns (Hilbert, Cantor) are sub-quadratic; Dragon and Julia change *which*
keys get weight, not how many are scored. Scores and softmax run in float32 for fp16/bf16/fp32
inputs (float64 stays float64), and a query with no allowed key returns zeros, so fp16 and bf16 stay finite.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from models._config_options import _is_real, _is_whole
from models.attention.patterns import (
    _query_positions,
    cantor_offsets,
    hilbert_neighbours,
    julia_escape_time,
    paperfolding,
)

__all__ = [
    "HilbertAttention",
    "CantorAttention",
    "DragonAttention",
    "JuliaAttention",
    "FractalBlendAttention",
    "FractalMultiheadAttention",
    "mark_cross_attention",
    "PATTERNS",
    "build_pattern",
]


def _expand_mask(mask: Optional[Tensor], b: int, h: int, lq: int, lk: int, device) -> Tensor:
    if mask is None:
        return torch.ones(1, 1, lq, lk, dtype=torch.bool, device=device)
    m = mask.bool()
    while m.ndim < 4:
        m = m.unsqueeze(0)
    return m.expand(m.shape[0], m.shape[1], lq, lk)


def _float32_scores(device: torch.device):
    """Keep the ``.float()`` score and value products in float32 under autocast too.

    Autocast would run the einsums in fp16/bf16 again, and ``q . k`` beyond 65504 is inf in fp16:
    a NaN attention output. Devices without autocast (meta) have nothing to disable.
    """
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # At least float32 (fp16/bf16 scores overflow), but float64 stays float64: rounding it to
    # float32 lost its precision silently (torch.autograd.gradcheck failed on every pattern).
    return torch.promote_types(dtype, torch.float32)


def _check_heads(n_heads: int, q: Tensor) -> None:
    # Per-head parameters broadcast against one head silently: a (B, 1, L, E) input came back (B, H, L, E).
    if q.ndim != 4 or q.shape[1] != n_heads:
        raise ValueError(f"q: needs shape (B, n_heads={n_heads}, L, E) for this pattern's per-head parameters, "
                         f"got {tuple(q.shape)}; build the pattern with n_heads={q.shape[1] if q.ndim == 4 else '...'}")


def _masked_softmax(scores: Tensor, allowed: Tensor) -> Tensor:
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    w = torch.softmax(scores, dim=-1)
    return w * allowed  # rows with no allowed key become all-zero instead of uniform


def _by_real_length(attend, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float,
                    cross: bool = False) -> Tensor:
    """Run ``attend`` on each row's real keys (and, in self-attention, real queries) only.

    The patterns place tokens by sequence position and size their geometry by the key count (Hilbert
    grid, Cantor scales, Julia span, where cross-attention queries and an appended null key sit), so
    padding moved the pattern: a sample's output depended on the other samples of its batch. Keys no
    query may see are padding; rows with the same real lengths are run together without them, so each
    row gets exactly the output it gets alone. Queries at padded positions attend to the real keys in
    a call of their own (as under SDPA's key-padding mask), never zeros: the kernel cannot tell a
    padded self-attention query from a cross-attention query whose count happens to equal the key
    count (one Perceiver latent per chunk and at most one token per chunk in the batch), and zeroing
    that latent dropped even its null key. ``cross=True`` (set by :func:`mark_cross_attention`) says
    every query is real, so no query is taken for padding whatever the counts.
    """
    if mask is not None and (mask.is_floating_point() or mask.is_complex()):
        # SDPA takes an additive float mask (0 = attend, -inf = not); .bool() read it the other way round, so
        # an all-zeros "attend everywhere" mask silently gave all-zero outputs.
        raise ValueError(f"mask: needs a bool mask, True where a query may attend, got dtype {mask.dtype}; for an "
                         f"additive SDPA mask pass mask == 0 (or torch.isfinite(mask) for a 0/-inf mask)")
    if q.shape[2] == 0 or k.shape[2] == 0:
        # An empty sequence, or no key at all: zeros as from SDPA (the geometry builders need a key).
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        return q.new_zeros(*q.shape[:3], v.shape[-1]).requires_grad_(needs_grad)
    if mask is None:
        return attend(q, k, v, mask=None, dropout_p=dropout_p)
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    full = _expand_mask(mask, b, h, lq, lk, q.device)
    key_ok = full.any(2).any(1).expand(b, lk)
    if bool(key_ok.all()):
        return attend(q, k, v, mask=mask, dropout_p=dropout_p)
    self_like = lq in (lk, lk - 1) and not cross
    query_ok = key_ok[:, :lq] if self_like else torch.ones(b, lq, dtype=torch.bool, device=q.device)
    full = full.expand(b, *full.shape[1:])
    n_key, n_query = key_ok.sum(1), query_ok.sum(1)
    out = q.new_zeros(b, h, lq, v.shape[-1])
    for nk, nq in torch.unique(torch.stack([n_key, n_query], 1), dim=0).tolist():
        if nk == 0:
            continue  # no key: zeros, as for a fully masked row
        rows = ((n_key == nk) & (n_query == nq)).nonzero().squeeze(1)
        r = rows.numel()
        # stable sort of "is padding" keeps the real tokens first and in their order
        kidx = torch.sort((~key_ok[rows]).to(torch.uint8), dim=1, stable=True).indices[:, :nk]
        qorder = torch.sort((~query_ok[rows]).to(torch.uint8), dim=1, stable=True).indices
        kr = k[rows].gather(2, kidx[:, None, :, None].expand(r, h, nk, k.shape[-1]))
        vr = v[rows].gather(2, kidx[:, None, :, None].expand(r, h, nk, v.shape[-1]))
        mk = full[rows]
        mk = mk.gather(3, kidx[:, None, None, :].expand(r, mk.shape[1], lq, nk))
        y_rows = q.new_zeros(r, h, lq, v.shape[-1])
        for qidx in (qorder[:, :nq], qorder[:, nq:]):  # real queries, then padded ones
            n = qidx.shape[1]
            if n == 0:
                continue
            qr = q[rows].gather(2, qidx[:, None, :, None].expand(r, h, n, q.shape[-1]))
            mr = mk.gather(2, qidx[:, None, :, None].expand(r, mk.shape[1], n, nk))
            y = attend(qr, kr, vr, mask=mr, dropout_p=dropout_p)
            y_rows = y_rows.scatter(2, qidx[:, None, :, None].expand_as(y), y)
        out[rows] = y_rows
    return out


class _SparsePattern(nn.Module):
    """Attention over a fixed set of ``M`` gathered keys per query (indices from the geometry)."""

    causal: bool
    cross: bool = False  # every query is real (cross-attention): see mark_cross_attention

    def _index(self, lq: int, lk: int, device) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        raise NotImplementedError

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor] = None, dropout_p: float = 0.0) -> Tensor:
        return _by_real_length(self._attend, q, k, v, mask, dropout_p, cross=self.cross)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor], dropout_p: float) -> Tensor:
        b, h, lq, e = q.shape
        lk = k.shape[2]
        idx, valid, bias = self._index(lq, lk, q.device)  # (Lq, M), (Lq, M), (H, Lq|1, M) | None
        m = idx.shape[1]
        flat = idx.reshape(-1)
        kg = k.index_select(2, flat).view(b, h, lq, m, e)
        vg = v.index_select(2, flat).view(b, h, lq, m, v.shape[-1])  # SDPA allows a value width other than E
        if mask is None:
            allowed = valid  # no (Lq, Lk) mask is ever built: memory stays O(Lq M)
        else:
            full = _expand_mask(mask, b, h, lq, lk, q.device)
            allowed = torch.gather(full, 3, idx.expand(full.shape[0], full.shape[1], lq, m)) & valid
        work = _work_dtype(q.dtype)
        with _float32_scores(q.device):
            scores = torch.einsum("bhqe,bhqme->bhqm", q.to(work), kg.to(work)) / math.sqrt(e)
            if bias is not None:
                scores = scores + bias.to(work)
            w = _masked_softmax(scores, allowed)
            if dropout_p > 0:
                w = nn.functional.dropout(w, dropout_p)
            return torch.einsum("bhqm,bhqme->bhqe", w, vg.to(work)).to(q.dtype)


class HilbertAttention(_SparsePattern):
    """Local-window attention on a Hilbert curve: each query sees a ``window x window`` grid patch.

    The sequence is laid along a Hilbert curve on a ``2^k x 2^k`` grid (``4^k >= n``); neighbours
    on the grid are near in the sequence at several scales at once, so a 7 x 7 patch covers both
    adjacent positions and a few farther ones. Cost ``O(n window^2)``.
    """

    def __init__(self, *, n_heads: int = 1, window: int = 7, causal: bool = False) -> None:
        super().__init__()
        if not _is_whole(window, 1) or int(window) % 2 == 0:  # was refused only in the first forward
            raise ValueError(f"window: must be an odd integer >= 1, got {window!r}")
        self.window, self.causal = int(window), causal
        self._cache: dict = {}

    def _index(self, lq, lk, device):
        key = (lq, lk, str(device))
        if key not in self._cache:
            # Normal tensors even when first built under inference_mode (Lightning's sanity check),
            # so a later training step can save them for backward.
            with torch.inference_mode(False):
                idx, valid = hilbert_neighbours(lq, lk, self.window, device=device)
                if self.causal:
                    valid = valid & (idx <= _query_positions(lq, lk, device)[:, None])
            if len(self._cache) >= 64:  # a few lengths per batch (see _by_real_length), not unbounded
                self._cache.clear()
            self._cache[key] = (idx, valid)
        idx, valid = self._cache[key]
        return idx, valid, None


class CantorAttention(_SparsePattern):
    """Multi-scale sampled attention: keys at Cantor-set offsets at every power-of-3 scale.

    Query ``i`` attends to ``i - o`` (and ``i + o`` unless causal) for offsets ``o`` from
    :func:`models.attention.patterns.cantor_offsets` (a true ternary Cantor set of ``depth``, scaled
    by ``3**s``), with a learned per-head bias for each scale that blends near and far context.
    Cost ``O(n 2^depth log3 n)``.
    """

    MAX_SCALES = 16  # 3**15 > 14M positions: enough for any sequence this model sees

    def __init__(self, *, n_heads: int = 1, depth: int = 3, causal: bool = False) -> None:
        super().__init__()
        if not _is_whole(depth, 0):  # was refused only in the first forward ("abc", 2.5 as TypeErrors)
            raise ValueError(f"depth: must be an integer >= 0, got {depth!r}")
        self.depth, self.causal, self.n_heads = int(depth), causal, n_heads
        self.scale_bias = nn.Parameter(torch.zeros(n_heads, self.MAX_SCALES))
        self._cache: dict = {}

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor] = None, dropout_p: float = 0.0) -> Tensor:
        _check_heads(self.n_heads, q)
        return super().forward(q, k, v, mask=mask, dropout_p=dropout_p)

    def _index(self, lq, lk, device):
        key = (lq, lk, str(device))
        if key not in self._cache:
            with torch.inference_mode(False):  # see HilbertAttention._index
                off, scale = cantor_offsets(lk, depth=self.depth, device=device)
                if not self.causal:
                    off = torch.cat([off, -off[1:]])
                    scale = torch.cat([scale, scale[1:]])
                pos = _query_positions(lq, lk, device)[:, None] - off[None, :]
                valid = (pos >= 0) & (pos < lk)
                if len(self._cache) >= 64:  # see HilbertAttention._index
                    self._cache.clear()
                self._cache[key] = (pos.clamp(0, lk - 1), valid, scale)
        idx, valid, scale = self._cache[key]
        bias = self.scale_bias[:, scale].unsqueeze(1)  # (H, 1, M)
        return idx, valid, bias


class _BiasedDense(nn.Module):
    """Dense attention with an additive ``(H, Lq, Lk)`` bias from a relative-offset pattern."""

    causal: bool
    cross: bool = False  # every query is real (cross-attention): see mark_cross_attention

    def offset_bias(self, d: Tensor, lk: int) -> Tensor:
        """Bias ``(H, ...)`` for relative offsets ``d = query_pos - key_pos``."""
        raise NotImplementedError

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor] = None, dropout_p: float = 0.0) -> Tensor:
        _check_heads(self.n_heads, q)
        return _by_real_length(self._attend, q, k, v, mask, dropout_p, cross=self.cross)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Optional[Tensor], dropout_p: float) -> Tensor:
        b, h, lq, e = q.shape
        lk = k.shape[2]
        qpos = _query_positions(lq, lk, q.device)
        d_all = torch.arange(-(lk - 1), lk, device=q.device)
        table = self.offset_bias(d_all, lk)  # (H, 2 lk - 1): each offset's pattern computed once
        rel = qpos[:, None] - torch.arange(lk, device=q.device)[None, :] + (lk - 1)
        bias = table[:, rel]  # (H, Lq, Lk)
        allowed = _expand_mask(mask, b, h, lq, lk, q.device)
        if self.causal:
            allowed = allowed & (rel >= lk - 1)
        work = _work_dtype(q.dtype)
        with _float32_scores(q.device):
            scores = torch.einsum("bhqe,bhke->bhqk", q.to(work), k.to(work)) / math.sqrt(e) + bias.to(work)
            w = _masked_softmax(scores, allowed)
            if dropout_p > 0:
                w = nn.functional.dropout(w, dropout_p)
            return torch.einsum("bhqk,bhke->bhqe", w, v.to(work)).to(q.dtype)


class DragonAttention(_BiasedDense):
    """Dense attention weighted by the Dragon curve's self-similar turn sequence at several scales.

    The bias for offset ``d`` is ``sum_s w[h, s] * t(|d| // 2**s + 1)`` with ``t`` the regular
    paperfolding sequence (+1/-1 turns of the Dragon curve) and ``w`` learned per head and scale.
    Cost ``O(n^2)``.
    """

    def __init__(self, *, n_heads: int = 1, n_scales: int = 8, causal: bool = False) -> None:
        super().__init__()
        if not _is_whole(n_scales, 1):
            raise ValueError(f"n_scales: must be >= 1 (dyadic scales of the paperfolding bias), got {n_scales!r}")
        n_scales = int(n_scales)
        self.causal, self.n_heads = causal, n_heads
        self.scales = n_scales
        self.weight = nn.Parameter(torch.full((n_heads, n_scales), 0.5 / math.sqrt(n_scales)))

    def offset_bias(self, d, lk):
        a = d.abs()
        feats = torch.stack([paperfolding(a // 2**s + 1) for s in range(self.scales)])  # (S, D)
        return self.weight @ feats.to(self.weight.dtype)


class JuliaAttention(_BiasedDense):
    """Dense attention weighted by a differentiable Julia-set escape time of the relative offset.

    Offsets ``d`` are placed on the real segment ``[-span, span]`` of the complex plane; the soft
    escape time of ``z <- z^2 + c`` (:func:`models.attention.patterns.julia_escape_time`) times a
    learned per-head gain is the bias. ``c`` is learned too. Cost ``O(n^2 + n * iterations)``.
    """

    def __init__(self, *, n_heads: int = 1, c: tuple[float, float] = (-0.7, 0.27), iterations: int = 24,
                 span: float = 1.5, causal: bool = False) -> None:
        super().__init__()
        # 0 iterations divides the escape time by zero and inf span puts every offset at inf: NaN biases.
        if not _is_whole(iterations, 1):
            raise ValueError(f"iterations: must be >= 1 (escape-time steps), got {iterations!r}")
        iterations = int(iterations)
        if isinstance(c, (str, bytes)) or not isinstance(c, Sequence) or len(c) != 2 or \
                not all(_is_real(v, -math.inf) for v in c):  # [1.0] was an IndexError, "abc" read as 'a', 'b'
            raise ValueError(f"c: needs the Julia constant as two finite numbers [real, imag], got {c!r}")
        if not _is_real(span, 0.0, open_low=True):
            raise ValueError(f"span: must be a finite number > 0 (half-width of the offset segment), got {span}")
        self.causal, self.iterations, self.span, self.n_heads = causal, iterations, float(span), n_heads
        self.c_real = nn.Parameter(torch.tensor(float(c[0])))
        self.c_imag = nn.Parameter(torch.tensor(float(c[1])))
        self.gain = nn.Parameter(torch.ones(n_heads))

    def offset_bias(self, d, lk):
        z0 = torch.complex(self.span * d.float() / max(lk - 1, 1), torch.zeros_like(d, dtype=torch.float32))
        tau = julia_escape_time(z0, self.c_real, self.c_imag, iterations=self.iterations)
        return self.gain[:, None] * tau[None, :]


PATTERNS = {
    "hilbert": HilbertAttention,
    "cantor": CantorAttention,
    "dragon": DragonAttention,
    "julia": JuliaAttention,
}


class FractalBlendAttention(nn.Module):
    """A learned per-head softmax blend of the outputs of several patterns."""

    def __init__(self, *, n_heads: int = 1, patterns: Sequence[str] = ("hilbert", "cantor", "dragon", "julia"),
                 causal: bool = False) -> None:
        super().__init__()
        if isinstance(patterns, (str, bytes)):  # "hilbert" was read as the patterns h, i, l, ...
            raise ValueError(f"patterns: needs a list of pattern names, e.g. [{patterns}], got {patterns!r}")
        unknown = [p for p in patterns if p not in PATTERNS]
        if unknown or not patterns:
            raise ValueError(f"patterns: unknown {unknown or patterns}; choose from {sorted(PATTERNS)}")
        self.parts = nn.ModuleDict({p: PATTERNS[p](n_heads=n_heads, causal=causal) for p in patterns})
        self.logits = nn.Parameter(torch.zeros(n_heads, len(patterns)))
        self.n_heads = n_heads

    def forward(self, q, k, v, *, mask=None, dropout_p: float = 0.0):
        _check_heads(self.n_heads, q)
        outs = torch.stack([part(q, k, v, mask=mask, dropout_p=dropout_p) for part in self.parts.values()], -1)
        # Blend in at least float32: in fp16 the blend weights' gradient sums outs * grad over the whole
        # batch and overflowed to inf (outputs ~30, B L E = 44 terms).
        work = _work_dtype(torch.promote_types(outs.dtype, self.logits.dtype))
        w = torch.softmax(self.logits.to(work), -1)  # (H, P)
        return (outs.to(work) * w[None, :, None, None, :]).sum(-1).to(outs.dtype)


def mark_cross_attention(module: nn.Module) -> nn.Module:
    """Tell the patterns in ``module`` that they serve cross-attention, so all queries are real.

    In a padded batch the kernel cannot tell a padded self-attention query from a cross-attention query
    whose count happens to equal the key count (Perceiver latents against a chunk's tokens); the
    Perceiver marks its cross-attention blocks so no latent is ever taken for padding.
    """
    for part in module.modules():
        if isinstance(part, (_SparsePattern, _BiasedDense)):
            part.cross = True
    return module


def build_pattern(name: str, *, n_heads: int, causal: bool = False, **kwargs) -> nn.Module:
    """Instantiate a pattern by name (``hilbert``, ``cantor``, ``dragon``, ``julia``, ``fractal_blend``)."""
    if name == "fractal_blend":
        return FractalBlendAttention(n_heads=n_heads, causal=causal, **kwargs)
    if name not in PATTERNS:
        raise ValueError(f"attention: unknown pattern {name!r}; choose from {sorted(PATTERNS) + ['fractal_blend']}")
    return PATTERNS[name](n_heads=n_heads, causal=causal, **kwargs)


class FractalMultiheadAttention(nn.Module):
    """Multi-head attention (projections + a pattern or torch SDPA) for standalone use and benchmarks.

    Shape:
        - x ``(B, Lq, D)``, context ``(B, Lk, D)`` (defaults to ``x``)
        - key_padding_mask ``(B, Lk)`` bool, True = a real key
        - output ``(B, Lq, D)``
    """

    def __init__(self, *, d_model: int, n_heads: int, pattern: str = "sdpa", causal: bool = False, **kwargs) -> None:
        super().__init__()
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:  # 0 divided by zero
            raise ValueError(f"n_heads: must be an integer >= 1 dividing d_model={d_model}, got {n_heads!r}")
        if d_model % n_heads:
            raise ValueError(f"n_heads: d_model={d_model} must be divisible by n_heads={n_heads}")
        if pattern == "sdpa" and kwargs:  # were silently ignored: torch SDPA has no pattern options
            raise ValueError(f"pattern: 'sdpa' takes no pattern options, got {sorted(kwargs)}; choose a fractal pattern")
        self.n_heads, self.causal, self.pattern = n_heads, causal, pattern
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.kernel = None if pattern == "sdpa" else build_pattern(pattern, n_heads=n_heads, causal=causal, **kwargs)

    def forward(self, x: Tensor, context: Optional[Tensor] = None, *, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        context = x if context is None else context
        b, lq, d = x.shape
        lk, h = context.shape[1], self.n_heads
        q = self.q(x).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_padding_mask is None else key_padding_mask.bool()[:, None, None, :]
        if self.kernel is None:
            if self.causal:
                causal = torch.ones(lq, lk, dtype=torch.bool, device=x.device).tril()
                mask = causal if mask is None else mask & causal
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = self.kernel(q, k, v, mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, lq, d))
