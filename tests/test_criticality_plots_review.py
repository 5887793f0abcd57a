"""Review round 6: criticality toolkit, plots of fractal measures and the sweep comparison plots.

Each test pins a bug a user hit with odd-but-valid or bad input (see the test names).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from torch import nn

from fractals.criticality import (SpectralRegularizer, boundary_box_dimension, criticality_score,
                                  perturbation_sensitivity, singular_value_exponent, spectral_radius, top_singular_value)

pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
pd = pytest.importorskip("pandas", reason="comparison tables need pandas")

from fractals import plotting as P  # noqa: E402


# ----------------------------------------------------------------------------- criticality
@pytest.mark.parametrize("fn", [top_singular_value, spectral_radius, singular_value_exponent])
def test_integer_weights_get_a_value_error_naming_the_fix(fn):
    # Was RuntimeError from LAPACK ("Expected a floating point ... Got Long").
    with pytest.raises(ValueError, match=r"float\(\)"):
        fn(torch.arange(36).reshape(6, 6))


@pytest.mark.parametrize("fn", [top_singular_value, spectral_radius, singular_value_exponent])
def test_numpy_weights_get_a_value_error_naming_the_fix(fn):
    # Was TypeError / AttributeError from deep inside (isfinite(), .numel).
    with pytest.raises(ValueError, match="torch.as_tensor"):
        fn(np.eye(6))


def test_complex_weights_are_refused_not_given_a_complex_sigma():
    # u^T W v without the conjugate returned a complex "singular value".
    with pytest.raises(ValueError, match="complex"):
        top_singular_value(torch.randn(4, 4, dtype=torch.complex64))


def test_init_with_the_wrong_batch_is_a_value_error():
    w = torch.randn(3, 80, 70, dtype=torch.float64)
    with pytest.raises(ValueError, match="init"):
        top_singular_value(w, exact_below=0, init=torch.randn(2, 70, dtype=torch.float64))


def test_singular_value_exponent_of_nan_weight_is_a_value_error():
    # Was torch.linalg.LinAlgError from the SVD.
    with pytest.raises(ValueError, match="NaN"):
        singular_value_exponent(torch.full((8, 8), float("nan")))


def test_singular_value_exponent_rejects_a_negative_skip():
    # skip=-1 kept only the smallest value and blamed the matrix size.
    with pytest.raises(ValueError, match="skip"):
        singular_value_exponent(torch.randn(8, 8), skip=-1)


@pytest.mark.parametrize("targets", [float("nan"), float("inf"), [1.0, float("nan")], {"0": 1.0, "2": -1.0}])
def test_regularizer_refuses_a_nan_or_inf_target_instead_of_a_nan_loss(targets):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="targets"):
        SpectralRegularizer(targets=targets, weight=1.0)(model)


def test_regularizer_refuses_a_nan_target_when_built():
    with pytest.raises(ValueError, match="targets"):  # at construction (config time), not at the first step
        SpectralRegularizer(targets=float("nan"))


def test_regularizer_refuses_a_text_target():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="text"):  # was "3 values for 2 layers" (list("1.0"))
        SpectralRegularizer(targets="1.0", weight=1.0)(model)


@pytest.mark.parametrize("refs", [{"dead_ref": 0.0}, {"sens_ref": 0.0}, {"sens_ref": -1.0}])
def test_criticality_score_refuses_a_zero_reference(refs):
    with pytest.raises(ValueError, match="_ref"):  # was ZeroDivisionError / math domain error
        criticality_score({"sensitivity": 1.0, "dead_rate": 0.1}, **refs)


def test_boundary_box_dimension_refuses_a_fractional_level_count():
    with pytest.raises(ValueError, match="levels"):  # was TypeError from range()
        boundary_box_dimension(lambda p: p[:, 0] > 0.1, (0.0, 1.0, 0.0, 1.0), levels=2.5)


def test_perturbation_sensitivity_of_an_empty_batch_is_a_value_error():
    with pytest.raises(ValueError, match="x: needs a non-empty batch"):  # was a reshape RuntimeError
        perturbation_sensitivity(lambda x: x, torch.randn(0, 4))


# ----------------------------------------------------------------------------- fractals.plotting
def test_beta_time_without_times_labels_the_axis_by_window_not_seconds():
    fig = P.plot_beta_time(np.ones((2, 5)))  # x is 0..4, window indices
    assert fig.axes[0].get_xlabel() == "window"
    assert P.plot_beta_time(np.ones(5), times=np.arange(5) * 0.5).axes[0].get_xlabel() == "time (s)"


@pytest.mark.parametrize("call", [lambda: P.plot_fd_hist(["Fz", 1.0]), lambda: P.plot_beta_time([[1.0, 2.0], [3.0]]),
                                  lambda: P.plot_attention_fd_coupling({"layer": 1})])
def test_non_numeric_plot_input_is_a_value_error_naming_the_argument(call):
    with pytest.raises(ValueError, match=r"^(values|beta_seq|couplings): needs numbers"):
        call()


def test_fd_hist_legend_does_not_call_an_inf_a_nan():
    fig = P.plot_fd_hist({"rest": [1.2, np.inf, np.nan, 1.3], "task": [1.4, np.nan]})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["rest (n=2, 2 NaN/inf dropped)", "task (n=1, 1 NaN dropped)"]  # was "2 NaN dropped"


def test_multifractal_spectrum_with_one_nan_series_still_draws_the_others():
    alpha = np.array([[0.5, 0.6, 0.7], [np.nan, np.nan, np.nan]])
    spec = {"tau": np.zeros((2, 3)), "alpha": alpha, "falpha": np.array([[0.8, 1.0, 0.8]] * 2), "q": [-1.0, 0.0, 1.0]}
    fig = P.plot_multifractal_spectrum(spec)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_xdata(), [0.5, 0.6, 0.7])


def test_fingerprint_of_several_recordings_draws_each_recording_apart():
    rows = [{"recording": r, "channel": c, "measure": "higuchi_fd", "value": 1.0 + r + 0.1 * i, "ok": True}
            for r in (0, 1) for i, c in enumerate(["Fz", "Cz"])]
    fig = P.plot_fingerprint(pd.DataFrame(rows))
    ax = fig.axes[0]
    drawn = [line for line in ax.lines if len(line.get_xdata())]
    assert len(drawn) == 2  # one marker series per recording, not one merged series
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["recording 0", "recording 1"]


# ----------------------------------------------------------------------------- fmx.compare
def _trials():
    from fmx import compare

    return compare.ranked(pd.DataFrame({
        "trial_id": ["t0", "t1", "t2", "t3"],
        f"sweep.{compare.BETA_KEY}": [0.5, 1.0, 1.5, 2.0],
        "sweep.model.lr": [1e-3, 1e-2, 3e-3, 1e-4],
        "val/loss": [0.5, np.inf, 0.3, np.nan],  # t1 diverged, t3 failed
    }), "val/loss", "min")


def _close(fig):
    import matplotlib.pyplot as plt  # fmx.compare draws with pyplot

    plt.close(fig)


def test_best_trials_shows_a_diverged_trial_instead_of_dropping_it():
    from fmx.compare import best_trials_figure

    fig = best_trials_figure(_trials(), "val/loss")
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "t1 (inf)" in labels and "t0" in labels and "t2" in labels
    assert all(np.isfinite(ax.get_xlim()))
    _close(fig)


def test_parallel_coordinates_scale_ignores_an_inf_metric():
    from fmx.compare import parallel_coordinates_figure

    fig = parallel_coordinates_figure(_trials(), "val/loss")
    lines = fig.axes[0].lines
    assert len(lines) == 2  # the finite trials; the diverged one is counted in the title
    metric_axis = sorted(float(line.get_ydata()[-1]) for line in lines)
    assert metric_axis == [0.0, 1.0]  # best at the bottom, worst finite at the top (was 0 and 0)
    assert "2 trial(s) without a finite value left out" in fig.axes[0].get_title()
    colours = {tuple(line.get_color()) for line in lines}
    assert len(colours) == 2
    _close(fig)


def test_parallel_coordinates_labels_keep_same_named_parameters_apart():
    from fmx.compare import parallel_coordinates_figure

    df = pd.DataFrame({"trial_id": ["a", "b"], "sweep.model.encoder.dropout": [0.1, 0.2],
                       "sweep.model.decoder.dropout": [0.3, 0.0], "sweep.trainer.lr": [1e-3, 1e-2],
                       "val/loss": [1.0, 2.0]})
    fig = parallel_coordinates_figure(df, "val/loss")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["encoder.dropout", "decoder.dropout", "lr", "val/loss"]
    _close(fig)


def test_latent_fingerprint_figure_treats_a_missing_ok_as_flagged():
    from fmx.compare import fingerprint_figure

    df = pd.DataFrame({"epoch": [0, 0, 1, 1], "channel": ["a", "b", "a", "b"], "measure": ["higuchi_fd"] * 4,
                       "value": [1.0, 2.0, 1.5, 9.0],
                       "ok": pd.array([True, True, True, pd.NA], dtype="boolean")})  # was: cannot convert NaN to bool
    fig = fingerprint_figure(df)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.5, 1.5])  # the NA row (9.0) left out
    _close(fig)
