"""latent_fd_probe: a unit flat for some samples only is live, and its varying series are measured."""
import torch

from fractals import metrics as fm
from fractals.probes import latent_fd_probe


def _latents():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 512, 3, generator=gen).cumsum(1)  # (B, T, C) random walks
    x[0, :, 0] = 0.0  # a ReLU-like unit, silent for the first sample only
    return x


def test_a_unit_flat_for_one_sample_only_is_not_counted_dead():
    out = latent_fd_probe(_latents(), {})
    assert float(out["n_dead"]) == 0.0


def test_the_varying_series_of_a_partly_flat_unit_are_measured():
    x = _latents()
    out = latent_fd_probe(x, {})
    series = x.transpose(1, 2).reshape(12, 512)[1:]  # every (sample, channel) series but the flat one
    expected = fm.higuchi_fd(series, kmax=8)
    torch.testing.assert_close(out["higuchi_fd_mean"], expected.mean().float())
    torch.testing.assert_close(out["higuchi_fd_std"], expected.std(unbiased=False).float())


def test_a_unit_flat_for_every_sample_is_dead_and_left_out():
    x = _latents()
    x[:, :, 2] = 1.5
    out = latent_fd_probe(x, {})
    assert float(out["n_dead"]) == 1.0
    live = torch.cat([x[1:, :, 0].reshape(3, 512), x[:, :, 1]], 0)
    torch.testing.assert_close(out["higuchi_fd_mean"], fm.higuchi_fd(live, kmax=8).mean().float())
