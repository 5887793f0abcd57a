"""Review round: bugs a user hit with odd-but-valid input, each pinned by the input that showed it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fractals.windowed as fw
from fractals import metrics as M
from fractals.priors import FractalPriors
from fractals.regularizers import soft_graph_dimension


def _noise(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------- windowed
def test_windowed_fit_outputs_survive_cpu_blocks(monkeypatch):
    # 19 EEG channels of 60 s at 250 Hz exceed one 8 MB frame block, so windowed() concatenated
    # per-block results with torch.cat, which crashed (TypeError) on the tuple / dict / SpectralFit
    # that return_fit=True and multifractal_spectrum return.
    x = _noise((2, 3, 1024))
    whole_dfa = M.windowed_dfa_alpha(x, 256, 128, return_fit=True)
    whole_mf = M.windowed(M.multifractal_spectrum, x, 512, 256)
    whole_fit = M.windowed_spectral_beta(x, 512, 256, fs=250.0, freq_band=(2.0, 40.0), return_fit=True)
    monkeypatch.setattr(fw, "FRAME_BLOCK_BYTES", 1)  # one series per block, as for long recordings
    alpha, fit = M.windowed_dfa_alpha(x, 256, 128, return_fit=True)
    np.testing.assert_allclose(alpha, whole_dfa[0])
    assert alpha.shape == (2, 3, 7) and fit["fluct"].shape == (2, 3, 7, 3) and fit["windows"].shape == (3,)
    np.testing.assert_allclose(fit["fluct"], whole_dfa[1]["fluct"])
    mf = M.windowed(M.multifractal_spectrum, x, 512, 256)
    assert mf["h"].shape == (2, 3, 3, 7) and mf["q"].shape == (7,)
    np.testing.assert_allclose(mf["width"], whole_mf["width"])
    sf = M.windowed_spectral_beta(x, 512, 256, fs=250.0, freq_band=(2.0, 40.0), return_fit=True)
    assert sf.beta.shape == (2, 3, 3) and sf.freqs.ndim == 1 and sf.peak_valid.shape[:3] == (2, 3, 3)
    np.testing.assert_allclose(sf.beta, whole_fit.beta)


def test_windowed_spectral_fit_is_numpy_for_numpy_input():
    # The SpectralFit came back holding torch tensors for a NumPy recording ("same kind as x").
    fit = M.windowed_spectral_beta(_noise((2, 1024)), 512, 256, fs=250.0, freq_band=(2.0, 40.0), return_fit=True)
    assert all(isinstance(getattr(fit, k), np.ndarray) for k in ("beta", "freqs", "mask", "peak_freq"))
    tfit = M.windowed_spectral_beta(torch.from_numpy(_noise((2, 1024))), 512, 256, fs=250.0,
                                    freq_band=(2.0, 40.0), return_fit=True)
    assert isinstance(tfit.beta, torch.Tensor)


# ----------------------------------------------------------------------------- hurst_rs
def test_hurst_rs_too_small_max_window_names_max_window():
    # max_window=20 with min_window=16 leaves one window; the error blamed x ("T=512 is too short").
    with pytest.raises(ValueError, match=r"max_window: 20 .*>= 2 \* min_window = 32"):
        M.hurst_rs(_noise(512), max_window=20)


def test_hurst_rs_accepts_tensors_that_require_grad():
    # Latents inside a training step require grad: hurst_rs raised "cumsum(): functions with out=...
    # arguments don't support automatic differentiation" where higuchi, katz and DFA all worked.
    x = torch.from_numpy(_noise((2, 64), seed=3)).requires_grad_(True)
    h = M.hurst_rs(x, windows=[8, 16, 32])
    torch.testing.assert_close(h.detach(), M.hurst_rs(x.detach(), windows=[8, 16, 32]))
    assert torch.autograd.gradcheck(lambda v: M.hurst_rs(v, windows=[8, 16, 32]), (x,))
    # A constant segment is left out (nolds), and gives a zero gradient, not NaN.
    y = torch.from_numpy(np.r_[np.zeros(16), _noise(48, seed=4)]).requires_grad_(True)
    M.hurst_rs(y, windows=[8, 16]).backward()
    assert bool(torch.isfinite(y.grad).all())


# ----------------------------------------------------------------------------- powerlaw_fit
def test_discrete_powerlaw_needs_an_integer_xmin():
    # xmin=1.5 on integer data fitted a zeta law from 1.5 to a tail that starts at 2 (alpha 1.82,
    # where xmin=2 gives 2.22): a silently wrong exponent.
    d = np.floor((1 - np.random.default_rng(0).random(2000)) ** (-1 / 1.5))
    with pytest.raises(ValueError, match="xmin: discrete fits need an integer xmin >= 1, got 1.5"):
        M.powerlaw_fit(d, discrete=True, xmin=1.5)
    assert float(M.powerlaw_fit(d, discrete=True, xmin=2.0).xmin) == 2.0


def test_discrete_constant_tail_raises_like_continuous():
    # Twenty degrees all equal to 1 returned alpha = 2.44 (the discrete approximation's value);
    # the exact MLE of a constant tail is infinite, and continuous data already raise.
    with pytest.raises(ValueError, match="no usable tail"):
        M.powerlaw_fit(np.ones(20, dtype=int), discrete=True)
    with pytest.raises(ValueError, match="no usable tail"):
        M.powerlaw_fit(np.full(20, 5), discrete=True, xmin=5)
    # Data with a real tail are unchanged (max tied min_tail times is only one candidate of many).
    d = np.floor((1 - np.random.default_rng(1).random(500)) ** (-1 / 1.5))
    fit = M.powerlaw_fit(d, discrete=True)
    assert 2.0 < float(fit.alpha) < 3.0


# ----------------------------------------------------------------------------- priors
def test_soft_graph_dimension_duplicate_or_fractional_eps_raise_valueerror():
    # (1, 2, 2, 3) crashed with a RuntimeError (3 masses against 4 radii); 1.5 was truncated to 1.
    x = torch.randn(2, 128, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"eps_values: .*distinct.*\[1, 2, 2, 3\]"):
        soft_graph_dimension(x, [1, 2, 2, 3], 0.3)
    with pytest.raises(ValueError, match="eps_values"):
        soft_graph_dimension(x, [1.5, 2, 3], 0.3)
    with pytest.raises(ValueError, match="eps_values"):
        FractalPriors(warmup_steps=0, eps_values=(1, 2, 2, 3), lambda_spec=0, lambda_mf=0)(x)
    torch.testing.assert_close(soft_graph_dimension(x, [3, 1, 2], 0.3), soft_graph_dimension(x, [1, 2, 3], 0.3))


def test_priors_compile_one_means_true(monkeypatch):
    # A Hydra override fractals.priors.compile=1 gives the int 1: it passed the check (1 == True)
    # but `compile is True` was false, so the priors silently never compiled on CPU.
    import fractals.priors as priors_mod

    compiled = []

    def spy_compile(fn, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(priors_mod.torch, "compile", spy_compile)
    x = torch.randn(2, 256, 8)
    for flag in (1, np.bool_(True)):
        FractalPriors(compile=flag, warmup_steps=0, scales=[8, 16, 32])(x)
    assert len(compiled) == 2
    FractalPriors(compile=0, warmup_steps=0, scales=[8, 16, 32])(x)
    assert len(compiled) == 2


def test_priors_bad_weights_and_warmup_name_the_field():
    # lambda_mf=-1 raised "weight: must be ..." (which of three?); "abc" / 2.5 warmups raised
    # int()'s bare message or were truncated to 2.
    with pytest.raises(ValueError, match="lambda_mf: must be a finite number >= 0, got -1"):
        FractalPriors(lambda_mf=-1)
    with pytest.raises(ValueError, match="lambda_spec: .*'x'"):
        FractalPriors(lambda_spec="x")
    for bad in ("abc", 2.5, -1):
        with pytest.raises(ValueError, match="warmup_steps: must be an integer >= 0"):
            FractalPriors(warmup_steps=bad)
    assert FractalPriors(warmup_steps=np.int64(5), lambda_spec="0.5").warmup_steps == 5
    assert FractalPriors(warmup_steps=1000.0).warmup_steps == 1000  # a float from a sweep


def test_priors_fractional_sizes_raise_instead_of_truncating():
    # scales 8.7 / eps 1.5 were truncated to 8 / 1 without a word.
    x = torch.randn(2, 128, 6, generator=torch.Generator().manual_seed(0))
    from fractals.regularizers import latent_tau

    with pytest.raises(ValueError, match=r"scales: needs integer"):
        latent_tau(x, [-2, 0, 2], [8.7, 16, 32])
    with pytest.raises(ValueError, match=r"scales: needs integer"):
        FractalPriors(scales=(8, 12.5, 32))
    with pytest.raises(ValueError, match=r"eps_values: needs integer"):
        FractalPriors(eps_values=(1.5, 2, 3))
    assert FractalPriors(scales=np.array([8.0, 16.0]), eps_values=(1, 2.0)).scales == [8, 16]


def test_priors_non_finite_targets_raise_instead_of_a_nan_loss():
    # spectral_beta_target=.nan (YAML) trained on a NaN loss from the first step after warmup.
    x = torch.randn(2, 256, 8, generator=torch.Generator().manual_seed(0))
    for kw in (dict(spectral_beta_target=float("nan")), dict(graph_D_target=float("inf")),
               dict(tau_target=[0.0, float("nan"), 0.0], q_vals=(-1, 0, 1))):
        name = next(k for k in kw if k != "q_vals")
        with pytest.raises(ValueError, match=f"{name}: must be finite"):
            FractalPriors(warmup_steps=0, **kw)(x)
    with pytest.raises(ValueError, match="spectral_beta_target"):
        FractalPriors(spectral_beta_target="steep")


def test_unconvertible_x_and_q_vals_name_the_argument():
    # A ragged list raised NumPy's "setting an array element with a sequence" from the scalar
    # check, and q_vals="abc" float()'s bare message: neither said which argument was wrong.
    with pytest.raises(ValueError, match=r"^x: cannot convert list"):
        M.katz_fd([[1.0, 2.0, 3.0], [3.0]])
    with pytest.raises(ValueError, match=r"^x: cannot convert list"):
        M.windowed_katz_fd([[1.0, 2.0, 3.0], [3.0]], 2, 1)
    with pytest.raises(ValueError, match=r"^q_vals: needs at least 3 finite values, got 'abc'"):
        M.multifractal_spectrum(_noise(512), q_vals="abc")


def test_windowed_errors_say_they_are_about_the_windows():
    # windowed_higuchi_fd(x of 300 samples, window_size=15) said "x: time axis has 15 samples,
    # needs at least 16": the fix is window_size, which the message never mentioned.
    with pytest.raises(ValueError, match=r"^x: time axis has 15 samples.*window_size=15 .*T=300"):
        M.windowed_higuchi_fd(_noise((2, 300)), 15, 1)
