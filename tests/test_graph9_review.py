"""Review round 9: fractals.graph / fractals.box_covering against networkx and CSN reference computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fractals.graph import functional_connectivity_latents, graph_fractal_dim, powerlaw_fit

nx = pytest.importorskip("networkx", reason="networkx (a torch dependency) builds the reference graphs")
from test_metrics_graph import networkx_box_counts as _nx_counts  # noqa: E402  the same networkx reference


def test_box_counts_above_the_dense_size_match_networkx_with_isolated_nodes_and_components():
    # > 64 nodes: SciPy distances, per-size colouring and the SciPy component search.
    g = nx.disjoint_union(nx.disjoint_union(nx.path_graph(40), nx.grid_2d_graph(6, 6)), nx.empty_graph(5))
    adj = nx.to_numpy_array(g, nodelist=sorted(g.nodes()))
    eps = [1, 2, 3, 4, 5, 7]
    _, box = graph_fractal_dim(adj, eps, components="sum", return_counts=True)
    np.testing.assert_array_equal(box.counts, _nx_counts(g, eps))
    assert int(box.n_nodes) == 81
    _, box = graph_fractal_dim(adj, eps, return_counts=True)
    np.testing.assert_array_equal(box.counts, _nx_counts(nx.path_graph(40), eps))
    assert int(box.n_nodes) == 40


def test_largest_component_tie_goes_to_the_component_of_node_zero_on_both_cpu_paths():
    for n in (10, 80):  # dense BFS path and SciPy path
        h = nx.Graph()
        nx.add_path(h, list(range(1, n // 2 + 1)))
        nx.add_star(h, [0, *range(n // 2 + 1, n)])
        _, box = graph_fractal_dim(nx.to_numpy_array(h, nodelist=range(n)), [1, 2, 3], return_counts=True)
        assert box.counts.tolist() == [n // 2, n // 2 - 1, 1]  # the star: hub + one leaf, then single leaves


def test_powerlaw_continuous_matches_a_plain_csn_scan():
    rng = np.random.default_rng(1)
    x = (1 - rng.random(300)) ** (-1 / 1.5)
    xs, best = np.sort(x), None
    for xm in np.unique(xs):
        tail = xs[xs >= xm]
        n = tail.size
        if n < 10:
            break
        a = 1 + n / np.sum(np.log(tail / xm))
        cdf = 1 - (tail / xm) ** (1 - a)
        ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
        if best is None or ks < best[0]:
            best = (ks, a, xm, n)
    fit = powerlaw_fit(x)
    np.testing.assert_allclose([fit.ks, fit.alpha, fit.xmin], best[:3], rtol=1e-10)
    assert int(fit.n_tail) == best[3]


def test_powerlaw_discrete_alpha_and_ks_match_the_zeta_likelihood():
    from scipy.optimize import minimize_scalar
    from scipy.special import zeta

    rng = np.random.default_rng(1)
    k = np.floor(rng.pareto(1.5, 1500) + 1)
    fit = powerlaw_fit(k, discrete=True)
    xm = float(fit.xmin)
    tail = k[k >= xm]
    ref = minimize_scalar(lambda a: tail.size * np.log(zeta(a, xm)) + a * np.log(tail).sum(),
                          bounds=(1.01, 6), method="bounded", options={"xatol": 1e-10}).x
    assert abs(float(fit.alpha) - ref) < 1e-6
    u = np.unique(tail)
    emp = np.searchsorted(np.sort(tail), u, side="right") / tail.size
    ks = np.max(np.abs(emp - (1 - zeta(float(fit.alpha), u + 1) / zeta(float(fit.alpha), xm))))
    assert abs(float(fit.ks) - ks) < 1e-12


@pytest.mark.parametrize("generator", [0, "seed", np.random.default_rng(0)])
def test_powerlaw_bootstrap_generator_that_is_not_a_torch_generator_raises_value_error(generator):
    x = (1 - np.random.default_rng(2).random(40)) ** (-1 / 1.5)
    with pytest.raises(ValueError, match="generator"):
        powerlaw_fit(x, bootstrap=3, generator=generator)


@pytest.mark.parametrize("discrete", ["false", "no", 2])
def test_powerlaw_discrete_flag_that_is_not_a_bool_raises_instead_of_fitting_a_zeta_law(discrete):
    k = np.floor((1 - np.random.default_rng(3).random(60)) ** (-1 / 1.5))
    with pytest.raises(ValueError, match="discrete"):
        powerlaw_fit(k, discrete=discrete)


def test_powerlaw_seeded_bootstrap_is_deterministic_and_batch_independent():
    x = (1 - np.random.default_rng(4).random(120)) ** (-1 / 1.5)
    a = powerlaw_fit(x, bootstrap=15, generator=torch.Generator().manual_seed(7)).p_value
    b = powerlaw_fit(x, bootstrap=15, generator=torch.Generator().manual_seed(7)).p_value
    assert a == b
    batch = powerlaw_fit(np.stack([x[::-1].copy() * 2, x]), bootstrap=15).p_value
    assert batch[1] == powerlaw_fit(x, bootstrap=15).p_value


def test_fc_partial_equals_networkx_free_precision_formula_in_float64_and_thresholds_at_the_ends():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 4))
    p = np.linalg.inv(np.corrcoef(x.T))
    ref = np.abs(-p / np.sqrt(np.outer(np.diag(p), np.diag(p)))) * (1 - np.eye(4))
    out = functional_connectivity_latents(x, "partial", thresh=0.0, weighted=True)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, atol=1e-12)
    assert functional_connectivity_latents(x, thresh=0.0).sum() == 12  # every pair
    assert functional_connectivity_latents(x, thresh=0.999999).sum() == 0


def test_fc_pearson_on_a_long_float32_series_matches_float64_corrcoef():
    # One float32 Gram matmul over 4e5 steps put r ~1e-4 off (1e-3 at 2e6 steps): edges near thresh flipped.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400_000, 3)) @ rng.standard_normal((3, 3))).astype(np.float32)
    ref = np.abs(np.corrcoef(x.astype(np.float64).T)) * (1 - np.eye(3))
    out = functional_connectivity_latents(x, thresh=0.0, weighted=True)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-5


def test_nan_or_inf_on_the_ignored_diagonal_is_ignored_but_off_diagonal_nan_still_raises():
    adj = nx.to_numpy_array(nx.grid_2d_graph(4, 4))
    want = graph_fractal_dim(adj, [1, 2, 3])
    marked = adj.copy()
    np.fill_diagonal(marked, np.nan)  # a common way to mark "no self-correlation"
    marked[0, 0] = np.inf
    assert graph_fractal_dim(marked, [1, 2, 3]) == want
    assert graph_fractal_dim(torch.tensor(marked, dtype=torch.float32), [1, 2, 3]).item() == pytest.approx(float(want))
    marked[0, 1] = np.nan
    with pytest.raises(ValueError, match="adj: contains 1 NaN"):
        graph_fractal_dim(marked, [1, 2, 3])
