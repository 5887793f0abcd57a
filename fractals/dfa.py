"""Detrended fluctuation analysis (DFA) and its multifractal generalization (MFDFA).

Both share one kernel, :func:`fluctuation_functions`: one profile (cumulative sum of the
mean-removed series), one set of non-overlapping segments per scale (from the start and, as in
Kantelhardt et al. 2002, also from the end), and polynomial detrending as a closed-form
least-squares projection: the orthonormal basis of the order-``order`` Vandermonde matrix is
precomputed per scale, so detrending every segment of every series is one batched matmul. On
nested grids (octaves, the default) with linear detrending only the finest scale touches the
samples: coarser scales merge their children's centred sums (``fractals._dfa_nested``).
The q-moments of the segment variances (log F_q for every q) are in ``fractals._dfa_moments``.
Everything is pure torch (no ``.item()`` on the data path, no in-place ops on inputs), so
differentiable priors can backpropagate through :func:`dfa_alpha` and
:func:`multifractal_spectrum`.

References: Peng et al. 1994 (DFA); Kantelhardt et al. 2002, Physica A 316, 87 (MFDFA).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np
import torch

from fractals._checks import autocast_off, pow2_scale, to_input_kind
from fractals._dfa_moments import (
    MAX_POWER_Q, _as_q, _integer_powers, _log_fq, _log_fq_group, _log_fq_scales, _per_scale_mean,
)
from fractals._dfa_nested import _nested_linear_energies, _nested_scales, _rounding_to_zero
from fractals.temporal import (
    _as_windows, _check_int_arg, _prepare, _slope_weights, bytes_cache, default_windows, map_rows,
)

__all__ = ["dfa_alpha", "hurst_from_dfa", "multifractal_spectrum", "fluctuation_functions"]
# The q-moment kernels moved to fractals._dfa_moments; importable from here as before (tests import them)
__all__ += ["MAX_POWER_Q", "_integer_powers", "_log_fq", "_log_fq_scales", "_per_scale_mean"]

DEFAULT_Q = (-5.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0)  # design config fractals.metrics.multifractal.q_vals


@functools.lru_cache(maxsize=256)
def _detrend_basis_cpu(scale: int, order: int) -> torch.Tensor:
    """Orthonormal basis (scale, order + 1) of polynomials up to ``order`` on scale points (float64)."""
    t = np.linspace(-1.0, 1.0, scale)  # well-conditioned abscissa
    vander = np.stack([t**p for p in range(order + 1)], axis=-1)
    q, _ = np.linalg.qr(vander)  # NumPy: torch.linalg's first call costs seconds of LAPACK loading
    return torch.from_numpy(np.ascontiguousarray(q))


_BASIS_CACHE: dict = {}


def _detrend_basis(scale: int, order: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (scale, order, dtype, str(device))
    basis = _BASIS_CACHE.get(key)
    if basis is None:
        basis = _detrend_basis_cpu(scale, order).to(device=device, dtype=dtype)
        if len(_BASIS_CACHE) > 1024:
            _BASIS_CACHE.clear()
        _BASIS_CACHE[key] = basis
    return basis


def _segment_energies(profile: torch.Tensor, prefix: torch.Tensor, scale: int, order: int, both: bool) -> torch.Tensor:
    """Residual energy (sum of squares) of every segment after polynomial detrending: (..., n_segments).

    ``prefix`` is the cumulative sum of the profile with a leading 0 (length T + 1), so segment
    means cost a strided difference instead of a pass over the data.
    """
    n = profile.shape[-1]
    n_seg = n // scale
    starts = [0]
    if both and n % scale:
        starts.append(n - n_seg * scale)  # Kantelhardt: a second pass aligned with the end
    # Columns 1.. of the orthonormal polynomial basis: column 0 is the constant, removed by
    # centring. With Q orthonormal the residual energy is ||c||^2 - ||c Q||^2, so the fitted trend
    # is never materialized. That difference cancels badly for smooth profiles (fBm input, order
    # >= 2: the trend holds all but 1e-6 of the energy), so it is always formed in the profile's
    # float64 (for float32 input too); float64 matmuls are also immune to TF32/bf16 settings.
    basis = _detrend_basis(scale, order, profile.dtype, profile.device)[:, 1:]
    out = []
    for start in starts:
        stop = start + n_seg * scale
        seg = profile[..., start:stop].unflatten(-1, (n_seg, scale))
        mean = (prefix[..., start + scale : stop + 1 : scale] - prefix[..., start : stop - scale + 1 : scale]) / scale
        c = seg - mean.unsqueeze(-1)
        energy = torch.linalg.vecdot(c, c)
        if order > 0:
            trend = c @ basis
            energy = _rounding_to_zero(energy - torch.linalg.vecdot(trend, trend), energy)
        out.append(energy)
    return out[0] if len(out) == 1 else torch.cat(out, -1)


def _check_fluctuations(seg_var: torch.Tensor, counts: list[int], scales: list[int], order: int,
                        q_list: list[float]) -> Optional[torch.Tensor]:
    """Raise where every segment of a scale has zero variance (F(s) = 0: its log is undefined for
    any q). Else return the mask of non-zero segments when some are zero and the grid has q <= 0
    (their F^q is infinite there, so those moments leave them out), or None. One host sync when none
    is zero."""
    zero = seg_var == 0
    if not bool(zero.any()):
        return None
    for s, z in zip(scales, zero.split(counts, -1)):
        if bool(z.all(-1).any()):
            raise ValueError(
                f"x: every segment of length {s} is exactly a polynomial of order {order} after "
                "integration (e.g. a flat or periodic stretch), so F(s) = 0 and its log is undefined: "
                "use other scales or drop such series"
            )
    return ~zero if min(q_list) <= 0 else None


def _profile(t: torch.Tensor) -> torch.Tensor:
    """Profile (cumulative sum of the mean-removed series), in float64 for float32 input.

    float32 profiles of long records lose the small-scale fluctuations to rounding (the profile of
    fBm grows like T^(H+1)), so float32 input is accumulated in float64 and returns to float32
    only as per-segment energies.
    """
    work_dtype = torch.float64 if t.dtype == torch.float32 else t.dtype
    return (t - t.mean(-1, keepdim=True, dtype=work_dtype)).cumsum(-1)


def _segments_per_scale(n: int, scales: list[int], both: bool) -> list[int]:
    return [(n // s) * (2 if both and n % s else 1) for s in scales]


@bytes_cache
def _segment_sizes(n: int, scales: tuple[int, ...], both: bool, dtype, device: str) -> torch.Tensor:
    """``(V,)`` length of each of the V segments of all scales, in order (cached)."""
    counts = _segments_per_scale(n, list(scales), both)
    # From a Python list, not repeat_interleave of a count tensor: a constant under torch.compile.
    return torch.tensor([float(s) for s, c in zip(scales, counts) for _ in range(c)], dtype=dtype, device=device)


def _check_order(order) -> int:
    return _check_int_arg(order, "order", 0)


def _resolve_scales(scales, n: int, order: int, name: str) -> list[int]:
    if scales is None:
        # A slope needs a range of scales: three octaves (16, 32, 64 <= T // 4), hence T >= 256.
        scales = default_windows(n, 16) if n >= 128 else []
        if len(scales) < 3:
            raise ValueError(
                f"x: T={n} is too short for the default {name} (octaves from 16 to T//4, >= 3 of "
                f"them): needs T >= 256, or pass {name} explicitly"
            )
    return _as_windows(scales, n, order + 2, name)


@autocast_off
def fluctuation_functions(x, q_vals=(2.0,), scales=None, order: int = 1, both_directions: bool = True):
    """Fluctuation functions F_q(s) for many q and scales at once (the DFA/MFDFA kernel).

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray
        ``(..., T)`` series (the profile is built here).
    q_vals : sequence of float
        Moment orders; q = 0 uses the logarithmic average.
    scales : sequence of int, optional
        Segment lengths, each in [order + 2, T]. Default: octaves 16, 32, ... up to T // 4.
    order : int
        Detrending polynomial order (1 = DFA1).
    both_directions : bool
        Also cut segments from the end (Kantelhardt), so no sample is dropped when T % s != 0.

    Returns
    -------
    (fq, scales)
        ``fq`` is ``(..., Q, S)``; ``scales`` the ``(S,)`` tensor of scales used.

    Shape:
        ``(..., T) -> (..., Q, S)``.
    """
    order = _check_order(order)
    t, was_numpy = _prepare(x, order + 2, f"order={order} detrending needs T >= order + 2")
    q = _as_q(q_vals, t.device, allow_single=True)
    sc = _resolve_scales(scales, t.shape[-1], order, "scales")
    log_fq = _log_fq_all(t, q, sc, order, both_directions)
    out = (log_fq.exp(), torch.tensor(sc, dtype=t.dtype, device=t.device))
    return to_input_kind(out, was_numpy)


def _log_fq_all(t: torch.Tensor, q: torch.Tensor, scales: list[int], order: int, both: bool,
                floor: float = 0.0, q_list: Optional[list[float]] = None) -> torch.Tensor:
    """log F_q(s): ``(..., T) -> (..., Q, S)``; ``floor`` > 0 adds ``floor`` times the mean segment
    variance (detached) to every variance, so gradients stay finite where a segment is exactly a
    line (the priors use 1e-12). ``q_list``: ``q`` as Python floats when the caller has them (no
    device read, which would also break a torch.compile graph)."""
    q_list = q.tolist() if q_list is None else q_list
    return map_rows(lambda rows: _log_fq_rows(rows, q, scales, order, both, floor, q_list), t)


def _log_fq_rows(t: torch.Tensor, q: torch.Tensor, scales: list[int], order: int, both: bool,
                 floor: float, q_list: list[float]) -> torch.Tensor:
    if t.dtype != torch.float64:  # float32 is profiled in float64: its squares cannot over/underflow
        return _log_fq_kernel(t, q, scales, order, both, floor, q_list)
    # float64 |x| beyond ~1e150 (or below ~1e-150) over/underflowed the segment energies, which then
    # read as "exactly polynomial". F is scale-equivariant: measure x / 2^k (exact), add k log 2.
    scale = pow2_scale(t)
    return _log_fq_kernel(t / scale, q, scales, order, both, floor, q_list) + torch.log(scale).unsqueeze(-1)


def _log_fq_kernel(t: torch.Tensor, q: torch.Tensor, scales: list[int], order: int, both: bool,
                   floor: float, q_list: list[float]) -> torch.Tensor:
    profile = _profile(t)
    if _nested_scales(scales, order):  # octave grids, DFA1: one pass over the data for all scales
        energies = _nested_linear_energies(profile, scales, both)
    else:
        prefix = torch.nn.functional.pad(profile.cumsum(-1), (1, 0))  # segment means by differences
        energies = torch.cat([_segment_energies(profile, prefix, s, order, both) for s in scales], -1)  # (..., V)
    counts = _segments_per_scale(t.shape[-1], scales, both)
    # Rounding can leave -1e-16 where a segment is exactly polynomial; that is zero.
    # Under torch.compile the cache wrapper is bypassed anyway (dynamo traces the function and warns).
    sizes_of = _segment_sizes.__wrapped__ if torch.compiler.is_compiling() else _segment_sizes
    sizes = sizes_of(t.shape[-1], tuple(scales), both, profile.dtype, str(profile.device))
    seg_var = energies.clamp_min(0.0) / sizes
    keep = None
    if floor > 0:
        seg_var = seg_var + (floor * seg_var.detach().mean(-1, keepdim=True) + torch.finfo(seg_var.dtype).tiny)
    else:
        keep = _check_fluctuations(seg_var, counts, scales, order, q_list)
    # Floored variances (the priors) stay within floor / V of the largest, so moments with |q| <= 20
    # are finite: no check, and no host sync (which would also break a torch.compile graph).
    checked = floor == 0 or max(abs(v) for v in q_list) > 20
    if keep is None:
        return _log_fq_group(seg_var, counts, q, q_list, None, checked).to(t.dtype)  # (..., Q, S)
    # Some segments have zero variance (exactly polynomial, e.g. a flat stretch): F^q is infinite there
    # for q <= 0, so those moments leave them out, as nolds leaves constant segments out of R/S; q > 0
    # moments keep them (a zero adds 0). q is increasing, so the q <= 0 rows come first.
    k = sum(v <= 0 for v in q_list)
    parts = [_log_fq_group(seg_var, counts, q[:k], q_list[:k], keep, checked)]
    if k < len(q_list):
        parts.append(_log_fq_group(seg_var, counts, q[k:], q_list[k:], None, checked))
    return torch.cat(parts, -2).to(t.dtype)


@autocast_off
def dfa_alpha(
    x,
    windows: Optional[Sequence[int]] = None,
    order: int = 1,
    return_fit: bool = False,
    *,
    both_directions: bool = True,
):
    """DFA scaling exponent alpha (slope of log F(s) against log s).

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray
        ``(..., T)``, time on the last axis.
    windows : list or tensor of int, optional
        Window (scale) sizes in samples, each in [order + 2, T]. Default: octaves 16, 32, ...
        up to T // 4 (16..2048, 8 sizes, for T = 8192).
    order : int
        Order of the local polynomial trend (1: DFA1, 2: DFA2, ...).
    return_fit : bool
        Also return the fit: ``(alpha, {"windows": (S,), "fluct": (..., S), "intercept": (...)})``.
    both_directions : bool
        Use segments from the start and from the end (Kantelhardt). False reproduces
        ``nolds.dfa(x, nvals=windows, overlap=False, order=order, fit_exp="poly")``.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        ``(...)`` alpha: about H for fGn, H + 1 for fBm, 0.5 white, 1 pink, 1.5 brown noise.

    Notes
    -----
    F(s) is the root mean square of the detrended profile over all segments of length s; alpha is
    the least-squares slope of log F(s) on log s. Differentiable (pure torch). float32 input is
    accumulated in float64 (profile and segment energies) and returned as float32: float32 sums
    lose the small-scale fluctuations of smooth (fBm-like) records.

    Shape:
        ``(..., T) -> (...)``. Assumes power-law scaling across the whole window range. Measured on
        exact fGn (T=8192, default windows 16..2048, order 1, 32 series per H):
        mean alpha - H = +0.000 (H=0.2), +0.004 (H=0.3), -0.012 (H=0.5), +0.004 (H=0.7), -0.006
        (H=0.9); per-series sd 0.012 (H=0.2) to 0.046 (H=0.9); mean absolute error <= 0.036. On
        exact fBm, alpha - (H + 1) = -0.016 to -0.033 (slightly low for the smoothest series).
    """
    order = _check_order(order)
    t, was_numpy = _prepare(x, order + 2, f"order={order} detrending needs T >= order + 2")
    w = _resolve_scales(windows, t.shape[-1], order, "windows")
    two = torch.tensor([2.0], dtype=torch.float64, device=t.device)
    log_f = _log_fq_all(t, two, w, order, both_directions)[..., 0, :]  # (..., S)
    log_s = torch.log(torch.tensor(w, dtype=t.dtype, device=t.device))
    alpha = log_f @ _slope_weights(log_s)
    if not return_fit:
        return to_input_kind(alpha, was_numpy)
    intercept = log_f.mean(-1) - alpha * log_s.mean()
    fit = {"windows": torch.tensor(w, device=t.device), "fluct": log_f.exp(), "intercept": intercept}
    return to_input_kind((alpha, fit), was_numpy)


def hurst_from_dfa(alpha, signal: str = "fgn"):
    """Hurst exponent from a DFA exponent.

    Parameters
    ----------
    alpha : float, torch.Tensor or numpy.ndarray
        DFA exponent(s).
    signal : {"fgn", "fbm"}
        What the analysed series is: stationary noise (fGn: H = alpha) or its cumulative sum
        (fBm: H = alpha - 1). DFA integrates the input once, so fBm shifts alpha by exactly 1.

    Returns
    -------
    Same kind as ``alpha``.

    Shape:
        elementwise.
    """
    if signal == "fgn":
        shift = 0.0
    elif signal == "fbm":
        shift = 1.0
    else:
        raise ValueError(f"signal: must be 'fgn' (H = alpha) or 'fbm' (H = alpha - 1), got {signal!r}")
    if isinstance(alpha, torch.Tensor):
        if alpha.is_complex():  # .to(float64) would drop the imaginary part; NumPy input raises here too
            raise ValueError(f"alpha: needs real DFA exponent(s), got a complex tensor ({alpha.dtype})")
        # Integer and bool tensors become float64 as everywhere in fractals (bool - float raised, int gave float32).
        return (alpha if alpha.is_floating_point() else alpha.to(torch.float64)) - shift
    arr = np.asarray(alpha)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"alpha: needs real DFA exponent(s), got {alpha!r}")
    if not arr.ndim:
        return float(arr) - shift
    return (arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)) - shift


@autocast_off
def multifractal_spectrum(
    x,
    q_vals=DEFAULT_Q,
    scales=None,
    order: int = 1,
    *,
    both_directions: bool = True,
):
    """Multifractal spectrum by MFDFA: h(q), tau(q), and the Legendre pair (alpha, f(alpha)).

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray
        ``(..., T)``, time on the last axis (a noise-like signal, e.g. increments or rates).
    q_vals : sequence or tensor of float
        Strictly increasing moment orders, at least 3 (default -5, -3, -1, 0, 1, 3, 5 as in the
        design config). q = 0 is kept and uses the logarithmic average (the MFDFA package drops
        it).
    scales : sequence or tensor of int, optional
        Segment lengths (default: octaves 16, 32, ... up to T // 4).
    order : int
        Detrending polynomial order.
    both_directions : bool
        Kantelhardt's 2 N_s segments (start- and end-aligned); matches the MFDFA package.

    Returns
    -------
    dict of torch.Tensor (NumPy when the input was NumPy)
        ``h`` (..., Q) generalized Hurst exponent (slope of log F_q(s)); ``tau`` (..., Q) =
        q h(q) - 1; ``alpha`` (..., Q) = d tau / dq (second-order finite differences on the q grid);
        ``falpha`` (..., Q) = q alpha - tau; ``width`` (...) = max alpha - min alpha; ``fq``
        (..., Q, S) the fluctuation functions; ``q`` (Q,) and ``scales`` (S,).

    Shape:
        ``(..., T) -> (..., Q)``. Differentiable in x. Monofractal fGn gives flat h(q) = H; measured
        on exact fGn H=0.7 (T=8192, 32 series, default q and scales) h(q) runs from 0.716 (q=-5) to
        0.672 (q=5) and the width is 0.08 +- 0.05 (finite-size spread). On binomial cascades
        (depth 13, scales 16..1024, 256 series) the mean tau(q) is within 0.03 of
        -log2(p^q + (1-p)^q) for |q| <= 3 at p = 0.6 (-0.05 at q = 5 and -0.03 to -0.04 at
        q = -5, seeds 0 and 1; per-series sd 0.11 at |q| = 5); for p = 0.75 the mean stays within
        0.06 at every q but the per-series sd grows to 0.24-0.29 at |q| = 5, since a few boxes
        dominate. Reproduce: ``python benchmarks/estimator_accuracy.py --only mfdfa --series 256``.
    """
    order = _check_order(order)
    t, was_numpy = _prepare(x, order + 2, f"order={order} detrending needs T >= order + 2")
    q = _as_q(q_vals, t.device)
    sc = _resolve_scales(scales, t.shape[-1], order, "scales")
    log_fq = _log_fq_all(t, q, sc, order, both_directions)  # (..., Q, S)
    log_s = torch.log(torch.tensor(sc, dtype=t.dtype, device=t.device))
    h = log_fq @ _slope_weights(log_s)  # (..., Q)
    qd = q.to(t.dtype)
    tau = qd * h - 1.0
    alpha = torch.gradient(tau, spacing=(qd,), dim=-1, edge_order=1)[0]
    falpha = qd * alpha - tau
    out = {
        "h": h,
        "tau": tau,
        "alpha": alpha,
        "falpha": falpha,
        "width": alpha.amax(-1) - alpha.amin(-1),
        "fq": log_fq.exp(),
        "q": qd,
        "scales": torch.tensor(sc, dtype=t.dtype, device=t.device),
    }
    return to_input_kind(out, was_numpy)
