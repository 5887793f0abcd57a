"""Higuchi FD, Katz FD and R/S Hurst: known values, ground truth, batching, dtypes, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fractals import stimuli as S
from fractals.temporal import higuchi_fd, hurst_rs, katz_fd
from interpreter import importable, run_interpreted


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SINE = np.sin(2 * np.pi * 1 * np.arange(3000) / 100)
RAMP = np.arange(1000)


def test_pinned_values_from_antropy_docs():
    # antropy's documented examples (same definitions, so the same numbers).
    assert higuchi_fd(SINE, kmax=10) == pytest.approx(1.0074, abs=5e-5)
    assert higuchi_fd(RAMP, kmax=10) == pytest.approx(1.0, abs=1e-9)
    assert katz_fd(SINE) == pytest.approx(2.4871, abs=5e-5)
    assert katz_fd(RAMP) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("H", [0.3, 0.5, 0.7])
def test_higuchi_of_fbm_is_2_minus_H(H):
    x = S.fbm_series(8192, H=H, n_series=16, generator=gen(1))
    assert float(higuchi_fd(x).mean()) == pytest.approx(2 - H, abs=0.03)


def test_higuchi_white_noise_is_2():
    x = torch.randn(16, 4096, dtype=torch.float64, generator=gen(2))
    assert float(higuchi_fd(x, kmax=10).mean()) == pytest.approx(2.0, abs=0.01)


def test_katz_decreases_with_H():
    fds = [float(katz_fd(S.fgn(8192, h, n_series=16, generator=gen(3))).mean()) for h in (0.3, 0.6, 0.9)]
    assert fds[0] > fds[1] > fds[2]


def test_hurst_rs_tracks_H():
    hs = (0.3, 0.5, 0.7, 0.9)
    x = torch.stack([S.fgn(8192, h, n_series=8, generator=gen(4 + i)) for i, h in enumerate(hs)])
    est = hurst_rs(x).mean(-1)
    # R/S is compressed towards 0.5: measured bias +0.04 (H=0.3) .. -0.09 (H=0.9), see the docstring.
    for h, e in zip(hs[:3], est[:3].tolist()):
        assert e == pytest.approx(h, abs=0.06)
    assert float(est[3]) == pytest.approx(0.9 - 0.09, abs=0.05)
    assert bool((est[1:] > est[:-1]).all())


def test_any_leading_shape_matches_per_series_and_kinds():
    x = S.fgn(1024, 0.6, batch_shape=(2, 3), generator=gen(5))
    for fn in (higuchi_fd, katz_fd, hurst_rs):
        out = fn(x)
        assert out.shape == (2, 3) and out.dtype == torch.float64
        torch.testing.assert_close(out[1, 2], fn(x[1, 2]))
        np_out = fn(x.numpy())
        assert isinstance(np_out, np.ndarray)
        np.testing.assert_allclose(np_out, out.numpy(), rtol=1e-12)
        out32 = fn(x.float())
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), out, atol=1e-4, rtol=0)
        # Non-contiguous views work (antropy's Higuchi rejects them).
        torch.testing.assert_close(fn(x.transpose(0, 1))[2, 1], out[1, 2])


def test_integer_input_is_promoted():
    assert isinstance(katz_fd([0, 3, 1, 4, 1, 5, 9, 2, 6]), np.ndarray)


def test_hurst_rs_options():
    x = S.fgn(4096, 0.5, n_series=8, generator=gen(6))
    w = [16, 32, 64, 128, 256, 512]
    plain = hurst_rs(x, w, corrected=False)
    corrected = hurst_rs(x, w)
    # Plain R/S overestimates H of white noise at small n; the Anis-Lloyd-Peters correction fixes it.
    assert float(plain.mean()) > float(corrected.mean()) + 0.02
    assert float(corrected.mean()) == pytest.approx(0.5, abs=0.04)
    assert hurst_rs(x, max_window=256).shape == (8,)


PERIOD_2 = np.tile([0.0, 1.0], 50)
GOOD = np.random.default_rng(0).standard_normal(256)


def test_hurst_rs_explicit_windows_need_no_default_length():
    # min_window only shapes the default windows; explicit ones were refused below T = 32.
    # Pinned to nolds.hurst_rs(GOOD[:20], nvals=[4, 5, 10], fit="poly", corrected=...).
    assert hurst_rs(GOOD[:20], windows=[4, 5, 10]) == pytest.approx(0.568916546742067, abs=1e-12)
    assert hurst_rs(GOOD[:20], [4, 5, 10], corrected=False) == pytest.approx(0.8117047734764044, abs=1e-12)


def test_windows_as_numpy_float_scalars():
    # A list of np.float32 integers (e.g. read from a config array) is as good as a float tensor.
    want = hurst_rs(GOOD, [16, 32, 64])
    assert hurst_rs(GOOD, [np.float32(16), np.float32(32), np.float32(64)]) == pytest.approx(want, abs=1e-15)
    assert hurst_rs(GOOD, torch.tensor([16.0, 32.0, 64.0])) == pytest.approx(want, abs=1e-15)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: higuchi_fd(np.float64(3.0)), "0-dim"),
        (lambda: higuchi_fd(np.zeros((0, 10))), "empty"),
        (lambda: higuchi_fd(GOOD, kmax=1), "kmax: needs an integer >= 2"),
        (lambda: higuchi_fd(GOOD, kmax=2.5), "kmax: needs an integer >= 2"),
        (lambda: higuchi_fd(GOOD[:15], kmax=8), "needs at least 16"),
        (lambda: higuchi_fd(np.where(np.arange(256) == 7, np.nan, GOOD)), "NaN or inf"),
        (lambda: higuchi_fd(np.where(np.arange(256) == 7, np.inf, GOOD)), "NaN or inf"),
        (lambda: higuchi_fd(np.ones((3, 256))), "constant"),
        (lambda: higuchi_fd(PERIOD_2, kmax=4), "curve length is zero at lag k=2"),
        (lambda: katz_fd(GOOD[:2]), "needs at least 3"),
        (lambda: katz_fd(np.array([0.0, 1.0, 0.0, 1.0])), "never move farther"),
        (lambda: katz_fd(np.array(["a", "b", "c"])), "numeric"),
        (lambda: hurst_rs(GOOD, min_window=2), "min_window: needs an integer >= 4"),
        (lambda: hurst_rs(GOOD[:20]), "needs at least 32"),
        (lambda: hurst_rs(torch.tensor(2.0)), "0-dim"),
        (lambda: hurst_rs(GOOD[:100]), "too short for default R/S windows"),
        (lambda: hurst_rs(GOOD, windows=[16]), "at least 2 window sizes"),
        (lambda: hurst_rs(GOOD, windows=[16, 512]), r"integer in \[4, T=256\]"),
        (lambda: hurst_rs(GOOD, max_window=1000), r"max_window: must be <= T=256 .*got 1000"),
        (lambda: hurst_rs(np.repeat(GOOD[:32], 8) * 0 + np.repeat([0.0, 1.0], 128), windows=[8, 16]),
         "every segment of length 8 is constant"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_cpu_numbers():
    x = S.fgn(4096, 0.7, n_series=4, generator=gen(7))
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        xc = x.to(dtype)
        for fn in (higuchi_fd, katz_fd, hurst_rs):
            torch.testing.assert_close(fn(xc.cuda()).cpu(), fn(xc), atol=tol, rtol=0)


@pytest.mark.skipif(not importable("triton"), reason="needs triton (make setup installs it)")
def test_triton_rs_kernel_equals_the_torch_path_in_the_interpreter():
    # On CUDA, R/S takes fractals._rs_triton (one read of each series per window). Triton's CPU
    # interpreter runs that kernel here against the torch path: windows that leave remainders or are
    # not powers of two, float32 and float64, ddof 0 and 1, skipped constant segments, and the
    # all-constant-window error.
    report = run_interpreted("triton_interpreter_rs.py")
    cases = {k: v for k, v in report.items() if k.startswith("T ")}
    assert len(cases) == 3
    for name, case in cases.items():
        assert case["max_diff"] <= 1e-12 * max(1.0, case["spread"]), name
        assert case["spread"] > 0.1 and case["dtype_kept"], name
    assert report["errors"]["triton"] == report["errors"]["torch"]
    assert "every segment of length 16 is constant" in report["errors"]["triton"]
    assert report["available"] == {"cpu": False, "too_long": False}


def test_a_failing_triton_rs_kernel_falls_back_to_the_torch_path(monkeypatch, caplog):
    from fractals import _rs_triton

    def broken(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler")

    x = S.fgn(2048, 0.7, n_series=2, generator=gen(9))
    want = hurst_rs(x)
    monkeypatch.setattr(_rs_triton, "available", lambda device, windows: _rs_triton.ENABLED)
    monkeypatch.setattr(_rs_triton, "log_rs", broken)
    monkeypatch.setattr(_rs_triton, "ENABLED", True)
    with caplog.at_level("WARNING", logger="fractals"):
        torch.testing.assert_close(hurst_rs(x), want)
    assert not _rs_triton.ENABLED and "Failed to find C compiler" in caplog.text
