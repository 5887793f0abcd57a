"""Functional connectivity, box-covering graph FD and power-law fits (work in progress)."""
from __future__ import annotations

__all__ = ["functional_connectivity_latents", "graph_fractal_dim", "powerlaw_fit"]


def functional_connectivity_latents(latents, method="pearson", thresh=0.3, weighted=False):
    raise NotImplementedError("functional_connectivity_latents is being implemented")


def graph_fractal_dim(adj, eps_values=None):
    raise NotImplementedError("graph_fractal_dim is being implemented")


def powerlaw_fit(values, xmin=None, discrete=False, bootstrap=0, generator=None):
    raise NotImplementedError("powerlaw_fit is being implemented")
