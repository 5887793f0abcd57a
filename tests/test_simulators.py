"""fractals.simulators: fractional OU sampler and Whittle fit, dendrite growth."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fractals import metrics as fm
from fractals.simulators import (
    FOUFit,
    box_counting_dimension_3d,
    dendrite_growth,
    fit_fractional_ou,
    fou_log_spectrum,
    fractional_ou,
)

FS = 1000.0



def test_fou_h_half_is_classical_ou_variance():
    sigma, theta = 2.0, 20.0
    x = fractional_ou(20000, 0.5, theta, sigma, FS, batch_shape=(32,), seed=0)
    assert x.shape == (32, 20000)
    assert float(x.var(-1).mean()) == pytest.approx(sigma**2 / (2 * theta), rel=0.05)


@pytest.mark.parametrize("H", [0.3, 0.6, 0.9])
def test_fou_hurst_recovered_by_dfa(H):
    # Below the corner (theta / 2 pi = 0.1 Hz) fOU scales like fBm: DFA2 alpha = H + 1.
    x = fractional_ou(4096, H, 2 * math.pi * 0.1, 1.0, FS, batch_shape=(16,), seed=3)
    alpha = fm.dfa_alpha(x, windows=[8, 16, 32, 64, 128, 256], order=2)
    h_est = fm.hurst_from_dfa(alpha, signal="fbm")
    assert abs(float(h_est.mean()) - H) < 0.05


def test_fou_high_frequency_slope_is_2h_plus_1():
    H = 0.7
    x = fractional_ou(4096, H, 2 * math.pi * 1.0, 1.0, FS, batch_shape=(8,), seed=1)
    beta = fm.spectral_beta(x, FS, (20.0, 200.0), exclude_peaks=False)
    assert float(beta.mean()) == pytest.approx(2 * H + 1, abs=0.15)


def test_fou_is_differentiable_in_parameters():
    H = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(30.0, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    x = fractional_ou(256, H, theta, sigma, FS, seed=0)
    gH, gt, gs = torch.autograd.grad(x.square().mean(), (H, theta, sigma))
    assert all(bool(torch.isfinite(g)) and float(g) != 0.0 for g in (gH, gt, gs))
    assert float(gs) > 0 and float(gt) < 0  # more noise, more power; faster reversion, less
    assert torch.autograd.gradcheck(lambda h, t, s: fractional_ou(64, h, t, s, FS, seed=1), (H, theta, sigma))


def test_fou_seeded_and_batched():
    a = fractional_ou(128, torch.tensor([0.3, 0.8]), 10.0, 1.0, FS, seed=7)
    b = fractional_ou(128, torch.tensor([0.3, 0.8]), 10.0, 1.0, FS, generator=torch.Generator().manual_seed(7))
    c = fractional_ou(128, torch.tensor([0.3, 0.8]), 10.0, 1.0, FS, seed=8)
    assert a.shape == (2, 128)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, field", [({"H": 1.2}, "H"), ({"theta": 0.0}, "theta"), ({"sigma": -1.0}, "sigma")])
def test_fou_rejects_bad_parameters(kwargs, field):
    args = {"H": 0.5, "theta": 10.0, "sigma": 1.0, **kwargs}
    with pytest.raises(ValueError, match=field):
        fractional_ou(64, args["H"], args["theta"], args["sigma"], FS)


def test_fou_log_spectrum_slopes():
    f = torch.tensor([1e-3, 2e-3, 1e3, 2e3], dtype=torch.float64)
    log_s = fou_log_spectrum(f, 0.8, 2 * math.pi * 1.0, 1.0)
    low = (log_s[1] - log_s[0]) / math.log(2)
    high = (log_s[3] - log_s[2]) / math.log(2)
    assert float(low) == pytest.approx(1 - 2 * 0.8, abs=1e-3)   # fGn side
    assert float(high) == pytest.approx(-1 - 2 * 0.8, abs=1e-3)  # fBm side


@pytest.mark.parametrize("H", [0.3, 0.75])
def test_fit_recovers_known_parameters(H):
    theta, sigma = 2 * math.pi * 20.0, 1.5
    x = fractional_ou(4096, H, theta, sigma, FS, batch_shape=(4, 3), seed=11)
    fit = fit_fractional_ou(x, FS)
    assert isinstance(fit, FOUFit) and fit.H.shape == (4, 3)
    assert float((fit.H - H).abs().max()) < 0.1  # per-series spread at T=4096: sd about 0.03
    assert float(fit.H.mean()) == pytest.approx(H, abs=0.02)
    assert float(fit.theta.median()) == pytest.approx(theta, rel=0.1)
    assert float(fit.sigma.median()) == pytest.approx(sigma, rel=0.1)
    assert bool(torch.isfinite(fit.loss).all())


def test_fit_numpy_in_numpy_out_and_band():
    x = fractional_ou(4096, 0.6, 2 * math.pi * 10, 1.0, 250.0, batch_shape=(2,), seed=2).numpy()
    fit = fit_fractional_ou(x, 250.0, freq_band=(1.0, 40.0))
    assert isinstance(fit.H, np.ndarray) and fit.H.shape == (2,)
    assert fit.n_freqs > 100
    assert set(fit.as_dict()) == {"H", "theta", "sigma", "loss", "n_freqs"}


def test_fit_rejects_bad_input():
    x = torch.randn(2, 1024)
    with pytest.raises(ValueError, match="freq_band"):
        fit_fractional_ou(x, 100.0, freq_band=(10.0, 10.2))
    with pytest.raises(ValueError, match="constant"):
        fit_fractional_ou(torch.zeros(1024), 100.0)
    bad = x.clone()
    bad[0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_fractional_ou(bad, 100.0)


def test_box_counting_dimension_of_known_sets():
    t = np.linspace(0, 1, 4000)
    line = np.stack([t, 0.5 * t, 0.2 * t], 1)
    g = np.linspace(0, 1, 120)
    plane = np.stack(np.meshgrid(g, g, [0.0]), -1).reshape(-1, 3)
    cube = np.random.default_rng(0).uniform(size=(200000, 3))
    # A diagonal line crosses extra cubes at coarse sizes: 0.91 here, 0.99 along an axis.
    assert box_counting_dimension_3d(line, min_eps=1 / 32) == pytest.approx(1.0, abs=0.1)
    assert box_counting_dimension_3d(plane, min_eps=1 / 32) == pytest.approx(2.0, abs=0.1)
    assert box_counting_dimension_3d(cube, min_eps=1 / 32) == pytest.approx(3.0, abs=0.15)


def test_box_counting_needs_two_scales():
    # One box size is no slope: polyfit returned an arbitrary number (1.48 here) with a RankWarning.
    pts = np.random.default_rng(1).uniform(size=(100, 3))
    with pytest.raises(ValueError, match="n_scales"):
        box_counting_dimension_3d(pts, n_scales=1)


def test_fou_batch_shape_int_and_bad_batch_shape():
    # batch_shape=3 raised TypeError ('int' object is not iterable); the stimuli take an int.
    assert torch.equal(fractional_ou(32, 0.5, 10.0, 1.0, FS, batch_shape=3, seed=1),
                       fractional_ou(32, 0.5, 10.0, 1.0, FS, batch_shape=(3,), seed=1))
    with pytest.raises(ValueError, match="batch_shape"):
        fractional_ou(32, 0.5, 10.0, 1.0, FS, batch_shape=(2, 0))


def test_dendrite_dimension_follows_target():
    targets = [1.2, 1.4, 1.6]
    trees = [dendrite_growth(d, steps=200, seed=0) for d in targets]
    dims = [t["measured_D"] for t in trees]
    assert all(b > a for a, b in zip(dims, dims[1:]))
    for d, t in zip(targets, dims):
        assert t == pytest.approx(d, abs=0.05)
    # Larger D fills space with more wire: the cost side of the trade-off.
    wires = [t["wire_length"] for t in trees]
    assert all(b > a for a, b in zip(wires, wires[1:]))


def test_dendrite_is_a_tree_with_consistent_costs():
    out = dendrite_growth(1.5, steps=150, seed=3, cost_coeffs=(2.0, 0.5))
    coords, edges = out["coords"], out["edges"]
    assert edges.shape == (150, 2) and coords.shape == (151, 3)
    assert bool((edges[:, 0] < edges[:, 1]).all())  # parents are created before children
    assert torch.equal(edges[:, 1], torch.arange(1, 151))
    seg = (coords[edges[:, 1]] - coords[edges[:, 0]]).norm(dim=1)
    assert torch.allclose(seg, out["segment_length"])
    assert out["wire_length"] == pytest.approx(float(seg.sum()))
    assert out["cost"] == pytest.approx(2.0 * out["wire_length"] - 0.5 * out["coverage"])
    again = dendrite_growth(1.5, steps=150, seed=3, cost_coeffs=(2.0, 0.5))
    assert torch.equal(again["coords"], coords)


def test_dendrite_rejects_bad_target():
    with pytest.raises(ValueError, match="target_D"):
        dendrite_growth(3.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fou_sample_and_fit_on_cuda():
    x = fractional_ou(4096, 0.7, 2 * math.pi * 20.0, 1.0, FS, batch_shape=(8,), seed=3, device="cuda")
    assert x.device.type == "cuda"
    cpu = fractional_ou(4096, 0.7, 2 * math.pi * 20.0, 1.0, FS, batch_shape=(8,), seed=3)
    assert torch.allclose(x.cpu(), cpu, atol=1e-8)  # same seeded noise, drawn on the CPU generator
    fit = fit_fractional_ou(x, FS)
    assert fit.H.device.type == "cuda" and float(fit.H.mean()) == pytest.approx(0.7, abs=0.03)


# ------------------------------------------------------------------ review round: argument checks
def test_dendrite_accepts_numpy_scalars_and_rejects_bad_geometry():
    # np.float32(1.5) was refused as "needs a number in (1, 3), got 1.5".
    out = dendrite_growth(np.float32(1.5), steps=20, calibrate=False)
    assert out["measured_D"] > 1.0
    # contact_radius <= 0 gave a coverage of 0 or below (and NaN casts); jitter >= 1 grew
    # segments of negative length (children pointing back through their parent).
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="contact_radius"):
            dendrite_growth(1.5, steps=20, calibrate=False, contact_radius=bad)
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="jitter"):
            dendrite_growth(1.5, steps=20, calibrate=False, jitter=bad)


def test_fou_shape_and_dtype_errors_are_value_errors():
    with pytest.raises(ValueError, match=r"batch_shape: \(3,\) does not broadcast"):
        fractional_ou(64, torch.tensor([0.3, 0.7]), 1.0, 1.0, FS, batch_shape=(3,))
    with pytest.raises(ValueError, match="dtype"):
        fractional_ou(64, 0.5, 1.0, 1.0, FS, dtype=torch.int64)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fou_cpu_tensor_parameters_follow_the_device_argument():
    # A CPU tensor H with device="cuda" mixed devices inside the spectrum and raised.
    H = torch.tensor([0.3, 0.7], requires_grad=True)
    x = fractional_ou(256, H, 2.0, 1.0, FS, seed=0, device="cuda")
    assert x.device.type == "cuda" and x.shape == (2, 256)
    x.square().sum().backward()
    assert H.grad is not None and bool(torch.isfinite(H.grad).all())
