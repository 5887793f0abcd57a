"""Review round: data loading bugs a user hits, each pinned by a test that failed before its fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data.readers import read_recording


def _write_edf(path: Path, signals: list[np.ndarray], labels: list[str], fs: int, *, bdf: bool = False,
               annotations: list[tuple[float, str]] | None = None, codes: tuple[str, ...] = ()) -> None:
    """A tiny EDF(+)/BDF(+) file by hand: ASCII header, 1 s records of little-endian 16/24-bit integers.

    Signals are digital values; every physical range is -100..100 uV over the full digital range, so
    one digital step is 200e-6 V / 2**bits, except channels named in ``codes`` (trigger channels: physical
    = digital, no unit). ``annotations`` adds an ``EDF/BDF Annotations`` channel.
    """
    labels = list(labels) + ([("BDF" if bdf else "EDF") + " Annotations"] if annotations is not None else [])
    width = 3 if bdf else 2
    ann_samples = 64 // width
    rates = [fs] * len(signals) + ([ann_samples] if annotations is not None else [])
    n_records = len(signals[0]) // fs if signals else 2
    ns = len(labels)

    def field(value, n):
        return str(value).ljust(n).encode("ascii")

    plus = annotations is not None
    reserved = ("BDF+C" if bdf else "EDF+C") if plus else ("24BIT" if bdf else "")
    header = (b"\xffBIOSEMI" if bdf else field("0", 8)) + field("X X X X", 80) + field("Startdate 01-JAN-2020 X", 80)
    header += field("01.01.20", 8) + field("00.00.00", 8) + field(256 * (ns + 1), 8) + field(reserved, 44)
    header += field(n_records, 8) + field(1, 8) + field(ns, 4)
    dmin, dmax = (-(2 ** 23), 2 ** 23 - 1) if bdf else (-(2 ** 15), 2 ** 15 - 1)
    raw_codes = [lab in codes or "Annotations" in lab for lab in labels]
    columns = [[field(label, 16) for label in labels], [field("", 80)] * ns,
               [field("" if c else "uV", 8) for c in raw_codes], [field(dmin if c else -100, 8) for c in raw_codes],
               [field(dmax if c else 100, 8) for c in raw_codes], [field(dmin, 8)] * ns, [field(dmax, 8)] * ns,
               [field("", 80)] * ns,
               [field(r, 8) for r in rates], [field("", 32)] * ns]
    header += b"".join(b"".join(col) for col in columns)
    body = bytearray()
    for r in range(n_records):
        for x in signals:
            chunk = np.asarray(x[r * fs:(r + 1) * fs], dtype=np.int64) & (2 ** (8 * width) - 1)
            body += b"".join(int(v).to_bytes(width, "little") for v in chunk)
        if annotations is not None:
            tal = f"+{r}\x14\x14\x00".encode()
            if r == 0:
                tal += b"".join(f"+{onset}\x14{text}\x14\x00".encode() for onset, text in annotations)
            body += tal.ljust(ann_samples * width, b"\x00")
    path.write_bytes(header + bytes(body))


FS_EDF = 64


@pytest.fixture
def eeg_digital() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(-1000, 1000, 4 * FS_EDF) for _ in range(2)]


@pytest.mark.parametrize("bdf,status_label", [(True, "Status"), (False, "Trigger")])
def test_status_and_annotation_channels_are_not_signal(tmp_path, eeg_digital, bdf, status_label):
    # A BDF 'Status' (or EDF 'Trigger') channel holds trigger codes, not volts: read as EEG it put
    # integers (1, 2, ...) beside microvolt signals and into every window the model saw.
    status = np.zeros(4 * FS_EDF, dtype=np.int64)
    status[10:12], status[100] = 1, 2
    path = tmp_path / f"sub-01_task-x_eeg.{'bdf' if bdf else 'edf'}"
    _write_edf(path, [*eeg_digital, status], ["Fz", "Cz", status_label], FS_EDF, bdf=bdf,
               annotations=[(0.5, "go")], codes=(status_label,))
    rec = read_recording(path)
    assert rec.channel_names == ("Fz", "Cz")
    step = 200e-6 / 2 ** (24 if bdf else 16)
    np.testing.assert_allclose(rec.data, np.stack(eeg_digital) * step, atol=2 * step)
    assert rec.meta["stim_channels"] == (status_label,)
    # trigger onsets (seconds from the first sample) and values, and the EDF+/BDF+ annotations
    np.testing.assert_allclose(rec.meta["events"], [[10 / FS_EDF, 1], [100 / FS_EDF, 2]])
    assert rec.meta["annotations"] == ((0.5, 0.0, "go"),)
    with pytest.raises(ValueError, match=rf"channels: \['{status_label}'\] not in"):
        read_recording(path, channels=[status_label])


def test_file_with_no_signal_channel_names_it(tmp_path):
    # A Sleep-EDF '*-Hypnogram.edf' beside its PSG holds only 'EDF Annotations': MNE's "picks yielded
    # no channels" came out as "check that the file is complete".
    path = tmp_path / "triggers.bdf"
    _write_edf(path, [np.zeros(2 * FS_EDF, dtype=np.int64)], ["Status"], FS_EDF, bdf=True, codes=("Status",))
    with pytest.raises(ValueError, match=r"triggers\.bdf: holds no signal channel, only trigger/status .*'Status'"):
        read_recording(path)
    hypnogram = tmp_path / "SC4001EC-Hypnogram.edf"
    _write_edf(hypnogram, [], [], FS_EDF, annotations=[(0, "Sleep stage W")])
    with pytest.raises(ValueError, match=r"Hypnogram\.edf: holds no signal channel.*1 annotation"):
        read_recording(hypnogram)


# ------------------------------------------------------------------------------- files datamodule


def _files(root: Path, seed: int = 0, **data) -> dict:
    return {"data": {"name": "files", "root": str(root), "window": 100, **data}, "trainer": {"batch_size": 4},
            "seed": seed}


def test_nan_samples_are_refused_with_file_channel_and_time(tmp_path):
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1000))
    x[1, 500] = np.nan  # a CSV gap or a dropped NWB sample: every window over it trained on NaN
    np.savez(tmp_path / "gap.npz", data=x, fs=100.0, channel_names=np.array(["Fz", "Cz"]))
    np.savez(tmp_path / "ok.npz", data=rng.standard_normal((2, 1000)), fs=100.0)
    with pytest.raises(ValueError, match=r"gap\.npz: 1 non-finite sample.*'Cz'.*5\.0 s"):
        build_datamodule(_files(tmp_path, val_fraction=0.5))


def test_a_short_file_does_not_take_a_whole_split(tmp_path):
    # A file shorter than one window yields nothing. The split used to come first: a seed that held it
    # out as the validation file failed with "longer than every recording", others wasted a file on it.
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(1)
    for k in range(4):
        np.savez(tmp_path / f"long{k}.npz", data=rng.standard_normal((2, 1000)), fs=100.0)
    np.savez(tmp_path / "short.npz", data=rng.standard_normal((2, 50)), fs=100.0)
    for seed in range(6):
        dm = build_datamodule(_files(tmp_path, seed=seed))
        assert len(dm.val_set) == 10 and len(dm.train_set) == 30
        assert "short.npz" not in {Path(f).name for f in dm.info["train_files"] + dm.info["val_files"]}


def test_resample_to_a_rate_the_ratio_only_approximates(tmp_path):
    # 173.61 Hz (the Bonn EEG rate) -> 250 Hz is 25000/17361, approximated to 1/1000: 249.9984 Hz,
    # which was then refused as "different rates" although data.resample_hz was set.
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(2)
    np.savez(tmp_path / "bonn.npz", data=rng.standard_normal((1, 1736)), fs=173.61)
    np.savez(tmp_path / "eeg.npz", data=rng.standard_normal((1, 2500)), fs=250.0)
    dm = build_datamodule(_files(tmp_path, resample_hz=250, val_fraction=0.5))
    assert dm.info["fs"] == 250.0 and dm.train_set.fs == dm.val_set.fs == 250.0


def test_picked_channels_share_ids_across_spellings(tmp_path):
    # data.channels matches names case-insensitively; the vocabulary must not split 'FZ' and 'Fz'.
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(3)
    np.savez(tmp_path / "a.npz", data=rng.standard_normal((2, 500)), fs=100.0, channel_names=np.array(["FZ", "CZ"]))
    np.savez(tmp_path / "b.npz", data=rng.standard_normal((2, 500)), fs=100.0, channel_names=np.array(["Cz", "Fz"]))
    dm = build_datamodule(_files(tmp_path, channels=["Fz", "Cz"], val_fraction=0.5))
    assert dm.info["channel_names"] == ["Cz", "Fz"]
    assert dm.train_set[0]["eeg_channel_ids"].tolist() == dm.val_set[0]["eeg_channel_ids"].tolist() == [1, 0]


def test_rate_from_time_stamps_is_not_float_noise(tmp_path):
    # A 'time' column that starts at 3600 s gave 250.00000000591172 Hz, so two 250 Hz CSVs were
    # refused by the files dataset as having "different rates".
    import pandas as pd

    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(4)
    for k, start in enumerate([0.0, 3600.0, 123.456]):
        frame = pd.DataFrame(rng.standard_normal((1000, 2)), columns=["Fz", "Cz"])
        frame.insert(0, "time", start + np.arange(1000) / 250.0)
        frame.to_csv(tmp_path / f"r{k}.csv", index=False)
    assert [read_recording(p).fs for p in sorted(tmp_path.glob("*.csv"))] == [250.0] * 3
    assert build_datamodule(_files(tmp_path)).info["fs"] == 250.0


def test_a_single_name_string_is_one_name_not_letters(tmp_path):
    # From the command line, data.channels=Cz / data.modalities=lfp arrive as a string; iterated as
    # letters they failed with "channels: ['C', 'z'] not in ...".
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(6)
    for k in range(2):
        np.savez(tmp_path / f"r{k}.npz", data=rng.standard_normal((2, 500)), fs=100.0,
                 channel_names=np.array(["Fz", "Cz"]))
    dm = build_datamodule(_files(tmp_path, channels="Cz"))
    assert dm.info["channel_names"] == ["Cz"] and dm.train_set[0]["eeg"].shape == (1, 100)
    syn = build_datamodule({"data": {"name": "synthetic", "modalities": "lfp", "n_train": 2, "n_val": 1}})
    assert syn.info["modalities"] == ["lfp"] and set(syn.train_set[0]) == {"lfp", "lfp_mask", "subject", "fs"}


def test_csv_index_column_is_not_read_as_a_channel(tmp_path):
    # pandas' to_csv() writes the row index as a nameless first column ('Unnamed: 0'); it was read as
    # a channel holding the ramp 0, 1, 2, ...; a trailing tab in a TSV likewise became a NaN channel.
    import pandas as pd

    frame = pd.DataFrame(np.random.default_rng(7).standard_normal((50, 2)), columns=["Fz", "Cz"])
    indexed = tmp_path / "indexed.csv"
    indexed.write_text("# fs=100\n" + frame.to_csv())
    with pytest.raises(ValueError, match=r"indexed\.csv: column\(s\) \['Unnamed: 0'\] have no name.*index=False"):
        read_recording(indexed)
    trailing = tmp_path / "trailing.tsv"
    trailing.write_text("# fs=100\nFz\tCz\t\n" + "".join(f"{a}\t{b}\t\n" for a, b in frame.to_numpy()))
    with pytest.raises(ValueError, match=r"trailing\.tsv: column\(s\) \['Unnamed: 2'\] have no name"):
        read_recording(trailing)


def test_val_fraction_zero_is_refused_not_one_file(tmp_path):
    # val_fraction=0 still held out one file (the split keeps at least one): say so instead.
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(8)
    for k in range(3):
        np.savez(tmp_path / f"r{k}.npz", data=rng.standard_normal((1, 500)), fs=100.0)
    with pytest.raises(ValueError, match=r"data.val_fraction: must lie in \(0, 1\), got 0.0"):
        build_datamodule(_files(tmp_path, val_fraction=0))


def test_editing_a_window_in_place_leaves_the_recording_intact():
    # A one-channel window is a contiguous slice, so it came back as a view of the recording: an
    # in-place edit (x -= x.mean()) changed the data every later epoch and overlapping window read.
    from models.data.files import RecordingWindows
    from models.data.readers import Recording

    signal = np.arange(400, dtype=np.float32)[None]
    rec = Recording(data=signal.copy(), fs=100.0, channel_names=("emg",), meta={"path": "sub-01_emg.npz"})
    ds = RecordingWindows([rec], window=200, stride=100, key="emg")
    ds[0]["emg"].zero_()
    np.testing.assert_array_equal(ds[1]["emg"].numpy(), signal[:, 100:300])


def test_hidden_files_beside_recordings_are_skipped(tmp_path):
    # macOS writes '._name.edf' AppleDouble files when copying to exFAT/network drives, and Jupyter
    # keeps '.ipynb_checkpoints/' copies: read as recordings they failed the whole files dataset.
    from models.data.files import find_recordings

    rec = tmp_path / "sub-01" / "sub-01_eeg.npz"
    rec.parent.mkdir()
    np.savez(rec, data=np.zeros((1, 10)), fs=10.0)
    (tmp_path / "sub-01" / "._sub-01_eeg.npz").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "r-checkpoint.csv").write_text("# fs=10\nFz\n1\n2\n")
    assert find_recordings(tmp_path) == [rec]
    # a hidden folder above the root is the user's choice, not junk
    inner = tmp_path / ".cache" / "data"
    inner.mkdir(parents=True)
    np.savez(inner / "r.npz", data=np.zeros((1, 10)), fs=10.0)
    assert find_recordings(inner) == [inner / "r.npz"]


def test_npz_bytes_names_and_a_one_element_rate(tmp_path):
    # Names converted from HDF5/MATLAB arrive as bytes and were read as "b'Fz'" (so channels=['Fz']
    # failed); a rate stored as a 1-element array (loadmat's [[250]]) failed with a numpy TypeError.
    path = tmp_path / "rec.npz"
    np.savez(path, data=np.zeros((2, 10)), fs=np.array([[250.0]]), channel_names=np.array([b"Fz", b"Cz"]),
             units=np.bytes_(b"uV"))
    rec = read_recording(path, channels=["Fz"])
    assert rec.channel_names == ("Fz",) and rec.units == "uV" and rec.fs == 250.0
    np.savez(path, data=np.zeros((2, 10)), fs=np.array([250.0, 500.0]))
    with pytest.raises(ValueError, match=r"rec\.npz: 'fs' must be one number in Hz, got shape \(2,\)"):
        read_recording(path)
    cohort = tmp_path / "cohort.npz"
    np.savez(cohort, rr_ms=np.full(6, 800), offsets=np.array([0, 3, 6]), subject_ids=np.array([b"nsr1", b"chf1"]),
             group=np.array([b"NSR", b"CHF"]))
    one = read_recording(cohort, subject="chf1")
    assert one.meta["subject"] == "chf1" and one.meta["group"] == "CHF"


def test_unknown_batch_key_is_named(tmp_path):
    # data.key=ecg (not a batch key) built a batch no tokenizer reads and no collate mask covers; the
    # model then failed far away with "needs at least one time-aligned modality".
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(9)
    for k in range(2):
        np.savez(tmp_path / f"r{k}.npz", data=rng.standard_normal((1, 500)), fs=100.0)
    with pytest.raises(ValueError, match=r"data.key: 'ecg' is not a continuous batch key; use one of \['lfp', 'eeg'"):
        build_datamodule(_files(tmp_path, key="ecg"))
    assert "emg_mask" in next(iter(build_datamodule(_files(tmp_path, key="emg")).train_dataloader()))


def test_absolute_pattern_is_a_named_error(tmp_path):
    # pathlib's NotImplementedError("Non-relative patterns are unsupported") named neither field nor fix.
    from models.data.files import find_recordings

    np.savez(tmp_path / "r.npz", data=np.zeros((1, 10)), fs=10.0)
    with pytest.raises(ValueError, match=r"data.pattern: .* is an absolute path; give a glob relative to data.root"):
        find_recordings(tmp_path, str(tmp_path / "*.npz"))


def test_negative_synthetic_seed_is_named():
    # numpy's SeedSequence said only "expected non-negative integer".
    from models.data import SyntheticConfig

    with pytest.raises(ValueError, match=r"data.seed: must be an integer >= 0, got -1"):
        SyntheticConfig(seed=-1)


@pytest.mark.parametrize("dated", [False, True])
def test_fif_events_and_annotations_count_from_the_first_sample(tmp_path, dated):
    # A FIF cropped from a longer recording starts at first_samp > 0: onsets must not include it.
    from datetime import datetime, timezone

    import mne

    x = np.random.default_rng(10).standard_normal((3, 1000)) * 1e-5
    x[2] = 0
    x[2, 300:305], x[2, 600] = 5, 3
    raw = mne.io.RawArray(x, mne.create_info(["a", "b", "STI 014"], 100.0, ["eeg", "eeg", "stim"]),
                          first_samp=300, verbose="error")
    raw.set_meas_date(datetime(2020, 1, 1, tzinfo=timezone.utc) if dated else None)
    raw.set_annotations(mne.Annotations([2.5], [0.5], ["blink"]))  # seconds from the first sample
    raw.save(tmp_path / "cut_raw.fif", verbose="error")
    rec = read_recording(tmp_path / "cut_raw.fif")
    assert rec.channel_names == ("a", "b") and rec.meta["stim_channels"] == ("STI 014",)
    np.testing.assert_allclose(rec.meta["events"], [[3.0, 5], [6.0, 3]])
    assert rec.meta["annotations"] == ((2.5, 0.5, "blink"),)


def test_files_datamodule_test_split_error_gives_advice_that_works(tmp_path):
    # It said "set data.n_test", a key the files dataset refuses as unknown.
    from models.data.datamodule import build_datamodule

    rng = np.random.default_rng(11)
    for k in range(2):
        np.savez(tmp_path / f"r{k}.npz", data=rng.standard_normal((1, 500)), fs=100.0)
    dm = build_datamodule(_files(tmp_path))
    with pytest.raises(ValueError, match=r"no test split.*the files dataset has train and validation only"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_test'\]"):
        build_datamodule(_files(tmp_path, n_test=4))
