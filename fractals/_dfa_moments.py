"""Private MFDFA kernels: log F_q(s) for every moment order q from per-segment variances, and the q grid check."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def _per_scale_mean(values: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Mean over each scale's run of segments: (..., V) -> (..., S)."""
    return torch.stack([run.mean(-1) for run in values.split(counts, -1)], -1)


def _log_fq(seg_var: torch.Tensor, q: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log F_q from per-segment variances (..., V) of one scale for every q at once -> (..., Q).

    F_q = (mean_v F2_v^(q/2))^(1/q), and for q = 0 the logarithmic average
    F_0 = exp(mean_v log F2_v / 2). Computed as a log-sum-exp so large |q| cannot overflow.
    ``keep`` (..., V): the segments the means run over (default all).
    """
    log_f2 = torch.log(seg_var.clamp_min(torch.finfo(seg_var.dtype).tiny))  # (..., V)
    half_q = (q / 2).to(log_f2.dtype)
    scaled = log_f2.unsqueeze(-2) * half_q.unsqueeze(-1)  # (..., Q, V)
    if keep is None:
        n_seg = torch.full_like(log_f2[..., :1], log_f2.shape[-1])
    else:
        n_seg = keep.sum(-1, keepdim=True).to(log_f2.dtype)
        scaled = scaled.masked_fill(~keep.unsqueeze(-2), -math.inf)
        log_f2 = log_f2.masked_fill(~keep, 0.0)
    lse = torch.logsumexp(scaled, dim=-1) - torch.log(n_seg)
    is_zero = q == 0
    safe_q = torch.where(is_zero, torch.ones_like(q), q).to(log_f2.dtype)
    log_mean = 0.5 * log_f2.sum(-1, keepdim=True) / n_seg
    return torch.where(is_zero.to(log_f2.device), log_mean, lse / safe_q)


MAX_POWER_Q = 12  # integer |q| up to this use products of F (cheaper than exp on CPU); beyond, exp


def _integer_powers(base: torch.Tensor, base_sq: torch.Tensor, k: int, cache: dict) -> torch.Tensor:
    """``base ** k`` for integer k >= 1 by products of ``base_sq = base ** 2`` (memoized in cache)."""
    if k not in cache:
        cache[k] = base_sq * _integer_powers(base, base_sq, k - 2, cache) if k > 2 else (base if k == 1 else base_sq)
    return cache[k]


def _log_fq_scales(seg_var: torch.Tensor, counts: list[int], q: torch.Tensor, q_list: list[float],
                   keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log F_q(s) for every q and scale from all scales' segment variances at once.

    ``seg_var`` is ``(..., V)``: every segment of every scale (float64), ``counts`` the number of
    segments per scale. Moments are taken relative to the largest variance of each series, so
    positive q cannot overflow; integer q (the usual grid) are products of F = sqrt(F2), not
    exponentials. A scale whose terms all underflow (F2 ratios beyond ~1e300^(1/|q|)) comes back
    non-finite and the caller falls back to per-scale log-sum-exp. ``keep`` (..., V): the segments
    the means run over (default all). Returns ``(..., Q, S)``.
    """
    if q_list == [2.0] and keep is None:  # DFA: F_2 needs no powers
        return (0.5 * torch.log(_per_scale_mean(seg_var, counts))).unsqueeze(-2)
    tiny = torch.finfo(seg_var.dtype).tiny
    top = seg_var.detach().amax(-1, keepdim=True).clamp_min(tiny)
    if keep is not None:  # left-out segments get a harmless value, then weight 0 in the means
        seg_var = torch.where(keep, seg_var, top)
    rel = seg_var / top  # <= 1; F_q is scale-equivariant, so the factor comes back as 0.5 log(top)
    shift = 0.0  # log-sum-exp shift of the exponential path
    is_zero = (q == 0).to(seg_var.device).unsqueeze(-1)
    if all(v.is_integer() and abs(v) <= MAX_POWER_Q for v in q_list):
        f = rel.sqrt()
        pos, neg = {}, {}
        inv_f, inv_rel = (f.reciprocal(), rel.reciprocal()) if min(q_list) < 0 else (None, None)
        moments = [torch.log(seg_var.clamp_min(tiny)) if v == 0 else
                   _integer_powers(f, rel, int(v), pos) if v > 0 else _integer_powers(inv_f, inv_rel, int(-v), neg)
                   for v in q_list]
        moments = torch.stack(moments, -2)  # (..., Q, V); the q = 0 row holds log F2 for its log average
    else:
        log_rel = torch.log(rel.clamp_min(tiny))
        scaled = log_rel.unsqueeze(-2) * (q / 2).to(rel.dtype).unsqueeze(-1)
        shift = scaled.detach().amax(-1, keepdim=True)
        # The q = 0 row holds log F2 (its log average), as on the integer path.
        moments = torch.where(is_zero, torch.log(seg_var.clamp_min(tiny)).unsqueeze(-2), torch.exp(scaled - shift))
    if keep is None:
        means = _per_scale_mean(moments, counts)  # (..., Q, S)
    else:
        w = keep.to(moments.dtype).unsqueeze(-2)
        means = _per_scale_mean(moments * w, counts) / _per_scale_mean(w, counts)
    safe_q = torch.where(q == 0, torch.ones_like(q), q).to(seg_var.dtype).unsqueeze(-1)
    log_moment = torch.log(torch.where(is_zero, torch.ones_like(means), means)) + shift
    return torch.where(is_zero, 0.5 * means, log_moment / safe_q + 0.5 * torch.log(top).unsqueeze(-1))


def _log_fq_group(seg_var: torch.Tensor, counts: list[int], q: torch.Tensor, q_list: list[float],
                  keep: Optional[torch.Tensor], checked: bool) -> torch.Tensor:
    """:func:`_log_fq_scales`, with the per-scale log-sum-exp fallback for extreme F2 ranges."""
    log_fq = _log_fq_scales(seg_var, counts, q, q_list, keep)
    if checked and not bool(torch.isfinite(log_fq).all()):
        parts = zip(seg_var.split(counts, -1), keep.split(counts, -1) if keep is not None else [None] * len(counts))
        log_fq = torch.stack([_log_fq(v, q, m) for v, m in parts], -1)
    return log_fq


def _as_q(q_vals, device, allow_single: bool = False) -> torch.Tensor:
    if isinstance(q_vals, torch.Tensor):
        q_vals = q_vals.detach().cpu().tolist()
    need = 1 if allow_single else 3
    try:
        values = np.asarray(q_vals, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.array([np.nan])  # e.g. a string: reported below, naming q_vals
    if values.size < need or not np.all(np.isfinite(values)):
        raise ValueError(f"q_vals: needs at least {need} finite values, got {q_vals!r}")
    if values.size > 1 and np.any(np.diff(values) <= 0):
        raise ValueError(f"q_vals: must be strictly increasing, got {values.tolist()}")
    return torch.tensor(values, dtype=torch.float64, device=device)
