"""Synthetic data (ground truth, determinism, decodability), collation and the datamodule."""
import pytest
import torch
from torch.utils.data import DistributedSampler

from models.data import SyntheticConfig, SyntheticNeuralDataset, collate_batch
from models.data.datamodule import build_datamodule

SMALL = {"n_time": 128, "n_units": 16, "n_lfp_channels": 4}


def _cfg(**data):
    return {"data": {"name": "synthetic", "n_train": 8, "n_val": 4, **SMALL, **data},
            "trainer": {"batch_size": 4}, "seed": 3}


def test_sample_layout_and_subject_padding():
    ds = SyntheticNeuralDataset(n_samples=4, config=SyntheticConfig(**SMALL, include_drives=True))
    a, b = ds[0], ds[1]
    assert a["spikes"].shape == (128, 16) and a["lfp"].shape == (4, 128) and a["behavior"].shape == (128, 2)
    assert a["drives"].shape == (128, 4) and a["fs"] == 100.0
    assert int(a["subject"]) == 0 and int(b["subject"]) == 1
    assert a["spikes_mask"].all() and b["spikes_mask"].sum() == 12 and b["lfp_mask"].sum() == 3
    assert (b["spikes"][:, 12:] == 0).all() and (b["lfp"][3:] == 0).all()
    assert b["unit_ids"][0] == 16 and ds.n_unit_ids == 32
    assert ds.ground_truth["spike_readout"].shape == (2, 4, 16)
    rate = a["spikes"].mean().item()
    assert 0.05 < rate < 0.3  # ~10 Hz at 100 Hz bins


def test_deterministic_and_splits_differ():
    cfg = SyntheticConfig(**SMALL, seed=5)
    one = SyntheticNeuralDataset(n_samples=3, config=cfg, cache=False)[2]
    two = SyntheticNeuralDataset(n_samples=3, config=cfg)[2]
    for key in ("spikes", "lfp", "behavior"):
        torch.testing.assert_close(one[key], two[key])
    other = SyntheticNeuralDataset(n_samples=3, split="val", config=cfg)[2]
    assert not torch.allclose(one["behavior"], other["behavior"])
    reseeded = SyntheticNeuralDataset(n_samples=3, config=SyntheticConfig(**SMALL, seed=6))[2]
    assert not torch.allclose(one["behavior"], reseeded["behavior"])
    sample = two["behavior"]
    sample += 1.0  # editing a returned sample must not change the cached one
    torch.testing.assert_close(SyntheticNeuralDataset(n_samples=3, config=cfg)[2]["behavior"], one["behavior"])


def test_behavior_is_linearly_decodable_from_drives():
    ds = SyntheticNeuralDataset(n_samples=6, config=SyntheticConfig(**SMALL, include_drives=True))
    z = torch.cat([ds[i]["drives"] for i in range(6)]).double()
    y = torch.cat([ds[i]["behavior"] for i in range(6)]).double()
    x = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
    w = torch.linalg.lstsq(x, y).solution
    r2 = 1 - ((x @ w - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    assert r2.min() > 0.95
    torch.testing.assert_close(w[:4].float(), ds.ground_truth["behavior_readout"], atol=0.05, rtol=0.05)


def test_spikes_follow_the_drives():
    ds = SyntheticNeuralDataset(n_samples=4, config=SyntheticConfig(**SMALL, include_drives=True))
    item = ds[0]
    gt = ds.ground_truth
    rate = torch.nn.functional.softplus(item["drives"] @ gt["spike_readout"][0] + gt["spike_bias"][0])
    corr = torch.corrcoef(torch.stack([rate.flatten(), item["spikes"].flatten()]))[0, 1]
    assert corr > 0.2  # Poisson noise at ~0.1 counts per bin caps it well below 1


def test_lfp_has_the_oscillation_peak():
    cfg = SyntheticConfig(n_time=512, n_units=4, n_lfp_channels=4, lfp_gain=0.0, peak_ratio=20.0)
    lfp = SyntheticNeuralDataset(n_samples=1, config=cfg)[0]["lfp"]
    power = torch.fft.rfft(lfp, dim=-1).abs().pow(2).mean(0)
    freqs = torch.fft.rfftfreq(512, 1 / 100.0)
    band = (freqs > 5) & (freqs < 25)
    assert abs(freqs[band][power[band].argmax()].item() - 10.0) < 2.5


def test_collate_pads_channels_and_adds_masks():
    items = [{"eeg": torch.ones(3, 10), "subject": 0, "fs": 250.0},
             {"eeg": torch.ones(5, 10), "subject": 1, "fs": 250.0}]
    batch = collate_batch(items)
    assert batch["eeg"].shape == (2, 5, 10) and batch["fs"] == 250.0
    assert batch["eeg_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch["subject"].dtype == torch.long and batch["subject"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="empty"):
        collate_batch([])


def test_datamodule_shapes_and_determinism():
    dm = build_datamodule(_cfg())
    batch = next(iter(dm.val_dataloader()))
    assert batch["spikes"].shape == (4, 128, 16) and batch["lfp"].shape == (4, 4, 128)
    assert batch["behavior"].shape == (4, 128, 2) and batch["subject"].shape == (4,)
    assert dm.info["n_unit_ids"] == 32 and dm.info["fs"] == 100.0
    again = next(iter(build_datamodule(_cfg()).val_dataloader()))
    torch.testing.assert_close(batch["lfp"], again["lfp"])
    assert len(dm.train_dataloader()) == 2
    only = build_datamodule(_cfg(modalities=["lfp"], batch_size=2))
    b = next(iter(only.train_dataloader()))
    assert set(b) == {"lfp", "lfp_mask", "subject", "fs"} and b["lfp"].shape[0] == 2


def test_map_style_dataset_shards_under_distributed_sampler():
    ds = build_datamodule(_cfg()).train_set
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == list(range(8)) and not set(parts[0]) & set(parts[1])


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="data.hurst"):
        build_datamodule(_cfg(hurst=1.5))
    with pytest.raises(ValueError, match="n_unitz"):
        build_datamodule(_cfg(n_unitz=3))
    with pytest.raises(ValueError, match="data.modalities"):
        build_datamodule(_cfg(modalities=["eeg"]))
    with pytest.raises(ValueError, match="data.name"):
        build_datamodule({"data": {"name": "nope"}})
