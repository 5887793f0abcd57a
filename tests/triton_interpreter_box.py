"""Run the Triton box-covering kernel in Triton's CPU interpreter against the NumPy kernel.

``tests/test_metrics_graph.py`` starts this script in a subprocess with ``TRITON_INTERPRET=1`` (the
interpreter is chosen when the kernel is defined). The device path (``_cover_device``) is run on CPU
tensors with the Triton kernel enabled, so it colours through ``fractals._box_triton``; the CPU path
(``_cover_cpu``) colours with NumPy bitsets. Prints one JSON line: per case, both count tables.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from fractals import _box_triton, box_covering  # noqa: E402


def random_graphs(rng, g: int, n: int, p: float) -> torch.Tensor:
    a = np.triu(rng.random((g, n, n)) < p, 1)
    return torch.from_numpy(a | a.transpose(0, 2, 1))


def lattice(side: int) -> torch.Tensor:
    idx = np.arange(side * side).reshape(side, side)
    a = np.zeros((side * side, side * side), dtype=bool)
    for u, v in [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])]:
        a[u.ravel(), v.ravel()] = a[v.ravel(), u.ravel()] = True
    return torch.from_numpy(a)[None]


def main() -> None:
    assert _box_triton.triton is not None, "triton is not importable"
    _box_triton.available = lambda device, n: n <= _box_triton.MAX_NODES  # CPU tensors, interpreted
    rng = np.random.default_rng(0)
    cases = {
        "4 graphs of 20 nodes, every node": (random_graphs(rng, 4, 20, 0.15), [1, 2, 3, 4], "sum"),
        "3 graphs of 100 nodes (2 words), largest component": (random_graphs(rng, 3, 100, 0.02), [1, 2, 3, 5], "largest"),
        "16 x 16 lattice (256 nodes, 4 words)": (lattice(16), [2, 5], "largest"),
    }
    out = {}
    for name, (adj, eps, components) in cases.items():
        eps_t = torch.tensor(eps)
        _, _, device_counts = box_covering._cover_device(adj, eps_t, components)
        _, _, cpu_counts = box_covering._cover_cpu(adj, eps_t, components)
        out[name] = {"triton": device_counts.tolist(), "numpy": cpu_counts.tolist()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
