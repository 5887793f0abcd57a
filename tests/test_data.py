"""Synthetic data (ground truth, determinism, decodability), collation and the datamodule."""
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from models.data import SyntheticConfig, SyntheticNeuralDataset, collate_batch
from models.data.datamodule import build_datamodule
from models.data.files import RecordingWindows, find_recordings, load_recordings

SMALL = {"n_time": 128, "n_units": 16, "n_lfp_channels": 4}


def _cfg(**data):
    return {"data": {"name": "synthetic", "n_train": 8, "n_val": 4, **SMALL, **data},
            "trainer": {"batch_size": 4}, "seed": 3}


def test_sample_layout_and_subject_padding():
    ds = SyntheticNeuralDataset(n_samples=4, config=SyntheticConfig(**SMALL, include_drives=True))
    a, b = ds[0], ds[1]
    assert a["spikes"].shape == (128, 16) and a["lfp"].shape == (4, 128) and a["behavior"].shape == (128, 2)
    assert a["drives"].shape == (128, 4) and a["fs"] == 100.0
    torch.testing.assert_close(ds.drives(0), a["drives"])  # ground truth on demand, same stream
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
    with pytest.raises(ValueError, match="data.n_val"):
        build_datamodule(_cfg(n_val=0))
    with pytest.raises(ValueError, match="data.name"):
        build_datamodule({"data": {"name": "nope"}})


# ------------------------------------------------------------------------------------------ files


def _write_npz_folder(root, rates=(100.0, 100.0, 100.0)):
    rng = np.random.default_rng(0)
    specs = [("sub-01", ["Fz", "Cz", "Pz"], 1000), ("sub-01", ["Fz", "Cz", "Pz"], 600), ("sub-02", ["Cz", "Oz"], 450)]
    for i, ((sub, names, n), fs) in enumerate(zip(specs, rates)):
        folder = root / sub
        folder.mkdir(exist_ok=True)
        np.savez(folder / f"{sub}_run-{i}.npz", data=rng.standard_normal((len(names), n)), fs=fs,
                 channel_names=np.array(names))
    return root


def _files_cfg(root, **data):
    return {"data": {"name": "files", "root": str(root), "window": 200, **data}, "trainer": {"batch_size": 4}, "seed": 0}


def test_recording_windows_ids_and_padding(tmp_path):
    (tmp_path / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\n")  # BIDS table: skipped
    for doc in ("LICENSE.txt", "SHA256SUMS.txt", "README.txt"):  # PhysioNet-style documentation: skipped
        (tmp_path / doc).write_text("Open Data Commons Attribution License v1.0\n")
    recs = load_recordings(find_recordings(_write_npz_folder(tmp_path)))
    ds = RecordingWindows(recs, window=200, stride=100, key="eeg")
    assert len(ds) == 9 + 5 + 3 and ds.channel_vocab == ["Cz", "Fz", "Oz", "Pz"]
    last = ds[len(ds) - 1]
    assert last["eeg"].shape == (2, 200) and last["eeg_channel_ids"].tolist() == [0, 2]
    assert int(last["subject"]) == 1 and ds.subject_vocab == ["01", "02"]
    np.testing.assert_allclose(ds[1]["eeg"].numpy(), recs[0].data[:, 100:300])
    batch = collate_batch([ds[0], last])
    assert batch["eeg"].shape == (2, 3, 200) and batch["eeg_mask"][1].tolist() == [True, True, False]


def test_files_datamodule_splits_by_file_and_subject(tmp_path):
    root = _write_npz_folder(tmp_path)
    dm = build_datamodule(_files_cfg(root, val_fraction=0.34))
    assert not set(dm.info["train_files"]) & set(dm.info["val_files"]) and len(dm.info["val_files"]) == 1
    assert dm.info == build_datamodule(_files_cfg(root, val_fraction=0.34)).info  # seeded, repeatable
    batch = next(iter(dm.train_dataloader()))
    assert batch["eeg"].shape[0] == 4 and batch["eeg"].shape[2] == 200 and batch["eeg_mask"].any(1).all()
    by_subject = build_datamodule(_files_cfg(root, split_by="subject", val_fraction=0.5))
    train_subj = {f.split("/")[-2] for f in by_subject.info["train_files"]}
    val_subj = {f.split("/")[-2] for f in by_subject.info["val_files"]}
    assert train_subj and val_subj and not train_subj & val_subj


def test_files_datamodule_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="data.root"):
        build_datamodule({"data": {"name": "files"}})
    with pytest.raises(ValueError, match="data.root"):
        build_datamodule(_files_cfg(tmp_path / "missing"))
    root = _write_npz_folder(tmp_path, rates=(100.0, 100.0, 250.0))
    with pytest.raises(ValueError, match="data.resample_hz"):
        build_datamodule(_files_cfg(root))
    with pytest.raises(ValueError, match="data.window"):
        build_datamodule(_files_cfg(root, resample_hz=100.0, window=5000))
    np.savez(tmp_path / "rr.npz", rr_ms=np.full(50, 800.0))
    with pytest.raises(ValueError, match="interval"):
        build_datamodule(_files_cfg(tmp_path, pattern="rr.npz"))
    with pytest.raises(ValueError, match="windw"):
        build_datamodule(_files_cfg(root, windw=3))


@pytest.mark.realdata
def test_files_datamodule_on_real_eeg(shared_data):
    cfg = {"data": {"name": "files", "root": str(shared_data / "eegmat-dev"), "pattern": "sub-0[01]/**/*",
                    "window": 500}, "trainer": {"batch_size": 4}}
    dm = build_datamodule(cfg)
    batch = next(iter(dm.val_dataloader()))
    assert batch["eeg"].shape == (4, 19, 500) and batch["fs"] == 250.0
    assert dm.info["n_channel_ids"] == 19 and len(dm.info["train_files"]) == 3
    assert 1e-7 < float(batch["eeg"].std()) < 1e-3  # volts


def test_stimulus_modality_shifts_the_drives():
    cfg = SyntheticConfig(**SMALL, modalities=("spikes", "stimulus"), include_drives=True, stimulus_gain=2.0)
    ds = SyntheticNeuralDataset(n_samples=12, config=cfg)
    items = [ds[i] for i in range(12)]
    assert set(items[0]) == {"spikes", "spikes_mask", "unit_ids", "stimulus", "stimulus_id", "subject", "fs", "drives"}
    gt = ds.ground_truth
    for it in items:
        k = int(it["stimulus_id"])
        torch.testing.assert_close(it["stimulus"], gt["stimulus_embedding"][k])
        # the drive mean over the window is the stimulus shift (the fOU part is zero-mean per window)
        torch.testing.assert_close(it["drives"].mean(0), 2.0 * gt["stimulus_drive"][k], atol=1e-4, rtol=1e-4)
    assert len({int(it["stimulus_id"]) for it in items}) > 1
    batch = collate_batch(items[:4])
    assert batch["stimulus"].shape == (4, 8) and batch["stimulus_id"].dtype == torch.long


def test_drives_carry_the_configured_long_memory():
    """fOU drives: PSD ~ f^-(2H+1) above the corner, so a larger Hurst index gives a steeper slope."""
    slopes = {}
    for hurst in (0.6, 0.9):
        cfg = SyntheticConfig(n_time=512, n_units=4, n_lfp_channels=2, hurst=hurst, modalities=("behavior",),
                              include_drives=True)
        ds = SyntheticNeuralDataset(n_samples=8, config=cfg, cache=False)
        z = torch.stack([ds[i]["drives"] for i in range(8)]).double()
        power = torch.fft.rfft(z, dim=1).abs().pow(2).mean((0, 2))
        freqs = torch.fft.rfftfreq(512, 1 / 100.0, dtype=torch.float64)
        band = (freqs > 2) & (freqs < 20)
        x, y = freqs[band].log(), power[band].log()
        slopes[hurst] = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    assert -2.6 < slopes[0.6] < -1.8 and -3.2 < slopes[0.9] < -2.1
    assert slopes[0.9] < slopes[0.6] - 0.15
