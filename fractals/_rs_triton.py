"""Triton kernel for rescaled-range (R/S) statistics on CUDA (optional; also runs in Triton's CPU interpreter).

The torch path (:func:`fractals.temporal._log_rs`) builds float64 prefix sums of the whole batch and
then makes three passes over them per window, ~20 GB of memory traffic on the design batch (8192
series x 8192 samples, 8 windows). Here, per window, one launch reads each series once: a program
loads ``SEGS`` consecutive segments of one series and computes, in float64 registers, each
segment's mean, cumulative deviation, range R and standard deviation S, and writes the sum of R/S
and the count over its valid segments. ~2 GB on that batch.

Any window size works: a segment is loaded into ``next_pow2(w)`` lanes with the rest masked to
zero, which leaves the cumulative deviation at its final value 0 (already among its values), so
max and min are unchanged. The rule for constant segments is the torch path's (same tolerance from
the series' energy), so both skip the same segments.
"""
from __future__ import annotations

import torch

from fractals._checks import check_segments_counted, pow2_scale
from fractals._triton import tl, triton, warn_fallback

__all__ = ["ENABLED", "MAX_WINDOW", "available", "disable", "log_rs"]

ENABLED = True  # False keeps the torch path on CUDA too (benchmarks/metrics.py compares the two)
MAX_WINDOW = 8192  # one segment is held in registers: 8192 float64 across a program's threads
_TILE = 2048  # elements a program loads (SEGS segments of next_pow2(w) lanes)


def available(device: torch.device, windows: list[int]) -> bool:
    """True when the kernel computes R/S for these windows on ``device``."""
    return ENABLED and triton is not None and device.type == "cuda" and max(windows) <= MAX_WINDOW


def disable(exc: Exception) -> None:
    """The kernel failed at run time: the torch path from now on."""
    global ENABLED
    ENABLED = False
    warn_fallback(__name__, exc)


if triton is not None:

    @triton.jit
    def _rs_kernel(x_ptr, tol_ptr, out_ptr, n, w, n_cols, DDOF: tl.constexpr,
                   SEGS: tl.constexpr, W_PAD: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        col = tl.program_id(1)
        seg = col * SEGS + tl.arange(0, SEGS)  # segment index k covers [k w, (k + 1) w)
        lane = tl.arange(0, W_PAD)
        end = (seg + 1) * w
        in_seg = (lane[None, :] < w) & (end[:, None] <= n)
        x = tl.load(x_ptr + row * n + seg[:, None] * w + lane[None, :], mask=in_seg, other=0.0).to(tl.float64)
        dev = tl.where(in_seg, x - (tl.sum(x, axis=1) / w)[:, None], 0.0)
        walk = tl.cumsum(dev, axis=1)
        rng = tl.max(walk, axis=1) - tl.min(walk, axis=1)
        ss = tl.sum(dev * dev, axis=1)
        denom = w - DDOF
        energy_tol = tl.load(tol_ptr + row)
        # Same constant-segment rule as the torch path: R or the energy within rounding of zero.
        valid = (end <= n) & (rng > tl.sqrt(energy_tol * n) / 8.0) & (ss * w / denom > energy_tol)
        ratio = tl.where(valid, rng / tl.sqrt(tl.where(valid, ss, 1.0) / denom), 0.0)
        out = out_ptr + (row * n_cols + col) * 2
        tl.store(out, tl.sum(ratio, axis=0))
        tl.store(out + 1, tl.sum(valid.to(tl.float64), axis=0))


def _energy_tol(x: torch.Tensor) -> torch.Tensor:
    """The torch path's constant-segment tolerance, 64 eps64 times each series' centred energy:
    ``(rows, T) -> (rows,)`` float64. A tolerance needs no float64 pass over the batch, but a float32
    ``var`` of |x| >~ 2e19 overflows to inf (every segment then read as constant, where the torch
    path's float64 sums are fine): the variance is taken of the series divided by a power of two
    (exact) and scaled back in float64.
    """
    scale = pow2_scale(x)
    var = (x / scale).var(-1, correction=0).double() * scale[:, 0].double().square()
    return ((64 * torch.finfo(torch.float64).eps * x.shape[-1]) * var).contiguous()


def log_rs(t: torch.Tensor, windows: list[int], unbiased: bool) -> torch.Tensor:
    """log (R/S)_n per window, as :func:`fractals.temporal._log_rs`: ``(rows, T) -> (rows, n_windows)``.

    Shape:
        ``(rows, T) -> (rows, n_windows)`` in ``t``'s dtype.
    """
    if triton is None:
        raise RuntimeError("log_rs: triton is not importable; use fractals.temporal._log_rs")
    if max(windows) > MAX_WINDOW:
        raise ValueError(f"windows: at most MAX_WINDOW={MAX_WINDOW} samples fit the kernel's registers, got {max(windows)}")
    rows, n = t.shape
    x = t.contiguous()
    energy_tol = _energy_tol(x)
    sums = []
    for w in windows:  # one launch per window; each reads every series once
        w_pad = triton.next_power_of_2(w)
        segs = max(1, _TILE // w_pad)
        n_cols = -(-(n // w) // segs)
        out = torch.empty(rows, n_cols, 2, dtype=torch.float64, device=t.device)
        _rs_kernel[(rows, n_cols)](x, energy_tol, out, n, w, n_cols, DDOF=int(bool(unbiased)), SEGS=segs,
                                   W_PAD=w_pad, num_warps=8 if segs * w_pad >= 2048 else 4)
        sums.append(out.sum(1))
    ratio_sum, count = torch.stack(sums, 1).unbind(-1)  # (rows, n_windows) each
    check_segments_counted(count, windows)
    return torch.log(ratio_sum / count).to(t.dtype)
