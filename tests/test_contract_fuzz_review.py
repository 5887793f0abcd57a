"""Contract fuzz review: inputs a fuzz of the public fractals API found mishandled, pinned one by one.

Contract (fractals/metrics.py, fractals/_checks.py): bad input raises ValueError naming the argument,
never a silent NaN/inf and never another exception type. Each test pins one concrete input.
"""
import math

import numpy as np
import pytest
import torch

from fractals import probes, regularizers, simulators, spectral, stimuli
from fractals.dfa import hurst_from_dfa
from fractals.graph import powerlaw_fit
from fractals.priors import FractalPriors


def _latents(seed=0, shape=(2, 256, 4)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- regularizers
@pytest.mark.parametrize("time_dim", [3, -4])
def test_regularizers_time_dim_out_of_range_names_time_dim(time_dim):
    # Was an IndexError ("Dimension out of range") from movedim.
    x = _latents()
    with pytest.raises(ValueError, match="time_dim"):
        regularizers.latent_beta(x, 100.0, (2.0, 40.0), time_dim=time_dim)
    with pytest.raises(ValueError, match="time_dim"):
        regularizers.latent_tau(x, [2.0], [8, 16], time_dim=time_dim)
    with pytest.raises(ValueError, match="time_dim"):
        regularizers.soft_graph_dimension(x, [1, 2], 0.3, time_dim=time_dim)
    with pytest.raises(ValueError, match="time_dim"):
        FractalPriors(time_dim=time_dim, warmup_steps=0)(x)


def test_l_spec_1overf_nonfinite_beta_target_raises():
    # beta_target=nan returned a NaN loss (FractalPriors checks it, the functional term did not).
    with pytest.raises(ValueError, match="beta_target"):
        regularizers.l_spec_1overf(_latents(), 100.0, (2.0, 40.0), float("nan"), 1.0)


def test_l_graph_fd_nonfinite_d_target_raises():
    with pytest.raises(ValueError, match="D_target"):
        regularizers.l_graph_fd(_latents(), [1, 2], 0.3, float("nan"), 1.0)


def test_l_multifractal_nonfinite_tau_target_or_match_weight_raises():
    x = _latents()
    with pytest.raises(ValueError, match="tau_target"):
        regularizers.l_multifractal(x, [-1.0, 0.0, 1.0], [8, 16], 1.0, [0.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match="match_weight"):
        regularizers.l_multifractal(x, [-1.0, 0.0, 1.0], [8, 16], 1.0, [0.0, 0.0, 0.0], match_weight=float("nan"))


@pytest.mark.parametrize("q", [[float("nan"), 2.0], [2.0, float("inf")]])
def test_latent_tau_nonfinite_q_raises(q):
    # A NaN/inf q gave a NaN tau (and a NaN FractalPriors loss after warmup).
    with pytest.raises(ValueError, match="q_vals"):
        regularizers.latent_tau(_latents(), q, [8, 16])


@pytest.mark.parametrize("order", [1.5, -1])
def test_latent_tau_bad_order_names_order(order):
    # 1.5: TypeError from range(); -1: "need at least one array to stack".
    with pytest.raises(ValueError, match="order"):
        regularizers.latent_tau(_latents(), [2.0], [8, 16], order=order)


@pytest.mark.parametrize("band", [(2.0,), (float("nan"), 40.0), (2.0, float("nan")), "ab"])
def test_latent_beta_bad_band_names_band(band):
    # (2.0,): IndexError; NaN edges: "cannot convert float NaN to integer".
    with pytest.raises(ValueError, match="band"):
        regularizers.latent_beta(_latents(), 100.0, band)


@pytest.mark.parametrize("nperseg", [[], float("inf"), float("nan"), 64.5, np.array([64, 128])])
def test_latent_beta_bad_nperseg_names_nperseg(nperseg):
    # []: RuntimeError "stack expects a non-empty TensorList"; inf: OverflowError; NaN / an array: a
    # message naming no argument; 64.5: silently truncated to 64.
    with pytest.raises(ValueError, match="nperseg"):
        regularizers.latent_beta(_latents(), 100.0, (2.0, 40.0), nperseg=nperseg)


# ----------------------------------------------------------------------------- probes
@pytest.mark.parametrize("dim", [3, -4])
def test_causal_scale_ablation_dim_out_of_range_names_dim(dim):
    x = np.random.default_rng(0).standard_normal((2, 3, 512))
    with pytest.raises(ValueError, match="dim"):
        probes.causal_scale_ablation(x, dim=dim)


def test_causal_scale_ablation_band_not_a_pair_names_band():
    x = np.random.default_rng(0).standard_normal(512)
    with pytest.raises(ValueError, match="band"):
        probes.causal_scale_ablation(x, band=(2.0,))


@pytest.mark.parametrize("n", [-5, 100.5, "a"])
def test_ablation_mask_bad_n_names_n(n):
    # -5: RuntimeError (negative dimension); 100.5 / "a": TypeError from rfftfreq.
    with pytest.raises(ValueError, match="^n: "):
        probes.ablation_mask(n, 100.0, "high_beta_only", 0.2, (1.0, 40.0))


def test_probes_time_dim_out_of_range_names_time_dim():
    x = _latents()
    with pytest.raises(ValueError, match="time_dim"):
        probes.latent_fd_probe(x, time_dim=3)
    with pytest.raises(ValueError, match="time_dim"):
        probes.fc_fd_probe(x, time_dim=3)


# ----------------------------------------------------------------------------- simulators / spectral
@pytest.mark.parametrize("freqs,H", [([0.0, 1.0, 10.0], 0.7), ([1.0, 10.0], float("nan")), ([1.0, 10.0], 1.5)])
def test_fou_log_spectrum_out_of_domain_raises(freqs, H):
    # f = 0 gave inf/NaN, H = nan or 1.5 a NaN spectrum: documented domain f > 0, H in (0, 1).
    with pytest.raises(ValueError, match="^(freqs_hz|H): "):
        simulators.fou_log_spectrum(torch.tensor(freqs), H, 1.0, 1.0)


def test_fou_log_spectrum_valid_input_unchanged():
    f = torch.tensor([1.0, 10.0], dtype=torch.float64)
    out = simulators.fou_log_spectrum(f, 0.5, 2.0, 3.0)
    w = 2 * math.pi * f
    expected = torch.log(9.0 * math.gamma(2.0) * torch.ones(2, dtype=torch.float64) / (4.0 + w * w))
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("window", [None, {"a": 1}])
def test_welch_window_of_wrong_type_names_window(window):
    # window=None: TypeError "can't convert np.ndarray of type numpy.object_".
    x = np.random.default_rng(0).standard_normal(512)
    with pytest.raises(ValueError, match="window"):
        spectral.welch_psd(x, 100.0, window=window)
    with pytest.raises(ValueError, match="window"):
        spectral.spectral_beta(x, 100.0, (2.0, 40.0), window=window)


@pytest.mark.parametrize("weights", [np.zeros(64), np.full(64, np.nan), np.ones(64) * 1j])
def test_welch_array_window_nonfinite_or_zero_raises(weights):
    # All-zero, NaN or imaginary weights gave a silent all-NaN PSD (it divides by sum(w^2)).
    x = np.random.default_rng(0).standard_normal(512)
    with pytest.raises(ValueError, match="window"):
        spectral.welch_psd(x, 100.0, nperseg=64, window=weights)


def test_powerlaw_bootstrap_p_value_batched_equals_per_series():
    # The default generator was shared across rows: series 1 got p = 0.0 in a batch, 0.2 alone.
    v = np.random.default_rng(0).pareto(1.5, (2, 300)) + 1
    batched = powerlaw_fit(v, bootstrap=5)
    for i in range(2):
        alone = powerlaw_fit(v[i], bootstrap=5)
        assert float(batched.p_value[i]) == float(alone.p_value)


def test_generator_overflowing_dtype_raises():
    # Drawn in float64, cast at the end: values beyond float16's 65504 came back as inf (also
    # fbm_series(2**20, 0.9, dtype=torch.float16), which reaches ~5e5).
    with pytest.raises(ValueError, match="dtype"):
        stimuli.fgn(64, 0.7, sigma=1e5, dtype=torch.float16, generator=torch.Generator().manual_seed(0))
    ok = stimuli.fbm_series(256, 0.9, dtype=torch.float16, generator=torch.Generator().manual_seed(0))
    assert ok.dtype == torch.float16 and bool(torch.isfinite(ok).all())


def test_one_over_f_psd_numpy_in_numpy_out_and_bad_peak_raises():
    # NumPy frequencies were an AttributeError ('numpy.ndarray' object has no attribute 'to').
    out = stimuli.one_over_f_psd(np.array([0.0, 1.0, 4.0]), 1.0)
    assert isinstance(out, np.ndarray) and np.allclose(out, [0.0, 1.0, 0.25])
    # A zero-width peak gave a NaN PSD.
    with pytest.raises(ValueError, match="width_hz"):
        stimuli.one_over_f_psd(torch.tensor([1.0, 2.0]), 1.0, [(10.0, 0.0, 5.0)])


@pytest.mark.parametrize("kwargs,name", [
    ({"corr_threshold": 1.5}, "corr_threshold"),
    ({"corr_threshold": float("nan")}, "corr_threshold"),
    ({"q_vals": (float("nan"), 1.0, 2.0)}, "q_vals"),
    ({"q_vals": (3.0, 1.0, 2.0)}, "q_vals"),
    ({"eps_values": (1,)}, "eps_values"),
])
def test_fractal_priors_bad_config_raises_at_construction(kwargs, name):
    # Accepted by the constructor; the error (or, for a NaN q, a NaN loss) came only at the first step after
    # warmup_steps, possibly hours into a run.
    with pytest.raises(ValueError, match=name):
        FractalPriors(**kwargs)


def test_welch_float64_overflow_message_does_not_say_pass_float64():
    # The fix offered for a float64 PSD beyond float64's range was "pass float64".
    x = np.random.default_rng(0).standard_normal(512) * 1e300
    with pytest.raises(ValueError, match="rescale x") as info:
        spectral.welch_psd(x, 100.0)
    assert "pass float64" not in str(info.value)
    with pytest.raises(ValueError, match="pass float64 or rescale x"):
        spectral.welch_psd(torch.from_numpy(x * 1e-280).float(), 100.0)


@pytest.mark.parametrize("layers", [[torch.rand(2, 3, 5, 6), torch.rand(2, 4, 5, 6)], []])
def test_attention_fd_coupling_ragged_or_empty_layers_raise(layers):
    # Layers with different head counts, or no layer: RuntimeError from torch.stack.
    with pytest.raises(ValueError, match="attn_weights"):
        probes.attention_fd_coupling(layers, torch.rand(2, 6))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_fit_fractional_ou_under_no_grad_or_inference_mode(context):
    # The Adam refinement needs autograd: inside no_grad / inference_mode (a validation loop) it raised
    # RuntimeError "element 0 of tensors does not require grad and does not have a grad_fn".
    x = simulators.fractional_ou(256, 0.7, 5.0, 1.0, 100.0, batch_shape=(2,), seed=0)
    expected = simulators.fit_fractional_ou(x, 100.0, n_bins=16, steps=3)
    with context():
        got = simulators.fit_fractional_ou(x.clone(), 100.0, n_bins=16, steps=3)
    torch.testing.assert_close(got.H, expected.H)
    torch.testing.assert_close(got.theta, expected.theta)


def test_hurst_from_dfa_complex_tensor_raises_like_numpy():
    # A complex tensor was cast to float64 (imaginary part silently dropped); complex NumPy input raised.
    with pytest.raises(ValueError, match="alpha"):
        hurst_from_dfa(np.array([0.7 + 0.1j]))
    with pytest.raises(ValueError, match="alpha"):
        hurst_from_dfa(torch.tensor([0.7 + 0.1j]))


@pytest.mark.parametrize("bad", [None, "abc", [0.3]])
def test_unit_interval_scalars_of_wrong_type_name_the_argument(bad):
    # TypeError (float(None)) or a bare "could not convert string to float" naming no argument.
    with pytest.raises(ValueError, match="thresh"):
        regularizers.soft_graph_dimension(_latents(), [1, 2], bad)
    with pytest.raises(ValueError, match="ratio"):
        probes.ablation_mask(512, 100.0, "high_beta_only", bad, (1.0, 40.0))
