"""fractals.graph: FC adjacency, box-covering dimension on graphs of known dimension, CSN power laws."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fractals.graph import BoxCounts, PowerLawFit, functional_connectivity_latents, graph_fractal_dim, powerlaw_fit
from interpreter import importable, run_interpreted

nx = pytest.importorskip("networkx", reason="networkx (a torch dependency) builds the reference graphs")

EPS = list(range(2, 10))


def uv_flower(u: int, v: int, generation: int):
    """(u,v)-flower (Rozenfeld, Havlin & ben-Avraham 2007): start from one edge; each generation
    replaces every edge by two parallel paths of u and v edges. Box dimension ln(u+v)/ln(u)."""
    g = nx.Graph()
    g.add_edge(0, 1)
    next_node = 2
    for _ in range(generation):
        h = nx.Graph()
        for a, b in g.edges():
            for length in (u, v):
                inner = list(range(next_node, next_node + length - 1))
                next_node += length - 1
                nx.add_path(h, [a, *inner, b])
        g = h
    return nx.convert_node_labels_to_integers(g)


def adjacency(g) -> np.ndarray:
    return nx.to_numpy_array(g, nodelist=sorted(g.nodes()))


def networkx_box_counts(g, eps):
    """Reference: greedy colouring (largest first) of the dual graph from networkx distances."""
    nodes = sorted(g.nodes())
    dist = dict(nx.all_pairs_shortest_path_length(g))
    counts = []
    for l_b in eps:
        dual = nx.Graph()
        dual.add_nodes_from(nodes)
        dual.add_edges_from((i, j) for i in nodes for j in nodes if i < j and dist[i].get(j, math.inf) >= l_b)
        counts.append(max(nx.greedy_color(dual, strategy="largest_first").values()) + 1)
    return np.minimum.accumulate(counts)


# ----------------------------------------------------------------------------- FC
def _latents(b=3, t=200, c=6, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((c, c))
    return rng.standard_normal((b, t, c)) @ mix


def test_pearson_matches_corrcoef():
    lat = _latents()
    adj_w = functional_connectivity_latents(lat, "pearson", thresh=0.3, weighted=True)
    adj = functional_connectivity_latents(lat, "pearson", thresh=0.3)
    assert isinstance(adj, np.ndarray) and adj.shape == (3, 6, 6)
    for b in range(3):
        r = np.abs(np.corrcoef(lat[b].T))
        np.fill_diagonal(r, 0.0)
        np.testing.assert_allclose(adj_w[b], np.where(r > 0.3, r, 0.0), atol=1e-12)
        np.testing.assert_array_equal(adj[b], (r > 0.3).astype(float))
    assert np.all(np.diagonal(adj, axis1=-2, axis2=-1) == 0)


def test_partial_matches_precision_formula():
    lat = _latents(seed=1)
    adj = functional_connectivity_latents(lat, "partial", thresh=0.0, weighted=True)
    for b in range(3):
        prec = np.linalg.inv(np.corrcoef(lat[b].T))
        d = np.sqrt(np.diag(prec))
        partial = -prec / np.outer(d, d)
        np.fill_diagonal(partial, 0.0)
        np.testing.assert_allclose(adj[b], np.abs(partial), atol=1e-9)


def test_partial_uses_ridge_when_channels_outnumber_samples():
    lat = _latents(b=1, t=5, c=8, seed=2)
    adj = functional_connectivity_latents(lat, "partial", thresh=0.0, weighted=True)
    r = np.corrcoef(lat[0].T)
    prec = np.linalg.inv(0.9 * r + 0.1 * np.eye(8))
    d = np.sqrt(np.diag(prec))
    expected = np.abs(-prec / np.outer(d, d))
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(adj[0], expected, atol=1e-9)
    assert np.isfinite(adj).all()


def test_fc_torch_float32_and_gradient():
    lat = torch.tensor(_latents(), dtype=torch.float32, requires_grad=True)
    adj = functional_connectivity_latents(lat, weighted=True)
    assert isinstance(adj, torch.Tensor) and adj.dtype == torch.float32
    adj.sum().backward()
    assert lat.grad is not None and bool(torch.isfinite(lat.grad).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [({"method": "spearman"}, "method"), ({"thresh": 1.5}, "thresh"), ({"thresh": -0.1}, "thresh"),
     ({"method": "partial", "ridge": 1.0}, "ridge")],
)
def test_fc_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        functional_connectivity_latents(_latents(), **kwargs)


def test_fc_bad_latents():
    lat = _latents()
    lat[1, :, 2] = 4.0
    with pytest.raises(ValueError, match="channel 2 of series 1"):
        functional_connectivity_latents(lat)
    lat[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        functional_connectivity_latents(lat)
    with pytest.raises(ValueError, match="3 time steps"):
        functional_connectivity_latents(np.ones((2, 6)) + np.arange(6))
    with pytest.raises(ValueError, match="shape"):
        functional_connectivity_latents(np.arange(5.0))


# ----------------------------------------------------------------------------- box covering
def test_counts_match_networkx_greedy_colouring():
    graphs = [nx.connected_watts_strogatz_graph(60, 4, 0.1, seed=1), uv_flower(2, 2, 3), nx.grid_2d_graph(7, 7)]
    for g in graphs:
        _, box = graph_fractal_dim(adjacency(g), [1, 2, 3, 4, 5], return_counts=True)
        np.testing.assert_array_equal(box.counts, networkx_box_counts(g, [1, 2, 3, 4, 5]))


def test_path_graph_dimension_one():
    d = graph_fractal_dim(adjacency(nx.path_graph(128)), EPS)
    assert abs(float(d) - 1.0) < 0.05


def test_lattice_dimension_near_two():
    # Finite size biases a 24 x 24 grid low (1.74 measured; 1.83 at 32 x 32).
    d = graph_fractal_dim(adjacency(nx.grid_2d_graph(24, 24)), EPS)
    assert float(d) > 1.65 and float(d) < 2.2


@pytest.mark.parametrize("generation, expected", [(4, 2.05), (5, 2.16)])
def test_uv_flower_dimension(generation, expected):
    """(2,2)-flower: d_B = ln 4 / ln 2 = 2."""
    d = graph_fractal_dim(adjacency(uv_flower(2, 2, generation)), EPS)
    assert abs(float(d) - math.log(4) / math.log(2)) < 0.2
    assert float(d) == pytest.approx(expected, abs=0.01)  # pinned: greedy colouring is deterministic


def test_batched_equals_single_and_shapes():
    graphs = [nx.connected_watts_strogatz_graph(40, 4, p, seed=s) for p, s in ((0.05, 0), (0.2, 1), (0.5, 2), (0.0, 3))]
    adj = np.stack([adjacency(g) for g in graphs]).reshape(2, 2, 40, 40)
    d, box = graph_fractal_dim(adj, [1, 2, 3, 4], return_counts=True)
    assert d.shape == (2, 2) and box.counts.shape == (2, 2, 4) and isinstance(box, BoxCounts)
    for i, g in enumerate(graphs):
        single = graph_fractal_dim(adjacency(g), [1, 2, 3, 4])
        assert float(single) == pytest.approx(float(d.reshape(-1)[i]), abs=1e-12)
    t = graph_fractal_dim(torch.tensor(adj, dtype=torch.float32), [1, 2, 3, 4])
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), d, rtol=1e-5)
    # Counts never rise with the box size; more small-world rewiring, fewer boxes at l_B = 3.
    assert np.all(np.diff(box.counts, axis=-1) <= 0)


def test_disconnected_rule():
    path = adjacency(nx.path_graph(40))
    adj = np.zeros((50, 50))
    adj[:40, :40] = path
    adj[40:45, 40:45] = adjacency(nx.path_graph(5))  # small second component, nodes 45..49 isolated
    d_big, box_big = graph_fractal_dim(adj, [1, 2, 3], return_counts=True)
    assert int(box_big.n_nodes) == 40
    np.testing.assert_array_equal(box_big.counts, graph_fractal_dim(path, [1, 2, 3], return_counts=True)[1].counts)
    _, box_sum = graph_fractal_dim(adj, [1, 2, 3], components="sum", return_counts=True)
    small = graph_fractal_dim(adjacency(nx.path_graph(5)), [1, 2, 3], return_counts=True)[1].counts
    np.testing.assert_array_equal(box_sum.counts, box_big.counts + small + 5)


def test_default_eps_spans_the_diameter():
    _, box = graph_fractal_dim(adjacency(nx.path_graph(10)), return_counts=True)
    np.testing.assert_array_equal(box.eps, np.arange(2, 11))


@pytest.mark.parametrize(
    "adj, eps, match",
    [
        (np.zeros((3, 6, 6)), [1, 2], "no edges"),
        (np.triu(np.ones((5, 5)), 1), [1, 2], "symmetric"),
        (np.ones((4, 5)), [1, 2], "square"),
        (adjacency(nx.path_graph(6)), [2], "at least two"),
        (adjacency(nx.path_graph(6)), [3, 2], "increasing"),
        (adjacency(nx.path_graph(6)), [0, 1, 2], "increasing"),
        (adjacency(nx.path_graph(6)), [1.5, 2.0], "integer"),
        (adjacency(nx.complete_graph(6)), [2, 3], "more than one box"),
    ],
)
def test_graph_bad_input(adj, eps, match):
    with pytest.raises(ValueError, match=match):
        graph_fractal_dim(adj, eps)


def test_graph_bad_components_and_nan():
    adj = adjacency(nx.path_graph(6))
    with pytest.raises(ValueError, match="components"):
        graph_fractal_dim(adj, [1, 2], components="all")
    adj[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        graph_fractal_dim(adj, [1, 2])


def test_fc_to_graph_dimension_pipeline():
    lat = torch.tensor(_latents(b=2, t=300, c=16, seed=3))
    adj = functional_connectivity_latents(lat, thresh=0.2)
    d = graph_fractal_dim(adj, [1, 2, 3], components="sum")
    assert d.shape == (2,) and bool(torch.isfinite(d).all()) and bool((d > 0).all())


# ----------------------------------------------------------------------------- power laws
def _pareto(alpha, n, xmin=1.0, seed=0):
    u = np.random.default_rng(seed).random(n)
    return xmin * (1 - u) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.0])
def test_powerlaw_recovers_alpha(alpha):
    fit = powerlaw_fit(_pareto(alpha, 2000, seed=int(alpha * 10)))
    assert isinstance(fit, PowerLawFit)
    assert abs(float(fit.alpha) - alpha) < 0.1
    assert float(fit.ks) < 0.05 and int(fit.n_tail) >= 500
    assert float(fit.sigma) == pytest.approx((float(fit.alpha) - 1) / math.sqrt(int(fit.n_tail)))


def test_powerlaw_finds_xmin_on_mixture():
    """Flat body on [1, 5) below a Pareto tail from 5. KS minimisation may settle on a larger x_min
    (any x_min above the true one is also a power law), never far below it."""
    xmins, alphas = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        body = rng.uniform(1.0, 5.0, 400)  # density well below the tail's at x = 5
        tail = 5.0 * (1 - rng.random(1000)) ** (-1.0 / 1.5)
        fit = powerlaw_fit(np.concatenate([body, tail]))
        xmins.append(float(fit.xmin))
        alphas.append(float(fit.alpha))
    xmins, alphas = np.array(xmins), np.array(alphas)
    assert np.all((xmins > 4.5) & (xmins < 10.0)), xmins
    assert abs(np.median(xmins) - 5.0) / 5.0 < 0.1
    assert np.abs(alphas - 2.5).mean() < 0.1


def test_powerlaw_fixed_xmin_and_batch():
    x = np.stack([_pareto(2.5, 800, seed=s) for s in range(3)])
    fit = powerlaw_fit(torch.tensor(x), xmin=1.0)
    assert isinstance(fit.alpha, torch.Tensor) and fit.alpha.shape == (3,)
    n = x.shape[-1]
    mle = 1 + n / np.log(x).sum(-1)
    np.testing.assert_allclose(fit.alpha.numpy(), mle, rtol=1e-12)
    assert bool((fit.xmin == 1.0).all())


def test_powerlaw_discrete():
    rng = np.random.default_rng(7)
    x = np.floor((6 - 0.5) * (1 - rng.random(3000)) ** (-1 / 1.5) + 0.5)
    fit = powerlaw_fit(x, discrete=True)
    assert abs(float(fit.alpha) - 2.5) < 0.1 and float(fit.xmin) >= 6


def test_powerlaw_bootstrap_p_value():
    true = powerlaw_fit(_pareto(2.5, 300, seed=8), bootstrap=30)
    expo = powerlaw_fit(np.random.default_rng(9).exponential(1.0, 300) + 1.0, bootstrap=30, min_tail=100)
    assert 0.1 < float(true.p_value) <= 1.0
    assert float(expo.p_value) < float(true.p_value)
    again = powerlaw_fit(_pareto(2.5, 300, seed=8), bootstrap=30)
    assert float(again.p_value) == float(true.p_value)  # default generator is seeded: deterministic
    assert powerlaw_fit(_pareto(2.5, 300, seed=8)).p_value is None


@pytest.mark.parametrize(
    "values, kwargs, match",
    [
        (np.array([1.0, 2.0, 0.0] * 10), {}, "> 0"),
        (np.array([1.0, np.nan] * 10), {}, "NaN"),
        (np.array([1.5, 2.0] * 10), {"discrete": True}, "integer"),
        (np.arange(1.0, 6.0), {}, "min_tail"),
        (np.arange(1.0, 30.0), {"xmin": 100.0}, "xmin"),
        (np.arange(1.0, 30.0), {"xmin": -1.0}, "xmin"),
        (np.arange(1.0, 30.0), {"bootstrap": -1}, "bootstrap"),
    ],
)
def test_powerlaw_bad_input(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        powerlaw_fit(values, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    adj = np.stack([adjacency(uv_flower(2, 2, 3)), adjacency(nx.grid_2d_graph(8, 8))[:44, :44]])
    cpu_d, cpu_box = graph_fractal_dim(torch.tensor(adj), [1, 2, 3, 4], return_counts=True)
    gpu_d, gpu_box = graph_fractal_dim(torch.tensor(adj).cuda(), [1, 2, 3, 4], return_counts=True)
    assert gpu_d.is_cuda
    torch.testing.assert_close(gpu_box.counts.cpu(), cpu_box.counts)
    torch.testing.assert_close(gpu_d.cpu(), cpu_d)
    lat = torch.tensor(_latents())
    torch.testing.assert_close(
        functional_connectivity_latents(lat.cuda(), "partial", weighted=True).cpu(),
        functional_connectivity_latents(lat, "partial", weighted=True),
    )


@pytest.mark.parametrize("n_nodes", [20, 90])
@pytest.mark.parametrize("components", ["largest", "sum"])
@pytest.mark.parametrize("given_eps", [True, False])
def test_cpu_and_device_box_kernels_agree(n_nodes, components, given_eps):
    # CPU tensors take the SciPy + NumPy kernels; CUDA the torch ones. Run the torch kernels here
    # on CPU, so CI checks the CUDA algorithm against the CPU one (90 nodes: two bitset words and
    # one colouring pass per box size).
    from fractals import box_covering as bc

    rng = np.random.default_rng(n_nodes)
    graphs = []
    for _ in range(3):  # sparse random geometric-like graphs with a second component
        g = nx.random_geometric_graph(n_nodes - 5, 0.25, seed=int(rng.integers(1 << 30)))
        g.add_edges_from([(n_nodes - 5 + i, n_nodes - 4 + i) for i in range(4)])
        graphs.append(nx.to_numpy_array(g, nodelist=range(n_nodes)) > 0)
    a = torch.from_numpy(np.stack(graphs))
    eps = torch.tensor([1, 2, 3, 5]) if given_eps else None
    cpu = bc._cover_cpu(a, eps, components)
    dev = bc._cover_device(a, eps, components)
    for got, want in zip(cpu, dev):
        assert torch.equal(got.to(want.dtype), want)


@pytest.mark.skipif(not importable("triton"), reason="needs triton (make setup installs it)")
def test_triton_colouring_equals_numpy_colouring_in_the_interpreter():
    # The CUDA path colours in one Triton launch (fractals._box_triton). Triton's CPU interpreter runs
    # that kernel here, through _cover_device, against the NumPy bitset kernel: 1, 2 and 4 bitset
    # words, excluded nodes (largest component) and the 256-node limit.
    report = run_interpreted("triton_interpreter_box.py")
    assert len(report) == 3
    for case, counts in report.items():
        assert counts["triton"] == counts["numpy"], case
        assert min(min(row) for row in counts["numpy"]) > 1, case  # every size colours several boxes


def test_device_colouring_switch_is_checked_and_the_kernel_refuses_oversized_graphs():
    from fractals import _box_triton

    assert _box_triton.ENABLED
    assert not _box_triton.available(torch.device("cpu"), 32)  # CPU tensors take the NumPy kernel
    assert not _box_triton.available(torch.device("cuda"), _box_triton.MAX_NODES + 1)
    if _box_triton.triton is not None:
        n = _box_triton.MAX_NODES + 1
        with pytest.raises(ValueError, match="MAX_NODES"):
            _box_triton.colour_counts(torch.zeros(1, n, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.long),
                                      torch.ones(1, n, dtype=torch.bool))


def test_pack_rows_sets_bit_j_of_word_w_for_column_64w_plus_j():
    from fractals._box_triton import pack_rows

    dual = torch.zeros(2, 3, 130, dtype=torch.bool)
    dual[0, 1, [0, 63, 64, 129]] = True
    words = pack_rows(dual)
    assert words.shape == (2, 3, 3) and words.dtype == torch.int64
    assert words[0, 1].tolist() == [1 | -(1 << 63), 1, 2]  # bit 63 is the sign bit of an int64
    assert int(words[1].abs().sum()) == 0 and int(words[0, 0].abs().sum()) == 0


# ----------------------------------------------------------------------------- review: edge cases
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fc_constant_channel_with_rounding_residue_raises(dtype):
    """0.1 repeated 1000 times has a mean that is not exactly 0.1: the centred channel is not 0."""
    x = np.random.default_rng(0).standard_normal((1000, 3)).astype(dtype)
    x[:, 2] = 0.1
    with pytest.raises(ValueError, match="channel 2 of series 0 .* constant"):
        functional_connectivity_latents(x)


def test_fc_partial_on_singular_correlation_names_ridge():
    x = np.random.default_rng(1).standard_normal((100, 4))
    x[:, 3] = x[:, 0]  # duplicate channel: R is singular although T > C
    with pytest.raises(ValueError, match="ridge"):
        functional_connectivity_latents(x, "partial")
    assert functional_connectivity_latents(x, "partial", ridge=0.1).shape == (4, 4)


def test_numpy_scalar_thresh_and_xmin_accepted():
    x = np.random.default_rng(2).standard_normal((200, 5))
    np.testing.assert_array_equal(functional_connectivity_latents(x, thresh=np.float32(0.1)),
                                  functional_connectivity_latents(x, thresh=float(np.float32(0.1))))
    deg = np.floor(np.random.default_rng(3).pareto(1.5, 300) + 1)
    assert powerlaw_fit(deg, xmin=np.int64(2), discrete=True).xmin == 2.0


def test_powerlaw_discrete_tied_top_values_do_not_crash():
    """Ten values tied at 5000 as a candidate tail: alpha ~ 1e4, the Hurwitz zeta underflows to 0."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.floor(rng.pareto(1.5, 200) + 1) * 3, np.full(10, 5000.0)])
    fit = powerlaw_fit(x, discrete=True)
    assert np.isfinite(fit.alpha) and 1 < fit.alpha < 10 and fit.xmin < 5000 and np.isfinite(fit.ks)
    with pytest.raises(ValueError, match="no usable tail"):
        powerlaw_fit(np.full(20, 5000.0), discrete=True)


def test_graph_fractal_dim_empty_batch_raises_naming_adj():
    with pytest.raises(ValueError, match="^adj: .*empty"):
        graph_fractal_dim(np.zeros((0, 5, 5)))


@pytest.mark.parametrize("method", ["pearson", "partial"])
def test_fc_adjacency_exactly_symmetric(method):
    """Matmul and inverse round (i, j) and (j, i) differently; the documented symmetry is exact."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 200, 64)) @ rng.standard_normal((64, 64)) * 0.3
    adj = functional_connectivity_latents(x, method, weighted=True, thresh=0.2)
    np.testing.assert_array_equal(adj, np.swapaxes(adj, -1, -2))


@pytest.mark.parametrize("eps", ["abc", [None, 2], [[1, 2], [3]]])
def test_non_numeric_eps_values_raise_value_error(eps):
    with pytest.raises(ValueError, match="^eps_values: "):
        graph_fractal_dim(nx.to_numpy_array(nx.path_graph(10)), eps)


def test_powerlaw_constant_continuous_values_raise():
    """All values equal: the MLE denominator is rounding residue (alpha ~ 1e15), not a tail."""
    with pytest.raises(ValueError, match="no usable tail"):
        powerlaw_fit(np.full(30, 3.0))
    with pytest.raises(ValueError, match="series 1 has no usable tail"):
        powerlaw_fit(np.stack([np.random.default_rng(5).pareto(1.5, 40) + 1, np.full(40, 0.1)]))


@pytest.mark.parametrize("ridge", ["high", [0.1], float("nan")])
def test_fc_bad_ridge_raises_value_error_naming_it(ridge):
    with pytest.raises(ValueError, match="^ridge: "):
        functional_connectivity_latents(np.random.default_rng(6).standard_normal((50, 4)), "partial", ridge=ridge)


def test_a_failing_triton_colouring_falls_back_to_the_torch_loop(monkeypatch, caplog):
    # On a GPU machine without a C compiler Triton cannot build its launcher: the counts must still
    # come (from the torch loop), with one warning, and later calls skip the kernel.
    from fractals import _box_triton
    from fractals import box_covering as bc

    def broken(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    monkeypatch.setattr(_box_triton, "available", lambda device, n: _box_triton.ENABLED)
    monkeypatch.setattr(_box_triton, "colour_counts", broken)
    monkeypatch.setattr(_box_triton, "ENABLED", True)
    a = torch.from_numpy(nx.to_numpy_array(nx.grid_2d_graph(6, 6)) > 0)[None]
    eps = torch.tensor([1, 2, 3])
    with caplog.at_level("WARNING", logger="fractals"):
        got = bc._cover_device(a, eps, "largest")[2]
    assert torch.equal(got, bc._cover_cpu(a, eps, "largest")[2])
    assert not _box_triton.ENABLED and "Failed to find C compiler" in caplog.text
