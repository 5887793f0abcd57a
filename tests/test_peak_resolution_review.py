"""Two oscillatory peaks near each other: spectral_beta reports them apart once they are ~4 sd apart, as one wider
peak when closer (specparam's limit too), and the aperiodic slope is right either way (both stay masked).
Numbers: benchmarks/estimator_accuracy.py --only peaks (docs/benchmarks.md)."""
from __future__ import annotations

import pytest
import torch

from fractals.spectral import spectral_beta
from fractals.stimuli import one_over_f_noise

FS = 1000.0


def _fit(separation_hz: float, seed: int = 0):
    peaks = [(20.0 - separation_hz / 2, 1.0, 3.0), (20.0 + separation_hz / 2, 1.0, 3.0)]
    x = one_over_f_noise(8192, 1.0, FS, peaks, n_series=32, generator=torch.Generator().manual_seed(seed))
    fit = spectral_beta(x, FS, (2.0, 80.0), return_fit=True)
    near = ((fit.peak_freq - 20.0).abs() < separation_hz / 2 + 2.0) & fit.peak_valid
    return fit, near.sum(-1)


def test_peaks_6_sd_apart_are_found_as_two_at_their_own_frequencies():
    fit, near = _fit(6.0)
    assert float((near == 2).double().mean()) >= 0.7
    both = near == 2
    found = torch.where(fit.peak_valid[both], fit.peak_freq[both], torch.nan)
    lo = torch.nanquantile(torch.where((found - 17).abs() < 2, found, torch.nan), 0.5)
    hi = torch.nanquantile(torch.where((found - 23).abs() < 2, found, torch.nan), 0.5)
    assert float(lo) == pytest.approx(17.0, abs=0.5) and float(hi) == pytest.approx(23.0, abs=0.5)


def test_peaks_2_sd_apart_merge_into_one_wider_peak_and_beta_stays_right():
    fit, near = _fit(2.0)
    assert float((near == 1).double().mean()) >= 0.8  # one peak, not two and not none
    one = near == 1
    width = (fit.peak_width * (((fit.peak_freq - 20.0).abs() < 3.0) & fit.peak_valid)).amax(-1)[one]
    assert float(width.median()) > 2.355 * 1.0 * 1.2  # wider than either bump's own FWHM
    for f in (fit, _fit(6.0)[0]):
        assert float((f.beta - 1.0).abs().mean()) < 0.08
