"""Private DFA kernels: exact order-1 energies of nested scales in one pass, and the rounding floor.

On nested grids (each scale divides the next, octaves by default) with linear detrending, only the
finest scale touches the samples; each coarser scale merges its children's centred sums. Split from
:mod:`fractals.dfa`, which calls :func:`_nested_linear_energies` when :func:`_nested_scales` holds.
"""
from __future__ import annotations

import torch


def _rounding_to_zero(residual: torch.Tensor, centred: torch.Tensor) -> torch.Tensor:
    """Residual energies within rounding of zero become exactly 0, so :func:`fractals.dfa._check_fluctuations`
    sees them instead of log F taking rounding noise for a fluctuation. Where a segment is exactly
    polynomial, centred minus trend energy cancels to a few eps ||c||^2 (measured <= 2 eps on flat
    stretches); 32 eps flags no segment of fGn, nor of random walks down to s = order + 2."""
    return torch.where(residual > 32 * torch.finfo(residual.dtype).eps * centred, residual, 0.0)


def _nested_scales(scales: list[int], order: int) -> bool:
    """True when order-1 energies can be merged up from the finest scale (ascending, each divides the next)."""
    return order == 1 and all(b % a == 0 and b > a for a, b in zip(scales, scales[1:]))


def _linear_stats(profile: torch.Tensor, s: int, start: int, m: int) -> torch.Tensor:
    """Centred sums of ``m`` segments of length ``s`` from ``start``, stacked ``(3, ..., m)``: the
    mean, sum (y - ybar)^2 and sum (t - tbar)(y - ybar)."""
    seg = profile[..., start : start + m * s].unflatten(-1, (m, s))
    ramp = torch.arange(s, dtype=profile.dtype, device=profile.device) - (s - 1) / 2
    mean = seg.mean(-1)
    c = seg - mean.unsqueeze(-1)  # centred before squaring: sum y^2 - s ybar^2 would cancel
    return torch.stack([mean, torch.linalg.vecdot(c, c), c @ ramp])


def _merge(stats: torch.Tensor, s: int, k: int, m: int, from_end: bool) -> torch.Tensor:
    """Parents of ``k`` consecutive children of length ``s`` (Chan et al.'s pairwise update, for the
    variance and the time co-moment): the first (or last) ``m k`` children make ``m`` parents.

    Children are strided views, not a reshape: torch's CPU reductions over a trailing axis of 2 or 3
    cost as much as over thousands of elements.
    """
    stats = stats[..., -m * k :] if from_end else stats[..., : m * k]
    if k == 2:  # octaves: d = -+delta/2, centres -+s/2, so both updates are one fused op each
        first, second = stats[..., 0::2], stats[..., 1::2]
        total = first + second
        delta = second[0] - first[0]
        return torch.stack([total[0] * 0.5, torch.addcmul(total[1], delta, delta, value=s / 2),
                            torch.add(total[2], delta, alpha=s * s / 2)])
    kids = [stats[..., j::k] for j in range(k)]
    total = sum(kids[1:], kids[0])
    parent, m2, cov = total[0] / k, total[1], total[2]
    for j, kid in enumerate(kids):
        d = kid[0] - parent  # child mean - parent mean
        m2 = torch.addcmul(m2, d, d, value=s)
        cov = torch.add(cov, d, alpha=s * (j - (k - 1) / 2) * s)  # s * (child centre - parent centre) * d
    return torch.stack([parent, m2, cov])


def _nested_linear_energies(profile: torch.Tensor, scales: list[int], both: bool) -> torch.Tensor:
    """Order-1 residual energies of every segment of every scale, like :func:`fractals.dfa._segment_energies`.

    Only the finest scale touches the samples; each coarser scale merges its children's centred
    sums, ``M2 = sum M2_i + s sum d_i^2`` and ``C = sum C_i + s sum d_i o_i`` (d: child mean minus
    parent mean, o: child centre minus parent centre), and the residual is ``M2 - C^2 / Stt``. End-
    aligned segments (Kantelhardt) nest from the end, so they form a second chain. Exact up to
    rounding, with a cost of one pass over the data instead of one per scale.
    """
    n = profile.shape[-1]
    s0 = scales[0]
    start_chain = _linear_stats(profile, s0, 0, n // s0)
    end_chain = start_chain if n % s0 == 0 else _linear_stats(profile, s0, n % s0, n // s0)
    out, centred, prev = [], [], s0
    for s in scales:
        if s != prev:
            k, m = s // prev, n // s
            start_chain = _merge(start_chain, prev, k, m, from_end=False)
            # Where s tiles the record, end-aligned segments are the start-aligned ones.
            end_chain = _merge(end_chain, prev, k, m, from_end=True) if both and n % s else start_chain
            prev = s
        stt = s * (s * s - 1) / 12.0
        for chain in [start_chain] + ([end_chain] if both and n % s else []):
            out.append(torch.addcmul(chain[1], chain[2], chain[2], value=-1.0 / stt))
            centred.append(chain[1])
    return _rounding_to_zero(torch.cat(out, -1), torch.cat(centred, -1))  # once for all scales: CPU ops cost
