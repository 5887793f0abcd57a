"""models.fit_to_data: a preset written for synthetic LFP trains on a folder of real recordings."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from configs import CONF, tiny_training_config
from models.fit_to_data import fit_model_config
from models.registry import build_datamodule, build_module_and_data


def _eeg_folder(root, n_channels=20, n=600):
    rng = np.random.default_rng(0)
    for i in range(3):
        folder = root / f"sub-0{i}"
        folder.mkdir()
        np.savez(folder / f"sub-0{i}_task-rest.npz", data=rng.standard_normal((n_channels, n)), fs=250.0,
                 channel_names=np.array([f"E{c:02d}" for c in range(n_channels)]))
    return root


def _files_cfg(root, **data):
    cfg = tiny_training_config()
    cfg["data"] = {**yaml.safe_load((CONF / "data" / "files.yaml").read_text()), "root": str(root), **data}
    return cfg


def test_eeg_folder_gets_a_tokenizer_a_vocabulary_and_forecast_keys():
    cfg = tiny_training_config()
    before = copy.deepcopy(cfg)
    fitted, changes = fit_model_config(cfg, {"modalities": ["eeg"], "n_channel_ids": 19})
    assert cfg == before  # the input is not modified
    eeg = fitted["model"]["tokenizers"]["eeg"]
    assert eeg["n_channels"] == 19 and eeg["layout"] == cfg["model"]["tokenizers"]["lfp"]["layout"]
    assert fitted["model"]["heads"]["forecast"]["keys"] == ["lfp", "spikes", "eeg"]
    assert fitted["model"]["tokenizers"]["lfp"] == cfg["model"]["tokenizers"]["lfp"]  # nothing else touched
    assert len(changes) == 3 and any("eeg.n_channels: unset -> 19" in c for c in changes)


def test_a_fitting_config_comes_back_unchanged_and_small_vocabularies_grow():
    cfg = tiny_training_config()
    fitted, changes = fit_model_config(cfg, build_datamodule(cfg).info)  # synthetic data: presets fit
    assert changes == [] and fitted == cfg
    fitted, changes = fit_model_config(cfg, {"modalities": ["lfp"], "n_channel_ids": 40})
    assert fitted["model"]["tokenizers"]["lfp"]["n_channels"] == 40 and len(changes) == 1
    fitted, changes = fit_model_config(cfg, {"modalities": ["lfp"], "n_channel_ids": 3})
    assert changes == [] and fitted["model"]["tokenizers"]["lfp"]["n_channels"] == 16  # never shrunk


def test_a_modality_that_cannot_be_copied_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model.tokenizers.calcium"):
        fit_model_config(tiny_training_config(), {"modalities": ["calcium"]})
    byte_cfg = {"model": {"family": "fractal_byte"}}
    assert fit_model_config(byte_cfg, {"modalities": ["eeg"]}) == (byte_cfg, [])


def test_tiny_preset_trains_a_step_on_a_20_channel_eeg_folder(tmp_path):
    torch.manual_seed(0)
    module, data = build_module_and_data(_files_cfg(_eeg_folder(tmp_path), window=128, val_fraction=0.34))
    assert data.info["modalities"] == ["eeg"] and data.info["n_channel_ids"] == 20
    batch = next(iter(data.train_dataloader()))
    out = module(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and list(out["losses"]) == ["forecast_eeg"]
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads) and any(bool(g.any()) for g in grads)


def test_more_subjects_than_adversarial_domains_raise_n_domains():
    """The small/medium/large presets say n_domains: 64; a corpus of 80 subjects labels them 0..79 and failed
    at the first batch holding subject 64 ("domain labels must lie in [0, 64)"), mid-epoch."""
    cfg = tiny_training_config()
    cfg["model"].setdefault("heads", {})["adversarial"] = {"target": "subject", "n_domains": 64}
    fitted, changes = fit_model_config(cfg, {"modalities": ["lfp"], "n_subjects": 80})
    assert fitted["model"]["heads"]["adversarial"]["n_domains"] == 80
    assert any("adversarial.n_domains: 64 -> 80" in c for c in changes)
    fitted, changes = fit_model_config(cfg, {"modalities": ["lfp"], "n_subjects": 12})
    assert fitted["model"]["heads"]["adversarial"]["n_domains"] == 64 and changes == []  # never shrunk
    cfg["model"]["heads"]["adversarial"]["target"] = "species"  # other labels: not counted by n_subjects
    fitted, changes = fit_model_config(cfg, {"modalities": ["lfp"], "n_subjects": 80})
    assert fitted["model"]["heads"]["adversarial"]["n_domains"] == 64 and changes == []
