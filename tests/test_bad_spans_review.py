"""Review round: MNE ``BAD`` annotations cut from training windows and fingerprints; EDF channels at mixed rates."""
from __future__ import annotations

import logging

import numpy as np
import pytest

mne = pytest.importorskip("mne", reason="the recording tests write FIF/EDF files with mne")

from fmx.fingerprint.recording import fit_recording, load_recording, measure_recording  # noqa: E402
from models.data.files import RecordingWindows, build_files_datamodule, load_recordings  # noqa: E402
from models.data.readers import Recording, read_recording, trim_flat_edges  # noqa: E402

FS = 250.0
FAST = {"fingerprint": {"measures": ["higuchi_fd", "katz_fd"]}, "fou": {"enable": False}}


def _write_fif(path, data, annotations=(), fs=FS, names=None):
    names = names or [f"EEG{i:03d}" for i in range(data.shape[0])]
    raw = mne.io.RawArray(data, mne.create_info(names, fs, "eeg"), verbose="error")
    if annotations:
        onset, duration, text = zip(*annotations)
        raw.set_annotations(mne.Annotations(list(onset), list(duration), list(text)))
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    return path


def _noise(n_ch, seconds, seed=0):
    return np.random.default_rng(seed).standard_normal((n_ch, int(seconds * FS))) * 1e-5


# --------------------------------------------------------------------------------------------------
# training windows: a window overlapping a BAD span is not used
# --------------------------------------------------------------------------------------------------
def test_windows_overlapping_bad_annotations_are_dropped(tmp_path, caplog):
    # 20 s, windows of 1 s: BAD_blink covers 2.0-2.5 s (window 2), 'bad muscle' 9.9-10.1 s (windows 9, 10);
    # 'Stim' is not a bad annotation (MNE's rule: the description starts with 'bad', any case)
    path = _write_fif(tmp_path / "sub-01_eeg.fif", _noise(2, 20),
                      [(2.0, 0.5, "BAD_blink"), (9.9, 0.2, "bad muscle"), (15.0, 1.0, "Stim")])
    recs = load_recordings([path])
    with caplog.at_level(logging.INFO, logger="models.data.files"):
        windows = RecordingWindows(recs, window=250, stride=250)
    starts = sorted(start for _, start in windows.index)
    assert starts == [k * 250 for k in range(20) if k not in (2, 9, 10)]
    assert windows.n_dropped_bad == 3
    assert "3 window(s)" in caplog.text and "BAD" in caplog.text
    kept = RecordingWindows(recs, window=250, stride=250, reject_by_annotation=False)
    assert len(kept) == 20 and kept.n_dropped_bad == 0


def test_window_that_only_touches_a_bad_span_is_kept(tmp_path):
    # BAD from 1.0 s to 2.0 s exactly: windows [0, 1) s and [2, 3) s do not overlap it
    path = _write_fif(tmp_path / "a_eeg.fif", _noise(1, 4), [(1.0, 1.0, "BAD_")])
    windows = RecordingWindows(load_recordings([path]), window=250, stride=250)
    assert sorted(start for _, start in windows.index) == [0, 500, 750]


def test_files_datamodule_reports_windows_dropped_for_bad_spans(tmp_path):
    root = tmp_path / "data"
    for k in range(3):
        _write_fif(root / f"sub-0{k}" / "eeg" / f"sub-0{k}_task-rest_eeg.fif", _noise(2, 8, seed=k),
                   [(1.0, 2.0, "BAD_movement")])
    cfg = {"data": {"name": "files", "root": str(root), "window": 250, "val_fraction": 0.34}}

    class Module:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    dm = build_files_datamodule(cfg, Module, 4)
    # each file: 8 windows, those over 1-3 s (windows 1 and 2) dropped
    assert len(dm.train) == 2 * 6 and len(dm.val) == 6
    assert dm.info["windows_dropped_bad"] == {"train": 4, "val": 2}
    cfg["data"]["reject_by_annotation"] = False
    assert len(build_files_datamodule(cfg, Module, 4).train) == 16


def test_recording_that_is_all_bad_names_the_bad_spans(tmp_path):
    path = _write_fif(tmp_path / "a_eeg.fif", _noise(1, 4), [(0.0, 4.0, "BAD_acq")])
    with pytest.raises(ValueError, match="BAD"):
        RecordingWindows(load_recordings([path]), window=250, stride=250)


def test_edf_bad_annotations_are_read_and_cut(tmp_path):
    raw = mne.io.RawArray(_noise(2, 10), mne.create_info(["Fz", "Cz"], FS, "eeg"), verbose="error")
    raw.set_annotations(mne.Annotations([4.0], [1.0], ["BAD_blink"]))
    path = tmp_path / "a_eeg.edf"
    mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    windows = RecordingWindows(load_recordings([path]), window=250, stride=250)
    assert sorted(start for _, start in windows.index) == [k * 250 for k in range(10) if k != 4]


# --------------------------------------------------------------------------------------------------
# time shifts: trimming the padding moves the annotations with the signal
# --------------------------------------------------------------------------------------------------
def test_trim_flat_edges_shifts_annotations():
    data = _noise(2, 10)
    data[:, :250] = 0.0  # 1 s of padding at the start
    rec = Recording(data=data, fs=FS, channel_names=("a", "b"), meta={"annotations": ((5.0, 1.0, "BAD_x"),)})
    trimmed = trim_flat_edges(rec)
    (onset, duration, text), = trimmed.meta["annotations"]
    assert onset == pytest.approx(5.0 - trimmed.meta["trimmed_s"][0]) and duration == 1.0 and text == "BAD_x"


# --------------------------------------------------------------------------------------------------
# fingerprint jobs: only clean data is measured
# --------------------------------------------------------------------------------------------------
def _rec(data, annotations=(), path="mem.fif"):
    return Recording(data=data, fs=FS, channel_names=tuple(f"c{i}" for i in range(data.shape[0])),
                     meta={"path": path, "annotations": tuple(annotations)})


def test_fingerprint_measures_only_clean_segments():
    data = _noise(2, 40)
    spiky, square = data.copy(), data.copy()
    spiky[:, 2500:3000] = 1e-2 * np.random.default_rng(5).standard_normal((2, 500))  # artefact, 10-12 s
    square[:, 2500:3000] = 5e-3 * np.sign(np.sin(np.arange(500) / 3.0))  # another artefact, same span
    bad = [(10.0, 2.0, "BAD_artefact")]
    rows_a, info_a = measure_recording(_rec(spiky, bad), FAST)
    rows_b, _ = measure_recording(_rec(square, bad), FAST)
    np.testing.assert_allclose(rows_a["value"].to_numpy(), rows_b["value"].to_numpy(), rtol=1e-10)
    through, _ = measure_recording(_rec(spiky), FAST)  # unannotated: measured straight through the artefact
    assert not np.allclose(through["value"].to_numpy(), rows_a["value"].to_numpy(), rtol=1e-3)
    assert info_a["excluded_fraction"] == pytest.approx(2 / 40)
    assert info_a["bad_fraction"] == pytest.approx(2 / 40)
    assert info_a["n_segments"] == 2


def test_fingerprint_clean_segments_are_length_weighted():
    data = _noise(1, 40, seed=3)
    bad = [(10.0, 2.0, "BAD_artefact")]
    rows, _ = measure_recording(_rec(data, bad), FAST)
    first, _ = measure_recording(_rec(data[:, :2500]), FAST)
    second, _ = measure_recording(_rec(data[:, 3000:]), FAST)
    expected = (10 * first["value"].to_numpy() + 28 * second["value"].to_numpy()) / 38
    np.testing.assert_allclose(rows["value"].to_numpy(), expected, rtol=1e-9)


def test_fingerprint_with_too_little_clean_data_names_file_and_lengths():
    data = _noise(2, 10)
    bad = [(0.5, 2.0, "BAD_a"), (3.0, 2.5, "BAD_b"), (6.0, 4.0, "bad_c")]  # clean: 0.5 + 0.5 + 0.5 s
    with pytest.raises(ValueError) as info:
        measure_recording(_rec(data, bad, path="/x/sub-01_eeg.fif"),
                          {"fingerprint": {"measures": ["higuchi_fd", "mf_width"]}, "fou": {"enable": False}})
    message = str(info.value)
    assert "/x/sub-01_eeg.fif" in message and "1.5 s" in message and "BAD" in message
    assert "1024 samples" in message  # 4 x the largest multifractal scale (256): one segment must hold it


def test_fingerprint_epochs_are_cut_inside_clean_segments():
    data = _noise(2, 40)
    cfg = {**FAST, "preprocess": {"epoch": 4.0}}
    _, info = measure_recording(_rec(data, [(10.0, 2.0, "BAD_x")]), cfg)
    # clean 0-10 s: 2 epochs (2 s tail left), 12-40 s: 7 epochs
    assert info["n_epochs"] == 9
    assert info["excluded_fraction"] == pytest.approx(4 / 40)


def test_fingerprint_opt_out_measures_through_bad_spans():
    data = _noise(2, 20)
    cfg = {**FAST, "preprocess": {"reject_by_annotation": False}}
    rows, info = measure_recording(_rec(data, [(5.0, 2.0, "BAD_x")]), cfg)
    plain, _ = measure_recording(_rec(data), FAST)
    np.testing.assert_allclose(rows["value"].to_numpy(), plain["value"].to_numpy())
    assert info["excluded_fraction"] == 0.0 and info["bad_fraction"] == pytest.approx(0.1)


def test_fit_recording_on_a_fif_file_reports_the_excluded_fraction(tmp_path):
    data = _noise(2, 30)
    data[:, :250] = 0.0  # padding trimmed first: the BAD span must move with the signal
    path = _write_fif(tmp_path / "sub-01_eeg.fif", data, [(11.0, 3.0, "BAD_blink")])
    result = fit_recording({"path": str(path), "subject": "01"}, FAST)
    assert result["error"] is None, result["error"]
    info = result["info"]
    assert info["excluded_fraction"] == pytest.approx(3 / 29, abs=1e-3)
    assert info["n_segments"] == 2


# --------------------------------------------------------------------------------------------------
# EDF/BDF with channels at different rates: refused, unless the selection has one rate
# --------------------------------------------------------------------------------------------------
@pytest.fixture()
def mixed_edf(tmp_path):
    edfio = pytest.importorskip("edfio", reason="writes an EDF with per-channel rates")
    rng = np.random.default_rng(0)
    signals = [edfio.EdfSignal(rng.standard_normal(2560) * 10, sampling_frequency=256, label="Fz",
                               physical_dimension="uV"),
               edfio.EdfSignal(rng.standard_normal(1280) * 10, sampling_frequency=128, label="Cz",
                               physical_dimension="uV"),
               edfio.EdfSignal(rng.standard_normal(2560) * 10, sampling_frequency=256, label="Pz",
                               physical_dimension="uV")]
    path = tmp_path / "mixed eeg.edf"
    edfio.Edf(signals).write(path)
    return path


def test_edf_with_mixed_channel_rates_is_refused(mixed_edf):
    with pytest.raises(ValueError) as info:
        read_recording(mixed_edf)
    message = str(info.value)
    assert str(mixed_edf) in message
    assert "Cz" in message and "128" in message and "Fz" in message and "256" in message
    assert "channels" in message  # the fix: pick same-rate channels


def test_edf_same_rate_selection_is_read_at_its_own_rate(mixed_edf):
    rec = read_recording(mixed_edf, channels=["pz", "Fz"])
    assert rec.fs == 256.0 and rec.channel_names == ("Pz", "Fz") and rec.data.shape == (2, 2560)
    slow = read_recording(mixed_edf, channels=["Cz"])
    assert slow.fs == 128.0 and slow.data.shape == (1, 1280)  # not upsampled to 256 Hz
    direct = mne.io.read_raw_edf(mixed_edf, include=["Cz"], preload=True, verbose="error").get_data()
    np.testing.assert_allclose(slow.data, direct)
    with pytest.raises(ValueError, match="128"):
        read_recording(mixed_edf, channels=["Cz", "Fz"])


def test_mixed_rate_edf_in_files_and_fingerprint_with_channel_selection(mixed_edf):
    assert load_recordings([mixed_edf], channels=["Fz", "Pz"])[0].fs == 256.0
    rec = load_recording({"path": str(mixed_edf)}, {"preprocess": {"channels": ["Cz"]}})
    assert rec.fs == 128.0


def test_fingerprint_job_lists_excluded_fraction_per_recording(tmp_path):
    from fmx.fingerprint.job import run_fingerprint_job

    root = tmp_path / "data"
    _write_fif(root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.fif", _noise(2, 20), [(5.0, 5.0, "BAD_move")])
    _write_fif(root / "sub-02" / "eeg" / "sub-02_task-rest_eeg.fif", _noise(2, 20, seed=1))
    result = run_fingerprint_job(str(root), str(tmp_path / "out"), config=["fingerprint.measures=[higuchi_fd]",
                                 "fou.enable=false"], executor="serial", log_mlflow=False, progress=False)
    recs = result.recordings.set_index("subject")
    assert result.n_failed == 0, result.failures["error"].tolist()
    assert recs.loc["sub-01", "excluded_fraction"] == pytest.approx(0.25) and recs.loc["sub-01", "n_segments"] == 2
    assert recs.loc["sub-02", "excluded_fraction"] == 0.0 and recs.loc["sub-02", "bad_fraction"] == 0.0
    import json

    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert job["n_with_bad_spans"] == 1 and job["excluded_fraction_with_bad_spans"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="preprocess.reject_by_annotation"):
        run_fingerprint_job(str(root), str(tmp_path / "out2"), config=["preprocess.reject_by_annotation=no"],
                            executor="serial", log_mlflow=False, progress=False)


def test_mixed_rate_edf_with_a_missing_channel_names_the_missing_one(mixed_edf):
    with pytest.raises(ValueError, match=r"\['Oz'\] not in .*available"):
        read_recording(mixed_edf, channels=["Fz", "Oz"])


def test_training_windows_leave_out_constant_padding_at_the_ends(tmp_path):
    # eegmat-dev rest files end with 1.9 s of constant padding: the last training window of each was padding
    data = _noise(2, 10)
    data[:, -500:] = 3e-6  # 2 s of padding at one constant
    data[:, :250] = 0.0  # and 1 s at the start
    path = _write_fif(tmp_path / "a_eeg.fif", data, [(5.0, 1.0, "BAD_x")])
    rec, = load_recordings([path])
    # trim_flat_edges keeps the last sample of each padding stretch (it may be the signal's first)
    assert rec.data.shape[-1] == 1752 and rec.meta["trimmed_s"] == [0.996, 1.996]
    assert rec.meta["annotations"][0][0] == pytest.approx(4.004)  # the BAD span moved with the signal
    windows = RecordingWindows([rec], window=250, stride=250)
    assert sorted(start for _, start in windows.index) == [0, 250, 500, 750, 1500]  # BAD: 1001..1251


@pytest.mark.realdata
def test_eegmat_training_windows_hold_no_padding(shared_data):
    rec, = load_recordings([shared_data / "eegmat-dev" / "sub-00" / "eeg" / "sub-00_task-rest_eeg.edf"])
    # 484 samples are flat in every channel; the 4 before them are channels settling onto the padding one by one
    assert rec.data.shape[-1] == 15000 - 488 and rec.meta["trimmed_s"][1] == pytest.approx(1.952)


def test_channels_settling_onto_padding_one_at_a_time_are_cut_too():
    """eegmat-dev's channels reach the end padding over ~10 samples (a resampling filter's step response);
    trim_flat_edges cut only where every channel was flat, and those samples took sub-00's mean multifractal
    width at rest from 0.86 to 1.21. A dead channel (flat for long) must not pull the cut in."""
    from models.data.preprocess import trim_flat_edges
    from models.data.recording import Recording

    x = np.random.default_rng(0).standard_normal((3, 400))
    x[:, 300:] = 0.0                   # padding in every channel from 300
    x[0, 295:300] = 0.0                # channel 0 reached it 5 samples early
    x[1, 297:300] = 0.0                # channel 1 3 samples early
    x[2, :] = np.where(np.arange(400) < 200, x[2], 1.0)  # channel 2 died at 200, long before
    x[2, 300:] = 1.0
    rec = trim_flat_edges(Recording(data=x, fs=100.0, channel_names=("a", "b", "c"), kind="continuous", meta={}))
    assert rec.data.shape[-1] == 295


def test_file_with_no_clean_window_is_left_out_before_the_split(tmp_path, caplog):
    # it took a split's place: alone in validation, the whole datamodule failed although train was fine
    root = tmp_path / "data"
    _write_fif(root / "sub-01_eeg.fif", _noise(2, 8), [(0.0, 8.0, "BAD_all")])
    _write_fif(root / "sub-02_eeg.fif", _noise(2, 8, seed=1), [(3.0, 1.0, "BAD_x")])

    class Module:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    with caplog.at_level(logging.WARNING, logger="models.data.files"):
        dm = build_files_datamodule({"data": {"name": "files", "root": str(root), "window": 250}}, Module, 4)
    assert dm.info["train_files"] == dm.info["val_files"] == [str(root / "sub-02_eeg.fif")]
    assert "sub-01_eeg.fif" in caplog.text and "BAD" in caplog.text


def test_files_reject_by_annotation_must_be_a_switch(tmp_path):
    _write_fif(tmp_path / "a_eeg.fif", _noise(1, 4))
    with pytest.raises(ValueError, match="data.reject_by_annotation: must be true or false, got 'no'"):
        build_files_datamodule({"data": {"name": "files", "root": str(tmp_path), "reject_by_annotation": "no"}},
                               dict, 4)


def test_trim_and_epoch_shift_trigger_events_with_the_signal():
    data = _noise(1, 10)
    data[:, :250] = 0.0
    rec = Recording(data=data, fs=FS, channel_names=("a",), meta={"events": np.array([[6.0, 3.0]])})
    trimmed = trim_flat_edges(rec)
    assert trimmed.meta["events"][0, 0] == pytest.approx(6.0 - trimmed.meta["trimmed_s"][0])
    assert rec.meta["events"][0, 0] == 6.0  # the input is left alone
    from models.data.readers import epoch

    second = epoch(rec, 5.0)[1]
    assert second.meta["events"][0, 0] == pytest.approx(1.0)


def test_padding_is_cut_before_resampling(tmp_path):
    # resampled first, the padding rang (and the polyphase filter bent its last samples): nothing was trimmed
    data = _noise(2, 10)
    data[:, -500:] = 3e-6
    path = _write_fif(tmp_path / "a_eeg.fif", data)
    rec, = load_recordings([path], resample_hz=125.0)
    assert rec.fs == 125.0 and rec.meta["trimmed_s"][1] == pytest.approx(1.996)
    assert rec.data.shape[-1] == pytest.approx(8.004 * 125, abs=1)


def test_windows_clear_of_bad_matches_a_brute_force_check():
    from models.data.bad_spans import windows_clear_of_bad

    rng = np.random.default_rng(2)
    lo = np.sort(rng.choice(10_000, 40, replace=False))
    spans = np.column_stack([lo, lo + rng.integers(1, 300, 40)])
    rec = Recording(data=np.zeros((1, 10_000)), fs=1.0, channel_names=("a",),
                    meta={"annotations": tuple((float(a), float(b - a), "BAD") for a, b in spans)})
    from models.data.bad_spans import bad_spans

    merged = bad_spans(rec)
    starts = np.arange(0, 10_000 - 64 + 1, 7)
    expected = np.array([not any(s < b and a < s + 64 for a, b in spans) for s in starts])
    np.testing.assert_array_equal(windows_clear_of_bad(merged, starts, 64), expected)


@pytest.fixture()
def bdf_with_fast_status(tmp_path):
    edfio = pytest.importorskip("edfio", reason="writes a BDF with per-channel rates")
    rng = np.random.default_rng(0)
    status = np.zeros(2560)
    status[1000:1010] = 5
    signals = [edfio.BdfSignal(rng.standard_normal(1280) * 10, sampling_frequency=128, label="Fz",
                               physical_dimension="uV"),
               edfio.BdfSignal(rng.standard_normal(1280) * 10, sampling_frequency=128, label="Cz",
                               physical_dimension="uV"),
               edfio.BdfSignal(status, sampling_frequency=256, label="Status", physical_dimension="",
                               digital_range=(-8388608, 8388607), physical_range=(-8388608, 8388607))]
    path = tmp_path / "fast_status.bdf"
    edfio.Bdf(signals).write(path)
    return path


def test_trigger_channel_at_another_rate_does_not_stretch_the_signals(bdf_with_fast_status, caplog):
    # MNE read 10 s of 128 Hz signals as 2560 samples at 128 Hz (20 s): sized by the 256 Hz Status channel
    with caplog.at_level(logging.WARNING, logger="models.data.edf_rates"):
        rec = read_recording(bdf_with_fast_status)
    assert rec.fs == 128.0 and rec.data.shape == (2, 1280) and rec.duration_s == 10.0
    assert "Status" in caplog.text and "256" in caplog.text


def test_windows_do_not_straddle_the_join_of_concatenated_raws(tmp_path):
    part = mne.io.RawArray(_noise(1, 4), mne.create_info(["a"], FS, "eeg"), verbose="error")
    joined = mne.concatenate_raws([part, part.copy()], verbose="error")  # adds 'BAD boundary' at 4 s
    joined.save(tmp_path / "j_raw.fif", verbose="error")
    windows = RecordingWindows(load_recordings([tmp_path / "j_raw.fif"]), window=300, stride=100)
    assert all(start + 300 <= 1000 or start > 1000 for _, start in windows.index)
    assert windows.n_dropped_bad == 3  # starts 800, 900, 1000 touch sample 1000


# --------------------------------------------------------------------------------------------------
# fmx fingerprint fit DATA: recordings whose names are not BIDS-like
# --------------------------------------------------------------------------------------------------
def test_recordings_skipped_for_their_names_are_named(tmp_path, caplog):
    from fmx.fingerprint.discover import discover

    _write_fif(tmp_path / "sub-01" / "eeg" / "sub-01_task-rest_eeg.fif", _noise(1, 2))
    _write_fif(tmp_path / "sub-02" / "eeg" / "patient02_task-rest_eeg.fif", _noise(1, 2))  # no sub-XX: left out
    with caplog.at_level(logging.WARNING, logger="fmx.fingerprint.discover"):
        frame = discover(str(tmp_path))
    assert frame["subject"].tolist() == ["sub-01"]
    assert "patient02_task-rest_eeg.fif" in caplog.text and "1 recording" in caplog.text


def test_hidden_files_are_not_called_recordings_to_rename(tmp_path, caplog):
    # macOS AppleDouble files (._sub-01_...) and editors' hidden copies were reported as "not named sub-XX: rename"
    from fmx.fingerprint.discover import discover

    _write_fif(tmp_path / "sub-01" / "eeg" / "sub-01_task-rest_eeg.fif", _noise(1, 2))
    (tmp_path / "sub-01" / "eeg" / "._sub-01_task-rest_eeg.fif").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "sub-01" / "eeg" / ".x_eeg.fif").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="fmx.fingerprint.discover"):
        frame = discover(str(tmp_path))
    assert frame["subject"].tolist() == ["sub-01"] and "rename" not in caplog.text


def test_files_datamodule_with_no_clean_window_names_files_and_clean_length(tmp_path):
    _write_fif(tmp_path / "a_eeg.fif", _noise(1, 4), [(0.5, 3.5, "BAD_x")])
    with pytest.raises(ValueError, match=r"a_eeg.fif \(longest clean stretch 125 samples\)"):
        build_files_datamodule({"data": {"name": "files", "root": str(tmp_path), "window": 250}}, dict, 4)
