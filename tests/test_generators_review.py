"""Review round: generators, simulators, dendrites and plots at the edges of their documented ranges."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fractals import simulators as SM
from fractals import stimuli as S
from fractals import surfaces as SF
from fractals.dendrites import box_counting_dimension_3d, dendrite_growth


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ stimuli / surfaces
@pytest.mark.parametrize("beta, fs", [(200.0, 1.0), (-200.0, 1.0), (-200.0, 1e6), (600.0, 1.0), (200.0, 1e6)])
def test_one_over_f_noise_steep_beta_is_finite_unit_variance(beta, fs):
    # f^-200 at f = 1/n overflowed to inf (at fs = 1e6 underflowed to 0), and the series came back all NaN.
    x = S.one_over_f_noise(1001, beta, fs=fs, n_series=4, generator=_gen())
    assert torch.isfinite(x).all()
    assert x.std(-1).min() > 0


def test_one_over_f_noise_scale_free_normalisation_keeps_values():
    # Normalising the PSD (to keep steep betas finite) must not change ordinary draws or the peak ratio.
    x = S.one_over_f_noise(512, 1.3, fs=250.0, peaks=[(10.0, 1.0, 2.0)], generator=_gen(3))
    freqs = torch.fft.rfftfreq(512, d=1 / 250.0, dtype=torch.float64)
    psd = S.one_over_f_psd(freqs, 1.3, [(10.0, 1.0, 2.0)])
    g = _gen(3)
    re = torch.randn(freqs.numel(), generator=g, dtype=torch.float64)
    im = torch.randn(freqs.numel(), generator=g, dtype=torch.float64)
    im[-1] = 0.0
    re[-1] *= math.sqrt(2.0)
    ref = torch.fft.irfft(torch.complex(re, im) * (psd / 2).sqrt(), n=512)
    w = torch.full_like(psd, 2.0)
    w[0], w[-1] = 0.0, 1.0
    ref = ref / math.sqrt(float((w * psd).sum()) / 512**2)
    torch.testing.assert_close(x, ref)


def test_texture_steep_beta_is_finite():
    img = SF.one_over_f_texture(64, 500.0, generator=_gen())
    assert torch.isfinite(img).all()


# ------------------------------------------------------------------------------------ fractional OU
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fractional_ou_half_precision_parameters(dtype):
    # A bf16/fp16 H tensor made the sampler pick that dtype, which the FFT does not support.
    H = torch.tensor([0.5, 0.7], dtype=dtype)
    x = SM.fractional_ou(64, H, 1.0, 1.0, 100.0, seed=0)
    assert x.shape == (2, 64) and torch.isfinite(x).all()
    ref = SM.fractional_ou(64, H.float(), 1.0, 1.0, 100.0, seed=0)
    torch.testing.assert_close(x.float(), ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": float("nan")}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"freq_band": (1.0,)}, "freq_band"),
        ({"freq_band": 5.0}, "freq_band"),
    ],
)
def test_fit_fractional_ou_bad_optimiser_arguments(kwargs, match):
    x = SM.fractional_ou(512, 0.7, 5.0, 1.0, 250.0, batch_shape=(2,), seed=0)
    with pytest.raises(ValueError, match=match):
        SM.fit_fractional_ou(x, 250.0, **kwargs)


def test_fit_fractional_ou_zero_steps_is_the_grid_start():
    x = SM.fractional_ou(2048, 0.7, 5.0, 1.0, 250.0, batch_shape=(2,), seed=0)
    fit = SM.fit_fractional_ou(x, 250.0, steps=0)
    assert torch.isfinite(fit.H).all() and ((fit.H > 0) & (fit.H < 1)).all()


# ------------------------------------------------------------------------------------ dendrites
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"branch_angle_deg": float("nan")}, "branch_angle_deg"),
        ({"cost_coeffs": (float("nan"), 1.0)}, "cost_coeffs"),
        ({"cost_coeffs": 1.0}, "cost_coeffs"),
        ({"seed": -1}, "seed"),
    ],
)
def test_dendrite_growth_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dendrite_growth(1.5, steps=10, **kwargs)


def test_box_counting_dimension_bf16_points():
    pts = torch.rand(2000, 3, generator=_gen())
    d16 = box_counting_dimension_3d(pts.bfloat16())
    assert math.isfinite(d16)


# ------------------------------------------------------------------------------------ plotting
mpl = pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
pd = pytest.importorskip("pandas", reason="fingerprint tables need pandas")

from fractals import plotting as P  # noqa: E402


def _fp(channels, measures=("higuchi_fd", "dfa_alpha")):
    rows = [{"channel": c, "measure": m, "value": 1.0 + i, "ok": True}
            for i, c in enumerate(channels) for m in measures]
    return pd.DataFrame(rows)


def test_plots_take_bf16_tensors():
    v = torch.tensor([1.2, 1.4, 1.5], dtype=torch.bfloat16)
    assert P.plot_fd_hist(v).axes
    assert P.plot_beta_time(v).axes


@pytest.mark.parametrize("bins", [0, -3, 2.5])
def test_fd_hist_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        P.plot_fd_hist([1.0, 1.5], bins=bins)


def test_fingerprint_summary_with_none_value_is_skipped():
    # A summary read back from JSON holds None (null) for an undefined network measure.
    fig = P.plot_fingerprint(_fp(["Fz"]), summaries={"fc_density": None, "graph_fd": 1.25})
    assert "graph_fd 1.25" in fig.get_suptitle()
    assert "fc_density" not in fig.get_suptitle()


def test_fingerprint_channel_labels_of_mixed_types():
    df = pd.DataFrame({"channel": [1, np.nan], "measure": ["higuchi_fd"] * 2, "value": [1.0, 2.0]})
    fig = P.plot_fingerprint(df)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["1.0", "nan"]  # the column is float64 once it holds NaN


def test_multifractal_spectrum_bad_entries_are_named():
    with pytest.raises(ValueError, match=r"spectra\['a'\]"):
        P.plot_multifractal_spectrum({"a": 3})
    sp = {"tau": [-1.0, 0.0, 1.0], "alpha": [0.5, 0.6, 0.7], "falpha": [0.8, 1.0, 0.8], "q": [1, 2]}
    with pytest.raises(ValueError, match="q"):
        P.plot_multifractal_spectrum(sp)


def test_beta_time_non_numeric_target():
    with pytest.raises(ValueError, match="target"):
        P.plot_beta_time(np.zeros(3), target="high")


def test_plots_leave_no_pyplot_figures_open():
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    P.plot_fd_hist([1.0, np.nan, 1.5])
    P.plot_beta_time(np.c_[np.full((10, 3), np.nan), np.ones(10)])
    P.plot_attention_fd_coupling(np.array([[np.nan, 0.2]]))
    P.plot_fingerprint({"rest": _fp(["Fz"]), "task": _fp(["Cz"], ("katz_fd",))})
    assert set(plt.get_fignums()) == before


@pytest.mark.parametrize("name_len", [30, 120])
def test_fingerprint_long_channel_names_keep_the_panels(name_len, tmp_path):
    # One measure (e.g. an RR table) with long EDF labels: the fixed 2.1 in row left no room, constrained
    # layout collapsed the axes to zero size and warned at save time.
    import warnings

    names = [("EEG-" + "x" * name_len)[:name_len - 2] + f"{i:02d}" for i in range(19)]
    fig = P.plot_fingerprint(_fp(names, ("dfa_alpha",)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.save_figure(fig, tmp_path / "fp.png", dpi=40)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(set(labels)) == 19 and all(len(lab) <= 40 for lab in labels)


# ------------------------------------------------------------------------------------ criticality
from fractals import criticality as C  # noqa: E402


def test_spectral_radius_nan_is_a_value_error_not_a_crash():
    # Before: NaN reached MKL's eigenvalue balancing and the process died with a segfault.
    with pytest.raises(ValueError, match="matrix"):
        C.spectral_radius(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        C.spectral_radius(torch.zeros(0))


def test_spectral_radius_and_exponent_half_precision():
    rot = torch.tensor([[0.0, -0.5], [0.5, 0.0]])
    r = C.spectral_radius(rot.bfloat16())
    assert r.dtype == torch.bfloat16 and float(r) == pytest.approx(0.5)
    w = torch.randn(16, 8, generator=_gen())
    assert float(C.singular_value_exponent(w.bfloat16())) == pytest.approx(float(C.singular_value_exponent(w)), abs=0.05)


@pytest.mark.parametrize("target", [np.float32(0.9), torch.tensor(0.9)])
def test_spectral_regularizer_scalar_target_types(target):
    # A NumPy float (e.g. an optuna suggestion) or a 0-d tensor was treated as a sequence: TypeError.
    reg = C.SpectralRegularizer(targets=target, weight=1.0)
    net = torch.nn.Linear(4, 4)
    loss, sig = reg(net)
    (sigma,) = sig.values()
    assert float(loss) == pytest.approx((float(sigma) - 0.9) ** 2, rel=1e-4)


def test_spectral_regularizer_off_on_parameterless_model():
    loss, sig = C.SpectralRegularizer(weight=0.0)(torch.nn.ReLU())
    assert float(loss) == 0.0 and sig == {}


@pytest.mark.parametrize(
    "acts, match",
    [(torch.zeros(5, 0), "empty"), (torch.zeros(0, 5), "empty"), (torch.full((2, 3), float("nan")), "NaN")],
)
def test_dead_neuron_rate_degenerate_activations(acts, match):
    # Before: ZeroDivisionError, a reshape RuntimeError, and NaN units silently counted alive (rate 0.0).
    with pytest.raises(ValueError, match=match):
        C.dead_neuron_rate(acts)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"eps": float("nan")}, "eps"), ({"n_directions": 0}, "n_directions"),
     ({"x": torch.ones(4, 3, dtype=torch.int64)}, "x")],
)
def test_perturbation_sensitivity_bad_arguments(kwargs, match):
    args = {"x": torch.randn(4, 3, generator=_gen())}
    args.update(kwargs)
    x = args.pop("x")
    with pytest.raises(ValueError, match=match):
        C.perturbation_sensitivity(lambda z: z, x, **args)


def test_boundary_box_dimension_bad_coarse_and_label_shape():
    with pytest.raises(ValueError, match="coarse"):
        C.boundary_box_dimension(lambda p: p[:, 0] > 0.3, (0, 1, 0, 1), coarse=0)
    with pytest.raises(ValueError, match="predict"):  # logits instead of labels
        C.boundary_box_dimension(lambda p: torch.stack([p[:, 0], -p[:, 0]], 1), (0, 1, 0, 1))


def test_generators_take_0d_tensor_parameters():
    # One entry of a fitted FOUFit.H is a 0-d tensor; fgn refused it with "needs a number strictly
    # between 0 and 1, got tensor(0.7000)".
    ref = S.fgn(32, 0.7, generator=_gen(1))
    torch.testing.assert_close(S.fgn(32, torch.tensor(0.7, dtype=torch.float64), generator=_gen(1)), ref)
    torch.testing.assert_close(S.fgn(32, np.array(0.7), generator=_gen(1)), ref)
    with pytest.raises(ValueError, match="H"):
        S.fgn(32, torch.tensor(True))


def test_top_singular_value_degenerate_shapes_are_named():
    with pytest.raises(ValueError, match="weight"):
        C.top_singular_value(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="init"):  # a warm start saved from a different layer
        C.top_singular_value(torch.randn(80, 100, generator=_gen()), init=torch.randn(5))
    w = torch.randn(3, 1, 7, generator=_gen())  # one-row layers: sigma is the row norm
    torch.testing.assert_close(C.top_singular_value(w), w.norm(dim=(-2, -1)))


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_fingerprint_nullable_ok_column(backend):
    # A table read back from parquet with nullable dtypes: an NA in "ok" raised (cannot convert to bool /
    # boolean value of NA is ambiguous). Missing ok is drawn as flagged (open marker).
    if backend == "pyarrow":
        pytest.importorskip("pyarrow", reason="Arrow-backed tables need pyarrow")
    df = pd.DataFrame({"channel": ["a", "b"], "measure": ["higuchi_fd"] * 2, "value": [1.2, 1.4], "ok": [True, True]})
    df = df.convert_dtypes(dtype_backend=backend)
    df.loc[1, "ok"] = pd.NA
    fig = P.plot_fingerprint(df)
    lines = fig.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [1, 1]
    assert lines[1].get_markerfacecolor() == "none"


def test_criticality_schedules_refuse_nan_settings():
    # Each of these returned silently: NaN targets, targets pinned at min_target, factor at min_factor.
    with pytest.raises(ValueError, match="first"):
        C.layerwise_targets(3, first=float("nan"))
    with pytest.raises(ValueError, match="rate"):
        C.AdaptiveSpectralRegularizer(weight=0.1, rate=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        C.CriticalityLR(alpha=float("nan"))
    sched = C.CriticalityLR()
    with pytest.raises(ValueError, match="sigmas"):
        sched.update({"fc": float("nan")}, {"fc": 1.0})
    with pytest.raises(ValueError, match=r"targets: no target for layer\(s\) \['fc'\]"):
        sched.update({"fc": 1.0}, {"other": 1.0})
    assert sched.update({"fc": torch.tensor(1.0)}, {"fc": 1.0}) == 1.0


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_fractional_ou_non_integer_seed(seed):
    # 1.5 was truncated to seed 1, True became 1 and "3" became 3 without a word.
    with pytest.raises(ValueError, match="seed"):
        SM.fractional_ou(16, 0.7, 1.0, 1.0, 100.0, seed=seed)


def test_all_nan_inputs_raise_instead_of_a_blank_figure():
    with pytest.raises(ValueError, match="beta_seq"):
        P.plot_beta_time(np.full((10, 4), np.nan))
    nan3 = np.full(3, np.nan)
    with pytest.raises(ValueError, match="alpha"):
        P.plot_multifractal_spectrum({"tau": nan3, "alpha": nan3, "falpha": nan3})
    fig = P.plot_beta_time(np.array([1.0, np.nan, 1.2]))  # partly NaN still draws
    assert len(fig.axes[0].get_lines()) == 1


def test_fractional_ou_same_seed_same_series_in_float32_and_float64():
    a = SM.fractional_ou(256, 0.7, 2.0, 1.0, 100.0, batch_shape=(2,), seed=4)
    b = SM.fractional_ou(256, 0.7, 2.0, 1.0, 100.0, batch_shape=(2,), seed=4, dtype=torch.float32)
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.double(), a, rtol=1e-4, atol=1e-5 * float(a.abs().max()))
