"""graph_fractal_dim(node_orders=K): the fewest boxes over K colouring orders (Song et al. 2007)."""
import numpy as np
import pytest
import torch

from fractals.metrics import graph_fractal_dim


def _ring(n: int) -> torch.Tensor:
    a = torch.zeros(n, n)
    idx = torch.arange(n)
    a[idx, (idx + 1) % n] = a[(idx + 1) % n, idx] = 1
    return a


def _relabellings(a: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(a.shape[-1], generator=gen) for _ in range(count)]
    return torch.stack([a[p][:, p] for p in perms])


def test_counts_are_the_fewest_over_the_index_order_and_the_generators_orders():
    graphs = _relabellings(_ring(14), 3, seed=1)
    eps = [2, 3, 4, 5, 6]
    _, got = graph_fractal_dim(graphs, eps, node_orders=5, return_counts=True,
                               generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    orders = [torch.arange(14)] + [torch.randperm(14, generator=gen) for _ in range(4)]
    for g in range(3):
        per_order = torch.stack([graph_fractal_dim(graphs[g][p][:, p], eps, return_counts=True)[1].counts
                                 for p in orders])
        assert torch.equal(got.counts[g], per_order.amin(0))


def test_more_orders_make_the_dimension_independent_of_the_labelling():
    graphs = _relabellings(_ring(12), 30, seed=5)
    one = graph_fractal_dim(graphs)
    many = graph_fractal_dim(graphs, node_orders=64)
    assert float(one.max() - one.min()) > 0.2  # index-order colouring: the labelling moves d_B
    assert float(many.max() - many.min()) < 1e-6


def test_default_is_the_index_order_alone():
    graphs = _relabellings(_ring(16), 4, seed=2)
    torch.testing.assert_close(graph_fractal_dim(graphs), graph_fractal_dim(graphs, node_orders=1))


def test_largest_component_stays_the_index_orders_choice_under_other_orders():
    # Two equally large components: the one holding node 0 is measured, whatever order colours it.
    a = torch.zeros(20, 20)
    a[:10, :10] = _ring(10)
    path = torch.zeros(10, 10)
    path[torch.arange(9), torch.arange(1, 10)] = path[torch.arange(1, 10), torch.arange(9)] = 1
    a[10:, 10:] = path
    eps = [2, 3, 4]
    d, counts = graph_fractal_dim(a, eps, node_orders=8, return_counts=True)
    assert int(counts.n_nodes) == 10
    ring_alone = graph_fractal_dim(_ring(10), eps, node_orders=8)
    torch.testing.assert_close(d, ring_alone)


def test_numpy_in_numpy_out_and_deterministic():
    a = _relabellings(_ring(12), 2, seed=3).numpy()
    first, second = graph_fractal_dim(a, node_orders=6), graph_fractal_dim(a, node_orders=6)
    assert isinstance(first, np.ndarray) and np.array_equal(first, second)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_node_orders_name_the_argument(bad):
    with pytest.raises(ValueError, match=r"node_orders: needs an integer >= 1.*got"):
        graph_fractal_dim(_ring(8), node_orders=bad)


def test_a_seed_in_place_of_a_generator_is_refused():
    with pytest.raises(ValueError, match=r"generator: must be a torch.Generator.*manual_seed"):
        graph_fractal_dim(_ring(8), node_orders=3, generator=0)


def _recording(channels: int = 12, samples: int = 4000) -> torch.Tensor:
    """Channel i shares a source with i + 1 (r = 0.5): the FC graph at |r| > 0.3 is a ring."""
    z = torch.randn(channels, samples, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return z + z.roll(-1, 0)


def test_fingerprint_passes_config_graph_node_orders_to_the_box_covering():
    from fractals import metrics as fm
    from fractals.fingerprint import fingerprint

    x = _recording()
    _, summary = fingerprint(x, fs=250.0, config={"graph": {"node_orders": 16}, "measures": ["katz_fd"]})
    adj = fm.functional_connectivity_latents(x.T[None], thresh=0.3)[0]
    expected = fm.graph_fractal_dim(adj, [1, 2, 3, 4, 5, 6], node_orders=16)
    assert summary["graph_fd"] == pytest.approx(float(expected), abs=1e-12)


def test_fingerprint_graph_fd_with_many_orders_does_not_depend_on_channel_order():
    from fractals.fingerprint import fingerprint

    x = _recording()
    perms = [torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(s)) for s in range(6)]

    def graph_fd(orders):
        cfg = {"graph": {"node_orders": orders}, "measures": ["katz_fd"]}
        return {round(fingerprint(x[p], fs=250.0, config=cfg)[1]["graph_fd"], 10) for p in perms}

    assert len(graph_fd(1)) > 1  # index order: the channel order moves graph FD
    assert len(graph_fd(64)) == 1


@pytest.mark.parametrize("bad", [0, 2.5])
def test_fingerprint_config_refuses_a_bad_node_orders_by_its_path(bad):
    from fractals.fingerprint import fingerprint

    with pytest.raises(ValueError, match=r"config\.graph\.node_orders"):
        fingerprint(_recording(), fs=250.0, config={"graph": {"node_orders": bad}})
