"""Ground-truth generators: they hit their target exponents, are seeded, and shape correctly."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fractals import stimuli as S
from fractals.dfa import dfa_alpha
from fractals.temporal import higuchi_fd


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fgn_autocov(k: np.ndarray, H: float) -> np.ndarray:
    return 0.5 * (np.abs(k + 1) ** (2 * H) - 2 * np.abs(k) ** (2 * H) + np.abs(k - 1) ** (2 * H))


@pytest.mark.parametrize("H", [0.2, 0.5, 0.8])
def test_fgn_autocovariance_is_exact(H):
    # Davies-Harte is exact: the sample autocovariance over many series matches gamma(k).
    x = S.fgn(256, H, n_series=2000, generator=gen(1)).numpy()
    for k in (0, 1, 2, 5, 20):
        emp = np.mean(x[:, : 256 - k] * x[:, k:])
        assert emp == pytest.approx(fgn_autocov(np.array(k), H), abs=0.02)


@pytest.mark.parametrize("H", [0.3, 0.7, 0.9])
def test_fgn_dfa_hits_H(H):
    x = S.fgn(4096, H, n_series=16, generator=gen(2))
    assert float(dfa_alpha(x).mean()) == pytest.approx(H, abs=0.03)


def test_fbm_from_H_is_cumulative_fgn_and_higuchi_is_2_minus_H():
    x = S.fbm_series(4096, H=0.6, n_series=16, generator=gen(3))
    inc = S.fgn(4096, 0.6, n_series=16, generator=gen(3))
    torch.testing.assert_close(x, inc.cumsum(-1))
    assert float(higuchi_fd(x).mean()) == pytest.approx(2 - 0.6, abs=0.03)
    assert float(dfa_alpha(x).mean()) == pytest.approx(1.6, abs=0.05)  # alpha = H + 1 for fBm


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_one_over_f_noise_spectral_slope(beta):
    # Periodogram slope averaged over series recovers beta (the synthesis is exact per bin).
    n = 4096
    x = S.one_over_f_noise(n, beta, fs=1000.0, n_series=32, generator=gen(4))
    pxx = (torch.fft.rfft(x).abs() ** 2).mean(0)[1:-1]
    f = torch.fft.rfftfreq(n, 1 / 1000.0)[1:-1]
    slope = np.polyfit(np.log(f.numpy()), np.log(pxx.numpy()), 1)[0]
    assert -slope == pytest.approx(beta, abs=0.05)
    assert float(x.var()) == pytest.approx(1.0, rel=0.15 if beta < 2 else 0.5)


def test_one_over_f_noise_peak_adds_linear_power_and_keeps_aperiodic():
    n, fs = 8192, 1000.0
    x = S.one_over_f_noise(n, 1.0, fs, peaks=[(40.0, 2.0, 4.0)], n_series=64, generator=gen(5))
    f = torch.fft.rfftfreq(n, 1 / fs, dtype=torch.float64)
    pxx = (torch.fft.rfft(x).abs() ** 2).mean(0)
    target = S.one_over_f_psd(f, 1.0, [(40.0, 2.0, 4.0)])
    ratio = pxx[1:-1] / target[1:-1]
    # One global scale maps the target PSD to the realized one: the peak is 5x the 1/f level there.
    scale = float(ratio.median())
    at_peak = int(torch.argmin((f - 40.0).abs()))
    assert float(pxx[at_peak - 3 : at_peak + 4].mean() / scale) == pytest.approx(5.0 / 40.0, rel=0.2)
    far = (f > 100) & (f < 400)
    slope = np.polyfit(np.log(f[far].numpy()), np.log(pxx[far].numpy()), 1)[0]
    assert -slope == pytest.approx(1.0, abs=0.05)


def test_cascade_is_a_normalized_binomial_measure():
    p = 0.7
    mu = S.cascade_multifractal(depth=10, p=p, batch_shape=(2, 3), generator=gen(6))
    assert mu.shape == (2, 3, 1024)
    torch.testing.assert_close(mu.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    # Every cell mass is p^k (1-p)^(10-k): the partition function at the finest scale is exact.
    q = 2.0
    z = (mu**q).sum(-1)
    torch.testing.assert_close(z, torch.full((2, 3), (p**q + (1 - p) ** q) ** 10, dtype=torch.float64))
    det = S.cascade_multifractal(depth=3, p=p, shuffle=False)
    torch.testing.assert_close(det[:2], torch.tensor([p**3, p**2 * (1 - p)], dtype=torch.float64))
    assert S.cascade_multifractal(1000).shape == (1000,)


def test_seeding_reproducible_and_batch_shapes():
    for fn, kw in [
        (S.fgn, dict(n=300, H=0.7)),
        (S.fbm_series, dict(n=300, beta=1.5)),
        (S.one_over_f_noise, dict(n=300, beta=1.0, fs=100.0)),
        (S.midpoint_displacement, dict(n=300, H=0.4)),
    ]:
        a = fn(**kw, batch_shape=(2, 3), generator=gen(7))
        b = fn(**kw, batch_shape=(2, 3), generator=gen(7))
        c = fn(**kw, batch_shape=(2, 3), generator=gen(8))
        assert a.shape == (2, 3, 300) and a.dtype == torch.float64
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert fn(**kw, n_series=4, dtype=torch.float32).shape == (4, 300)
        assert fn(**kw, n_series=4, dtype=torch.float32).dtype == torch.float32
    assert S.one_over_f_texture((32, 48), 2.0, n_series=2, generator=gen(0)).shape == (2, 32, 48)
    assert S.diamond_square(40, 0.5, batch_shape=(2,), generator=gen(0)).shape == (2, 40, 40)


def test_numpy_scalar_arguments_are_accepted():
    # Sizes and exponents computed with NumPy (np.int64, np.float32) were rejected as not numbers.
    n, h, beta, fs = np.int64(64), np.float32(0.75), np.float32(1.0), np.float32(100.0)
    assert torch.equal(S.fgn(n, h, batch_shape=(np.int64(2),), generator=gen(3)),
                       S.fgn(64, 0.75, batch_shape=(2,), generator=gen(3)))
    assert torch.equal(S.one_over_f_noise(n, beta, fs, n_series=np.int64(2), generator=gen(3)),
                       S.one_over_f_noise(64, 1.0, 100.0, n_series=2, generator=gen(3)))
    assert S.cascade_multifractal(depth=np.int64(4), p=np.float32(0.75)).shape == (16,)
    assert S.midpoint_displacement(n, h, sigma=np.float32(2.0)).shape == (64,)
    assert S.one_over_f_texture(np.int64(8), beta).shape == (8, 8)


def test_midpoint_displacement_and_diamond_square_roughness_follows_H():
    rough = S.midpoint_displacement(4097, 0.3, n_series=16, generator=gen(9))
    smooth = S.midpoint_displacement(4097, 0.8, n_series=16, generator=gen(9))
    assert float(higuchi_fd(rough).mean()) == pytest.approx(1.7, abs=0.08)
    assert float(higuchi_fd(smooth).mean()) == pytest.approx(1.2, abs=0.08)
    # A rougher surface has rougher rows.
    ds_rough = S.diamond_square(129, 0.2, n_series=4, generator=gen(10))
    ds_smooth = S.diamond_square(129, 0.9, n_series=4, generator=gen(10))
    assert float(higuchi_fd(ds_rough).mean()) > float(higuchi_fd(ds_smooth).mean()) + 0.2


def test_texture_radial_spectrum_slope():
    img = S.one_over_f_texture(128, 2.0, n_series=8, generator=gen(11))
    p2 = (torch.fft.fft2(img).abs() ** 2).mean(0)
    ky = torch.fft.fftfreq(128)[:, None]
    kx = torch.fft.fftfreq(128)[None, :]
    k = torch.sqrt(ky**2 + kx**2)
    sel = (k > 0.02) & (k < 0.4)
    slope = np.polyfit(np.log(k[sel].numpy()), np.log(p2[sel].numpy()), 1)[0]
    assert -slope == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: S.fgn(1, 0.5), "n: needs an integer >= 2"),
        (lambda: S.fgn(100, 1.0), "H: needs a number strictly between 0 and 1"),
        (lambda: S.fgn(100, 0.5, batch_shape=(2,), n_series=2), "give one of them"),
        (lambda: S.fbm_series(100), "give exactly one of H"),
        (lambda: S.one_over_f_noise(100, 1.0, fs=-1.0), "fs: must be > 0"),
        (lambda: S.one_over_f_noise(100, 1.0, fs=100.0, peaks=[(60.0, 1.0, 1.0)]), r"peaks\[0\]: freq_hz=60"),
        (lambda: S.one_over_f_noise(100, 1.0, fs=100.0, peaks=[(10.0, 1.0)]), "triple"),
        (lambda: S.cascade_multifractal(depth=3, n=100), "exceeds the 2\\*\\*depth"),
        (lambda: S.cascade_multifractal(depth=5, p=1.0), "p: needs a number strictly"),
        (lambda: S.one_over_f_texture((8, 8, 8), 2.0), "needs \\(height, width\\)"),
        (lambda: S.fgn(100, 0.5, dtype=torch.int64), "dtype: needs a floating torch dtype"),
        (lambda: S.diamond_square(17, 0.5, sigma=0.0), "sigma: must be > 0"),
        (lambda: S.midpoint_displacement(17, 0.5, sigma=float("nan")), "sigma: needs a finite number"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_same_series_as_cpu():
    a = S.fgn(512, 0.7, n_series=3, generator=gen(12))
    b = S.fgn(512, 0.7, n_series=3, generator=gen(12), device="cuda")
    assert b.device.type == "cuda"
    torch.testing.assert_close(b.cpu(), a)
    c = S.one_over_f_noise(512, 1.0, n_series=3, generator=torch.Generator("cuda").manual_seed(1), device="cuda")
    assert c.device.type == "cuda" and math.isfinite(float(c.sum()))
