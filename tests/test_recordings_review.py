"""Recordings as researchers have them: CSV/npz/FIF edge cases and BIDS discovery (review round 6b)."""
from __future__ import annotations

import numpy as np
import pytest

from models.data.readers import read_recording


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ CSV


def test_csv_without_header_is_refused_not_read_with_numbers_as_names(tmp_path):
    path = _write(tmp_path, "nohead.csv", "# fs=100\n0.1,0.2\n0.3,0.4\n0.5,0.6\n")
    with pytest.raises(ValueError, match=r"nohead\.csv.*no header row"):
        read_recording(path)


def test_csv_numbered_channel_header_still_reads(tmp_path):
    rec = read_recording(_write(tmp_path, "numbered.csv", "# fs=100\n1,2\n4,5\n7,8\n"))
    assert rec.channel_names == ("1", "2")
    np.testing.assert_array_equal(rec.data, [[4, 7], [5, 8]])


def test_csv_semicolons_with_decimal_commas(tmp_path):
    rec = read_recording(_write(tmp_path, "excel.csv", "# fs=100\nFz;Cz\n1,5;2,5\n3,5;4,5\n5,5;6,5\n"))
    assert rec.channel_names == ("Fz", "Cz")
    np.testing.assert_allclose(rec.data, [[1.5, 3.5, 5.5], [2.5, 4.5, 6.5]])


def test_csv_semicolons_with_decimal_points(tmp_path):
    rec = read_recording(_write(tmp_path, "semi.csv", "# fs=100\nFz;Cz\n1.5;2\n3;4\n"))
    np.testing.assert_allclose(rec.data, [[1.5, 3.0], [2.0, 4.0]])


@pytest.mark.parametrize("text", ["# fs=100\nFz,Cz\n1,2,\n4,5,\n7,8,\n",
                                  "time,Fz,Cz\n0,1,2,\n0.01,4,5,\n0.02,7,8,\n"])
def test_csv_trailing_separator_on_data_rows_keeps_channels_in_place(tmp_path, text):
    rec = read_recording(_write(tmp_path, "trail.csv", text))
    assert rec.fs == 100.0 and rec.channel_names == ("Fz", "Cz")
    np.testing.assert_array_equal(rec.data, [[1, 4, 7], [2, 5, 8]])


def test_csv_rows_longer_than_header_are_refused(tmp_path):
    path = _write(tmp_path, "long.csv", "# fs=100\nFz,Cz\n1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"long\.csv.*1 more value"):
        read_recording(path)


@pytest.mark.parametrize("line", ["# fs = 250", "# fs=250Hz", "# recorded at fs=250 Hz"])
def test_csv_fs_line_spellings(tmp_path, line):
    assert read_recording(_write(tmp_path, "fs.csv", f"{line}\nFz\n1\n2\n3\n")).fs == 250.0


# ------------------------------------------------------------------------------------------------ npz


def test_npz_time_major_data_is_refused(tmp_path):
    path = tmp_path / "tc.npz"
    np.savez(path, data=np.zeros((1000, 4)), fs=250.0)
    with pytest.raises(ValueError, match=r"tc\.npz.*\(time, channels\).*data\.T"):
        read_recording(path)


def test_npz_time_major_data_with_names_is_refused(tmp_path):
    path = tmp_path / "tc_named.npz"
    np.savez(path, data=np.zeros((3, 2)), fs=250.0, channel_names=np.array(["Fz", "Cz"]))
    with pytest.raises(ValueError, match=r"tc_named\.npz.*\(time, channels\)"):
        read_recording(path)


def test_npz_int16_channels_major_reads(tmp_path):
    path = tmp_path / "i16.npz"
    np.savez(path, data=np.arange(10, dtype=np.int16).reshape(2, 5), fs=np.int64(250))
    rec = read_recording(path)
    assert rec.data.dtype == np.float64 and rec.data.shape == (2, 5) and rec.fs == 250.0


# ------------------------------------------------------------------------------------------------ FIF


def test_fif_bad_channels_are_left_out(tmp_path):
    mne = pytest.importorskip("mne", reason="FIF files are written with MNE")
    info = mne.create_info(["Fz", "Cz", "Pz", "STI 014"], 100.0, ["eeg", "eeg", "eeg", "stim"])
    x = np.random.default_rng(0).normal(size=(4, 500)) * 1e-5
    x[3] = 0
    raw = mne.io.RawArray(x, info, verbose="error")
    raw.info["bads"] = ["Pz"]
    raw.save(tmp_path / "a_raw.fif", verbose="error")
    rec = read_recording(tmp_path / "a_raw.fif")
    assert rec.channel_names == ("Fz", "Cz") and rec.meta["bad_channels"] == ("Pz",)
    np.testing.assert_allclose(rec.data, x[:2], rtol=1e-6)
    with pytest.raises(ValueError, match=r"marked bad"):
        read_recording(tmp_path / "a_raw.fif", channels=["Pz"])


# ------------------------------------------------------------------------------------------------ discovery


def _touch(root, *rels):
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_discover_skips_hidden_folders(tmp_path):
    from fmx.fingerprint.discover import discover

    root = tmp_path / "my data ü"
    _touch(root, "sub-03/eeg/sub-03_task-rest_eeg.fif", ".ipynb_checkpoints/sub-03_task-rest_eeg.fif",
           ".Trash/sub-04_task-rest_eeg.fif", "sub-02/eeg/._sub-02_task-rest_eeg.edf")
    frame = discover(str(root))
    assert frame["subject"].tolist() == ["sub-03"]
    assert frame["path"].tolist() == [str(root / "sub-03/eeg/sub-03_task-rest_eeg.fif")]


def test_participants_na_keeps_numeric_columns_numeric(tmp_path):
    from fmx.fingerprint.discover import discover

    _touch(tmp_path, "sub-01/eeg/sub-01_task-rest_eeg.edf", "sub-02/eeg/sub-02_task-rest_eeg.edf")
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tgroup\nsub-01\t30\tA\nsub-02\tn/a\tB\nsub-09\t40\tA\n")
    frame = discover(str(tmp_path))
    assert frame["age"].dtype == np.float64
    assert frame["age"].iloc[0] == 30.0 and np.isnan(frame["age"].iloc[1])
    assert frame["group"].tolist() == ["A", "B"]


# ------------------------------------------------------------------------------------------------ links and split files


def test_discover_follows_linked_subject_folders(tmp_path):
    import os

    from fmx.fingerprint.discover import discover

    store, root = tmp_path / "store", tmp_path / "cohort"
    _touch(store, "sub-01/eeg/sub-01_task-rest_eeg.edf", "sub-02/eeg/sub-02_task-rest_eeg.edf")
    _touch(root, "sub-03/eeg/sub-03_task-rest_eeg.edf")
    os.symlink(store / "sub-01", root / "sub-01")
    os.symlink(store / "sub-02", root / "sub-02")
    os.symlink(root, root / "sub-03" / "loop")  # a link loop ends, each file listed once
    frame = discover(str(root))
    assert frame["subject"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert frame["path"].iloc[0] == str(root / "sub-01/eeg/sub-01_task-rest_eeg.edf")


def test_split_fif_continuation_is_not_a_second_recording(tmp_path):
    mne = pytest.importorskip("mne", reason="FIF files are written with MNE")
    from models.data.files import find_recordings, load_recordings

    raw = mne.io.RawArray(np.random.default_rng(0).normal(size=(8, 400_000)) * 1e-5,
                          mne.create_info(8, 1000.0, "eeg"), verbose="error")
    raw.save(tmp_path / "x_raw.fif", split_size="10MB", buffer_size_sec=1, verbose="error")
    assert (tmp_path / "x_raw-1.fif").is_file()
    paths = find_recordings(tmp_path)
    assert paths == [tmp_path / "x_raw.fif"]
    assert load_recordings(paths)[0].data.shape == (8, 400_000)


def test_discover_skips_bids_split_continuations(tmp_path):
    from fmx.fingerprint.discover import discover

    _touch(tmp_path, "sub-01/meg/sub-01_task-rest_split-01_meg.fif", "sub-01/meg/sub-01_task-rest_split-02_meg.fif",
           "sub-02/meg/sub-02_task-rest_meg.fif")
    frame = discover(str(tmp_path))
    assert frame["subject"].tolist() == ["sub-01", "sub-02"]
    assert frame["path"].iloc[0].endswith("sub-01_task-rest_split-01_meg.fif")


def _write_bdf(path, signals, labels, fs, units, phys_min, phys_max):
    """A minimal BioSemi-style 24-bit BDF (one-second records), written by hand as no library here writes BDF."""
    n, n_rec = len(signals), len(signals[0]) // fs

    def field(value, width):
        return str(value).ljust(width)[:width].encode("latin-1")

    head = (b"\xffBIOSEMI" + field("X X X X", 80) + field("Startdate X X X X", 80) + field("01.01.20", 8)
            + field("00.00.00", 8) + field(256 * (n + 1), 8) + field("24BIT", 44) + field(n_rec, 8) + field(1, 8)
            + field(n, 4))
    for values, width in ((labels, 16), ([""] * n, 80), (units, 8), (phys_min, 8), (phys_max, 8),
                          ([-8388608] * n, 8), ([8388607] * n, 8), ([""] * n, 80), ([fs] * n, 8), ([""] * n, 32)):
        head += b"".join(field(v, width) for v in values)
    body = bytearray()
    for r in range(n_rec):
        for sig in signals:
            seg = np.asarray(sig[r * fs:(r + 1) * fs], dtype=np.int64) & 0xFFFFFF
            body += np.stack([seg & 0xFF, (seg >> 8) & 0xFF, (seg >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    path.write_bytes(head + bytes(body))


def test_bdf_status_trigger_codes_ignore_biosemi_system_bits(tmp_path):
    pytest.importorskip("mne", reason="BDF files are read with MNE")
    fs = 256
    status = np.full(4 * fs, 0xFF0000, dtype=np.int64)  # system bits set the whole time, as a BioSemi amplifier
    status[300:310] |= 5
    status[700:720] |= 12
    status[900:] &= ~(1 << 20)  # the CMS-in-range bit drops: a system change, not a trigger
    _write_bdf(tmp_path / "a.bdf", [np.arange(4 * fs) % 100, status], ["Fz", "Status"], fs, ["uV", "Boolean"],
               [-262144, -8388608], [262143, 8388607])
    rec = read_recording(tmp_path / "a.bdf")
    assert rec.channel_names == ("Fz",) and rec.meta["stim_channels"] == ("Status",)
    np.testing.assert_allclose(rec.meta["events"], [[300 / fs, 5], [700 / fs, 12]])
    np.testing.assert_allclose(np.diff(rec.data[0, :3]), 2 * [524287 / 16777215 * 1e-6], rtol=1e-6)  # 1/32 uV a step


def test_csv_spaces_after_separators_do_not_rename_channels(tmp_path):
    rec = read_recording(_write(tmp_path, "spaced.csv", "time, Fz, Cz\n0, 1, 2\n0.01, 4, 5\n"))
    assert rec.fs == 100.0 and rec.channel_names == ("Fz", "Cz")
    np.testing.assert_array_equal(rec.data, [[1, 4], [2, 5]])


def test_participants_listed_twice_is_named(tmp_path):
    from fmx.fingerprint.discover import discover

    _touch(tmp_path, "sub-01/eeg/sub-01_task-rest_eeg.edf", "sub-02/eeg/sub-02_task-rest_eeg.edf")
    (tmp_path / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t31\nsub-01 \t30\n")
    with pytest.raises(ValueError, match=r"participants\.tsv: participant_id \['sub-01'\] listed more than once"):
        discover(str(tmp_path))


def test_nwb_channels_major_data_names_the_transpose(tmp_path):
    import datetime
    import warnings

    pynwb = pytest.importorskip("pynwb", reason="NWB files are written with pynwb")
    from pynwb.ecephys import ElectricalSeries

    nwb = pynwb.NWBFile(session_description="x", identifier="id",
                        session_start_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    group = nwb.create_electrode_group("g", description="", location="", device=nwb.create_device("d"))
    for _ in range(3):
        nwb.add_electrode(group=group, location="ctx")
    region = nwb.create_electrode_table_region([0, 1, 2], "all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb warns about the shape on write, as it should
        nwb.add_acquisition(ElectricalSeries(name="es", data=np.zeros((3, 1000)), electrodes=region, rate=1000.0))
        with pynwb.NWBHDF5IO(str(tmp_path / "t.nwb"), "w") as io:
            io.write(nwb)
        with pytest.raises(ValueError, match=r"t\.nwb: es\.data.*\(channels, time\).*write data\.T"):
            read_recording(tmp_path / "t.nwb")  # pynwb warns again on read


def test_files_dataset_skips_bids_behaviour_tables(tmp_path):
    from models.data.files import find_recordings

    _touch(tmp_path, "sub-01/eeg/sub-01_task-nback_eeg.edf", "sub-01/beh/sub-01_task-nback_beh.tsv")
    assert find_recordings(tmp_path) == [tmp_path / "sub-01/eeg/sub-01_task-nback_eeg.edf"]


def test_discover_takes_the_session_from_its_folder_when_the_name_lacks_it(tmp_path):
    from fmx.fingerprint.discover import discover

    _touch(tmp_path, "sub-01/ses-pre/eeg/sub-01_task-rest_eeg.edf", "sub-01/ses-post/eeg/sub-01_task-rest_eeg.edf",
           "sub-02/ses-pre/eeg/sub-02_ses-pre_task-rest_run-1_eeg.edf")
    frame = discover(str(tmp_path))
    assert list(zip(frame["subject"], frame["session"])) == [("sub-01", "ses-post"), ("sub-01", "ses-pre"),
                                                            ("sub-02", "ses-pre")]
