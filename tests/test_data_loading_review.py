"""Review of data loading: resumable train loader (mid-epoch resume) and reading real/odd files."""
from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from models.data.datamodule import NeuroDataModule, build_datamodule
from models.data.resumable import ResumableDataLoader, ResumableSampler


class _Ids(Dataset):
    """Sample i carries its own index, so a fit can record exactly which samples it trained on."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)])}


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int, tuple[int, ...]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch_idx, tuple(int(v) for v in batch["x"][:, 0])))
        return (self.w * batch["x"]).sum() ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(tmp_path, name, *, ckpt_path=None, num_workers=0, max_epochs=2, limit=None):
    dm = NeuroDataModule(train=_Ids(18), val=_Ids(4), batch_size=4, num_workers=num_workers, seed=5)
    module = _Recorder()
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=2, save_top_k=-1,
                                        filename="{step}")
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[ckpt],
                         limit_train_batches=limit)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_resumed_mid_epoch_trains_on_exactly_the_batches_left(tmp_path, num_workers):
    full = _fit(tmp_path, "full", num_workers=num_workers)
    assert len(full) == 10  # 18 samples, batch 4: 5 batches per epoch, 2 epochs
    assert sorted(i for _, _, ids in full[:5] for i in ids) == list(range(18))
    assert [ids for *_, ids in full[:5]] != [ids for *_, ids in full[5:]]  # a new order each epoch
    # step 2 (epoch 0, 2 of 5 done) and step 8 (epoch 1, 3 of 5 done)
    for step in (2, 8):
        resumed = _fit(tmp_path, f"r{step}", ckpt_path=tmp_path / "full" / f"step={step}.ckpt",
                       num_workers=num_workers)
        assert resumed == full[step:], step
    # a checkpoint written by a resumed fit resumes at its own position too (step 4 of the run from step 2)
    again = _fit(tmp_path, "again", ckpt_path=tmp_path / "r2" / "step=4.ckpt", num_workers=num_workers)
    assert again == full[4:]


def test_fit_resumed_from_end_of_epoch_checkpoint_starts_next_epoch(tmp_path):
    full = _fit(tmp_path, "full", max_epochs=3)
    resumed = _fit(tmp_path, "r", ckpt_path=tmp_path / "full" / "step=10.ckpt", max_epochs=3)
    assert resumed == full[10:]
    # limit_train_batches ends each epoch after 4 of the loader's 5 batches: step 4 ends epoch 0
    short = _fit(tmp_path, "short", max_epochs=2, limit=4)
    assert len(short) == 8 and _fit(tmp_path, "rs", ckpt_path=tmp_path / "short" / "step=4.ckpt", limit=4) == short[4:]


def test_resume_skips_no_warning_and_ddp_ranks_resume_their_own_shard():
    data = _Ids(19)

    def loader(rank):
        return ResumableDataLoader(data, sampler=ResumableSampler(data, num_replicas=2, rank=rank, seed=3),
                                   batch_size=3)

    for rank in (0, 1):
        ref = loader(rank)
        ref.sampler.set_epoch(4)
        batches = [b["x"][:, 0].long().tolist() for b in ref]
        it = iter(ref)
        next(it), next(it)
        state = ref.state_dict()
        assert state["epoch"] == 4 and state["batches"] == 2
        fresh = loader(rank)
        fresh.load_state_dict(state)
        assert [b["x"][:, 0].long().tolist() for b in fresh] == batches[2:]
        assert [b["x"][:, 0].long().tolist() for b in fresh] == batches  # the skip applies to the resumed pass only
    shards = [sum((b["x"][:, 0].long().tolist() for b in loader(r)), []) for r in (0, 1)]
    assert set(shards[0]) | set(shards[1]) == set(range(19)) and len(shards[0]) == len(shards[1]) == 10


def test_resume_with_other_batch_size_restarts_the_epoch_with_a_warning(caplog):
    data = _Ids(12)
    a = ResumableDataLoader(data, sampler=ResumableSampler(data, seed=1), batch_size=3)
    it = iter(a)
    next(it)
    b = ResumableDataLoader(data, sampler=ResumableSampler(data, seed=1), batch_size=4)
    with caplog.at_level(logging.WARNING):
        b.load_state_dict(a.state_dict())
    assert "batch_size" in caplog.text and len(list(b)) == 3


def test_built_datamodules_train_loader_is_resumable_and_seeded():
    cfg = {"seed": 3, "data": {"name": "synthetic", "n_train": 10, "n_val": 2, "batch_size": 4}}
    dl = build_datamodule(cfg).train_dataloader()
    assert hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict")
    first = [b["subject"].tolist() + b["lfp"].sum((1, 2)).tolist() for b in dl]
    torch.manual_seed(123)  # the order depends on (seed, epoch), not on the global RNG
    again = [b["subject"].tolist() + b["lfp"].sum((1, 2)).tolist() for b in build_datamodule(cfg).train_dataloader()]
    assert first == again


class _RankRecorder(_Recorder):
    """Writes what this rank trained on when the (spawned) fit ends."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self) -> None:
        import json
        from pathlib import Path

        Path(f"{self.out}.{self.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow  # two spawned gloo processes per fit, three fits: about 30 s on 2 cores
def test_ddp_fit_resumed_mid_epoch_each_rank_continues_its_shard(tmp_path):
    import json

    def fit(name, ckpt_path=None):
        dm = NeuroDataModule(train=_Ids(30), val=_Ids(4), batch_size=4, seed=5)
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=2, save_top_k=-1,
                                            filename="{step}")
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             callbacks=[ckpt])
        trainer.fit(_RankRecorder(str(tmp_path / name)), datamodule=dm, ckpt_path=ckpt_path)
        return [[tuple(map(int, s[:2])) + (tuple(s[2]),) for s in json.loads((tmp_path / f"{name}.{r}.json")
                                                                               .read_text())] for r in (0, 1)]

    full = fit("full")
    assert len(full[0]) == len(full[1]) == 8  # 15 samples per rank, batch 4: 4 batches per epoch
    assert {i for rank in full for *_, ids in rank[:4] for i in ids} == set(range(30))
    resumed = fit("resumed", ckpt_path=tmp_path / "full" / "step=6.ckpt")  # epoch 1, 2 of 4 done
    assert resumed == [full[0][6:], full[1][6:]]


# ----------------------------------------------------------------------------- reading real and odd files
def _npz(path, data, fs, names=None):
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if names is None else {"channel_names": np.array(names)}
    np.savez(path, data=np.asarray(data, np.float32), fs=fs, **extra)
    return path


def _files_cfg(root, **data):
    return {"seed": 0, "data": {"name": "files", "root": str(root), **data}}


def test_symlinked_subject_folder_is_read_and_a_linked_file_counted_once(tmp_path):
    """Data roots are often folders of links to subject folders kept elsewhere: ``**`` must follow them
    (pathlib's glob did not: the linked subjects were dropped silently), and a file reachable twice
    (a link beside its target) is one recording, not two that can land in train and validation."""
    import os

    import numpy as np

    from models.data.files import find_recordings

    store, root = tmp_path / "store", tmp_path / "root"
    _npz(store / "sub-02" / "eeg" / "r.npz", np.zeros((1, 10)), 10.0)
    own = _npz(root / "sub-01" / "eeg" / "r.npz", np.zeros((1, 10)), 10.0)
    os.symlink(store / "sub-02", root / "sub-02")
    os.symlink(own, root / "latest.npz")
    os.symlink(root, root / "sub-01" / "loop")  # a link loop ends, and adds nothing
    assert find_recordings(root) == [own, root / "sub-02" / "eeg" / "r.npz"]
    assert find_recordings(root, "sub-*/eeg/*.npz") == [own, root / "sub-02" / "eeg" / "r.npz"]


def test_channel_names_differing_only_in_case_share_one_id(tmp_path):
    """EDF exports spell one electrode 'FP1' or 'Fp1': picked channels already share an id; unpicked ones
    got two ids (two embeddings for one electrode)."""
    import numpy as np

    _npz(tmp_path / "a.npz", np.ones((2, 50)), 10.0, ["Cz", "Fp1"])
    _npz(tmp_path / "b.npz", np.ones((2, 50)), 10.0, ["CZ", "FP1"])
    dm = build_datamodule(_files_cfg(tmp_path, window=10))
    assert dm.info["channel_names"] == ["CZ", "FP1"]
    ids = {tuple(dm.train_set[0]["eeg_channel_ids"].tolist()), tuple(dm.val_set[0]["eeg_channel_ids"].tolist())}
    assert len(ids) == 1 and dm.info["n_channel_ids"] == 2


@pytest.mark.parametrize("field, value", [("max_files", -1), ("stride", 0), ("val_stride", 0), ("window", 2.5),
                                          ("stride", "ten"), ("max_files", 1.5)])
def test_bad_window_fields_are_named_not_reinterpreted(tmp_path, field, value):
    """stride=0 became stride=window, max_files=-1 dropped the last file, window=2.5 became 2."""
    import numpy as np

    for name in ("a", "b", "c"):
        _npz(tmp_path / f"{name}.npz", np.ones((1, 50)), 10.0)
    with pytest.raises(ValueError, match=f"data.{field}") as err:
        build_datamodule(_files_cfg(tmp_path, **{"window": 10, field: value}))
    assert repr(value) in str(err.value)


def _two_numbered(tmp_path):
    import numpy as np

    for name in ("a", "b"):
        _npz(tmp_path / f"{name}.npz", np.arange(1500.0).reshape(3, 500), 100.0, ["1", "2", "3"])


def test_numbered_channels_given_as_ints_are_picked_by_name(tmp_path):
    """Hydra reads data.channels=[1,2] as ints; numbered ECoG/iEEG channels are named '1', '2', ..."""
    _two_numbered(tmp_path)
    dm = build_datamodule(_files_cfg(tmp_path, window=50, channels=[3, 1]))
    assert dm.info["channel_names"] == ["1", "3"] and dm.train_set[0]["eeg"][:, 0].tolist() == [1000.0, 0.0]


@pytest.mark.parametrize("channels", [["2", "2"], ["1", None], ["1", 2.5]])
def test_bad_channel_lists_are_named(tmp_path, channels):
    _two_numbered(tmp_path)
    with pytest.raises(ValueError, match="data.channels"):
        build_datamodule(_files_cfg(tmp_path, window=50, channels=channels))


@pytest.mark.parametrize("field, value", [("resample_hz", "abc"), ("resample_hz", 0), ("val_fraction", "x"),
                                          ("val_fraction", None), ("seed", "x"), ("seed", 1.5), ("seed", -1)])
def test_bad_rate_fraction_and_seed_are_named(tmp_path, field, value):
    _two_numbered(tmp_path)
    with pytest.raises(ValueError, match=f"data.{field}") as err:
        build_datamodule(_files_cfg(tmp_path, **{"window": 50, field: value}))
    assert repr(value) in str(err.value)


def test_resample_hz_given_as_text_is_a_rate(tmp_path):
    _two_numbered(tmp_path)
    assert build_datamodule(_files_cfg(tmp_path, window=50, resample_hz="50")).info["fs"] == 50.0


def test_resampling_far_down_reaches_the_asked_rate_or_says_why():
    """The polyphase ratio was capped at 1/1000: 30 kHz to 25 Hz (1/1200) gave 30 Hz, silently."""
    import numpy as np

    from models.data.readers import Recording, resample

    rec = Recording(data=np.zeros((1, 60000)), fs=30000.0, channel_names=("a",))
    out = resample(rec, 25.0)
    assert out.fs == pytest.approx(25.0, rel=1e-3) and out.data.shape == (1, 50)
    with pytest.raises(ValueError, match="resample"):
        resample(rec, 1e-9)


class _Validating(_Recorder):
    def validation_step(self, batch, batch_idx):
        return None


def test_fit_resumed_from_a_mid_epoch_validation_checkpoint(tmp_path):
    """Checkpoints written after validation inside an epoch (val_check_interval) resume exactly too."""
    def fit(name, ckpt_path=None):
        module = _Validating()
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1, filename="{step}",
                                            save_on_train_epoch_end=False)
        pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, val_check_interval=2, num_sanity_val_steps=0, callbacks=[ckpt]).fit(
            module, datamodule=NeuroDataModule(train=_Ids(18), val=_Ids(4), batch_size=4, seed=5),
            ckpt_path=ckpt_path)
        return module.seen

    full = fit("full")
    assert fit("r", ckpt_path=tmp_path / "full" / "step=7.ckpt") == full[7:]  # epoch 1 after 2 of 5 batches


def test_csv_saved_with_a_byte_order_mark_keeps_its_rate_line(tmp_path):
    """Excel and Windows editors write UTF-8 with a BOM: the '# fs=100' first line was missed ('no sampling rate')."""
    from models.data.readers import read_recording

    path = tmp_path / "rec.csv"
    path.write_bytes(b"\xef\xbb\xbf# fs=100\nFz,Cz\n1,2\n2,3\n3,4\n")
    rec = read_recording(path)
    assert rec.fs == 100.0 and rec.channel_names == ("Fz", "Cz") and rec.data[:, 0].tolist() == [1.0, 2.0]
    rr = tmp_path / "beats.rr"
    rr.write_bytes(b"\xef\xbb\xbf800\n810\n")
    assert read_recording(rr).data.tolist() == [800.0, 810.0]


@pytest.mark.parametrize("data, trainer, field", [({"n_train": 2.5}, {}, "data.n_train"),
                                                  ({"n_val": "x"}, {}, "data.n_val"),
                                                  ({"batch_size": 2.5}, {}, "data.batch_size"),
                                                  ({}, {"batch_size": "eight"}, "trainer.batch_size"),
                                                  ({"num_workers": -1}, {}, "data.num_workers")])
def test_bad_synthetic_counts_are_named_not_truncated(data, trainer, field):
    with pytest.raises(ValueError, match=field):
        build_datamodule({"data": {"name": "synthetic", **data}, "trainer": trainer})


def test_truncated_edf_is_read_with_a_warning_naming_it(tmp_path, shared_data, caplog):
    """A copy cut short (half-downloaded) was read as a shorter recording without a word: MNE's warning that
    the header's record count does not match the file size was silenced."""
    from models.data.readers import read_recording

    whole = (shared_data / "eegmat-dev" / "sub-00" / "eeg" / "sub-00_task-rest_eeg.edf").read_bytes()
    cut = tmp_path / "sub 00 ü.edf"
    cut.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING, logger="models.data.readers"):
        rec = read_recording(cut)
    assert rec.data.shape[1] < 15000
    assert str(cut) in caplog.text and "60 s" in caplog.text and "file size" in caplog.text


def test_a_file_naming_two_channels_alike_is_refused(tmp_path):
    """Two channels named 'A' got one id (the model could not tell them apart); the fix is the file's names."""
    import numpy as np

    for name in ("a", "b"):
        _npz(tmp_path / f"{name}.npz", np.ones((2, 50)), 10.0, ["A", "A"])
    with pytest.raises(ValueError, match=r"a\.npz.*'A'.*rename"):
        build_datamodule(_files_cfg(tmp_path, window=10))
