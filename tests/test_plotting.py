"""fractals.plotting: every function returns a Figure with the expected axes and saves to PNG."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
pd = pytest.importorskip("pandas", reason="fingerprint tables need pandas")

from matplotlib.figure import Figure  # noqa: E402

from fractals.plotting import (  # noqa: E402
    plot_attention_fd_coupling,
    plot_beta_time,
    plot_fd_hist,
    plot_fingerprint,
    plot_multifractal_spectrum,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _saved_png(fig, tmp_path, name="fig.png") -> bytes:
    path = save_figure(fig, tmp_path / name, dpi=60)
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    assert not [p for p in tmp_path.iterdir() if p.name != name and p.suffix == ".png"]  # no temp left
    return data


def test_fd_hist_overlays_groups_and_counts_nans(tmp_path):
    rest = np.r_[np.random.default_rng(0).normal(1.5, 0.05, 50), np.nan]
    fig = plot_fd_hist({"rest": rest, "task": torch.full((40,), 1.6)}, measure="Higuchi FD")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Higuchi FD" and ax.get_ylabel() == "count"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["rest (n=50, 1 NaN dropped)", "task (n=40)"]
    _saved_png(fig, tmp_path)


def test_fd_hist_rejects_all_nan():
    with pytest.raises(ValueError, match="finite"):
        plot_fd_hist(np.full(5, np.nan))


def test_beta_time_lines_band_and_target(tmp_path):
    fig = plot_beta_time(np.ones((3, 20)), times=np.arange(20) * 0.5, target=1.0, labels=["a", "b", "c"])
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 4  # three series and the target line
    assert ax.get_xlabel() == "time (s)" and "beta" in ax.get_ylabel()
    many = plot_beta_time(np.random.default_rng(1).normal(1, 0.1, (20, 30)), xlabel="step")
    assert len(many.axes[0].collections) == 1 and many.axes[0].get_xlabel() == "step"  # mean +- SD band
    _saved_png(fig, tmp_path)
    with pytest.raises(ValueError, match="times"):
        plot_beta_time(np.ones(5), times=np.arange(4))


def test_multifractal_spectrum_two_panels(tmp_path):
    q = np.array([-5, -3, -1, 0, 1, 3, 5], float)
    spec = {"q": q, "tau": 0.7 * q - 1, "alpha": np.linspace(0.9, 0.6, 7), "falpha": 1 - (np.linspace(-1, 1, 7) ** 2)}
    fig = plot_multifractal_spectrum({"cond A": spec, "cond B": {k: v for k, v in spec.items() if k != "q"}})
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == r"$\tau(q)$" and fig.axes[1].get_ylabel() == r"$f(\alpha)$"
    assert "width 0.30" in fig.axes[1].get_legend().get_texts()[0].get_text()
    _saved_png(fig, tmp_path)
    with pytest.raises(ValueError, match="falpha"):
        plot_multifractal_spectrum({"x": {"tau": q, "alpha": q}})


def test_attention_coupling_heatmap(tmp_path):
    c = np.array([[0.8, -0.1, np.nan], [0.0, 0.2, -0.5]])
    fig = plot_attention_fd_coupling(c, layer_names=["enc", "dec"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "head" and ax.get_ylabel() == "layer"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["enc", "dec"]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "Pearson r"  # heat map and colour bar
    im = ax.get_images()[0]
    assert im.get_clim() == (-0.8, 0.8)  # symmetric around zero
    _saved_png(fig, tmp_path)


def _table(offset=0.0):
    rows = []
    for ch in ["Fz", "Cz", "Pz"]:
        for m, v in [("higuchi_fd", 1.5), ("dfa_alpha", 1.0), ("spectral_beta", 1.2), ("mf_width", 0.3)]:
            rows.append({"channel": ch, "measure": m, "value": v + offset, "ok": ch != "Pz", "flag": "", "r2": np.nan})
    return pd.DataFrame(rows)


def test_fingerprint_figure_panels_per_measure(tmp_path):
    fig = plot_fingerprint({"rest": _table(), "task": _table(0.1)},
                           {"rest": {"fc_density": 0.4, "graph_fd": 1.7}, "task": {"fc_density": 0.5}},
                           title="sub-01")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Higuchi FD", r"DFA $\alpha$", r"1/f slope $\beta$", "multifractal width"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["Fz", "Cz", "Pz"]
    assert fig.get_suptitle().splitlines()[0] == "sub-01"
    assert "rest: fc_density 0.40, graph_fd 1.70; task: fc_density 0.50" in fig.get_suptitle()
    data = _saved_png(fig, tmp_path)
    assert len(data) > 5000
    with pytest.raises(ValueError, match="missing columns"):
        plot_fingerprint(pd.DataFrame({"channel": ["a"], "value": [1.0]}))


def test_saved_figure_permissions_follow_the_umask(tmp_path):
    # The temp file from mkstemp is 0600 and os.replace kept that: other users (a web or MLflow
    # server reading the folder) could not open saved figures.
    import os
    import stat

    fig = plot_beta_time(np.arange(5.0))
    old = os.umask(0o022)
    try:
        path = save_figure(fig, tmp_path / "beta.png", dpi=40)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
