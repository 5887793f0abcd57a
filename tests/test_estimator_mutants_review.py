"""Tests written from a mutation-testing review of the core estimators.

Each test pins a behaviour that a one-token change to the estimator code (a surviving mutant) left
unchecked by the rest of the suite: exact properties, agreement with a reference library on
identical input, or values computed here independently in NumPy.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import fractals.spectral_fit as spectral_fit
from fractals.dfa import dfa_alpha, fluctuation_functions, multifractal_spectrum
from fractals.spectral import fit_aperiodic, spectral_beta, welch_psd
from fractals.stimuli import one_over_f_noise, one_over_f_psd
from fractals.temporal import _expected_rs, hurst_rs, katz_fd
from fractals.windowed import windowed


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


WHITE = torch.randn(4096, dtype=torch.float64, generator=gen(20))


def test_hurst_rs_default_windows_reach_exactly_twice_min_window():
    # T = 8 * min_window gives T // 4 = 2 * min_window: two default windows, the minimum for a slope
    # (the error message promises T >= 8 * min_window works). A `<=` in the boundary check raised here.
    x = WHITE[:128]
    assert float(hurst_rs(x)) == pytest.approx(float(hurst_rs(x, [16, 32])), abs=1e-15)
    assert float(hurst_rs(WHITE, max_window=32)) == pytest.approx(float(hurst_rs(WHITE, [16, 32])), abs=1e-15)


def _numpy_mfdfa_fq(x: np.ndarray, q: list[float], scales: list[int], order: int) -> np.ndarray:
    """F_q(s) from segments cut from the start only, with the suite's rule for exactly detrended segments:
    left out of the q <= 0 moments (their F^q is infinite), kept (adding 0) in the q > 0 moments."""
    profile = np.cumsum(x - x.mean())
    out = np.empty((len(q), len(scales)))
    for j, s in enumerate(scales):
        segs = profile[: (profile.size // s) * s].reshape(-1, s)
        t = np.arange(s)
        f2 = np.array([np.mean((seg - np.polyval(np.polyfit(t, seg, order), t)) ** 2) for seg in segs])
        live = f2 > 1e-20 * f2.max()
        assert 0 < (~live).sum() < live.size
        for i, qi in enumerate(q):
            if qi == 0:
                out[i, j] = np.exp(0.5 * np.mean(np.log(f2[live])))
            else:
                used = f2[live] if qi < 0 else np.where(live, f2, 0.0)
                out[i, j] = np.mean(used ** (qi / 2)) ** (1 / qi)
    return out


def test_q0_log_average_leaves_out_flat_segments_without_negative_q():
    # With a flat stretch, q = 0 (log average) must leave the exactly detrended segments out even
    # when the grid has no negative q: else each adds log(float tiny) = -708 to the mean of log F2.
    x = torch.randn(2048, dtype=torch.float64, generator=gen(21))
    x[512:1024] = 0.0
    q, scales = [0.0, 1.0, 2.0], [16, 32, 64, 128]
    for order in (1, 2):
        fq, _ = fluctuation_functions(x, q, scales, order=order)
        np.testing.assert_allclose(fq.numpy(), _numpy_mfdfa_fq(x.numpy(), q, scales, order), rtol=1e-7)


def test_mfdfa_alpha_is_the_documented_finite_difference_of_tau():
    # alpha = d tau / dq: central differences inside the grid, one-sided at its two ends (NumPy's
    # np.gradient with edge_order=1), on an uneven q grid; f(alpha) = q alpha - tau; width = max - min.
    x = torch.randn(8, 512, dtype=torch.float64, generator=gen(3))  # short: noisy, non-monotone alpha(q)
    q = [-4.0, -1.5, 0.0, 0.5, 2.0, 5.0]
    res = multifractal_spectrum(x, q)
    assert not bool((res["alpha"].diff(dim=-1) <= 0).all())  # else max - min = first - last, untested
    tau = res["tau"].numpy()
    np.testing.assert_allclose(tau, np.asarray(q) * res["h"].numpy() - 1.0, rtol=0, atol=1e-12)
    alpha = np.gradient(tau, np.asarray(q), axis=-1, edge_order=1)
    np.testing.assert_allclose(res["alpha"].numpy(), alpha, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["falpha"].numpy(), np.asarray(q) * alpha - tau, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["width"].numpy(), alpha.max(-1) - alpha.min(-1), rtol=0, atol=1e-12)


def test_repeated_q_values_raise_naming_q_vals():
    # A repeated q is a zero step in d tau / dq (alpha = inf or NaN): rejected as not strictly increasing.
    with pytest.raises(ValueError, match="q_vals: must be strictly increasing"):
        multifractal_spectrum(WHITE, [1.0, 1.0, 3.0])


@pytest.mark.parametrize("n, nperseg", [(600, 256), (8192, 2048), (20000, 4096)])
def test_spectral_beta_default_nperseg_is_as_documented(n, nperseg):
    # Documented default: min(T, max(256, 2 ** floor(log2(T / 4)))); the fit's bins show the resolution,
    # and beta equals the fit on Welch with that nperseg passed explicitly.
    x = torch.randn(n, dtype=torch.float64, generator=gen(23))
    fit = spectral_beta(x, 1000.0, return_fit=True)
    df = float(fit.freqs[1] - fit.freqs[0])
    assert df == pytest.approx(1000.0 / nperseg, rel=1e-12)
    assert float(fit.beta) == float(spectral_beta(x, 1000.0, nperseg=nperseg))


def test_dfa_order_0_matches_nolds_on_a_series_with_a_mean():
    # Order 0 (DFA0) had no reference check. It removes only each segment's mean, so the profile's
    # global mean removal matters (for order >= 1 the detrending absorbs it): a series with a
    # non-zero mean shows whether it is done.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nolds imports the deprecated pkg_resources
        nolds = pytest.importorskip("nolds", reason="nolds is the DFA reference (dev extra)")
    x = np.random.default_rng(5).standard_normal(3000) + 3.0
    w = [10, 16, 25, 40, 64, 100, 160, 250]
    ref = nolds.dfa(x, nvals=w, overlap=False, order=0, fit_exp="poly")
    assert dfa_alpha(x, w, order=0, both_directions=False) == pytest.approx(ref, rel=1e-9)


def test_a_window_as_long_as_the_series_is_one_window():
    # window_size <= T is allowed (documented): W = T is the plain metric on the whole series.
    x = torch.randn(2, 3, 300, dtype=torch.float64, generator=gen(24))
    out = windowed(katz_fd, x, 300, 7)
    assert out.shape == (2, 3, 1)
    torch.testing.assert_close(out[..., 0], katz_fd(x), rtol=0, atol=0)


def _numpy_hurst_rs(x: np.ndarray, windows: list[int]) -> float:
    """nolds' corrected, unbiased R/S (least-squares fit), skipping segments whose samples are all equal."""
    log_rs = []
    for w in windows:
        ratios = []
        for seg in x[: (x.size // w) * w].reshape(-1, w):
            if np.ptp(seg) == 0:
                continue
            dev = np.cumsum(seg - seg.mean())
            ratios.append(np.ptp(dev) / np.std(seg, ddof=1))
        log_rs.append(np.log(np.mean(ratios)) - np.log(_expected_rs(w)))
    return float(np.polyfit(np.log(windows), log_rs, 1)[0] + 0.5)


def test_hurst_rs_skips_constant_stretches_at_values_binary_cannot_hold():
    # Constant stretches at 0.3, -0.7, 1.1 (not exact in binary): their segments are skipped exactly.
    # nolds is no reference here: its per-segment mean of 0.3s is inexact for some lengths, so it
    # keeps a rounding-noise R/S of O(1) for such segments (H = 0.849 here instead of 0.629).
    x = np.random.default_rng(7).standard_normal(4096) * 3 + 5
    for (a, b), v in zip([(1000, 1300), (2500, 2900), (3500, 3700)], (0.3, -0.7, 1.1)):
        x[a:b] = v
    w = [8, 16, 32, 64, 128]
    want = _numpy_hurst_rs(x, w)
    assert want == pytest.approx(0.629, abs=1e-3)
    assert float(hurst_rs(x, w)) == pytest.approx(want, rel=1e-11)
    assert float(hurst_rs(x.astype(np.float32), w)) == pytest.approx(_numpy_hurst_rs(x.astype(np.float32).astype(np.float64), w), rel=1e-6)


def test_dfa_return_fit_is_the_least_squares_line_of_log_f_on_log_s():
    # alpha and the intercept are np.polyfit's line through (log s, log F(s)), F being F_2 of the kernel.
    x = torch.randn(2, 3000, dtype=torch.float64, generator=gen(25))
    w = [16, 25, 40, 64, 100, 160, 250]
    alpha, fit = dfa_alpha(x, w, return_fit=True)
    fq, _ = fluctuation_functions(x, [2.0], w)
    torch.testing.assert_close(fit["fluct"], fq[..., 0, :], rtol=1e-12, atol=0)
    assert fit["windows"].tolist() == w
    for i in range(2):
        slope, intercept = np.polyfit(np.log(w), np.log(fq[i, 0].numpy()), 1)
        assert float(alpha[i]) == pytest.approx(slope, rel=1e-10)
        assert float(fit["intercept"][i]) == pytest.approx(intercept, rel=1e-10)


def test_spectral_beta_band_edges_on_bins_are_included():
    # freq_band is closed: bins exactly at low and high are fitted (the same bins fit_aperiodic takes).
    x = torch.randn(2, 8000, dtype=torch.float64, generator=gen(26))
    for band in ((2.0, 80.0), (5.0, 40.0)):
        fit = spectral_beta(x, 1000.0, band, return_fit=True, nperseg=1000)  # 1 Hz bins
        assert (float(fit.freqs[0]), float(fit.freqs[-1])) == band
        assert fit.freqs.numel() == int(band[1] - band[0]) + 1
        freqs, psd = welch_psd(x, 1000.0, nperseg=1000)
        torch.testing.assert_close(fit.beta, fit_aperiodic(freqs, psd, band), rtol=1e-10, atol=1e-12)


def test_peak_cores_never_leave_fewer_than_a_quarter_of_the_band():
    # Documented rule: where the peak cores would leave fewer than a quarter of the band's bins, every
    # bin is kept (only the fitted Gaussians are subtracted). Short noisy spectra with a low mask
    # level make the cores wide; 20 in-band bins, so at least 5 bins are always fitted, and the
    # series whose cores were too wide show the fallback as a full mask with peaks detected.
    peaks = [(10.0, 1.5, 5.0), (22.0, 2.5, 2.0), (45.0, 3.0, 1.5)]
    x = one_over_f_noise(512, 1.0, 1000.0, peaks, n_series=256, generator=gen(1))
    fit = spectral_beta(x, 1000.0, (2.0, 80.0), return_fit=True, nperseg=256, max_n_peaks=8, peak_mask_level=0.1)
    n_bins = fit.freqs.numel()
    assert n_bins == 20
    kept = fit.mask.sum(-1)
    assert int(kept.min()) >= 5
    assert int(((kept == n_bins) & (fit.n_peaks > 0)).sum()) >= 3
    assert bool(torch.isfinite(fit.beta).all())


PEAK_SETS = (
    [(10.0, 1.5, 5.0)],
    [(10.0, 1.5, 5.0), (22.0, 2.5, 2.0)],
    [(10.0, 1.5, 5.0), (22.0, 2.5, 2.0), (45.0, 3.0, 1.5)],
)


@pytest.mark.parametrize("peaks", [None, *PEAK_SETS])
def test_noise_free_spectra_meet_the_documented_0_002(peaks):
    # spectral_beta's docstring: "On noise-free spectra the error is <= 0.002 with up to three peaks"
    # (measured: 0.000 / 0.0016 / 0.0001 / 0.0006). Each refit inside the peak search must subtract
    # the Gaussians found so far, else the next search starts from a tilted line (0.003-0.005).
    f = torch.arange(1, 2001, dtype=torch.float64) * 0.25
    betas = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    psd = torch.stack([one_over_f_psd(f, float(b), peaks) for b in betas])
    assert float((fit_aperiodic(f, psd, (2.0, 80.0)) - betas).abs().max()) <= 0.002


def test_robust_start_line_survives_broad_peaks_over_half_the_band():
    # Two broad peaks cover about half of the 2-80 Hz bins: the start line is refitted on the 30 %
    # of bins lowest below it, so it follows the 1/f floor (error 0.04); refits on the lowest 70 %
    # take peak bins in and tilt it (0.10). Noise-free PSD: the numbers are deterministic.
    f = torch.arange(1, 2001, dtype=torch.float64) * 0.25
    betas = torch.tensor([0.5, 2.0], dtype=torch.float64)
    psd = torch.stack([one_over_f_psd(f, float(b), [(40.0, 6.0, 5.0), (65.0, 5.0, 4.0)]) for b in betas])
    assert float((fit_aperiodic(f, psd, (2.0, 80.0)) - betas).abs().max()) <= 0.06


def test_fit_aperiodic_keeps_band_edge_bins_of_a_float32_welch_grid():
    # float32 Welch frequencies carry rounding (fs=300, nperseg=500: 60 Hz is 60.000004, 4.8 Hz is
    # 4.8000002): the bins at both band edges are still in the band, as on the float64 grid.
    x = np.random.default_rng(27).standard_normal((2, 6000))
    f64, p64 = welch_psd(x, 300.0, nperseg=500)
    f32, p32 = welch_psd(x.astype(np.float32), 300.0, nperseg=500)
    fit64 = fit_aperiodic(f64, p64, (4.8, 60.0), return_fit=True)
    fit32 = fit_aperiodic(f32, p32, (4.8, 60.0), return_fit=True)
    assert fit64.freqs.size == fit32.freqs.size == 93  # bins 8..100 of 0.6 Hz
    np.testing.assert_allclose(fit32.freqs, fit64.freqs, rtol=1e-6)
    np.testing.assert_allclose(fit32.beta, fit64.beta, atol=1e-3)


def test_cpu_fit_blocks_give_exactly_the_one_pass_numbers_in_float32(monkeypatch):
    # The peak search runs in row blocks on CPU; a block of one series makes float32 conv1d round
    # differently (1 ulp), so blocks hold at least two series and the numbers equal one pass.
    x = one_over_f_noise(4096, 1.0, 1000.0, PEAK_SETS[2], n_series=16, generator=gen(2)).float()
    whole = spectral_beta(x, 1000.0, return_fit=True)
    monkeypatch.setattr(spectral_fit, "FIT_BLOCK_BYTES", 8 * whole.freqs.numel())  # one series' worth
    blocked = spectral_beta(x, 1000.0, return_fit=True)
    for name in ("beta", "offset", "r2", "mask", "peak_freq", "peak_power", "peak_width", "peak_valid"):
        assert torch.equal(getattr(blocked, name), getattr(whole, name)), name


def test_r2_is_measured_on_the_bins_the_fit_used():
    # r2 is the coefficient of determination on the bins of fit.mask (peak cores left out). On a
    # noise-free 1/f spectrum with one tall peak the line fits those bins almost exactly
    # (r2 >= 0.99978); counting the masked core's residuals too drops it to 0.9984.
    f = torch.arange(1, 2001, dtype=torch.float64) * 0.25
    psd = torch.stack([one_over_f_psd(f, b, [(10.0, 1.5, 20.0)]) for b in (0.5, 2.0)])
    fit = fit_aperiodic(f, psd, (2.0, 80.0), return_fit=True)
    assert bool((fit.mask.sum(-1) < fit.freqs.numel()).all())  # the peak core is masked
    assert float(fit.r2.min()) > 0.9995 and float(fit.r2.max()) <= 1.0
