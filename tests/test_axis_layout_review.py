"""Axis layout at each hand-off of latents, recordings and series into a fractal measure, prior or probe.

NeuroFMx latents are ``(B, S, D)`` (time S, channels D); the temporal estimators take time last, the FC graph
``(..., T, C)``, the fingerprint ``(..., C, T)``. The usual test config has S == D == 32 (128 samples / patch 4,
d_model 32), where a time/channel swap keeps every shape. These tests use S != D and check a value or a
node/channel count that the wrong axis would change.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fractals.metrics as fm
from fractals.stimuli import fgn, one_over_f_noise

FS = 250.0
CHANNEL_BETAS = (0.5, 0.8, 1.1, 1.4, 1.7, 2.0)


def _betas_by_channel(batch: int = 2, n: int = 512) -> torch.Tensor:
    """``(B, T, C)`` latents whose channel ``c`` is 1/f noise of exponent ``CHANNEL_BETAS[c]``."""
    g = torch.Generator().manual_seed(0)
    cols = [one_over_f_noise(n, b, fs=FS, batch_shape=(batch,), generator=g) for b in CHANNEL_BETAS]
    return torch.stack(cols, -1).float()


def _two_groups(batch: int = 2, n: int = 400) -> torch.Tensor:
    """``(B, T, 6)``: channels 0-2 share one source, 3-5 another (|r| ~ 0.9 within, ~ 0 across)."""
    g = torch.Generator().manual_seed(1)
    src = torch.randn(batch, n, 2, generator=g)
    return src.repeat_interleave(3, -1) + 0.3 * torch.randn(batch, n, 6, generator=g)


# ------------------------------------------------------------------------------------------------ measures
def test_latent_measures_give_one_value_per_latent_channel():
    from models.callbacks import latent_band, latent_measures

    lat = _betas_by_channel()  # (2, 512, 6)
    m = latent_measures(lat, fs=FS, cfg_fractals={"metrics": {"temporal": {"exclude_peaks": False}}})
    assert tuple(m["beta"].shape) == (2, 6) and tuple(m["hfd"].shape) == (2, 6) and tuple(m["dfa"].shape) == (2, 6)
    band = latent_band(512, FS, (2.0, 80.0))
    torch.testing.assert_close(m["beta"], fm.spectral_beta(lat.transpose(1, 2), FS, band, False))
    # channel c carries exponent CHANNEL_BETAS[c]: the estimates rise along the channel axis
    assert m["beta"].mean(0).argsort().tolist() == list(range(6))


def test_latent_fd_probe_counts_dead_latent_channels_not_time_steps():
    from fractals.probes import latent_fd_probe
    from models.callbacks import LatentFingerprintCallback

    g = torch.Generator().manual_seed(2)
    lat = fgn(256, 0.7, batch_shape=(2, 8), generator=g).float().transpose(1, 2).contiguous()  # (2, 256, 8)
    lat[:, :, [1, 4, 6]] = 0.5  # three dead latent channels
    probe = latent_fd_probe({"ssm": lat}, {"metrics": {"temporal": {"higuchi_kmax": 8}}}, fs=FS)
    assert float(probe["ssm/n_dead"]) == 3.0
    live = lat[:, :, [0, 2, 3, 5, 7]].transpose(1, 2)
    torch.testing.assert_close(probe["ssm/higuchi_fd_mean"], fm.higuchi_fd(live, kmax=8).float().mean())
    logged = LatentFingerprintCallback(every_n_steps=1, cfg_fractals={}).fingerprint({"ssm": lat}, FS)
    assert logged["fingerprint/ssm/n_dead"] == 3.0


# ------------------------------------------------------------------------------------------------ graphs
def test_fc_graphs_have_the_latent_channels_as_nodes():
    from fractals.fingerprint import fingerprint
    from fractals.probes import fc_fd_probe

    lat = _two_groups()  # (2, 400, 6): two triangles, 6 of the 15 channel pairs linked
    for probe in (fc_fd_probe(lat), fc_fd_probe(lat.transpose(1, 2), time_dim=2)):
        torch.testing.assert_close(probe["density"], torch.full((2,), 0.4))
    _, summary = fingerprint(lat.transpose(1, 2), FS)  # (recordings, channels, time)
    assert summary["n_channels"] == 6 and summary["n_recordings"] == 2
    assert summary["fc_density"] == pytest.approx(0.4)


def test_graph_prior_grows_clusters_over_latent_channels():
    from fractals.regularizers import soft_graph_dimension

    # x_c = s_c + s_{c+1}: r = 0.5 between neighbouring channels, ~0 otherwise: a path over the 6 channels
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 4096, 7, generator=g, dtype=torch.float64)
    lat = s[..., :-1] + s[..., 1:]  # (2, 4096, 6)
    eps = [1, 2, 3]
    mass = [np.mean([min(c + l, 5) - max(c - l, 0) + 1 for c in range(6)]) for l in eps]  # exact path ball sizes
    expected = np.polyfit(np.log(eps), np.log(mass), 1)[0]
    got = soft_graph_dimension(lat, eps, 0.3)
    assert tuple(got.shape) == (2,)
    np.testing.assert_allclose(got.numpy(), expected, atol=0.02)
    torch.testing.assert_close(soft_graph_dimension(lat.transpose(1, 2), eps, 0.3, time_dim=-1), got)


# ------------------------------------------------------------------------------------------------ model
def _tiny(n_time: int, **priors):
    from configs import tiny_training_config

    from models.data.datamodule import build_datamodule
    from models.lightning import NeuroFMxModule

    cfg = tiny_training_config(n_train=2, n_val=2, batch_size=2, **priors)
    cfg["data"]["n_time"] = n_time
    torch.manual_seed(0)
    module = NeuroFMxModule(cfg)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return module, next(iter(dm.train_dataloader()))


def _ssm(module, batch) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(batch)["latents"]["ssm"].float()


def test_module_priors_take_time_on_axis_1():
    from fractals.regularizers import l_graph_fd, l_spec_1overf

    module, _ = _tiny(128, warmup_steps=0)
    lat = _betas_by_channel()  # (2, 512, 6), as latents["ssm"] (B, S, D)
    total, parts = module._prior_terms(lat, FS)
    p = module.priors
    channels_last = lat.transpose(1, 2)
    torch.testing.assert_close(parts["spec"], l_spec_1overf(channels_last, FS, p.band, p.spectral_beta_target,
                                                            p.lambda_spec, time_dim=-1))
    torch.testing.assert_close(parts["graphfd"], l_graph_fd(channels_last, p.eps_values, p.corr_threshold, None,
                                                            p.lambda_graphfd, time_dim=-1))
    assert float(parts["mf"]) > 0 and torch.isclose(total, parts["spec"] + parts["mf"] + parts["graphfd"])


def test_latent_fingerprint_rows_are_latent_channels():
    from fmx.latents import latent_fingerprint

    module, batch = _tiny(512)  # S = 128 steps, D = 32 channels
    table, summary = latent_fingerprint(module, batch, max_channels=5)
    ssm = _ssm(module, batch)
    assert ssm.shape[1] == 128 and ssm.shape[2] == 32
    assert summary["n_channels"] == 5 and summary["n_recordings"] == 2
    katz = table[table["measure"] == "katz_fd"].set_index(["recording", "channel"])["value"]
    for r, c in ((0, 3), (1, 4)):
        assert katz[(r, f"ch{c}")] == pytest.approx(float(fm.katz_fd(ssm[r, :, c])), rel=1e-5)


def test_latent_fingerprint_fallback_rows_are_latent_channels():
    from fmx.latents import latent_fingerprint

    # S = 24 steps < D = 32 channels: too short for the fingerprint's scales, so the fallback measures
    module, batch = _tiny(96)
    table, summary = latent_fingerprint(module, batch, max_channels=32)
    ssm = _ssm(module, batch)
    assert ssm.shape[1] == 24
    assert "n_channels" not in summary  # the fallback, not fractals.fingerprint
    hfd = table[table["measure"] == "higuchi_fd"].set_index("channel")["value"]
    assert sorted(hfd.index) == sorted(f"ch{c}" for c in range(32))
    assert hfd["ch3"] == pytest.approx(float(fm.higuchi_fd(ssm[:, :, 3], kmax=8).mean()), rel=1e-5)


def test_fallback_columns_map_to_live_latent_channels():
    from fmx.latents import _measured_channels
    from models.callbacks import latent_measures

    g = torch.Generator().manual_seed(6)
    ssm = fgn(24, 0.7, batch_shape=(2, 40), generator=g).float().transpose(1, 2).contiguous()  # (2, 24, 40)
    ssm[:, :, 2] = 1.0  # a dead latent channel: latent_measures leaves it out
    hfd = latent_measures(ssm, fs=FS, cfg_fractals={})["hfd"]
    assert tuple(hfd.shape) == (2, 39)
    assert _measured_channels(ssm, "hfd", hfd.shape[1], FS, {}, 64) == [c for c in range(40) if c != 2]


def test_scale_ablation_runs_along_each_modality_time_axis():
    from fractals.probes import causal_scale_ablation
    from models.callbacks import CausalScaleAblationCallback

    g = torch.Generator().manual_seed(4)
    lfp = torch.randn(2, 3, 256, generator=g)  # (B, C, T)
    spikes = torch.poisson(torch.full((2, 256, 5), 2.0), generator=g)  # (B, T, N)
    cb = CausalScaleAblationCallback(mode="high_beta_only", ablate_ratio=0.2, cfg_fractals={})
    out = cb.ablate({"lfp": lfp, "spikes": spikes}, 100.0)
    band = (2.0, 45.0)  # the default (2, 80) Hz clipped to 0.45 fs
    torch.testing.assert_close(out["lfp"], causal_scale_ablation(lfp, "high_beta_only", 0.2, 100.0, band))
    torch.testing.assert_close(out["spikes"],
                               causal_scale_ablation(spikes, "high_beta_only", 0.2, 100.0, band, dim=1).clamp_min(0))


def test_attention_fd_coupling_pools_attention_over_queries():
    from fractals.probes import attention_fd_coupling

    b, h, q, k = 2, 3, 5, 7
    g = torch.Generator().manual_seed(5)
    fd = torch.rand(b, k, generator=g) + 0.1
    fd = fd / fd.sum(-1, keepdim=True)  # a distribution over keys: head 1 attends exactly by FD
    attn = torch.full((b, h, q, k), 1.0 / k)
    attn[:, 1] = fd[:, None, :]
    attn[:, 2] = fd.flip(-1)[:, None, :]
    r = attention_fd_coupling(attn, fd)
    assert tuple(r.shape) == (1, h)
    assert math.isnan(float(r[0, 0]))  # uniform attention: undefined, not 0
    assert float(r[0, 1]) == pytest.approx(1.0, abs=1e-6)
    expected = np.corrcoef(fd.flip(-1).reshape(-1).numpy(), fd.reshape(-1).numpy())[0, 1]
    assert float(r[0, 2]) == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------------ recordings
def test_recording_file_to_fingerprint_rows_keep_channel_columns(tmp_path):
    from fmx.fingerprint.recording import measure_recording
    from models.data.readers import read_recording

    g = np.random.default_rng(7)
    n = 2000  # rows are samples, columns channels, as CSV files hold them
    cols = {"white": g.standard_normal(n), "walk": np.cumsum(g.standard_normal(n)),
            "alpha": np.sin(2 * np.pi * 10 * np.arange(n) / FS) + 0.1 * g.standard_normal(n)}
    path = tmp_path / "rec.csv"
    path.write_text("# fs=250\n" + ",".join(cols) + "\n"
                    + "\n".join(",".join(f"{cols[c][i]:.9g}" for c in cols) for i in range(n)) + "\n")
    rec = read_recording(path)
    assert rec.data.shape == (3, n)
    rows, info = measure_recording(rec, {"fou": {"enable": False}})
    assert info["n_channels"] == 3
    katz = rows[rows["measure"] == "katz_fd"].set_index("channel")["value"]
    for i, name in enumerate(cols):
        assert katz[name] == pytest.approx(float(fm.katz_fd(torch.as_tensor(rec.data[i]))), rel=1e-6)
