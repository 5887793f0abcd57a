"""Tests that kill surviving mutants of the second mutation round (peaks, nested DFA, box covering,
power law, functional connectivity): each pins a value a plausible slip would change."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fractals.spectral_peaks import find_peaks

# ----------------------------------------------------------------------------- spectral_peaks
_F = torch.arange(8, 321, dtype=torch.float64) * 0.25  # 2 .. 80 Hz on a 0.25 Hz grid


def _peaks(peaks, noise=0.01, threshold=2.5, min_height=0.0):
    """find_peaks on an exact log10 residual of Gaussian bumps (linear power) plus small noise."""
    lin = sum(a * torch.exp(-0.5 * ((_F - c) / s) ** 2) for c, s, a in peaks)
    g = torch.Generator().manual_seed(0)
    r = torch.log10(1 + lin) + noise * torch.randn(_F.shape, generator=g, dtype=torch.float64)
    keep = torch.ones_like(r, dtype=torch.bool)
    return find_peaks(r[None], keep[None], _F, 0.25, threshold, min_height, 6, 0.1)


@pytest.mark.parametrize("peaks, height_tol", [
    ([(20.0, 2.0, 3.0)], 0.012),
    ([(20.0, 2.0, 3.0), (45.0, 3.0, 1.5)], 0.012),
    ([(20.3, 1.0, 5.0)], 0.02),  # off-grid centre: the height is the parabola's vertex, not bin k
    ([(30.1, 0.8, 4.0)], 0.03),  # narrow: the smoother flattens the top a little
])
def test_find_peaks_recovers_gaussian_centre_height_and_width(peaks, height_tol):
    """Centre, log10 height and FWHM of Gaussian bumps in linear power come back (parabola vertex,
    log10 height, the smoother's variance removed). Measured: centres within 0.04 Hz, heights
    0.003-0.022 low, widths 0.5-2.6 % narrow, never wider (without the smoother's variance removed
    they come out 0.2-3.8 % wider)."""
    _, _, freq, height, width, valid = _peaks([(c, s, a) for c, s, a in peaks])
    assert bool(valid[0, : len(peaks)].all())  # highest first; noise may add small ones after
    for i, (c, s, a) in enumerate(peaks):
        assert abs(float(freq[0, i]) - c) < 0.06, (freq, c)
        assert abs(float(height[0, i]) - math.log10(1 + a)) < height_tol, (height, a)
        rel = float(width[0, i]) / (s * 2 * math.sqrt(2 * math.log(2))) - 1
        assert -0.04 < rel < 0.015, (width, s)


def test_find_peaks_masks_peak_bin_and_neighbours_below_mask_level():
    """A peak whose Gaussian stays under ``mask_level`` everywhere still has its own bin and the two
    neighbours masked (else its core would be re-picked and the fit would keep it)."""
    r = torch.log10(1 + 0.08 * torch.exp(-0.5 * ((_F - 20.0) / 2.0) ** 2))
    mask = find_peaks(r[None], torch.ones_like(r, dtype=torch.bool)[None], _F, 0.25, 2.5, 0.0, 1, 0.1)[0][0]
    assert _F[mask].tolist() == [19.75, 20.0, 20.25]


def test_find_peaks_min_height_rejects_lower_peaks():
    """A peak of log10 height 0.6 is not a peak when ``min_peak_height`` is 0.7, however far it
    clears ``threshold`` noise sigmas."""
    assert int(_peaks([(20.0, 2.0, 3.0)], min_height=0.5)[-1].sum()) == 1
    assert int(_peaks([(20.0, 2.0, 3.0)], min_height=0.7)[-1].sum()) == 0


# ----------------------------------------------------------------------------- functional connectivity
@pytest.mark.parametrize("offset", [1e6, 1e7])
def test_fc_float32_with_a_large_offset_matches_float64_corrcoef(offset):
    """float32 channels riding on a large offset: r within 5e-5 of float64 ``np.corrcoef`` of the same
    (rounded) values (measured <= 1.5e-5; centring once leaves the float32 mean's error in, 1e-4-3e-4)."""
    from fractals.graph import functional_connectivity_latents

    z = np.random.default_rng(0).standard_normal((4000, 4))
    z[:, 1] += 0.8 * z[:, 0]
    x = (z + offset).astype(np.float32)
    ours = functional_connectivity_latents(torch.from_numpy(x), thresh=0.0, weighted=True).numpy()
    ref = np.abs(np.corrcoef(x.astype(np.float64).T))
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-5)


def test_fc_partial_default_ridge_is_zero_just_above_c_samples():
    """With T = C + 2 the sample correlation matrix is invertible: the default ridge is 0, so the
    default equals ``ridge=0`` exactly and differs from ``ridge=0.1``."""
    from fractals.graph import functional_connectivity_latents as fc

    x = torch.from_numpy(np.random.default_rng(3).standard_normal((6, 4)))
    default = fc(x, "partial", thresh=0.0, weighted=True)
    torch.testing.assert_close(default, fc(x, "partial", thresh=0.0, weighted=True, ridge=0.0), rtol=0, atol=0)
    assert float((default - fc(x, "partial", thresh=0.0, weighted=True, ridge=0.1)).abs().max()) > 1e-3


@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_fc_float32_is_scale_free_at_extreme_magnitudes(scale):
    """Correlation ignores scale: float32 channels near 1e20 (Gram overflow) or 1e-30 (underflow)
    give the adjacency of the unscaled channels, not NaN r and silently no edges."""
    from fractals.graph import functional_connectivity_latents as fc

    z = np.random.default_rng(0).standard_normal((500, 3)).astype(np.float32)
    z[:, 1] += z[:, 0]
    ref = fc(torch.from_numpy(z), thresh=0.0, weighted=True)
    assert float(ref[0, 1]) > 0.5
    torch.testing.assert_close(fc(torch.from_numpy(z * np.float32(scale)), thresh=0.0, weighted=True), ref,
                               rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- power law
def test_bootstrap_p_value_counts_synthetic_ks_ties_as_at_least_as_large():
    """The p-value is P(KS_synthetic >= KS_data). Few distinct integers make exact ties common
    (37 of 200 sets here are the data's own multiset): they count, as the p-value's ``>=`` says."""
    from fractals.graph import powerlaw_fit
    from fractals.powerlaw import _fit_tail, _sample_like

    x = np.array([1.0] * 18 + [2.0] * 2)
    fit = powerlaw_fit(x, xmin=1, discrete=True, bootstrap=200)
    gen = torch.Generator().manual_seed(0)  # the default stream the fit used
    data = torch.from_numpy(x)
    ks = [_fit_tail(_sample_like(data, float(fit.alpha), 1.0, int(fit.n_tail), True, gen), True, 1.0, 2)[2]
          for _ in range(200)]
    assert sum(k == float(fit.ks) for k in ks) >= 10
    assert float(fit.p_value) == sum(k >= float(fit.ks) for k in ks) / 200


def test_ks_lower_bound_includes_the_candidates_own_first_step():
    """At its own start a candidate's empirical CDF jumps to 1 / n_t where the model CDF is 0, so every
    lower bound, on any grid, is at least 1 / n_t (candidates off the grid included)."""
    from fractals.powerlaw import _ks_bounds_continuous

    rng = np.random.default_rng(11)
    x = torch.sort(torch.from_numpy(4 * (1 - rng.random(1000)) ** -0.8)).values
    n = x.numel()
    cand = torch.arange(1, n - 10, 7)  # none on the stride-128 grid except by chance
    nt = (n - cand).double()
    suffix = torch.flip(torch.cumsum(torch.flip(torch.log(x), [0]), 0), [0])
    alpha = 1.0 + nt / (suffix[cand] - nt * torch.log(x[cand]))
    for stride in (16, 128):
        lower, _ = _ks_bounds_continuous(x, cand, alpha, x[cand], stride)
        assert bool((lower >= 1.0 / nt - 1e-15).all()), stride


# ----------------------------------------------------------------------------- box covering
def test_node_orders_keep_the_index_orders_component_when_two_components_tie():
    """Path P6 (nodes 0-5) and star K(1,5) (nodes 6-11) tie in size: every order measures the path,
    as the index order does (a star in some orders would give the fewest boxes [3, 1, 1] and fail)."""
    import networkx as nx

    from fractals.graph import graph_fractal_dim

    adj = nx.to_numpy_array(nx.disjoint_union(nx.path_graph(6), nx.star_graph(5)), nodelist=range(12))
    d_b, box = graph_fractal_dim(adj, [2, 3, 4], node_orders=8, return_counts=True)
    assert box.counts.tolist() == [3, 2, 2] and int(box.n_nodes) == 6
    assert float(d_b) == pytest.approx(float(graph_fractal_dim(adj, [2, 3, 4])), abs=0)

