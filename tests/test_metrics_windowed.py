"""Sliding-window metrics: shapes, equality with per-window calls, zero-copy windows, bad sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fractals import stimuli as S
from fractals.dfa import dfa_alpha
from fractals.temporal import higuchi_fd, hurst_rs, katz_fd
from fractals.windowed import (
    windowed,
    windowed_dfa_alpha,
    windowed_higuchi_fd,
    windowed_hurst_rs,
    windowed_katz_fd,
    windowed_spectral_beta,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


X = S.fgn(2048, 0.7, batch_shape=(2, 3), generator=gen(1))


@pytest.mark.parametrize(
    "wrapped, plain",
    [
        (windowed_higuchi_fd, higuchi_fd),
        (windowed_katz_fd, katz_fd),
        (windowed_hurst_rs, hurst_rs),
        (windowed_dfa_alpha, dfa_alpha),
    ],
)
def test_each_window_equals_the_plain_metric(wrapped, plain):
    out = wrapped(X, 512, 192)
    n_windows = (2048 - 512) // 192 + 1
    assert out.shape == (2, 3, n_windows)
    for i in (0, 3, n_windows - 1):
        torch.testing.assert_close(out[..., i], plain(X[..., i * 192 : i * 192 + 512]))


def test_cpu_blocks_give_the_same_numbers(monkeypatch):
    import fractals.windowed as fw

    whole = windowed_dfa_alpha(X, 512, 128)
    monkeypatch.setattr(fw, "FRAME_BLOCK_BYTES", 1)  # one series per block
    torch.testing.assert_close(windowed_dfa_alpha(X, 512, 128), whole)


def test_default_sizes_are_the_design_config():
    out = windowed_higuchi_fd(X)  # 1024 / 256
    assert out.shape == (2, 3, (2048 - 1024) // 256 + 1)


def test_windows_are_views_not_copies():
    seen = {}

    def probe(frames):
        seen["ptr"], seen["strides"] = frames.data_ptr(), frames.stride()
        return frames.mean(-1)

    x = torch.randn(4, 1000, dtype=torch.float64, generator=gen(2))
    out = windowed(probe, x, 100, 50)
    assert out.shape == (4, 19)
    assert seen["ptr"] == x.data_ptr() and seen["strides"] == (1000, 50, 1)


def test_numpy_in_numpy_out_names_and_kwargs():
    out = windowed("higuchi_fd", X.numpy(), 256, 256, kmax=5)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 8)
    np.testing.assert_allclose(out[..., 0], higuchi_fd(X.numpy()[..., :256], kmax=5))
    with pytest.raises(ValueError, match="metric: unknown name 'fractal'"):
        windowed("fractal", X, 256, 256)


def test_windowed_dfa_is_differentiable():
    x = X[0].clone().float().requires_grad_()
    windowed_dfa_alpha(x, 1024, 512).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_windowed_spectral_beta_recovers_beta():
    x = S.one_over_f_noise(8192, 1.5, fs=1000.0, n_series=4, generator=gen(3))
    beta = windowed_spectral_beta(x, 2048, 1024, fs=1000.0, freq_band=(2.0, 80.0))
    assert beta.shape == (4, 7)
    assert float(beta.mean()) == pytest.approx(1.5, abs=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(window_size=0, hop_size=10), "window_size: needs an integer > 0"),
        (dict(window_size=-5, hop_size=10), "window_size: needs an integer > 0"),
        (dict(window_size=64.0, hop_size=10), "window_size: needs an integer > 0"),
        (dict(window_size=True, hop_size=10), "window_size: needs an integer > 0"),
        (dict(window_size=64, hop_size=0), "hop_size: needs an integer > 0"),
        (dict(window_size=64, hop_size=None), "hop_size: needs an integer > 0"),
        (dict(window_size=4096, hop_size=10), "window_size: 4096 exceeds the series length T=2048"),
    ],
)
def test_bad_sizes_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        windowed(katz_fd, X, **kwargs)


def test_bad_x_and_metric_raise():
    with pytest.raises(ValueError, match="0-dim"):
        windowed(katz_fd, np.float64(1.0), 1, 1)
    with pytest.raises(ValueError, match="metric: needs a callable"):
        windowed(42, X, 64, 64)
    with pytest.raises(ValueError, match="NaN or inf"):
        windowed_katz_fd(torch.full((100,), float("nan")), 50, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_cpu_numbers():
    for fn in (windowed_higuchi_fd, windowed_katz_fd, windowed_hurst_rs, windowed_dfa_alpha):
        torch.testing.assert_close(fn(X.cuda(), 512, 256).cpu(), fn(X, 512, 256), atol=1e-10, rtol=0)
