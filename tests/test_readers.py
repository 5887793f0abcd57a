"""models.data.readers: every format round-trips known values; bad input names the file and the fix."""
from __future__ import annotations

import numpy as np
import pytest

from models.data.readers import (
    Recording,
    bandpass,
    epoch,
    filter_ectopic,
    notch,
    read_recording,
    read_rr_cohort,
    resample,
    trim_flat_edges,
)

FS = 250.0
NAMES = ["Fz", "Cz", "Pz"]


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 1000)) * 1e-5


def _raw(signal):
    import mne

    return mne.io.RawArray(signal, mne.create_info(NAMES, FS, "eeg"), verbose="error")


@pytest.mark.parametrize("ext,bits", [("edf", 16), ("bdf", 24)])
def test_edf_bdf_round_trip_and_channel_pick(tmp_path, signal, ext, bits):
    import mne

    path = tmp_path / f"sub-01_task-rest_eeg.{ext}"
    mne.export.export_raw(path, _raw(signal), overwrite=True, verbose="error")
    rec = read_recording(path)
    assert rec.kind == "continuous" and rec.fs == FS and rec.channel_names == tuple(NAMES)
    assert rec.units == "V" and rec.meta["format"] == ext
    # EDF/BDF store 16/24-bit integers scaled to the physical range: agreement to the quantisation step.
    step = (signal.max() - signal.min()) / 2 ** (bits - 1)
    np.testing.assert_allclose(rec.data, signal, atol=2 * step)
    picked = read_recording(path, channels=["pz", "FZ"])
    assert picked.channel_names == ("Pz", "Fz")
    np.testing.assert_allclose(picked.data[0], rec.data[2])


def test_fif_round_trip_exact(tmp_path, signal):
    path = tmp_path / "rec_raw.fif"
    _raw(signal).save(path, overwrite=True, verbose="error")
    rec = read_recording(path)
    np.testing.assert_allclose(rec.data, signal, rtol=1e-6)  # FIF stores float32
    assert rec.meta["format"] == "fif"


def test_nwb_electrical_series(tmp_path, signal):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    nwb = NWBFile(session_description="test", identifier="t1", session_start_time=datetime.now(timezone.utc))
    device = nwb.create_device(name="amp")
    group = nwb.create_electrode_group(name="scalp", description="EEG", location="scalp", device=device)
    nwb.add_electrode_column(name="label", description="10-20 name")
    for name in NAMES:
        nwb.add_electrode(group=group, location="scalp", label=name)
    region = nwb.create_electrode_table_region(list(range(3)), "all")
    # NWB stores (time, channels) and a conversion factor to SI units.
    nwb.add_acquisition(ElectricalSeries(name="eeg", data=(signal.T * 1e6).astype(np.float32), electrodes=region,
                                         rate=FS, conversion=1e-6))
    path = tmp_path / "rec.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    rec = read_recording(path)
    assert rec.channel_names == tuple(NAMES) and rec.fs == FS and rec.data.shape == (3, 1000)
    np.testing.assert_allclose(rec.data, signal, rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="series: 'nope' not in"):
        read_recording(path, series="nope")


def test_nwb_offset_and_channel_conversion_give_si_units(tmp_path, signal):
    # NWB: value in `unit` = data * conversion * channel_conversion[ch] + offset.
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    nwb = NWBFile(session_description="test", identifier="t2", session_start_time=datetime.now(timezone.utc))
    device = nwb.create_device(name="amp")
    group = nwb.create_electrode_group(name="scalp", description="EEG", location="scalp", device=device)
    for _ in NAMES:
        nwb.add_electrode(group=group, location="scalp")
    region = nwb.create_electrode_table_region(list(range(3)), "all")
    gains = np.array([1.0, 2.0, 4.0])
    raw = signal.T * 1e6 / gains  # (time, channels) in per-channel ADC steps
    nwb.add_acquisition(ElectricalSeries(name="eeg", data=raw, electrodes=region, rate=FS, conversion=1e-6,
                                         channel_conversion=gains, offset=-2e-3))
    path = tmp_path / "offset.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    rec = read_recording(path)
    np.testing.assert_allclose(rec.data, signal - 2e-3, rtol=1e-9, atol=1e-15)


def test_npz_continuous_and_intervals(tmp_path, signal):
    path = tmp_path / "rec.npz"
    np.savez(path, data=signal, fs=FS, channel_names=np.array(NAMES))
    rec = read_recording(path)
    np.testing.assert_array_equal(rec.data, signal)
    assert rec.channel_names == tuple(NAMES)
    rr = tmp_path / "rr.npz"
    np.savez(rr, rr_ms=np.array([800, 820, 790, 810.0]))
    iv = read_recording(rr)
    assert iv.kind == "intervals" and iv.units == "ms" and iv.fs == pytest.approx(1000 / 805)
    assert iv.duration_s == pytest.approx(3.22)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=signal)
    with pytest.raises(ValueError, match=r"bad\.npz: needs keys 'data'"):
        read_recording(bad)


def test_csv_time_column_header_rate_and_rr(tmp_path, signal):
    import pandas as pd

    timed = tmp_path / "timed.csv"
    frame = pd.DataFrame(signal.T, columns=NAMES)
    frame.insert(0, "time", np.arange(1000) / FS)
    frame.to_csv(timed, index=False)
    rec = read_recording(timed)
    assert rec.fs == pytest.approx(FS) and rec.channel_names == tuple(NAMES)
    np.testing.assert_allclose(rec.data, signal)
    header = tmp_path / "header.csv"
    header.write_text("# fs=500\n" + pd.DataFrame(signal.T, columns=NAMES).to_csv(index=False))
    assert read_recording(header).fs == 500.0
    bare = tmp_path / "bare.csv"
    pd.DataFrame(signal.T, columns=NAMES).to_csv(bare, index=False)
    with pytest.raises(ValueError, match="no sampling rate"):
        read_recording(bare)
    assert read_recording(bare, fs=100).fs == 100
    rr = tmp_path / "rr.csv"
    rr.write_text("rr_ms\n800\n810\n805\n")
    assert read_recording(rr).kind == "intervals"


def test_rr_text_file(tmp_path):
    path = tmp_path / "sub-01_task-rest_rr.txt"
    path.write_text("# RR in ms\n800\n810\n790\n")
    rec = read_recording(path)
    np.testing.assert_array_equal(rec.data, [800, 810, 790])


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_recording(tmp_path / "missing.edf")
    weird = tmp_path / "x.xyz"
    weird.write_text("1")
    with pytest.raises(ValueError, match=r"unsupported extension '\.xyz'"):
        read_recording(weird)
    corrupt = tmp_path / "corrupt.edf"
    corrupt.write_bytes(b"0       not an edf header" * 4)
    with pytest.raises(ValueError, match="corrupt.edf"):
        read_recording(corrupt)
    path = tmp_path / "rec.npz"
    np.savez(path, data=np.ones((2, 10)), fs=10.0)
    with pytest.raises(ValueError, match=r"channels: \['Oz'\] not in .*available: \['ch0', 'ch1'\]"):
        read_recording(path, channels=["Oz"])


def test_recording_validates_fields():
    with pytest.raises(ValueError, match="channel_names: 1 names for 2"):
        Recording(data=np.zeros((2, 4)), fs=10.0, channel_names=("a",))
    with pytest.raises(ValueError, match="fs: must be a finite rate"):
        Recording(data=np.zeros((1, 4)), fs=0.0, channel_names=("a",))


def test_bandpass_notch_resample_epoch():
    fs = 500.0
    t = np.arange(int(4 * fs)) / fs
    x = np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 120 * t)
    rec = Recording(data=x[None], fs=fs, channel_names=("c",))

    def amp(r, f):
        # amplitude of the f-Hz component away from the filters' edge transients (0.5 s each side)
        n = r.data.shape[-1]
        inner = slice(int(0.5 * r.fs), n - int(0.5 * r.fs))
        tt = np.arange(n)[inner] / r.fs
        basis = np.stack([np.sin(2 * np.pi * f * tt), np.cos(2 * np.pi * f * tt)], 1)
        coef = np.linalg.lstsq(basis, r.data[0, inner], rcond=None)[0]
        return float(np.hypot(*coef))

    notched = notch(rec, 50.0)
    assert amp(notched, 50) < 0.01 and amp(notched, 10) > 0.95
    banded = bandpass(rec, 5.0, 30.0)
    assert amp(banded, 10) > 0.95 and amp(banded, 120) < 0.01
    # zero-phase: the pass-band sine is not shifted
    assert np.corrcoef(banded.data[0, 200:-200], np.sin(2 * np.pi * 10 * t)[200:-200])[0, 1] > 0.999
    down = resample(rec, 250.0)
    assert down.fs == 250.0 and down.data.shape[-1] == 1000 and amp(down, 10) > 0.95
    epochs = epoch(rec, 1.5)
    assert len(epochs) == 2 and epochs[1].meta["onset_s"] == 1.5 and epochs[0].data.shape == (1, 750)
    with pytest.raises(ValueError, match="high: 300"):
        bandpass(rec, 1.0, 300.0)


def test_trim_flat_edges_cuts_padding_only():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 100))
    x[:, 90:] = x[:, 89:90]  # 10 padded samples repeat the last real one
    x[:, :3] = x[:, 3:4]  # 3 leading repeats: shorter than min_run, kept
    rec = trim_flat_edges(Recording(data=x, fs=10.0, channel_names=("a", "b")))
    assert rec.data.shape == (2, 90) and rec.meta["trimmed_s"] == [0.0, 1.0]
    np.testing.assert_array_equal(rec.data, x[:, :90])
    # padding in pieces: flat, a 5-sample burst, flat again (eegmat-dev's layout)
    y = rng.normal(size=(2, 200))
    y[:, 150:170] = y[:, 149:150]
    y[:, 175:] = y[:, 174:175]
    pieces = trim_flat_edges(Recording(data=y, fs=10.0, channel_names=("a", "b")))
    assert pieces.data.shape == (2, 150)
    untouched = Recording(data=rng.normal(size=(1, 50)), fs=10.0, channel_names=("a",))
    assert trim_flat_edges(untouched) is untouched
    with pytest.raises(ValueError, match="every channel is constant"):
        trim_flat_edges(Recording(data=np.ones((1, 20)), fs=10.0, channel_names=("a",)))


def test_eegmat_rest_padding_is_trimmed(shared_data):
    rest = read_recording(shared_data / "eegmat-dev" / "sub-00" / "eeg" / "sub-00_task-rest_eeg.edf")
    trimmed = trim_flat_edges(rest)
    assert trimmed.data.shape[-1] < rest.data.shape[-1] and trimmed.meta["trimmed_s"][1] > 0.5


def test_filter_ectopic_drops_planted_artefacts():
    rng = np.random.default_rng(1)
    rr = 800 + 20 * rng.standard_normal(500)
    rr[[50, 200, 201, 400]] = [450, 1300, 280, 2500]  # premature beat, compensatory pause, out-of-range
    rec = Recording(data=rr, fs=1.25, channel_names=("rr",), kind="intervals", units="ms")
    clean = filter_ectopic(rec)
    assert clean.meta["n_removed"] == 4 and clean.data.size == 496
    assert clean.data.min() > 700 and clean.data.max() < 900


def test_rr_cohort(shared_data):
    cohort = list(read_rr_cohort(shared_data / "hrv_rr_dev.npz"))
    assert len(cohort) == 30
    groups = [r.meta["group"] for r in cohort]
    assert groups.count("NSR") == 20 and groups.count("CHF") == 10
    one = read_recording(shared_data / "hrv_rr_dev.npz", subject=cohort[3].meta["subject"])
    np.testing.assert_array_equal(one.data, cohort[3].data)
    clean = filter_ectopic(cohort[0])
    assert 0 < clean.meta["n_removed"] < 0.1 * cohort[0].data.size  # a 24 h Holter: a few % artefacts


def test_csv_with_a_text_column_names_it(tmp_path):
    # pandas 3 reads text as StringDtype, which numpy's issubdtype cannot interpret: the reader must
    # still give its own error naming the column.
    path = tmp_path / "bad.csv"
    path.write_text("# fs=100\nFz,label\n1.0,a\n2.0,b\n3.0,c\n")
    with pytest.raises(ValueError, match=r"\['label'\] are not numeric"):
        read_recording(path)
