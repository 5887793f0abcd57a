"""fractals.probes: scale ablation, attention-FD coupling, latent and FC-graph probes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fractals.probes import (
    ablation_mask,
    attention_fd_coupling,
    causal_scale_ablation,
    fc_fd_probe,
    latent_fd_probe,
)



FS, N = 1000.0, 1000  # 1 Hz FFT bins


def _tone(f_hz, amp=1.0):
    t = torch.arange(N, dtype=torch.float64) / FS
    return amp * torch.sin(2 * math.pi * f_hz * t)


def _power_at(x, f_hz):
    spec = torch.fft.rfft(x, dim=-1)
    return float(spec[..., int(f_hz)].abs().square().sum())


def test_ablation_mask_bins_are_the_documented_ones():
    high = ablation_mask(N, FS, "high_beta_only", 0.15, (2.0, 80.0))
    low = ablation_mask(N, FS, "low_beta_only", 0.15, (2.0, 80.0))
    # 79 in-band bins (2..80 Hz); round(0.15 * 79) = 12 removed at each end.
    assert torch.nonzero(high).flatten().tolist() == list(range(69, 81))
    assert torch.nonzero(low).flatten().tolist() == list(range(2, 14))


@pytest.mark.parametrize("mode, removed, kept", [("high_beta_only", 75.0, 10.0), ("low_beta_only", 10.0, 75.0)])
def test_ablation_removes_target_band_and_keeps_the_rest(mode, removed, kept):
    x = _tone(removed) + _tone(kept, 0.7) + _tone(120.0, 0.5) + 0.3  # 120 Hz and DC lie outside the band
    y = causal_scale_ablation(x, mode=mode, ratio=0.15, fs=FS, band=(2.0, 80.0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert _power_at(y, removed) < 1e-20 * _power_at(x, removed)
    for f in (kept, 120.0, 0.0):
        assert _power_at(y, f) == pytest.approx(_power_at(x, f), rel=1e-9)
    assert torch.allclose(x - y, _tone(removed), atol=1e-10)  # exactly the removed component


def test_ablation_along_time_axis_one_and_numpy_roundtrip():
    x = torch.randn(2, N, 3, dtype=torch.float64)
    y = causal_scale_ablation(x, fs=FS, band=(2.0, 80.0), dim=1)
    ref = causal_scale_ablation(x.transpose(1, 2), fs=FS, band=(2.0, 80.0)).transpose(1, 2)
    assert torch.allclose(y, ref)
    y_np = causal_scale_ablation(x.numpy(), fs=FS, band=(2.0, 80.0), dim=1)
    assert isinstance(y_np, np.ndarray) and np.allclose(y_np, y.numpy())


def test_phase_ablation_keeps_power_spectrum():
    x = torch.randn(4, N, dtype=torch.float64)
    y = causal_scale_ablation(x, fs=FS, replace="phase", generator=torch.Generator().manual_seed(0))
    px, py = torch.fft.rfft(x).abs(), torch.fft.rfft(y).abs()
    assert torch.allclose(px, py, atol=1e-9)
    assert not torch.allclose(x, y)


def test_phase_ablation_keeps_the_nyquist_power():
    # A band reaching fs/2 selects the Nyquist bin, which a real signal holds as a real number: a
    # random phase there was thrown away by irfft and scaled its power by cos^2(phase).
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert bool(ablation_mask(64, 64.0, "high_beta_only", 0.3, (1.0, 32.0))[-1])
    y = causal_scale_ablation(x, "high_beta_only", 0.3, 64.0, (1.0, 32.0), replace="phase",
                              generator=torch.Generator().manual_seed(1))
    assert torch.allclose(torch.fft.rfft(y).abs(), torch.fft.rfft(x).abs(), atol=1e-9)


def test_ablation_keeps_half_precision_dtypes():
    # The docstring promises the input dtype back; float16/bfloat16 came back as float32.
    x = torch.randn(2, N, generator=torch.Generator().manual_seed(4))
    for dtype in (torch.float16, torch.bfloat16):
        y = causal_scale_ablation(x.to(dtype), fs=FS)
        assert y.dtype == dtype
        assert torch.equal(y, causal_scale_ablation(x.to(dtype).float(), fs=FS).to(dtype))
    assert causal_scale_ablation(x.numpy().astype(np.float16), fs=FS).dtype == np.float16


def test_ablation_rejects_bad_arguments():
    x = torch.randn(N)
    with pytest.raises(ValueError, match="mode"):
        causal_scale_ablation(x, mode="middle")
    with pytest.raises(ValueError, match="ratio"):
        causal_scale_ablation(x, ratio=1.5)
    with pytest.raises(ValueError, match="band"):
        causal_scale_ablation(torch.randn(16), fs=FS, band=(2.0, 40.0))


def _planted_attention(seed=0, B=16, H=3, Q=16, K=32):
    g = torch.Generator().manual_seed(seed)
    fd = 1.5 + 0.2 * torch.randn(B, K, generator=g)
    logits = torch.randn(B, H, Q, K, generator=g)
    z = (fd - fd.mean()) / fd.std()
    logits[:, 1] += 3.0 * z[:, None, :]  # head 1 attends to rough (high-FD) keys
    logits[:, 2] -= 3.0 * z[:, None, :]  # head 2 avoids them
    return logits.softmax(-1), fd


def test_coupling_recovers_planted_correlation():
    attn, fd = _planted_attention()
    c = attention_fd_coupling(attn, fd, method="spearman")
    assert c.shape == (1, 3)
    assert float(c[0, 1]) > 0.8 and float(c[0, 2]) < -0.8
    assert abs(float(c[0, 0])) < 0.3
    pearson = attention_fd_coupling(attn, fd)
    assert float(pearson[0, 1]) > 0.4 and float(pearson[0, 2]) < -0.4  # damped by softmax's exponential
    layers = attention_fd_coupling({"enc": attn, "dec": attn.flip(1)}, fd, method="spearman")
    assert layers.shape == (2, 3) and torch.allclose(layers[1], c[0].flip(0))


def test_coupling_constant_head_is_nan_and_shape_checked():
    attn, fd = _planted_attention()
    attn[:, 0] = 1.0 / attn.shape[-1]
    assert math.isnan(float(attention_fd_coupling(attn, fd)[0, 0]))
    with pytest.raises(ValueError, match="series_fd"):
        attention_fd_coupling(attn, fd[:, :5])


def test_latent_fd_probe_separates_rough_and_smooth_layers():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(2, 2048, 6, generator=g)
    walk = white.cumsum(1)
    white[:, :, 5] = 0.0  # one dead channel
    cfg = {"metrics": {"sample_rate_hz": 250.0, "temporal": {"exclude_peaks": False}}}
    out = latent_fd_probe({"enc": white, "ssm": walk}, cfg)
    assert float(out["enc/n_dead"]) == 1.0 and float(out["ssm/n_dead"]) == 0.0
    assert float(out["enc/higuchi_fd_mean"]) == pytest.approx(2.0, abs=0.05)
    assert float(out["ssm/higuchi_fd_mean"]) == pytest.approx(1.5, abs=0.05)
    assert float(out["ssm/spectral_beta_mean"]) > float(out["enc/spectral_beta_mean"]) + 1.5
    assert float(out["ssm/hurst_mean"]) > 0.9  # DFA alpha of a random walk is 1.5: H=alpha under the fGn map
    assert {"enc/mf_width_mean", "enc/mf_width_std"} <= set(out)
    plain = latent_fd_probe(white[:, :, :5])
    assert "higuchi_fd_mean" in plain and all(v.ndim == 0 for v in plain.values())


def test_fc_fd_probe_graphs_and_labels():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 2000, 16, generator=g, dtype=torch.float64)
    ring = s + s.roll(-1, dims=2)  # each channel shares a source with its neighbours: a ring graph
    out = fc_fd_probe(torch.cat([ring, s]), thresh=0.3, eps_values=[1, 2, 3, 4], labels=[1, 1, 1, 1, 0, 0, 0, 0])
    assert out["graph_fd"].shape == (8,) and out["density"].shape == (8,)
    assert torch.allclose(out["density"][:4].float(), torch.full((4,), 2 / 15))
    assert float(out["density"][4:].max()) == 0.0
    assert bool(torch.isnan(out["graph_fd"][4:]).all())  # edgeless graphs have no box dimension
    assert set(out["by_label"]) == {0, 1}
    assert out["by_label"][1] == pytest.approx(1.0, abs=0.15)  # a ring is one-dimensional


def test_fc_fd_probe_one_complete_graph_does_not_sink_the_batch():
    # A sample whose channels are all linked (a complete graph has no box dimension) raised for
    # the whole batch; like an edgeless graph it should be NaN for that sample only.
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 2000, 12, generator=g, dtype=torch.float64)
    ring = s + s.roll(-1, dims=2)
    common = s[:1, :, :1] * 5 + s[:1] * 0.1  # every channel dominated by one source
    out = fc_fd_probe(torch.cat([common, ring]), thresh=0.3, eps_values=[1, 2, 3, 4], labels=[0, 1, 1, 1])
    assert float(out["density"][0]) == 1.0
    assert math.isnan(float(out["graph_fd"][0]))
    assert bool(torch.isfinite(out["graph_fd"][1:]).all())
    assert out["by_label"][1] == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="eps_values"):
        fc_fd_probe(torch.cat([common, ring]), thresh=0.3, eps_values=[3, 2])
