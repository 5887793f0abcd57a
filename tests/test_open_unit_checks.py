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
