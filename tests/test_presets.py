"""Model presets: parameter counts on the meta device within 10 % of their targets, a reason per field."""
from __future__ import annotations

import re

import pytest

from models.presets import PRESET_TARGETS, PRESETS, count_parameters, load_preset, parameter_breakdown, preset_dir


@pytest.mark.parametrize("name", sorted(PRESET_TARGETS))
def test_preset_parameter_count_within_ten_percent(name):
    n = count_parameters(load_preset(name))
    target = PRESET_TARGETS[name]
    assert abs(n - target) <= 0.10 * target, f"{name}: {n:,} parameters vs target {target:,}"


def test_tiny_preset_is_ci_sized():
    n = count_parameters(load_preset("tiny"))
    assert 5_000 <= n <= 100_000, n


def test_backbone_is_the_largest_part_of_the_big_presets():
    parts = parameter_breakdown(load_preset("large"))
    assert max(parts, key=parts.get) == "backbone", parts
    assert sum(parts.values()) == count_parameters(load_preset("large"))


def test_fractals_backbone_options_add_few_parameters():
    model = load_preset("small")
    on = {"model": model, "fractals": {"backbone": {
        "fractional_kernels": {"enable": True, "n_taps": 33, "min_alpha": 0.2, "max_alpha": 0.8},
        "scale_encodings": {"enable": True, "wavelet_scales": [8, 16, 32, 64]}}}}
    extra = count_parameters(on) - count_parameters(model)
    assert 0 < extra < 0.01 * count_parameters(model)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_field_has_a_reason(name):
    text = (preset_dir() / f"{name}.yaml").read_text()
    assert load_preset(name)["family"] == "neurofmx"
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*\w+:\s*\S", line) and "#" not in line:
            pytest.fail(f"{name}.yaml line {i} has a value without a reason comment: {line.strip()!r}")


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(ValueError, match="available"):
        load_preset("huge")


def test_small_preset_runs_every_head_on_synthetic_data():
    import torch

    from models.data.batch import collate_batch
    from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset
    from models.neurofmx import NeuroFMx

    cfg = load_preset("small")
    # Keep the preset's architecture; size the channel vocabularies and heads to the synthetic data.
    cfg["tokenizers"] = {"spikes": {"n_units": 64, "layout": "channel_patch"},
                         "lfp": {"n_channels": 16, "layout": "channel_patch"}}
    heads = cfg["heads"]
    heads["forecast"]["keys"] = heads["reconstruction"]["keys"] = ["spikes", "lfp"]
    heads["behavior"]["n_features"] = heads["contrastive"]["dim_b"] = 2
    heads["adversarial"]["n_domains"] = 2
    ds = SyntheticNeuralDataset(n_samples=2, config=SyntheticConfig(n_time=64))
    batch = collate_batch([ds[0], ds[1]])
    torch.manual_seed(0)
    out = NeuroFMx.from_config({"model": cfg})(batch)
    assert set(out["losses"]) == {"forecast_spikes", "forecast_lfp", "recon_spikes", "recon_lfp", "behavior",
                                  "contrastive", "adversarial"}
    assert out["latents"]["popt"].shape == (2, cfg["popt"]["n_summary_tokens"], cfg["d_model"])
    out["loss"].backward()


def test_scattering_scale_encoding_is_counted_on_meta():
    """count_parameters builds on the meta device; the scattering encoding sizes its projection with a
    CPU kymatio operator, which must not receive a meta tensor."""
    pytest.importorskip("kymatio", reason="kymatio (dev extra) provides the scattering front end")
    from models.neurofmx import NeuroFMx

    model = load_preset("tiny")
    model["heads"] = {"behavior": model["heads"]["behavior"]}  # scattering is refused with forecasting
    cfg = {"model": model, "fractals": {"backbone": {"scale_encodings": {
        "enable": True, "kind": "scattering", "J": 2, "Q": 1, "n_probe": 2}}}}
    on_cpu = sum(p.numel() for p in NeuroFMx.from_config(cfg).parameters())
    assert count_parameters(cfg) == on_cpu > count_parameters(model)
