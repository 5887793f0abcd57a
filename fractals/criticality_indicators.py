"""Criticality indicators: how far a network is from the edge of chaos.

:func:`dead_neuron_rate`, :func:`perturbation_sensitivity`, :func:`boundary_box_dimension` (2-D decision
boundaries, refined only near the boundary) and :func:`singular_value_exponent`. They feed
:func:`fractals.criticality.criticality_score` and the adaptive regularizer there, which re-exports them.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["dead_neuron_rate", "perturbation_sensitivity", "boundary_box_dimension", "singular_value_exponent"]


def dead_neuron_rate(activations: torch.Tensor | Sequence[torch.Tensor], *, threshold: float = 1e-5) -> float:
    """Fraction of units whose activation magnitude never exceeds ``threshold`` over the batch.

    Shape:
        activations ``(N, units)`` or a list of them (one per layer; units pooled)
    """
    try:
        thr = float(threshold) if not isinstance(threshold, (bool, str)) else math.nan
    except (TypeError, ValueError, RuntimeError):
        thr = math.nan
    if not (math.isfinite(thr) and thr >= 0):
        # A NaN threshold counted every unit alive (0.0), a negative one too: a dead layer looked healthy.
        raise ValueError(f"threshold: needs a finite number >= 0 (activation magnitude), got {threshold!r}")
    # An (N, units) NumPy array was iterated row by row and refused as "got shape (units,)".
    single = isinstance(activations, (torch.Tensor, np.ndarray))
    acts = [torch.as_tensor(a) for a in ([activations] if single else list(activations))]
    if not acts:
        raise ValueError("activations: empty list")
    dead = total = 0
    for a in acts:
        if a.ndim < 2:
            raise ValueError(f"activations: needs (N, units), got shape {tuple(a.shape)}")
        if a.numel() == 0:
            raise ValueError(f"activations: is empty (shape {tuple(a.shape)}); needs samples and units")
        # A NaN unit compares as never below the threshold: it was counted alive, hiding a diverged layer.
        if not bool(torch.isfinite(a).all()):
            raise ValueError("activations: contain NaN or inf; the dead rate is undefined (did training diverge?)")
        a = a.detach().reshape(a.shape[0], -1)
        dead += int((a.abs().amax(0) <= thr).sum())
        total += a.shape[1]
    return dead / total


def perturbation_sensitivity(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    eps: float = 1e-3,
    n_directions: int = 8,
    generator: torch.Generator | None = None,
) -> float:
    """Mean gain ``||f(x + eps u) - f(x)|| / eps`` over random unit directions ``u`` per sample.

    A finite-difference estimate of the Jacobian's average stretch: near 1 at criticality, above 1
    on the chaotic side, below 1 on the ordered side (for maps between spaces of equal scale).
    An ``eps`` below 16 times the resolution of ``x.dtype`` at ``|x|`` (float16, bfloat16) is raised
    to that with a ``RuntimeWarning``: a finer step is lost to rounding.
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps: must be a finite number > 0, got {eps}")
    if isinstance(n_directions, bool) or not isinstance(n_directions, numbers.Integral) or n_directions < 1:
        raise ValueError(f"n_directions: needs an integer >= 1, got {n_directions!r}")
    if not x.is_floating_point():
        raise ValueError(f"x: needs a floating tensor to perturb, got dtype {x.dtype}; pass x.float()")
    if x.ndim < 1 or x.shape[0] == 0 or x.numel() == 0:  # else a reshape RuntimeError (or a NaN mean)
        raise ValueError(f"x: needs a non-empty batch (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    # x + eps u must differ from x by about eps u: in bfloat16 (8 bits) the default eps = 1e-3 rounded the step
    # away and the gain of the map 2x read 0.57. Rounding error ~ resolution * |x|; the step needs 16 times that.
    rms = float(x.detach().float().square().mean().sqrt())
    floor = 16 * torch.finfo(x.dtype).eps * max(rms, 1.0)
    if eps < floor:  # a warning, not an error: bf16-true validation loops call this with the default eps
        import warnings

        warnings.warn(f"perturbation_sensitivity: eps={eps} is below the resolution of {x.dtype} at |x| ~ {rms:.3g}; "
                      f"using eps={floor:.3g} (pass x and fn in float32 for a finer step)",
                      RuntimeWarning, stacklevel=2)
        eps = floor
    with torch.no_grad():
        y0 = fn(x)
        gains = []
        for _ in range(n_directions):
            # Drawn where the generator lives (a CUDA generator cannot fill a CPU tensor).
            draw_device = generator.device if generator is not None else "cpu"
            u = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=draw_device).to(x.device)
            u = u / u.reshape(u.shape[0], -1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (u.ndim - 1)))
            dy = (fn(x + eps * u) - y0).reshape(x.shape[0], -1).norm(dim=1) / eps
            gains.append(dy)
        return float(torch.stack(gains).mean())


def boundary_box_dimension(
    predict: Callable[[torch.Tensor], torch.Tensor],
    bounds: tuple[float, float, float, float],
    *,
    coarse: int = 16,
    levels: int = 6,
    min_level: int = 2,
    return_counts: bool = False,
):
    """Box-counting dimension of a 2-D decision boundary, refined only near the boundary.

    Boxes of a ``coarse x coarse`` grid are labelled at their corners and centre; a box is a
    boundary box when these labels disagree. Each level splits the boundary boxes *and their
    neighbours* (so a boundary that slips between sample points at one level is still found at the
    next) into four, down to ``levels`` refinements. The finest boundary boxes are then coarse-grained
    to count ``N(eps)`` at every level, as pixel box counting does on an image, and ``D`` is the
    slope of ``log N`` against ``log(1/eps)`` over levels ``min_level .. levels``. The cost grows with
    the boundary's length, not the area: a few times ``N(eps)`` evaluations per level instead of
    ``(1/eps)^2``. Measured bias: over 2-7 refinements of a 16-box grid a straight line gives 1.00,
    while Weierstrass graphs of dimension 1.37, 1.68 and 1.85 give 1.21, 1.45 and 1.59: a finite
    range of scales biases rough boundaries low, so compare dimensions measured with the same
    settings rather than reading them as asymptotic values.

    Parameters
    ----------
    predict : callable
        Maps points ``(P, 2)`` (float32) to labels ``(P,)`` (class indices or booleans).
    bounds : (xmin, xmax, ymin, ymax)
    coarse, levels, min_level : int
        Start grid, number of refinements, first level used in the fit.

    Returns
    -------
    D : float (and the list of ``(eps, N)`` per level, eps relative to the box side, with
    ``return_counts``)
    """
    try:  # a 3-tuple gave "not enough values to unpack (expected 4, got 3)", naming no argument
        xmin, xmax, ymin, ymax = map(float, bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds: needs four numbers (xmin, xmax, ymin, ymax), got {bounds!r}") from None
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"bounds: need xmin < xmax and ymin < ymax, got {bounds}")
    for name, value in (("levels", levels), ("min_level", min_level)):  # range(2.5) gave a bare TypeError
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name}: needs an integer, got {value!r}")
    if not 0 <= min_level < levels:
        raise ValueError(f"min_level: needs 0 <= min_level < levels={levels}, got {min_level}")
    if isinstance(coarse, bool) or not isinstance(coarse, numbers.Integral) or coarse < 1:
        raise ValueError(f"coarse: needs an integer >= 1 (boxes per side of the start grid), got {coarse!r}")
    span = torch.tensor([xmax - xmin, ymax - ymin], dtype=torch.float64)
    lo = torch.tensor([xmin, ymin], dtype=torch.float64)
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], dtype=torch.float64)
    neighbours = torch.tensor([[di, dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)], dtype=torch.long)
    children = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.long)
    ii, jj = torch.meshgrid(torch.arange(coarse), torch.arange(coarse), indexing="ij")
    cand = torch.stack([ii.reshape(-1), jj.reshape(-1)], dim=1)
    boundary = cand[:0]
    for level in range(levels + 1):
        n_side = coarse * 2**level
        pts = lo + (cand[:, None, :].double() + offsets[None]) * (span / n_side)
        with torch.no_grad():
            # .cpu(): labels of a model run on CUDA indexed the CPU box grid (a device-mismatch RuntimeError).
            labels = torch.as_tensor(predict(pts.reshape(-1, 2).to(torch.float32))).cpu()
        if labels.numel() != pts.shape[0] * 5:
            raise ValueError(
                f"predict: must return one label per point, shape ({pts.shape[0] * 5},), got {tuple(labels.shape)}; "
                "return class indices (e.g. logits.argmax(-1))"
            )
        # Probabilities (a sigmoid output) differ at every corner, so every box read as a boundary box: D = 2.
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError("predict: returned non-integer values (probabilities or logits?); return class labels, "
                             "e.g. (prob > 0.5) or logits.argmax(-1)")
        labels = labels.reshape(-1, 5)
        boundary = cand[(labels != labels[:, :1]).any(1)]
        if boundary.shape[0] == 0:
            break
        if level < levels:
            grown = (boundary[:, None, :] + neighbours[None]).reshape(-1, 2)
            grown = grown[((grown >= 0) & (grown < n_side)).all(1)].unique(dim=0)
            cand = (2 * grown[:, None, :] + children[None]).reshape(-1, 2)
    finest = level
    counts = [
        (1.0 / (coarse * 2**lvl), int((boundary >> (finest - lvl)).unique(dim=0).shape[0]) if boundary.numel() else 0)
        for lvl in range(finest + 1)
    ]
    fit = [(e, n) for lvl, (e, n) in enumerate(counts) if lvl >= min_level and n > 0]
    if len(fit) < 2:
        raise ValueError("predict: the boundary crosses too few boxes to fit a dimension; widen bounds or raise coarse")
    le = torch.tensor([math.log(1 / e) for e, _ in fit], dtype=torch.float64)
    ln = torch.tensor([math.log(n) for _, n in fit], dtype=torch.float64)
    le_c = le - le.mean()
    dim = float((le_c * (ln - ln.mean())).sum() / (le_c**2).sum())
    return (dim, counts) if return_counts else dim


def singular_value_exponent(weight: torch.Tensor, *, skip: int = 1) -> torch.Tensor:
    """Power-law exponent ``a`` of the rank-ordered singular values, ``sigma_k ~ k^-a``.

    Least squares of ``log sigma_k`` on ``log k`` over ranks ``skip+1 .. r``, r the numerical rank
    (the top ``skip`` values are dropped because trained layers carry a few outliers; zero singular
    values, e.g. of dead units, are not part of the power law). A random Gaussian matrix
    gives a small ``a``; heavy-tailed trained layers give larger values.

    Shape:
        weight ``(..., m, n)`` -> ``(...)``
    """
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"weight: needs a torch tensor, got {type(weight).__name__}; pass torch.as_tensor(weight)")
    if not (weight.is_floating_point() or weight.is_complex()):
        raise ValueError(f"weight: needs a floating tensor, got dtype {weight.dtype}; pass weight.float()")
    if weight.ndim < 2:
        raise ValueError(f"weight: needs a matrix (..., m, n), got shape {tuple(weight.shape)}")
    if isinstance(skip, bool) or not isinstance(skip, numbers.Integral) or skip < 0:
        raise ValueError(f"skip: needs an integer >= 0 (top singular values left out), got {skip!r}")
    if not bool(torch.isfinite(weight).all()):  # else LAPACK's LinAlgError
        raise ValueError("weight: contains NaN or inf; the singular values are undefined")
    w = weight.detach()
    s_all = torch.linalg.svdvals(w.float() if w.dtype in (torch.float16, torch.bfloat16) else w)
    s = s_all[..., skip:]
    if s.shape[-1] < 3:
        raise ValueError(f"weight: needs at least {skip + 3} singular values, got shape {tuple(weight.shape)}")
    # The fit runs over ranks up to the matrix rank r: singular values at the rounding floor (NumPy's
    # matrix_rank tolerance) are zeros, e.g. of a dead unit's zero row or column. Clamped to the smallest
    # float they dominated the slope (a 32 x 24 Gaussian layer: 0.81; one dead unit: 7.5 in float32, 55 in
    # float64, and a different value for 10 x the layer).
    tol = s_all[..., :1] * max(w.shape[-2:]) * torch.finfo(s_all.dtype).eps
    keep = s > tol
    n_keep = keep.sum(-1, keepdim=True)
    if bool((n_keep < 3).any()):
        rank = int((s_all > tol).sum(-1).min())
        raise ValueError(f"weight: has numerical rank {rank} (shape {tuple(weight.shape)}); the power-law fit "
                         f"needs at least skip + 3 = {skip + 3} non-zero singular values")
    kw = keep.to(s.dtype)
    ls = s.clamp_min(torch.finfo(s.dtype).tiny).log()
    k = torch.arange(skip + 1, skip + 1 + s.shape[-1], dtype=s.dtype, device=s.device).log().expand_as(ls)
    k = k - (k * kw).sum(-1, keepdim=True) / n_keep
    ls = ls - (ls * kw).sum(-1, keepdim=True) / n_keep
    return -(ls * k * kw).sum(-1) / (k * k * kw).sum(-1)
