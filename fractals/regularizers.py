"""Differentiable fractal priors on latent time series: 1/f slope, multifractal tau(q), graph FD.

Each term is a closed-form, fully vectorised kernel that autograd differentiates with respect to
the latents; the estimators in :mod:`fractals.metrics` stay the reference (the tests pin these
kernels to them) but carry choices a loss cannot (iterative peak search, hard thresholds, box
covering). A term whose weight is zero returns a zero tensor without touching the latents.

Latents layout: ``(B, T, C)``, time on axis 1, as NeuroFMx returns them. Every function takes
``time_dim`` (default 1) and moves that axis last internally; pass ``time_dim=-1`` for ``(B, C, T)``.

Terms
-----
- :func:`l_spec_1overf`: ``weight * mean((beta - beta_target)^2)`` with ``beta`` the least-squares
  log-log slope of Welch PSDs in ``band`` at several resolutions (so descent cannot satisfy one
  frequency grid only); optionally oscillatory peaks are masked so rhythms are left alone.
- :func:`l_multifractal`: MFDFA mass exponents ``tau(q) = q h(q) - 1``; penalises the curvature of
  tau(q) (divided second differences over the possibly uneven q grid) plus ``match_weight`` times
  the squared distance to ``tau_target``. Zero curvature means a linear tau, i.e. monofractal
  scaling: use the match term to ask for a specific multifractal shape.
- :func:`l_graph_fd`: a soft cluster-growing dimension of the latent correlation graph (below),
  pulled to ``D_target`` or, without a target, its variance across the batch.

Graph surrogate and its relation to the hard graph FD
-----------------------------------------------------
:func:`fractals.metrics.graph_fractal_dim` thresholds ``|corr|`` and box-covers the graph
(``N_B(l) ~ l^-D``). Neither step has a gradient, so the prior uses: soft edges
``A = sigmoid((|r| - thresh) / temperature)``; soft reachability within ``l`` hops
``R_l = g(R_{l-1} (A + I))`` with ``g`` a sigmoid step of slope ``sharpness`` at 1/2, rescaled so
``g(0) = 0`` and ``g(1) = 1`` (``R_0 = I``: ``j`` is reached when at least one path arrives); ball mass ``M(l) = mean_i sum_j R_l[i, j]``; ``D = slope of log M(l) on log l`` over
``eps_values``. As ``temperature -> 0`` and ``sharpness -> inf`` ``R_l`` is exact ``l``-hop
reachability and ``D`` the cluster-growing dimension, which equals the box-covering dimension on
homogeneous fractal networks (Song, Havlin & Makse, Nature 2005); on small-world graphs both
saturate (``M`` reaches ``C``). Finite ``l`` biases it low on lattices (ring: ``M = 2l + 1``).
"""
from __future__ import annotations

# The terms live one module per prior; this module is their public import path (docs, configs and
# user code import from here), so every name, private helpers included, is re-exported.
from fractals._prior_common import (  # noqa: F401
    _LATENTS_CHECKED, _check_latents, _check_time_dim, _check_weight, _finite, _lstsq_slope, _time_last,
    _zero_like,
)
from fractals.graph_prior import l_graph_fd, soft_graph_dimension
from fractals.multifractal_prior import l_multifractal, latent_tau
from fractals.spectral_prior import (  # noqa: F401
    _band_bins, _band_hz, _betas, _resolutions, _spec_bins, _spec_loss_binned, _spectral_input, _welch_beta,
    _welch_beta_binned, _welch_power, l_spec_1overf, latent_beta,
)

__all__ = [
    "l_spec_1overf",
    "l_multifractal",
    "l_graph_fd",
    "latent_beta",
    "latent_tau",
    "soft_graph_dimension",
    "FractalPriors",
]

# --------------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------------


def __getattr__(name: str):
    # FractalPriors lives in fractals.priors (the config-driven module beside these functional terms);
    # a lazy import keeps ``from fractals.regularizers import FractalPriors`` working without a cycle.
    if name == "FractalPriors":
        from fractals.priors import FractalPriors

        return FractalPriors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
