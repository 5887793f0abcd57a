"""Review of today's models/ and fractals/ changes: each test failed on the code before its fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import tiny_training_config
from fractals.criticality import SpectralRegularizer
from models.data.datamodule import build_datamodule
from models.data.readers import read_recording
from models.lightning import build_lightning_module


def test_tsv_with_decimal_commas_is_read(tmp_path):
    # A European Excel "Text (Tab delimited)" export: tabs between columns, ',' as the decimal mark.
    path = tmp_path / "rec.tsv"
    path.write_text("Fz\tCz\n1,5\t2,5\n3,5\t4,25\n")
    rec = read_recording(path, fs=100.0)
    np.testing.assert_allclose(rec.data, [[1.5, 3.5], [2.5, 4.25]])
    assert rec.channel_names == ("Fz", "Cz")


def test_tsv_with_decimal_points_unchanged(tmp_path):
    path = tmp_path / "rec.tsv"
    path.write_text("time\tFz\n0.0\t1.5\n0.01\t2.5\n0.02\t3.5\n")
    rec = read_recording(path)
    np.testing.assert_allclose(rec.data, [[1.5, 2.5, 3.5]])
    assert rec.fs == pytest.approx(100.0)


def test_wide_short_npz_error_names_channel_names_way_out(tmp_path):
    # 64 channels x 50 samples is a legitimate (channels, time) array: the message must not only say "save data.T"
    # (wrong for it) but name the way to keep it: channel_names, which the reader then honours.
    path = tmp_path / "rec.npz"
    np.savez(path, data=np.zeros((64, 50)), fs=100.0)
    with pytest.raises(ValueError, match="channel_names"):
        read_recording(path)
    np.savez(path, data=np.zeros((64, 50)), fs=100.0, channel_names=np.array([f"c{i}" for i in range(64)]))
    assert read_recording(path).data.shape == (64, 50)


def test_spectral_regularizer_takes_0d_numpy_target():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    want, _ = SpectralRegularizer(targets=1.0, weight=1.0)(net)
    got, _ = SpectralRegularizer(targets=np.array(1.0), weight=1.0)(net)
    assert float(got.detach()) == pytest.approx(float(want.detach()))


def test_spectral_regularizer_refuses_nan_0d_numpy_target_at_build():
    with pytest.raises(ValueError, match="targets"):
        SpectralRegularizer(targets=np.array(float("nan")), weight=1.0)


def test_reconstruction_only_model_on_too_short_windows_says_so():
    # One SSM step per window: masked reconstruction needs 2. The lfp target is in the batch, so "no configured
    # head found its target" (what it said) sent the user looking for a missing key.
    cfg = tiny_training_config(n_train=4, n_val=4)
    heads = cfg["model"]["heads"]
    heads.pop("behavior"), heads.pop("forecast")
    heads["reconstruction"] = {"keys": ["lfp"], "mask_ratio": 0.25}
    cfg["model"]["perceiver"]["chunk_size"] = 4
    cfg["data"]["n_time"] = 16
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with pytest.raises(ValueError, match=r"1 step\(s\).*recon_lfp.*longer windows"):
        module.model(batch)


def test_hand_numbered_fif_recordings_are_not_taken_for_split_parts(tmp_path):
    # trial.fif, trial-1.fif, trial-2.fif: three whole recordings (no split pointer in trial.fif). Named like MNE's
    # split parts, two of the three were skipped as continuations: their data silently left out of training.
    mne = pytest.importorskip("mne", reason="FIF files are written with MNE")
    from models.data.files import find_recordings

    info = mne.create_info(["Fz", "Cz"], 250.0, "eeg")
    for name in ("trial", "trial-1", "trial-2"):
        mne.io.RawArray(np.zeros((2, 500)), info, verbose="error").save(tmp_path / f"{name}.fif", verbose="error")
    assert [p.name for p in find_recordings(tmp_path)] == ["trial-1.fif", "trial-2.fif", "trial.fif"]
