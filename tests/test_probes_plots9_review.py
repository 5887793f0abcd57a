"""Review round 9: probes, plots and windowed measures used on odd-but-valid inputs."""
import numpy as np
import pytest
import torch

from fractals import plotting as P
from fractals import probes


def test_latent_fd_probe_with_no_channel_says_empty():
    # (B, T, 0) was a RuntimeError from reshape ("-1 ... is ambiguous"), not the probe's ValueError.
    with pytest.raises(ValueError, match=r"latents\[''\]: is empty"):
        probes.latent_fd_probe(torch.randn(2, 300, 0))
    with pytest.raises(ValueError, match=r"latents\['enc'\]: is empty"):
        probes.latent_fd_probe({"enc": torch.randn(0, 300, 4)})


@pytest.mark.parametrize("rows", [2, 10])
def test_beta_time_single_window_is_visible(rows):
    # One window (window_size == T) drew a line of one point: nothing visible, a blank figure.
    fig = P.plot_beta_time(np.linspace(1.0, 1.5, rows)[:, None], target=1.0)
    data_lines = [ln for ln in fig.axes[0].lines if ln.get_label() != "target 1"]
    assert data_lines and all(ln.get_marker() == "o" for ln in data_lines)


def test_beta_time_isolated_window_between_nans_is_visible():
    fig = P.plot_beta_time(np.array([1.0, 1.1, np.nan, 1.2, np.nan, 1.3, 1.4]))
    (line,) = fig.axes[0].lines
    assert line.get_marker() == "o" and list(line.get_markevery()) == [3]


def test_beta_time_plain_rows_keep_plain_lines():
    fig = P.plot_beta_time(np.ones((2, 5)))
    assert all(ln.get_marker() in ("None", None, "") for ln in fig.axes[0].lines)


def test_attention_coupling_nan_head_is_not_drawn_as_zero():
    # A NaN cell (constant attention) was transparent, i.e. white: the colour of r = 0 in RdBu_r.
    fig = P.plot_attention_fd_coupling(np.array([[0.5, np.nan, 0.0]]))
    im = fig.axes[0].get_images()[0]
    rgba = im.to_rgba(np.ma.masked_invalid(np.array([np.nan, 0.0])))
    assert rgba[0][3] == 1.0  # opaque
    assert np.abs(rgba[0][:3] - rgba[1][:3]).max() > 0.2  # and far from the colour of 0


def test_latent_fd_probe_one_degenerate_channel_keeps_the_measure_for_the_others():
    # A channel that repeats with period 7 has a zero Higuchi curve length at k = 7: the batched call raised
    # and higuchi_fd vanished for the whole layer, though 3 of 4 channels were ordinary random walks.
    from fractals import metrics as fm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 512, 4, generator=g, dtype=torch.float64).cumsum(1)
    x[:, :, 3] = (torch.arange(512) % 7 == 0).double()
    out = probes.latent_fd_probe(x, fs=250.0)
    ref = fm.higuchi_fd(x[:, :, :3].movedim(1, -1), kmax=8)
    assert float(out["higuchi_fd_mean"]) == pytest.approx(float(ref.mean()), rel=1e-5)
    assert float(out["higuchi_fd_std"]) == pytest.approx(float(ref.std(unbiased=False)), rel=1e-4)
    # Measures that take the periodic channel still average all four.
    beta = fm.spectral_beta(x.movedim(1, -1), 250.0, (2.0, 80.0), True)
    assert float(out["spectral_beta_mean"]) == pytest.approx(float(beta.mean()), rel=1e-5)


def test_latent_fd_probe_too_short_still_omits_the_measure():
    out = probes.latent_fd_probe(torch.randn(2, 40, 3), fs=250.0)
    assert "mf_width_mean" not in out and out["n_dead"] == 0
    # DFA windows 4 and 16 fit T = 40 (a Hurst value); at T = 20 only 4 does: no slope, no value
    assert "hurst_mean" in out and "hurst_mean" not in probes.latent_fd_probe(torch.randn(2, 20, 3), fs=250.0)


@pytest.mark.parametrize("target", [float("nan"), float("inf"), "high"])
def test_beta_time_target_must_be_finite(target):
    # NaN was accepted: no line drawn, and a legend entry "target nan".
    with pytest.raises(ValueError, match="target: needs a finite number"):
        P.plot_beta_time(np.ones(3), target=target)


@pytest.mark.parametrize("plot", [P.plot_attention_fd_coupling, P.plot_beta_time, P.plot_fd_hist])
def test_plots_refuse_none(plot):
    # None became a NaN array: plot_attention_fd_coupling(None) drew a one-cell figure.
    with pytest.raises(ValueError, match="is None"):
        plot(None)


def test_latent_fd_probe_gives_hurst_for_short_latents_with_the_configs_dfa_windows():
    # Was: DFA's default windows need T >= 256, so the training fingerprint of 32-64 step latents (tiny preset on
    # synthetic data or eegmat) never had a Hurst value; latent_measures used the config's dfa_orders and had one.
    from fractals import metrics as fm
    from fractals.probes import latent_fd_probe

    x = torch.randn(2, 64, 4, generator=torch.Generator().manual_seed(0)).cumsum(1)
    out = latent_fd_probe(x, {}, fs=62.5)
    assert "hurst_mean" in out
    direct = fm.hurst_from_dfa(fm.dfa_alpha(x.movedim(1, -1).reshape(-1, 4, 64), windows=[4, 16]))
    assert float(out["hurst_mean"]) == pytest.approx(float(direct.mean()), rel=1e-5)
