"""Review round 9: generators, simulators and criticality tools used as a researcher would."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fractals import criticality as C
from fractals import simulators as SM
from fractals import stimuli as S


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ simulators
def test_fractional_ou_takes_a_zero_dim_tensor_sampling_rate():
    # fs read from a collated batch is a 0-d tensor: refused with "must be a finite number > 0, got tensor(10.)".
    ref = SM.fractional_ou(64, 0.7, 2.0, 1.0, 10.0, seed=0)
    got = SM.fractional_ou(64, 0.7, 2.0, 1.0, torch.tensor(10.0), seed=0)
    assert torch.equal(ref, got)
    x = SM.fractional_ou(512, 0.7, 20.0, 1.0, 100.0, seed=1)
    assert torch.equal(SM.fit_fractional_ou(x, torch.tensor(100.0), steps=5).H,
                       SM.fit_fractional_ou(x, 100.0, steps=5).H)


def test_dendrite_growth_takes_a_zero_dim_tensor_target():
    # Refused with "needs a number in (1, 3), got tensor(1.5000)": a message contradicting the value shown.
    ref = SM.dendrite_growth(1.5, 20, 0, calibrate=False)
    got = SM.dendrite_growth(torch.tensor(1.5), 20, 0, calibrate=False)
    assert got["measured_D"] == ref["measured_D"]


# ------------------------------------------------------------------------------------ criticality
def test_perturbation_sensitivity_in_bfloat16_steps_above_the_resolution():
    # bfloat16 rounds x + 1e-3 u back to nearly x: the gain of the map 2x read 0.57 without a word.
    x = torch.randn(8, 3, generator=_gen()).bfloat16()
    with pytest.warns(RuntimeWarning, match="eps"):
        gain = C.perturbation_sensitivity(lambda z: 2 * z, x, generator=_gen(1))
    assert abs(gain - 2.0) < 0.02
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()
    x = torch.randn(16, 4, generator=_gen(2), dtype=torch.float64)
    ref = C.perturbation_sensitivity(net, x, generator=_gen(1))
    with pytest.warns(RuntimeWarning, match="eps"):
        half = C.perturbation_sensitivity(net.bfloat16(), x.bfloat16(), generator=_gen(1))
    assert abs(half / ref - 1) < 0.05


def test_dead_neuron_rate_takes_a_numpy_array():
    # An (N, units) NumPy array was split into rows and refused: "needs (N, units), got shape (3,)".
    acts = np.zeros((4, 3))
    acts[:, 0] = 1.0
    assert C.dead_neuron_rate(acts) == pytest.approx(2 / 3)


@pytest.mark.parametrize("threshold", [float("nan"), -1.0, float("inf")])
def test_dead_neuron_rate_bad_threshold(threshold):
    # A NaN threshold counted every unit alive (0.0) without a word.
    with pytest.raises(ValueError, match="threshold"):
        C.dead_neuron_rate(torch.zeros(4, 3), threshold=threshold)


@pytest.mark.parametrize("n_layers", [2.0, True, "3"])
def test_layerwise_targets_bad_n_layers(n_layers):
    # 2.0 raised a bare TypeError from range(); True read as one layer.
    with pytest.raises(ValueError, match="n_layers"):
        C.layerwise_targets(n_layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_boundary_box_dimension_takes_labels_on_cuda():
    # Labels from a model run on the GPU indexed the CPU box grid: a device-mismatch RuntimeError.
    d = C.boundary_box_dimension(lambda p: (p[:, 1] > 0.3 * p[:, 0]).cuda(), (-1, 1, -1, 1))
    assert abs(d - 1.0) < 0.05


@pytest.mark.parametrize("min_eps", ["0.1", "a"])
def test_box_counting_dimension_3d_bad_min_eps_names_it(min_eps):
    # "a" gave "could not convert string to float: 'a'", naming no argument (and "0.1" passed as a number).
    with pytest.raises(ValueError, match="min_eps"):
        SM.box_counting_dimension_3d(np.random.default_rng(0).random((50, 3)), min_eps=min_eps)


def test_fractional_ou_refuses_seed_and_generator_together():
    # The generator won and the seed was dropped silently: two "seeded" runs that differed in their seeds agreed.
    with pytest.raises(ValueError, match="seed"):
        SM.fractional_ou(16, 0.7, 1.0, 1.0, 10.0, seed=1, generator=_gen(0))


def test_fgn_long_series_at_strong_long_memory():
    # The far-lag autocovariance lost ~k^2 digits to cancellation: fgn(2**20, 0.99) raised "circulant embedding
    # ... is not positive semi-definite", though Davies-Harte is exact for every H in (0, 1).
    from fractals.stimuli import _fgn_eigenvalues

    lam = _fgn_eigenvalues(2**20, 0.99, "cpu")
    assert float(lam.min()) >= 0
    x = S.fgn(2**20, 0.99, generator=_gen())
    assert x.shape == (2**20,) and torch.isfinite(x).all()


@pytest.mark.parametrize("bounds", [(-1, 1, -1), (-1, 1, -1, "top")])
def test_boundary_box_dimension_bad_bounds_names_them(bounds):
    with pytest.raises(ValueError, match="bounds"):
        C.boundary_box_dimension(lambda p: p[:, 1] > 0, bounds)


@pytest.mark.parametrize("kwargs, match", [({"weight": "0.1"}, "weight"), ({"weight": None}, "weight"),
                                           ({"n_iter": 2.5}, "n_iter"), ({"n_iter": 0}, "n_iter")])
def test_spectral_regularizer_bad_weight_or_n_iter_names_it(kwargs, match):
    # weight="0.1" raised a bare TypeError; n_iter=2.5 was truncated to 2 without a word.
    with pytest.raises(ValueError, match=match):
        C.SpectralRegularizer(**kwargs)


def test_spectral_regularizer_takes_numpy_and_tensor_weights():
    net = torch.nn.Linear(3, 3)
    want, _ = C.SpectralRegularizer(weight=0.5)(net)
    for w in (np.float32(0.5), torch.tensor(0.5)):
        got, _ = C.SpectralRegularizer(weight=w)(net)
        assert torch.allclose(got, want)


def test_one_over_f_noise_warns_when_a_peak_falls_between_frequency_bins():
    # A 0.05 Hz wide peak at 10.3 Hz on a 1 Hz grid was absent from the series, silently.
    with pytest.warns(RuntimeWarning, match="width_hz"):
        S.one_over_f_noise(1000, 1.0, fs=1000.0, peaks=[(10.3, 0.05, 10.0)], generator=_gen())
    with pytest.warns(RuntimeWarning, match="width_hz"):  # next to 0 Hz, where the PSD is zero
        S.one_over_f_noise(64, 1.0, fs=100.0, peaks=[(1e-3, 0.5, 5.0)], generator=_gen())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a peak on a bin, or wide enough, stays quiet
        S.one_over_f_noise(1000, 1.0, fs=1000.0, peaks=[(10.0, 0.05, 10.0), (20.5, 1.0, 2.0)], generator=_gen())


def test_boundary_box_dimension_refuses_probabilities():
    # Sigmoid probabilities differ at every sample point: every box was a boundary box and D read 2.0.
    with pytest.raises(ValueError, match="predict"):
        C.boundary_box_dimension(lambda p: torch.sigmoid(5 * (p[:, 1] - 0.3 * p[:, 0])), (-1, 1, -1, 1))
    d = C.boundary_box_dimension(lambda p: (p[:, 1] > 0.3 * p[:, 0]).float(), (-1, 1, -1, 1))
    assert abs(d - 1.0) < 0.02
