"""Criticality toolkit: spectral-norm control and criticality indicators.

Networks trained near the "edge of chaos" keep signals and gradients from vanishing or exploding.
This module measures how far a network is from that regime and steers it there:

- :func:`top_singular_value` (power iteration with a convergence check, exact SVD for small
  matrices, batched over layers) and :func:`spectral_radius` for recurrent or SSM state matrices;
- :class:`SpectralRegularizer` pulls each layer's top singular value towards a fixed target
  (one number, one per layer, or depth-interpolated by :func:`layerwise_targets`);
- :class:`AdaptiveSpectralRegularizer` (ASISR) moves those targets from criticality indicators;
- :class:`CriticalityLR` scales the learning rate by the distance from criticality;
- indicators: :func:`dead_neuron_rate`, :func:`perturbation_sensitivity`,
  :func:`boundary_box_dimension` (2-D decision boundaries, refined only near the boundary) and
  :func:`singular_value_exponent`.

The design material (seed 001) proposes these ideas without measurements; the docstrings state
what each function actually computes so the sweep in ``sweeps/criticality_two_moons.yaml`` can
test them.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fractals._checks import autocast_off
from fractals.criticality_indicators import (  # re-exported: the indicators are part of this toolkit
    boundary_box_dimension, dead_neuron_rate, perturbation_sensitivity, singular_value_exponent)

__all__ = [
    "top_singular_value",
    "spectral_radius",
    "weight_matrices",
    "layerwise_targets",
    "SpectralRegularizer",
    "AdaptiveSpectralRegularizer",
    "criticality_score",
    "CriticalityLR",
    "dead_neuron_rate",
    "perturbation_sensitivity",
    "boundary_box_dimension",
    "singular_value_exponent",
]


# ----------------------------------------------------------------------------- spectral norms
def _check_weight_kind(weight, name: str, *, allow_complex: bool) -> None:
    """A clear ValueError for input LAPACK would refuse with a bare RuntimeError (or TypeError for NumPy)."""
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{name}: needs a torch tensor, got {type(weight).__name__}; pass torch.as_tensor({name})")
    if weight.is_complex() and not allow_complex:
        raise ValueError(f"{name}: complex dtype {weight.dtype} is not supported; pass a real tensor")
    if not (weight.is_floating_point() or weight.is_complex()):
        raise ValueError(f"{name}: needs a floating tensor, got dtype {weight.dtype}; pass {name}.float()")


@autocast_off  # training steps run under bf16 autocast: bf16 einsums put sigma 2 % off, its gradient elsewhere
def top_singular_value(
    weight: torch.Tensor,
    *,
    n_iter: int = 100,
    tol: float = 1e-6,
    exact_below: int = 64,
    init: torch.Tensor | None = None,
    return_vectors: bool = False,
):
    """Largest singular value of each matrix in a batch.

    Small matrices (``min(m, n) <= exact_below``) use an exact SVD; larger ones use power
    iteration on ``W^T W`` until the relative change of every estimate is below ``tol``. The
    returned value is differentiable: it is ``u^T W v`` with the singular vectors held fixed, whose
    gradient ``u v^T`` is the exact gradient of the spectral norm when the top singular value is
    simple.

    Parameters
    ----------
    weight : Tensor
        Matrices ``(..., m, n)``.
    n_iter : int
        Most power iterations. If some estimate has not converged by then a ``RuntimeWarning`` is
        issued (the estimate is still a lower bound on the true value).
    tol : float
        Relative change below which an estimate has converged.
    exact_below : int
        Use ``torch.linalg.svdvals`` when the smaller side is at most this.
    init : Tensor, optional
        Start vectors ``(..., n)`` (for example the previous step's ``v``: one or two iterations
        then suffice during training).
    return_vectors : bool
        Also return ``(u, v)``.

    Returns
    -------
    sigma : Tensor ``(...)``; with ``return_vectors`` also ``u (..., m)`` and ``v (..., n)``.

    Shape:
        weight ``(..., m, n)`` -> sigma ``(...)``
    """
    _check_weight_kind(weight, "weight", allow_complex=False)
    if weight.ndim < 2:
        raise ValueError(f"weight: needs a matrix (..., m, n), got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight: contains NaN or inf; the spectral norm is undefined")
    m, n = weight.shape[-2:]
    if m == 0 or n == 0:
        raise ValueError(f"weight: has an empty matrix side (shape {tuple(weight.shape)}); needs m, n >= 1")
    if init is not None and (init.ndim == 0 or init.shape[-1] != n):
        raise ValueError(f"init: needs start vectors (..., {n}) for weight {tuple(weight.shape)}, got {tuple(init.shape)}")
    if init is not None:
        try:  # the start vectors must broadcast over the batch of matrices
            fits = torch.broadcast_shapes(init.shape[:-1], weight.shape[:-2]) == weight.shape[:-2]
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"init: batch shape {tuple(init.shape[:-1])} does not broadcast to weight's batch "
                             f"{tuple(weight.shape[:-2])}; pass one start vector per matrix or a single (n,)") from None
    # Half precision (bf16-true training) has no CPU SVD and too few bits for the power iteration's
    # tolerance: both run in float32, and sigma comes back in the weight's dtype.
    half = weight.dtype in (torch.float16, torch.bfloat16)
    w = weight.detach().float() if half else weight.detach()
    if min(m, n) <= exact_below:
        u_all, s_all, vh_all = torch.linalg.svd(w, full_matrices=False)
        u, v = u_all[..., :, 0], vh_all[..., 0, :]
    else:
        # A fixed-seed Gaussian start, not all-ones: W @ ones is zero for any layer whose rows sum to
        # zero (difference filters), and the iteration then read sigma = 0.
        def start() -> torch.Tensor:
            g = torch.Generator().manual_seed(0)
            s = torch.randn(*w.shape[:-2], n, generator=g, dtype=torch.float64)
            return s.to(dtype=w.dtype, device=w.device)

        if init is None:
            v = start()
        else:
            v = init.detach().to(dtype=w.dtype, device=w.device).expand(*w.shape[:-2], n)
            zero = v.norm(dim=-1, keepdim=True) == 0
            if bool(zero.any()):  # a zero warm start (saved from an all-zero layer) would stay zero
                v = torch.where(zero, start(), v)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        prev = torch.zeros(w.shape[:-2], dtype=w.dtype, device=w.device)
        converged = False
        for _ in range(n_iter):
            u = torch.einsum("...mn,...n->...m", w, v)
            sigma_est = u.norm(dim=-1)
            u = u / sigma_est.unsqueeze(-1).clamp_min(1e-30)
            v = torch.einsum("...mn,...m->...n", w, u)
            v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            if bool(((sigma_est - prev).abs() <= tol * sigma_est.abs().clamp_min(1e-30)).all()):
                converged = True
                break
            prev = sigma_est
        if not converged:
            import warnings

            warnings.warn(
                f"top_singular_value: power iteration did not converge in {n_iter} iterations "
                f"(tol={tol}); raise n_iter or lower exact_below",
                RuntimeWarning,
                stacklevel=2,
            )
        u = torch.einsum("...mn,...n->...m", w, v)
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    sigma = torch.einsum("...m,...mn,...n->...", u, weight.float() if half else weight, v)
    if half:
        sigma, u, v = sigma.to(weight.dtype), u.to(weight.dtype), v.to(weight.dtype)
    return (sigma, u, v) if return_vectors else sigma


def spectral_radius(matrix: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue modulus of square (recurrent or state-transition) matrices.

    For a diagonal SSM such as Mamba-2, whose discrete transition per head is ``exp(dt * A)`` with
    scalar ``A < 0``, pass the vector of those values: a 1-D input is treated as a diagonal.

    Shape:
        matrix ``(..., n, n)`` or diagonal ``(n,)`` -> ``(...)``
    """
    _check_weight_kind(matrix, "matrix", allow_complex=True)
    if matrix.numel() == 0 or (matrix.ndim >= 2 and matrix.shape[-1] == 0):
        raise ValueError(f"matrix: is empty (shape {tuple(matrix.shape)}); needs at least one value")
    # NaN reached LAPACK's balancing step, which crashed the whole process (MKL segfault), not an error.
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("matrix: contains NaN or inf; the spectral radius is undefined")
    if matrix.ndim == 1:
        return matrix.abs().max()
    if matrix.ndim == 0 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix: needs square matrices (..., n, n), got shape {tuple(matrix.shape)}")
    m = matrix.detach()
    if m.dtype in (torch.float16, torch.bfloat16):  # no half-precision eig on CPU: solve in float32
        return torch.linalg.eigvals(m.float()).abs().amax(-1).to(matrix.dtype)
    return torch.linalg.eigvals(m).abs().amax(-1)


def weight_matrices(model: nn.Module, *, include: Sequence[type] = (nn.Linear, nn.Conv1d, nn.Conv2d)) -> dict[str, torch.Tensor]:
    """The weight of each linear or convolutional layer as a matrix ``(out, in * kernel)``, by name."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, tuple(include)) and getattr(module, "weight", None) is not None:
            w = module.weight
            out[name or "weight"] = w.reshape(w.shape[0], -1)
    return out


def layerwise_targets(n_layers: int, *, first: float = 0.8, last: float = 1.0) -> list[float]:
    """Depth-interpolated targets (geometric): early layers more contractive, later ones critical.

    The design material suggests ``sigma < 1`` early for stability and ``sigma ~ 1`` later for
    expressivity; a geometric path keeps the ratio between neighbouring layers constant.
    """
    # range(2.0) raised a bare TypeError; True read as one layer.
    if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral) or n_layers < 1:
        raise ValueError(f"n_layers: needs an integer >= 1, got {n_layers!r}")
    if not (first > 0 and last > 0 and math.isfinite(first) and math.isfinite(last)):  # NaN gave NaN targets
        raise ValueError(f"first, last: targets must be finite numbers > 0, got {first}, {last}")
    if n_layers == 1:
        return [float(last)]
    ratio = (last / first) ** (1.0 / (n_layers - 1))
    return [float(first * ratio**i) for i in range(n_layers)]


class SpectralRegularizer(nn.Module):
    """Penalty ``weight * mean_l (sigma_l - target_l)^2`` over a model's weight matrices.

    Parameters
    ----------
    targets : float, sequence of float, or mapping name -> float
        One target for every layer, one per layer in :func:`weight_matrices` order, or by name.
    weight : float
        Penalty weight; 0 disables the term (it then costs nothing and returns zero).
    exclude : iterable of str
        Layer names left out (commonly the output layer, whose scale is set by the task).
    n_iter : int
        Power iterations per call; the singular vectors are warm-started from the previous call,
        so one or two suffice in a training loop.
    """

    def __init__(
        self,
        *,
        targets: float | Sequence[float] | Mapping[str, float] = 1.0,
        weight: float = 0.01,
        exclude: Iterable[str] = (),
        n_iter: int = 2,
    ) -> None:
        super().__init__()
        # weight="0.1" (a YAML string) raised a bare TypeError from the comparison.
        try:
            w = math.nan if isinstance(weight, (bool, str)) else float(weight)
        except (TypeError, ValueError, RuntimeError):
            w = math.nan
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"weight: must be a finite number >= 0, got {weight!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:  # 2.5 became 2
            raise ValueError(f"n_iter: needs an integer >= 1 (power iterations per call), got {n_iter!r}")
        self.targets = targets
        if targets is None:  # list(None) failed at the first step with a bare TypeError
            raise ValueError("targets: needs a number, one per layer, or a mapping name -> number; got None")
        if isinstance(targets, (Mapping, Sequence, numbers.Real, torch.Tensor, np.ndarray)):  # errors at build
            values = list(targets.values()) if isinstance(targets, Mapping) else (
                [targets] if isinstance(targets, (numbers.Real, str)) or (isinstance(targets, (torch.Tensor, np.ndarray))
                                                                          and targets.ndim == 0) else list(targets))
            if any(isinstance(v, str) for v in values):
                raise ValueError(f"targets: needs a number, a sequence of numbers or a mapping, got the text {targets!r}")
            try:
                ok = all(float(v) >= 0 and math.isfinite(float(v)) for v in values)
            except (TypeError, ValueError, RuntimeError):  # None, a nested list, a multi-element tensor
                ok = False
            if not ok:
                raise ValueError(f"targets: need finite singular values >= 0, got {targets!r}")
        self.weight = float(weight)
        self.exclude = set(exclude)
        self.n_iter = int(n_iter)
        self._v: dict[str, torch.Tensor] = {}

    def layer_targets(self, names: Sequence[str]) -> dict[str, float]:
        out = self._layer_targets(names)
        bad = {n: v for n, v in out.items() if not (v >= 0 and math.isfinite(v))}
        if bad:  # a NaN or inf target made the penalty (and so the training loss) NaN or inf
            raise ValueError(f"targets: need finite singular values >= 0, got {bad}")
        return out

    def _layer_targets(self, names: Sequence[str]) -> dict[str, float]:
        t = self.targets
        if isinstance(t, Mapping):
            missing = [n for n in names if n not in t]
            if missing:
                raise ValueError(f"targets: no target for layer(s) {missing}; give one per layer name")
            return {n: float(t[n]) for n in names}
        if isinstance(t, numbers.Real) or (isinstance(t, (torch.Tensor, np.ndarray)) and t.ndim == 0):  # NumPy / 0-d too
            return {n: float(t) for n in names}
        if isinstance(t, str):  # list("1.0") read as three targets
            raise ValueError(f"targets: needs a number, a sequence of numbers or a mapping, got the text {t!r}")
        t = list(t)
        if len(t) != len(names):
            raise ValueError(f"targets: {len(t)} values for {len(names)} layers {list(names)}; give one per layer")
        return {n: float(v) for n, v in zip(names, t)}

    def sigmas(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Differentiable top singular value of each regularized layer."""
        mats = {k: w for k, w in weight_matrices(model).items() if k not in self.exclude}
        out = {}
        for name, w in mats.items():
            init = self._v.get(name)
            if init is not None and init.shape[-1] != w.shape[-1]:
                init = None
            sigma, _, v = top_singular_value(w, n_iter=max(self.n_iter, 1 if init is not None else 50), tol=1e-4,
                                             init=init, return_vectors=True)
            self._v[name] = v.detach()
            out[name] = sigma
        return out

    def forward(self, model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(loss, sigmas)``; the loss is a zero tensor when ``weight == 0``."""
        if self.weight == 0:
            p = next(model.parameters(), None)
            return (p.new_zeros(()) if p is not None else torch.zeros(())), {}
        sig = self.sigmas(model)
        if not sig:
            raise ValueError("model: has no Linear/Conv weight matrices to regularize (check exclude)")
        tg = self.layer_targets(list(sig))
        loss = torch.stack([(s - tg[n]) ** 2 for n, s in sig.items()]).mean()
        return self.weight * loss, {n: s.detach() for n, s in sig.items()}


def criticality_score(indicators: Mapping[str, float], *, dead_ref: float = 0.1, sens_ref: float = 1.0) -> float:
    """Signed distance from criticality in [-1, 1] from indicators: > 0 chaotic, < 0 ordered.

    ``sensitivity`` (perturbation gain, see :func:`perturbation_sensitivity`) contributes
    ``tanh(log(sens / sens_ref))``: a gain above one amplifies perturbations (chaotic side); a gain
    of 0 (a collapsed network, e.g. every unit dead) scores -1, the limit.
    ``dead_rate`` contributes ``-tanh((dead - dead_ref) / dead_ref)``: many dead units mean an
    ordered, information-losing network. The score is the mean of the terms present.
    """
    if not (0 < dead_ref < math.inf and 0 < sens_ref < math.inf):  # else ZeroDivisionError / math domain error
        raise ValueError(f"dead_ref, sens_ref: need finite numbers > 0, got {dead_ref}, {sens_ref}")
    terms = []
    if "sensitivity" in indicators:
        s = float(indicators["sensitivity"])
        if not (s >= 0 and math.isfinite(s)):
            raise ValueError(f"indicators['sensitivity']: must be a finite number >= 0, got {s}")
        # 0 is a fully collapsed network (no perturbation gets through): the ordered limit, -1.
        terms.append(math.tanh(math.log(s / sens_ref)) if s > 0 else -1.0)
    if "dead_rate" in indicators:
        d = float(indicators["dead_rate"])
        if not 0 <= d <= 1:
            raise ValueError(f"indicators['dead_rate']: must lie in [0, 1], got {d}")
        terms.append(-math.tanh((d - dead_ref) / dead_ref))
    if not terms:
        raise ValueError(f"indicators: needs 'sensitivity' and/or 'dead_rate', got keys {sorted(indicators)}")
    return float(sum(terms) / len(terms))


class AdaptiveSpectralRegularizer(SpectralRegularizer):
    """ASISR: spectral targets that move with the criticality indicators.

    On each :meth:`update_targets` every layer's target moves by ``-rate * score`` (see
    :func:`criticality_score`): a chaotic network gets smaller targets, an ordered one larger,
    clamped to ``[min_target, max_target]``. Start targets come from ``targets`` as in
    :class:`SpectralRegularizer`.
    """

    def __init__(self, *, rate: float = 0.05, min_target: float = 0.3, max_target: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 < min_target < max_target < math.inf:
            raise ValueError(f"min_target, max_target: need 0 < min < max, got {min_target}, {max_target}")
        if not (rate >= 0 and math.isfinite(rate)):  # a NaN rate pinned every target at min_target
            raise ValueError(f"rate: must be a finite number >= 0, got {rate}")
        self.rate, self.min_target, self.max_target = float(rate), float(min_target), float(max_target)
        self.current: dict[str, float] | None = None

    def layer_targets(self, names: Sequence[str]) -> dict[str, float]:
        if self.current is None:
            self.current = super().layer_targets(names)
        return self.current

    def update_targets(self, model: nn.Module, indicators: Mapping[str, float]) -> float:
        """Move the targets from the indicators; return the criticality score used."""
        names = [k for k in weight_matrices(model) if k not in self.exclude]
        current = self.layer_targets(names)
        score = criticality_score(indicators)
        self.current = {
            n: min(self.max_target, max(self.min_target, t - self.rate * score)) for n, t in current.items()
        }
        return score


class CriticalityLR:
    """Learning-rate factor from the distance to criticality, ``d = mean_l |sigma_l - target_l|``.

    ``factor = clamp(((d + eps) / eps) ** -alpha, min_factor, 1)``: the full learning rate at
    criticality, decaying as a power law with distance. Use it through
    ``torch.optim.lr_scheduler.LambdaLR(opt, lambda _: sched.factor)`` and call
    :meth:`update` with the sigmas each step.
    """

    def __init__(self, *, alpha: float = 0.5, eps: float = 0.05, min_factor: float = 0.1) -> None:
        if not (alpha >= 0 and math.isfinite(alpha) and 0 < eps < math.inf and 0 < min_factor <= 1):
            raise ValueError(f"alpha >= 0, eps > 0 and 0 < min_factor <= 1 needed; got {alpha}, {eps}, {min_factor}")
        self.alpha, self.eps, self.min_factor = alpha, eps, min_factor
        self.factor = 1.0

    def update(self, sigmas: Mapping[str, torch.Tensor | float], targets: Mapping[str, float]) -> float:
        if not sigmas:
            raise ValueError("sigmas: empty; pass the sigmas returned by a SpectralRegularizer")
        missing = [n for n in sigmas if n not in targets]
        if missing:
            raise ValueError(f"targets: no target for layer(s) {missing}; pass the regularizer's layer_targets")
        d = sum(abs(float(s) - targets[n]) for n, s in sigmas.items()) / len(sigmas)
        if not math.isfinite(d):  # a NaN sigma fell through max() to min_factor: a diverged run looked slow, not broken
            raise ValueError(f"sigmas: contain NaN or inf ({dict(sigmas)}); the distance to criticality is undefined")
        self.factor = float(min(1.0, max(self.min_factor, ((d + self.eps) / self.eps) ** -self.alpha)))
        return self.factor
