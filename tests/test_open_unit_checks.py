"""Arguments that must lie in the open interval (0, 1) are refused by one shared check, naming the argument."""
from __future__ import annotations

import pytest
import torch

from fractals.probes import causal_scale_ablation
from fractals.regularizers import soft_graph_dimension


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, None, [0.5], "half", float("nan")])
def test_ratio_and_thresh_outside_zero_one_are_refused_by_name(bad):
    x = torch.randn(2, 256)
    with pytest.raises(ValueError, match=r"ratio: must lie in \(0, 1\), got"):
        causal_scale_ablation(x, ratio=bad, fs=100.0, band=(1.0, 40.0))
    with pytest.raises(ValueError, match=r"thresh: must lie in \(0, 1\), got"):
        soft_graph_dimension(torch.randn(1, 64, 6), [1, 2], bad)


def test_a_masked_array_with_masked_values_or_a_sparse_matrix_is_refused_not_misread():
    # Was: np.asarray dropped the mask (powerlaw_fit measured the masked values), and a scipy sparse adjacency
    # failed with "needs a numeric array, got dtype object".
    import numpy as np
    import scipy.sparse

    from fractals.graph import graph_fractal_dim, powerlaw_fit

    v = np.random.default_rng(0).pareto(1.5, 500) + 1
    with pytest.raises(ValueError, match=r"values: a masked array with \d+ masked value\(s\).*compressed"):
        powerlaw_fit(np.ma.masked_array(v, mask=v > 50))
    ok = powerlaw_fit(np.ma.masked_array(v, mask=np.zeros_like(v, dtype=bool)))  # nothing masked: as the array
    assert ok.alpha == pytest.approx(powerlaw_fit(v).alpha)
    with pytest.raises(ValueError, match=r"adj: a sparse .*toarray\(\)"):
        graph_fractal_dim(scipy.sparse.csr_matrix(np.eye(8)))
