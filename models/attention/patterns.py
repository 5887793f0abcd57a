"""The fractal geometry behind the attention patterns, as vectorized index and weight builders.

Everything here is computed once per (sequence length, device) and is cheap next to the attention
itself: Hilbert-curve coordinates (``O(n log n)`` integer ops), Cantor-set offsets, the regular
paperfolding (Dragon-curve) sequence and the soft Julia-set escape time over relative offsets.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "hilbert_d2xy",
    "hilbert_xy2d",
    "hilbert_neighbours",
    "cantor_set",
    "cantor_offsets",
    "paperfolding",
    "julia_escape_time",
]


def hilbert_d2xy(d: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hilbert index -> cell ``(x, y)`` on a ``2**order`` square grid (vectorized classic algorithm).

    Shape:
        d ``(...)`` long -> x, y ``(...)`` long
    """
    x = torch.zeros_like(d)
    y = torch.zeros_like(d)
    t = d.clone()
    s = 1
    while s < 2**order:
        rx = (t // 2) & 1
        ry = (t ^ rx) & 1
        # rotate the quadrant so the curve stays continuous
        flip = (ry == 0) & (rx == 1)
        x = torch.where(flip, s - 1 - x, x)
        y = torch.where(flip, s - 1 - y, y)
        swap = ry == 0
        x, y = torch.where(swap, y, x), torch.where(swap, x, y)
        x = x + s * rx
        y = y + s * ry
        t = t // 4
        s *= 2
    return x, y


def hilbert_xy2d(x: torch.Tensor, y: torch.Tensor, order: int) -> torch.Tensor:
    """Cell ``(x, y)`` -> Hilbert index on a ``2**order`` grid; inverse of :func:`hilbert_d2xy`."""
    n = 2**order
    d = torch.zeros_like(x)
    x, y = x.clone(), y.clone()
    s = n // 2
    while s > 0:
        rx = ((x & s) > 0).long()
        ry = ((y & s) > 0).long()
        d = d + s * s * ((3 * rx) ^ ry)
        flip = (ry == 0) & (rx == 1)
        x = torch.where(flip, s - 1 - x, x)
        y = torch.where(flip, s - 1 - y, y)
        swap = ry == 0
        x, y = torch.where(swap, y, x), torch.where(swap, x, y)
        s //= 2
    return d


def hilbert_neighbours(n_query: int, n_key: int, window: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Key indices within a ``window x window`` cell neighbourhood of each query on the Hilbert grid.

    Sequence position ``i`` is the ``i``-th cell along a Hilbert curve; a query attends to the keys
    whose cells lie within Chebyshev distance ``window // 2`` of its own. Queries of a
    cross-attention are placed at the proportional key position (``n_query == n_key - 1`` counts as
    self-attention plus an appended null key: query ``i`` stays at position ``i``).

    Returns
    -------
    index : ``(n_query, window**2)`` long key indices (clamped into range)
    valid : ``(n_query, window**2)`` bool, False where the cell is off the grid or beyond ``n_key``
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window: must be an odd integer >= 1, got {window}")
    order = max(1, math.ceil(math.log(max(n_key, 2), 4)))
    qpos = _query_positions(n_query, n_key, device)
    qx, qy = hilbert_d2xy(qpos, order)
    r = window // 2
    dx, dy = torch.meshgrid(torch.arange(-r, r + 1, device=device), torch.arange(-r, r + 1, device=device), indexing="ij")
    cx = qx[:, None] + dx.reshape(1, -1)
    cy = qy[:, None] + dy.reshape(1, -1)
    side = 2**order
    inside = (cx >= 0) & (cx < side) & (cy >= 0) & (cy < side)
    idx = hilbert_xy2d(cx.clamp(0, side - 1), cy.clamp(0, side - 1), order)
    valid = inside & (idx < n_key)
    return idx.clamp(max=n_key - 1), valid


def _query_positions(n_query: int, n_key: int, device=None) -> torch.Tensor:
    # n_key - 1: self-attention plus the null key that models.perceiver.MultiheadAttention appends
    # after the real keys; query i is still at key position i.
    if n_query in (n_key, n_key - 1):
        return torch.arange(n_query, device=device)
    # Cross-attention: spread the queries over the key sequence.
    return torch.round(torch.linspace(0, n_key - 1, n_query, device=device)).long()


def cantor_set(depth: int) -> torch.Tensor:
    """Integers in ``[0, 3**depth)`` whose ternary digits contain no 1: the true ternary Cantor set.

    There are ``2**depth`` of them; divided by ``3**depth`` they are the left end points of the
    intervals of the Cantor set's ``depth``-th construction step.
    """
    if depth < 0:
        raise ValueError(f"depth: must be >= 0, got {depth}")
    pts = torch.zeros(1, dtype=torch.long)
    for level in range(depth):
        pts = torch.cat([pts, pts + 2 * 3**level])
    return pts.sort().values


def cantor_offsets(n: int, *, depth: int = 3, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative key offsets sampled at geometric scales from a Cantor set, with their scale index.

    Scale ``s`` contributes the offsets ``c * 3**s`` for the ``2**depth`` Cantor points ``c`` of the
    given depth, for all scales with an offset below ``n``; duplicates keep the finest scale. The
    number of offsets is ``O(2**depth * log3 n)``, so attention over them costs ``O(n log n)``.

    Returns
    -------
    offsets : ``(M,)`` long, sorted, starting at 0
    scale : ``(M,)`` long scale index of each offset
    """
    # Level L's points are all >= 2 * 3**L: once that reaches n they are dropped at every scale, so deeper levels
    # add nothing (and depth=100 built 2**100 points, killing the process).
    useful = 0
    while useful < depth and 2 * 3**useful < max(n, 2):
        useful += 1
    base = cantor_set(useful)
    offsets, scales = [], []
    s = 0
    while 3**s < max(n, 2):
        o = base * 3**s
        o = o[o < n]
        offsets.append(o)
        scales.append(torch.full_like(o, s))
        s += 1
    off = torch.cat(offsets)
    sc = torch.cat(scales)
    order = torch.argsort(off * 64 + sc)  # sort by offset, finest scale first
    off, sc = off[order], sc[order]
    keep = torch.ones_like(off, dtype=torch.bool)
    keep[1:] = off[1:] != off[:-1]
    return off[keep].to(device), sc[keep].to(device)


def paperfolding(k: torch.Tensor) -> torch.Tensor:
    """Regular paperfolding sequence (the Dragon curve's turns), +1 or -1 for ``k >= 1``.

    With ``k = 2**m * (2q + 1)`` the turn is +1 when ``q`` is even. ``k = 0`` maps to 0.
    """
    k = k.long()
    safe = k.clamp_min(1)
    low = safe & (-safe)  # 2**m, the lowest set bit
    q = (safe // low - 1) // 2
    turn = torch.where(q % 2 == 0, 1.0, -1.0)
    return torch.where(k > 0, turn, torch.zeros_like(turn))


def julia_escape_time(
    z0: torch.Tensor,
    c_real: torch.Tensor,
    c_imag: torch.Tensor,
    *,
    iterations: int = 24,
    radius: float = 2.0,
    smoothness: float = 4.0,
) -> torch.Tensor:
    """Soft (differentiable) normalized escape time of ``z <- z**2 + c`` from complex ``z0``.

    A hard escape test blocks gradients, so each step escapes with probability
    ``sigmoid(smoothness * (|z| - radius))``; the expected first-escape step over ``iterations``
    (points that never escape count as ``iterations``) is returned in ``[0, 1]``. Gradients flow to
    ``c`` and ``z0``. Real and imaginary parts are clamped to ``[-10, 10]`` so nothing overflows in
    any precision.

    Shape:
        z0 ``(...)`` complex -> ``(...)`` real in the dtype of ``c_real``
    """
    # Iterate in at least float32: in float16 |z|**2 underflows to 0 near z = 0 (always reached at
    # offset 0 when c = 0) and sqrt's gradient there is infinite.
    out_dtype = c_real.dtype
    work = torch.promote_types(out_dtype, torch.float32)
    c_real, c_imag = c_real.to(work), c_imag.to(work)
    zr, zi = z0.real.to(work), z0.imag.to(work)
    escaped = torch.zeros_like(zr)
    t_escape = torch.zeros_like(zr)
    for it in range(iterations):
        zr, zi = (zr * zr - zi * zi + c_real).clamp(-10, 10), (2 * zr * zi + c_imag).clamp(-10, 10)
        mag = torch.sqrt(zr * zr + zi * zi + 1e-12)
        p = torch.sigmoid(smoothness * (mag - radius))
        first = p * (1 - escaped).clamp_min(0)
        t_escape = t_escape + first * it
        escaped = escaped + first
    t_escape = t_escape + (1 - escaped).clamp_min(0) * iterations
    return (t_escape / iterations).to(out_dtype)
