"""NeuroFMx assembly: the forward contract, end-to-end causality, overfitting one batch, config wiring."""
from __future__ import annotations

import copy

import pytest
import torch

from models.data.batch import collate_batch
from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset
from models.neurofmx import NeuroFMx
from models.presets import load_preset



@pytest.fixture(scope="module")
def batch():
    ds = SyntheticNeuralDataset(n_samples=4, config=SyntheticConfig(n_time=128))
    return collate_batch([ds[i] for i in range(4)])


def _model(heads=None, **model_overrides):
    cfg = load_preset("tiny")
    if heads is not None:
        cfg["heads"] = heads
    cfg.update(model_overrides)
    torch.manual_seed(0)
    return NeuroFMx.from_config({"model": cfg})


def test_forward_returns_the_contract(batch):
    m = _model()
    out = m(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert set(out["losses"]) == {"forecast_lfp", "forecast_spikes", "behavior"}
    lat = out["latents"]
    assert lat["perceiver"].shape == (4, 32, 32)  # 128 samples / patch 4 = 32 steps
    assert lat["ssm"].shape == (4, 32, 32)
    assert lat["popt"].shape == (4, 4, 32)
    assert lat["ssm_states"].shape == (4, 4, 16, 16)  # (B, heads, headdim, d_state)
    assert out["outputs"]["behavior"].shape == batch["behavior"].shape
    out["loss"].backward()
    assert m.backbone.layers[0].mixer.A_log.grad is not None


@pytest.mark.parametrize("normalize", ["causal_zscore", "none"])
def test_forecast_path_is_causal_end_to_end(batch, normalize):
    # Whole-window z-scoring would let future samples shift past tokens; the default running
    # (causal) z-score and no normalisation both keep every stage causal.
    tok = {"spikes": {"n_units": 64, "layout": "channel_patch"},
           "lfp": {"n_channels": 16, "layout": "time_mix", "normalize": normalize}}
    m = _model(heads={"forecast": {"keys": ["spikes", "lfp"], "horizon": 1}}, tokenizers=tok).eval()
    cut_step, p = 20, 4
    changed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    changed["spikes"][:, cut_step * p :] = torch.poisson(torch.full_like(changed["spikes"][:, cut_step * p :], 3.0))
    changed["lfp"][..., cut_step * p :] += 10.0
    with torch.no_grad():
        a, b = m(batch), m(changed)
    for key in ("forecast_spikes", "forecast_lfp"):
        pa, pb = a["outputs"][key], b["outputs"][key]
        torch.testing.assert_close(pb[..., : cut_step * p], pa[..., : cut_step * p], rtol=0, atol=1e-5)
        assert (pb[..., cut_step * p :] - pa[..., cut_step * p :]).abs().max() > 1e-3
    torch.testing.assert_close(b["latents"]["ssm"][:, :cut_step], a["latents"]["ssm"][:, :cut_step], rtol=0, atol=1e-5)


def test_tiny_model_overfits_one_batch(batch):
    data = dict(batch)
    lfp = data["lfp"]
    z = (lfp - lfp.mean(-1, keepdim=True)) / lfp.std(-1, keepdim=True)
    # A behaviour the model can decode causally: running sums of two LFP channels.
    data["behavior"] = torch.stack([z[:, 0], z[:, 1]], -1).cumsum(1) / 10
    m = _model(heads={"behavior": {"n_features": 2, "hidden": 0}})
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(60):
        out = m(data)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = float(out["losses"]["behavior"].detach()) if first is None else first
    last = float(m(data)["losses"]["behavior"])
    assert last < first / 10, (first, last)


def test_reconstruction_masks_steps_randomly_in_training_and_fixed_in_eval(batch):
    m = _model(heads={"reconstruction": {"keys": ["lfp", "spikes"], "mask_ratio": 0.3}})
    m.eval()
    with torch.no_grad():
        l1, l2 = m(batch)["losses"], m(batch)["losses"]
    assert set(l1) == {"recon_lfp", "recon_spikes"}
    assert float(l1["recon_lfp"]) == float(l2["recon_lfp"])
    mask_a, mask_b = m._step_mask(4, 32, "cpu"), m._step_mask(4, 32, "cpu")
    assert torch.equal(mask_a, mask_b) and 0.1 < float(mask_a.float().mean()) < 0.5
    m.train()
    assert not torch.equal(m._step_mask(4, 32, "cpu"), m._step_mask(4, 32, "cpu"))


def test_contrastive_and_adversarial_heads_read_popt(batch):
    m = _model(heads={"forecast": {"keys": ["lfp"]},
                      "contrastive": {"view": "behavior", "dim_b": 2, "proj_dim": 8},
                      "adversarial": {"target": "subject", "n_domains": 2, "hidden": 8}})
    out = m(batch)
    assert set(out["losses"]) == {"forecast_lfp", "contrastive", "adversarial"}
    assert "adversarial_accuracy" in out["metrics"]
    # A batch without the targets of some heads trains the others.
    partial = {k: v for k, v in batch.items() if k not in ("behavior", "subject")}
    assert set(m(partial)["losses"]) == {"forecast_lfp"}


def test_contrastive_view_ignores_masked_behavior_features(batch):
    # behavior_mask marks missing features (an occluded keypoint): whatever they hold must not
    # reach any loss, the contrastive view included.
    m = _model(heads={"contrastive": {"view": "behavior", "dim_b": 2, "proj_dim": 8}}).eval()
    masked = dict(batch, behavior_mask=torch.tensor([[True, False]] * 4))
    garbage = dict(masked, behavior=batch["behavior"].clone())
    garbage["behavior"][..., 1] = 1e3
    with torch.no_grad():
        a, b = m(masked)["losses"]["contrastive"], m(garbage)["losses"]["contrastive"]
    torch.testing.assert_close(b, a)


def test_multi_latent_chunks_give_one_step_per_chunk(batch):
    cfg = load_preset("tiny")
    cfg["perceiver"] = dict(cfg["perceiver"], n_latents=2, chunk_size=2)
    m = NeuroFMx.from_config({"model": cfg})
    out = m(batch)
    assert out["latents"]["ssm"].shape == (4, 32, 32)  # 16 chunks x 2 latents
    assert out["outputs"]["behavior"].shape == batch["behavior"].shape
    assert m.step_size == 8


def test_fractals_backbone_switches_come_from_the_composed_config():
    fractals = {"backbone": {"fractional_kernels": {"enable": True, "n_taps": 17, "min_alpha": 0.2, "max_alpha": 0.8},
                             "scale_encodings": {"enable": True, "wavelet_scales": [4, 8, 16]}}}
    m = NeuroFMx.from_config({"model": load_preset("tiny"), "fractals": fractals})
    assert all(layer.mixer.fractional is not None for layer in m.backbone.layers)
    assert m.backbone.layers[0].mixer.fractional.n_taps == 17
    assert m.scale_encoding is not None and m.scale_encoding.scales == [4, 8, 16]
    off = copy.deepcopy(fractals)
    off["backbone"]["fractional_kernels"]["enable"] = False
    off["backbone"]["scale_encodings"]["enable"] = False
    m2 = NeuroFMx.from_config({"model": load_preset("tiny"), "fractals": off})
    assert m2.scale_encoding is None and m2.backbone.layers[0].mixer.fractional is None


def test_scattering_scale_encoding_from_config(batch):
    pytest.importorskip("kymatio", reason="kymatio (dev extra) provides the scattering front end")
    scatter = {"backbone": {"scale_encodings": {"enable": True, "kind": "scattering", "J": 2, "Q": 1, "n_probe": 2}}}
    cfg = load_preset("tiny")
    with pytest.raises(ValueError, match="non-causal.*forecast"):
        NeuroFMx.from_config({"model": cfg, "fractals": scatter})
    cfg["heads"] = {k: v for k, v in cfg["heads"].items() if k != "forecast"}
    torch.manual_seed(0)
    m = NeuroFMx.from_config({"model": cfg, "fractals": scatter})
    assert type(m.scale_encoding).__name__ == "WaveletScatteringEncoding"
    out = m(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.scale_encoding.proj.weight.grad is not None and m.scale_encoding.proj.weight.grad.abs().sum() > 0
    bad = {"backbone": {"scale_encodings": {"enable": True, "kind": "wavelets"}}}
    with pytest.raises(ValueError, match="kind: must be 'filterbank' or 'scattering'"):
        NeuroFMx.from_config({"model": cfg, "fractals": bad})


def test_bad_configs_and_batches_raise_clear_errors(batch):
    cfg = load_preset("tiny")
    with pytest.raises(ValueError, match="missing field"):
        NeuroFMx.from_config({"model": {k: v for k, v in cfg.items() if k != "d_model"}})
    with pytest.raises(ValueError, match="unknown head"):
        _model(heads={"decoder": {}})
    with pytest.raises(ValueError, match="at least one head"):
        _model(heads={})
    with pytest.raises(ValueError, match="not a signal modality"):
        _model(heads={"forecast": {"keys": ["behavior"]}})
    m = _model()
    with pytest.raises(ValueError, match="batch"):
        m({"eeg": torch.randn(2, 4, 64)})


def test_step_mask_always_leaves_a_visible_step():
    m = _model(heads={"reconstruction": {"keys": ["lfp"], "mask_ratio": 0.99}})
    m.train()
    mask = m._step_mask(64, 3, "cpu")
    assert bool((~mask).any(1).all())
