"""benchmarks/estimator_accuracy.py as a user runs it: tiny settings print the expected tables, bad options stop
with a clear error before any work, and its graph builders number nodes as the graph tests do (the greedy box
colouring depends on node order, so the docstring's flower numbers hold only for that numbering)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from test_metrics_graph import adjacency, uv_flower  # the networkx reference builder the graph tests use

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "estimator_accuracy.py"


@pytest.fixture(scope="module")
def accuracy_bench():
    spec = importlib.util.spec_from_file_location("bench_estimator_accuracy", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_dfa_run_prints_both_tables_with_a_row_per_hurst():
    out = subprocess.run([sys.executable, str(SCRIPT), "--series", "2", "--length", "1024", "--only", "dfa"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "dfa_alpha (order 1, default windows) on exact fGn, T=1024, 2 series: alpha - H" in text
    assert "dfa_alpha on exact fBm: alpha - (H + 1)" in text
    assert "higuchi_fd" not in text and "spectral_beta" not in text  # --only ran DFA alone
    rows = re.findall(r"^\s+H=(0\.\d)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
    assert [h for h, *_ in rows] == ["0.2", "0.3", "0.5", "0.7", "0.9", "0.2", "0.5", "0.7", "0.9"]
    for h, bias, se, sd, mae in rows:
        bias, se, sd, mae = map(float, (bias, se, sd, mae))
        assert abs(bias) < 0.3 and 0 <= se <= sd and abs(bias) <= mae + 1e-3, (h, bias, se, sd, mae)


def _ran_past_the_checks(*args, **kwargs):
    pytest.fail("the script started its work: the bad option was not caught first")


@pytest.mark.parametrize("argv, named", [
    (["--series", "1"], "--series: needs >= 2"),
    (["--length", "512"], "--length: needs >= 1024"),
    (["--seed", "-3"], "--seed: needs >= 0"),
    (["--only", "hurst"], "--only: invalid choice: 'hurst'"),
])
def test_bad_option_exits_2_naming_the_option(accuracy_bench, capsys, monkeypatch, argv, named):
    for name in accuracy_bench.BENCHES:
        monkeypatch.setitem(accuracy_bench.BENCHES, name, _ran_past_the_checks)
    with pytest.raises(SystemExit) as exc:
        accuracy_bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err and argv[-1] in err


@pytest.mark.parametrize("u, v, generation", [(2, 2, 4), (2, 3, 3), (3, 3, 3)])
def test_graph_builders_number_nodes_as_networkx(accuracy_bench, u, v, generation):
    np.testing.assert_array_equal(accuracy_bench.uv_flower(u, v, generation), adjacency(uv_flower(u, v, generation)))
    grid = nx.grid_2d_graph(6, 6)
    np.testing.assert_array_equal(accuracy_bench.lattice(6), nx.to_numpy_array(grid, nodelist=sorted(grid.nodes())))
