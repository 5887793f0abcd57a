"""Read neural recordings from disk into one :class:`Recording` type, and clean them.

Formats (picked by file extension, see :func:`read_recording`):

========================  =====================================================================
``.edf`` ``.bdf``          EDF/BDF through MNE; values in volts. Trigger channels (BDF ``Status``,
                           EDF ``Trigger``) and ``EDF/BDF Annotations`` are not signal channels:
                           ``meta["events"]`` holds the triggers as ``(onset_s, code)`` rows,
                           ``meta["annotations"]`` the ``(onset_s, duration_s, text)`` annotations
                           (onsets from the first sample) and ``meta["stim_channels"]`` the names.
``.fif`` ``.fif.gz``       MNE FIF raw files; values in SI units (volts for EEG); ``stim``
                           channels (``STI 014``) become ``meta["events"]`` as for EDF.
``.nwb``                   NWB through pynwb: the first ``ElectricalSeries`` in ``acquisition``
                           (else the first ``TimeSeries``); ``series=`` picks one by name.
``.npz``                   continuous: ``data`` (channels, time) or (time,), ``fs`` (Hz), optional
                           ``channel_names`` and ``units``. Intervals: ``rr_ms`` (milliseconds) or
                           ``intervals`` (seconds) instead of ``data``. The multi-subject layout
                           (``rr_ms`` + ``offsets`` + ``subject_ids`` [+ ``group``]) is read by
                           :func:`read_rr_cohort`, or one subject with ``read_recording(p, subject=ID)``.
``.csv`` ``.tsv``          one column per channel. The rate comes from a ``time`` column (seconds,
                           uniformly spaced), or a first line ``# fs=250``, or ``fs=`` here. A file
                           whose only column is ``rr_ms`` / ``ibi_ms`` / ``intervals_s`` is an
                           interval series.
``.rr`` ``.ibi`` ``.txt``  event-interval series: one RR/inter-beat interval in milliseconds a line.
========================  =====================================================================

Interval recordings have ``kind="intervals"``, ``data`` of shape ``(n,)`` in milliseconds and
``fs`` set to the mean event rate in Hz (events per second), so ``n / fs`` is still the duration.

Preprocessing helpers work on a :class:`Recording` and return a new one: :func:`bandpass` and
:func:`notch` (zero-phase, scipy.signal), :func:`resample` (polyphase), :func:`epoch`,
:func:`trim_flat_edges` (constant padding at either end), and :func:`filter_ectopic` for RR series.
"""
from __future__ import annotations

import dataclasses
import functools
import io
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = [
    "Recording",
    "read_recording",
    "read_rr_cohort",
    "pick_channels",
    "bandpass",
    "notch",
    "resample",
    "epoch",
    "trim_flat_edges",
    "filter_ectopic",
    "SUPPORTED_EXTENSIONS",
]

SUPPORTED_EXTENSIONS = (".edf", ".bdf", ".fif", ".fif.gz", ".nwb", ".npz", ".csv", ".tsv", ".rr", ".ibi", ".txt")
_RR_COLUMNS = {"rr_ms": 1.0, "ibi_ms": 1.0, "rr": 1.0, "intervals_ms": 1.0, "intervals_s": 1000.0, "intervals": 1000.0}


@dataclasses.dataclass(frozen=True)
class Recording:
    """One recording: a multichannel continuous signal or an event-interval series.

    Shape:
        ``data``: ``(channels, time)`` float64 when ``kind == "continuous"``;
        ``(n_intervals,)`` float64 in milliseconds when ``kind == "intervals"``.
    """

    data: np.ndarray
    fs: float
    channel_names: tuple[str, ...]
    kind: str = "continuous"
    units: str = "V"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.meta.get("path", "<memory>")
        if self.kind not in ("continuous", "intervals"):
            raise ValueError(f"kind: must be 'continuous' or 'intervals', got {self.kind!r} ({src})")
        want_ndim = 2 if self.kind == "continuous" else 1
        if self.data.ndim != want_ndim:
            raise ValueError(
                f"data: a {self.kind} recording needs {want_ndim} dimension(s), got shape {self.data.shape} ({src})"
            )
        if not (np.isfinite(self.fs) and self.fs > 0):
            raise ValueError(f"fs: must be a finite rate > 0 Hz, got {self.fs!r} ({src})")
        n_ch = self.data.shape[0] if self.kind == "continuous" else 1
        if len(self.channel_names) != n_ch:
            raise ValueError(
                f"channel_names: {len(self.channel_names)} names for {n_ch} channel(s) ({src}); give one per row"
            )

    @property
    def n_channels(self) -> int:
        return self.data.shape[0] if self.kind == "continuous" else 1

    @property
    def duration_s(self) -> float:
        if self.kind == "intervals":
            return float(self.data.sum()) / 1000.0
        return self.data.shape[-1] / self.fs

    def replace(self, **changes: Any) -> "Recording":
        """A copy with some fields changed (``meta`` is merged, not replaced)."""
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return dataclasses.replace(self, **changes)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".fif.gz" if name.endswith(".fif.gz") else path.suffix.lower()


def read_recording(
    path: str | Path,
    *,
    channels: Sequence[str] | None = None,
    resample: float | None = None,
    fs: float | None = None,
    series: str | None = None,
    subject: str | None = None,
) -> Recording:
    """Read one recording, optionally picking channels and resampling.

    Parameters
    ----------
    path : str or Path
        A local file in one of :data:`SUPPORTED_EXTENSIONS` (see the module docstring).
    channels : sequence of str, optional
        Channel names to keep, in this order. Missing names raise ``ValueError`` listing the
        available ones.
    resample : float, optional
        New sampling rate in Hz (continuous recordings only).
    fs : float, optional
        Sampling rate for CSV files without a ``time`` column or ``# fs=`` line.
    series : str, optional
        NWB: the name of the acquisition series to read.
    subject : str, optional
        ``.npz`` in the multi-subject RR layout: which subject to read.

    Returns
    -------
    Recording
        ``meta`` holds ``path`` and ``format`` (plus ``subject``/``group`` for RR cohorts).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: {str(path)!r} does not exist or is not a file; check the path or the manifest")
    ext = _suffix(path)
    readers = {
        ".edf": _read_mne, ".bdf": _read_mne, ".fif": _read_mne, ".fif.gz": _read_mne,
        ".nwb": _read_nwb, ".npz": _read_npz, ".csv": _read_csv, ".tsv": _read_csv,
        ".rr": _read_rr_text, ".ibi": _read_rr_text, ".txt": _read_rr_text,
    }
    if ext not in readers:
        raise ValueError(
            f"path: {path.name!r} has an unsupported extension {ext!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    try:
        rec = readers[ext](path, fs=fs, series=series, subject=subject)
    except ValueError as exc:
        if str(path) in str(exc) or path.name in str(exc):
            raise
        raise ValueError(f"{path}: {exc}; check that the file is complete and matches its extension") from exc
    except Exception as exc:  # corrupt files surface as many exception types; name the file
        raise ValueError(
            f"{path}: cannot be read as {ext} ({type(exc).__name__}: {exc}); check that the file is complete "
            "and in the format its extension says"
        ) from exc
    if channels:
        rec = pick_channels(rec, channels)
    if resample:
        rec = _resample_recording(rec, resample)
    return rec


def pick_channels(rec: Recording, channels: Sequence[str]) -> Recording:
    """Keep ``channels`` (by name, case-insensitive), in the order given."""
    if isinstance(channels, str):  # one name (data.channels=Cz on the command line), not its letters
        channels = [channels]
    if rec.kind != "continuous":
        raise ValueError(f"channels: an interval series has no channels to pick ({rec.meta.get('path')})")
    lookup = {name.lower(): i for i, name in enumerate(rec.channel_names)}
    missing = [c for c in channels if c.lower() not in lookup]
    if missing:
        raise ValueError(
            f"channels: {missing} not in {rec.meta.get('path', 'the recording')}; available: {list(rec.channel_names)}"
        )
    idx = [lookup[c.lower()] for c in channels]
    return rec.replace(data=rec.data[idx], channel_names=tuple(rec.channel_names[i] for i in idx))


# ---------------------------------------------------------------------------------------- formats


def _read_mne(path: Path, **_: Any) -> Recording:
    import mne

    ext = _suffix(path)
    if ext == ".edf":
        raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    elif ext == ".bdf":
        raw = mne.io.read_raw_bdf(path, preload=True, verbose="error")
    else:
        raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    meta: dict[str, Any] = {"path": str(path), "format": ext.lstrip(".")}
    meta.update(_events_and_annotations(raw, path))
    data = raw.get_data().astype(np.float64)
    return Recording(data=data, fs=float(raw.info["sfreq"]), channel_names=tuple(raw.ch_names), units="V", meta=meta)


def _events_and_annotations(raw: Any, path: Path) -> dict[str, Any]:
    """Drop trigger channels from ``raw`` (in place) and return them as events, with the annotations.

    MNE types a BDF ``Status`` / EDF ``Trigger`` channel (and FIF ``STI``) as ``stim``: it holds
    integer codes, not volts, and must not reach the model as a signal. ``EDF Annotations`` is never
    a data channel in MNE; its text lands in ``raw.annotations``.
    """
    import mne

    kinds = raw.get_channel_types() if raw.ch_names else []  # MNE refuses to list the types of no channel
    stim = [name for name, kind in zip(raw.ch_names, kinds) if kind == "stim"]
    if len(stim) == len(raw.ch_names):  # e.g. a Sleep-EDF '*-Hypnogram.edf' beside its PSG
        raise ValueError(
            f"{path}: holds no signal channel, only trigger/status channel(s) {stim} and {len(raw.annotations)} "
            "annotation(s); leave it out (narrow data.pattern) or read its annotations with mne"
        )
    events = np.zeros((0, 2))
    if stim:
        found = mne.find_events(raw, stim_channel=stim, shortest_event=1, verbose="error")
        events = np.column_stack([(found[:, 0] - raw.first_samp) / raw.info["sfreq"], found[:, 2]]).astype(float)
        raw.drop_channels(stim)
    ann = raw.annotations
    # MNE keeps onsets on the raw's clock, which starts first_time before the first sample (FIF files
    # cropped from longer ones; 0 for EDF/BDF), with or without a measurement date.
    annotations = tuple(
        (float(o) - raw.first_time, float(d), str(t)) for o, d, t in zip(ann.onset, ann.duration, ann.description)
    )
    return {"stim_channels": tuple(stim), "events": events, "annotations": annotations}


def _read_nwb(path: Path, *, series: str | None = None, **_: Any) -> Recording:
    from pynwb import NWBHDF5IO, TimeSeries
    from pynwb.ecephys import ElectricalSeries

    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io_:
        nwb = io_.read()
        found = {name: obj for name, obj in nwb.acquisition.items() if isinstance(obj, TimeSeries)}
        if not found:
            raise ValueError(f"{path}: no TimeSeries in nwb.acquisition; write the signal there")
        if series is not None:
            if series not in found:
                raise ValueError(f"series: {series!r} not in {path}; available: {sorted(found)}")
            ts = found[series]
        else:
            electrical = [o for o in found.values() if isinstance(o, ElectricalSeries)]
            ts = electrical[0] if electrical else next(iter(found.values()))
        data = np.asarray(ts.data[:], dtype=np.float64)
        data = data[:, None] if data.ndim == 1 else data.reshape(data.shape[0], -1)
        # NWB stores raw counts: value = data * conversion * channel_conversion[ch] + offset.
        if ts.conversion not in (None, 1.0):
            data = data * ts.conversion
        channel_conversion = getattr(ts, "channel_conversion", None)
        if channel_conversion is not None:
            data = data * np.asarray(channel_conversion[:], dtype=np.float64).reshape(1, -1)
        if getattr(ts, "offset", None):
            data = data + float(ts.offset)
        if ts.rate is not None:
            rate = float(ts.rate)
        else:
            stamps = np.asarray(ts.timestamps[:], dtype=np.float64)
            rate = _uniform_rate(stamps, f"{path}: {ts.name}.timestamps")
        names = _nwb_channel_names(ts, data.shape[1])
        return Recording(
            data=np.ascontiguousarray(data.T), fs=rate, channel_names=names, units=str(ts.unit or "a.u."),
            meta={"path": str(path), "format": "nwb", "series": ts.name},
        )


def _nwb_channel_names(ts: Any, n: int) -> tuple[str, ...]:
    region = getattr(ts, "electrodes", None)
    if region is not None:
        table = region.table
        rows = list(region.data[:])
        for column in ("label", "channel_name", "location"):
            if column in table.colnames:
                names = [str(table[column][r]) for r in rows]
                if len(set(names)) == len(names):
                    return tuple(names)
        return tuple(f"e{int(table.id[r])}" for r in rows)
    return tuple(f"ch{i}" for i in range(n))


def _read_npz(path: Path, *, subject: str | None = None, **_: Any) -> Recording:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "offsets" in keys:
            if subject is None:
                raise ValueError(
                    f"{path}: a multi-subject RR file (rr_ms + offsets); read it with read_rr_cohort() "
                    "or pass subject=ID"
                )
            for rec in read_rr_cohort(path):
                if rec.meta["subject"] == subject:
                    return rec
            raise ValueError(f"subject: {subject!r} not in {path}")
        if "rr_ms" in keys or "intervals" in keys:
            rr = np.asarray(z["rr_ms"], np.float64) if "rr_ms" in keys else np.asarray(z["intervals"], np.float64) * 1e3
            return _intervals(rr, {"path": str(path), "format": "npz"})
        if "data" not in keys or "fs" not in keys:
            raise ValueError(
                f"{path}: needs keys 'data' (channels, time) and 'fs', or 'rr_ms'/'intervals'; found {sorted(keys)}"
            )
        data = np.asarray(z["data"], dtype=np.float64)
        data = data[None, :] if data.ndim == 1 else data
        if data.ndim != 2:
            raise ValueError(f"{path}: 'data' must be (channels, time), got shape {data.shape}")
        names = (
            tuple(_text(c) for c in np.asarray(z["channel_names"]).reshape(-1)) if "channel_names" in keys
            else tuple(f"ch{i}" for i in range(data.shape[0]))
        )
        units = _text(z["units"][()]) if "units" in keys else "a.u."
        fs = np.asarray(z["fs"], dtype=np.float64)
        if fs.size != 1:  # a 1-element array is fine: scipy.io.loadmat gives [[250.]]
            raise ValueError(f"{path}: 'fs' must be one number in Hz, got shape {fs.shape}")
        return Recording(data=data, fs=float(fs.reshape(-1)[0]), channel_names=names, units=units,
                         meta={"path": str(path), "format": "npz"})


def _text(value: Any) -> str:
    """A name stored as str or bytes (HDF5/MATLAB conversions give bytes): ``b'Fz'`` is ``Fz``."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_rr_cohort(path: str | Path, *, filter_ectopics: bool = False) -> Iterator[Recording]:
    """Yield one interval :class:`Recording` per subject of a multi-subject RR ``.npz``.

    The layout is the one of ``hrv_rr_dev.npz``: ``rr_ms`` (all subjects concatenated),
    ``offsets`` (subject ``k`` is ``rr_ms[offsets[k]:offsets[k+1]]``), ``subject_ids`` and an
    optional ``group``. ``meta`` carries ``subject`` and ``group``.
    """
    path = Path(path)
    stat = path.stat()
    rr_all, offsets, ids, groups = _load_rr_cohort(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if len(offsets) != len(ids) + 1 or offsets[0] != 0 or offsets[-1] != len(rr_all) or np.any(np.diff(offsets) < 0):
        raise ValueError(
            f"{path}: offsets must be {len(ids) + 1} non-decreasing indices from 0 to len(rr_ms)={len(rr_all)}"
        )
    for k, sid in enumerate(ids):
        rec = _intervals(rr_all[offsets[k]:offsets[k + 1]],
                         {"path": str(path), "format": "npz-cohort", "subject": sid, "group": groups[k]})
        yield filter_ectopic(rec) if filter_ectopics else rec


@functools.lru_cache(maxsize=2)
def _load_rr_cohort(path: str, size: int, mtime_ns: int):
    """Arrays of a cohort file, cached per process: one worker reads one subject after another, and
    decompressing the whole file each time would dominate (size and mtime make a changed file miss)."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"rr_ms", "offsets", "subject_ids"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: the RR cohort layout needs keys {sorted(missing)}; found {sorted(z.files)}")
        rr_all, offsets = np.asarray(z["rr_ms"], np.float64), np.asarray(z["offsets"], np.int64)
        ids = tuple(_text(s) for s in z["subject_ids"])
        groups = tuple(_text(g) for g in z["group"]) if "group" in z.files else ("",) * len(ids)
    rr_all.setflags(write=False)  # shared by every Recording built from the cache
    return rr_all, offsets, ids, groups


def _read_csv(path: Path, *, fs: float | None = None, **_: Any) -> Recording:
    import pandas as pd

    text = path.read_text()
    header_fs = None
    first = text.splitlines()[0] if text else ""
    if first.startswith("#"):
        for token in first.lstrip("#").replace(",", " ").split():
            if token.lower().startswith("fs="):
                header_fs = float(token.split("=", 1)[1])
    sep = "\t" if _suffix(path) == ".tsv" else ","
    frame = pd.read_csv(io.StringIO(text), sep=sep, comment="#")
    if frame.empty:
        raise ValueError(f"{path}: no rows; a CSV recording needs one column per channel and one row per sample")
    cols = {c.lower(): c for c in frame.columns}
    if len(frame.columns) == 1 and frame.columns[0].lower() in _RR_COLUMNS:
        scale = _RR_COLUMNS[frame.columns[0].lower()]
        return _intervals(frame.iloc[:, 0].to_numpy(np.float64) * scale, {"path": str(path), "format": "csv"})
    rate = fs or header_fs
    if "time" in cols:
        stamps = frame.pop(cols["time"]).to_numpy(np.float64)
        rate = rate or _uniform_rate(stamps, f"{path}: column 'time'")
    if not rate:
        raise ValueError(
            f"{path}: no sampling rate; add a 'time' column in seconds, a first line '# fs=250', or pass fs="
        )
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed:  # pandas' row index (to_csv() default) or a trailing separator: not a channel
        raise ValueError(
            f"{path}: column(s) {unnamed} have no name in the header (a row index written by pandas' to_csv(), "
            "or a trailing separator); write with index=False or name every channel column"
        )
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(f"{path}: columns {bad} are not numeric; every column except 'time' must be a channel")
    return Recording(data=frame.to_numpy(np.float64).T.copy(), fs=float(rate),
                     channel_names=tuple(str(c) for c in frame.columns), units="a.u.",
                     meta={"path": str(path), "format": "csv"})


def _read_rr_text(path: Path, **_: Any) -> Recording:
    try:
        rr = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=1)
    except Exception as exc:
        raise ValueError(f"{path}: an interval file needs one number (milliseconds) per line ({exc})") from exc
    if rr.ndim != 1:
        raise ValueError(f"{path}: an interval file needs exactly one column, got shape {rr.shape}")
    return _intervals(rr, {"path": str(path), "format": "rr"})


def _intervals(rr_ms: np.ndarray, meta: dict[str, Any]) -> Recording:
    rr_ms = np.asarray(rr_ms, np.float64)
    if rr_ms.size < 2 or not np.all(np.isfinite(rr_ms)) or np.any(rr_ms <= 0):
        raise ValueError(
            f"{meta.get('path')}: interval series needs >= 2 finite positive values in ms, "
            f"got {rr_ms.size} value(s) with min {rr_ms.min() if rr_ms.size else 'n/a'}"
        )
    return Recording(data=rr_ms, fs=1000.0 / float(rr_ms.mean()), channel_names=("rr",), kind="intervals",
                     units="ms", meta=meta)


def _uniform_rate(stamps: np.ndarray, what: str) -> float:
    if stamps.size < 2:
        raise ValueError(f"{what}: needs at least 2 time stamps to infer the sampling rate")
    step = np.diff(stamps)
    median = float(np.median(step))
    if median <= 0 or np.max(np.abs(step - median)) > 1e-3 * median:
        raise ValueError(f"{what}: time stamps are not uniformly spaced; resample to a uniform grid first")
    # Stamps far from zero (t0 = 3600 s) carry float noise into the step: 250.0000000059 Hz is 250 Hz,
    # and files of one rate must compare equal.
    return float(f"{1.0 / median:.10g}")


# ---------------------------------------------------------------------------------- preprocessing


def _need_continuous(rec: Recording, what: str) -> None:
    if rec.kind != "continuous":
        raise ValueError(f"{what}: needs a continuous recording; {rec.meta.get('path')} is an interval series")


def bandpass(rec: Recording, low: float | None, high: float | None, *, order: int = 4) -> Recording:
    """Zero-phase Butterworth band-pass (``sosfiltfilt``); ``low`` or ``high`` may be None."""
    from scipy import signal

    _need_continuous(rec, "bandpass")
    nyq = rec.fs / 2
    if low is not None and not 0 < low < nyq:
        raise ValueError(f"low: {low} Hz must be in (0, {nyq}) (Nyquist of fs={rec.fs})")
    if high is not None and not 0 < high < nyq:
        raise ValueError(f"high: {high} Hz must be in (0, {nyq}); lower it or skip the low-pass")
    if low is not None and high is not None and low >= high:
        raise ValueError(f"band: low={low} must be below high={high}")
    if low is None and high is None:
        return rec
    btype, edges = ("bandpass", [low, high]) if low and high else (("highpass", low) if low else ("lowpass", high))
    sos = signal.butter(order, edges, btype=btype, fs=rec.fs, output="sos")
    return rec.replace(data=signal.sosfiltfilt(sos, rec.data, axis=-1), meta={"band": [low, high]})


def notch(rec: Recording, freq: float, *, quality: float = 30.0, harmonics: bool = True) -> Recording:
    """Zero-phase IIR notch at ``freq`` Hz (and its harmonics below Nyquist when ``harmonics``)."""
    from scipy import signal

    _need_continuous(rec, "notch")
    if not 0 < freq < rec.fs / 2:
        raise ValueError(f"notch: {freq} Hz must be in (0, {rec.fs / 2}) for fs={rec.fs}")
    data = rec.data
    n_harm = int((rec.fs / 2 - 1e-9) // freq) if harmonics else 1
    for k in range(1, n_harm + 1):
        b, a = signal.iirnotch(k * freq, quality, fs=rec.fs)
        data = signal.filtfilt(b, a, data, axis=-1)
    return rec.replace(data=data, meta={"notch": freq})


def resample(rec: Recording, fs: float) -> Recording:
    """Polyphase resampling to ``fs`` Hz (anti-aliased); the ratio is approximated to 1/1000."""
    from scipy import signal

    _need_continuous(rec, "resample")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"resample: new rate must be > 0 Hz, got {fs!r}")
    if abs(fs - rec.fs) < 1e-9:
        return rec
    ratio = Fraction(fs / rec.fs).limit_denominator(1000)
    data = signal.resample_poly(rec.data, ratio.numerator, ratio.denominator, axis=-1)
    return rec.replace(data=data, fs=rec.fs * ratio.numerator / ratio.denominator, meta={"resampled_from": rec.fs})


_resample_recording = resample  # read_recording's `resample` argument shadows the function name


def epoch(rec: Recording, seconds: float, *, overlap: float = 0.0) -> list[Recording]:
    """Cut a continuous recording into epochs of ``seconds`` (the ragged tail is dropped).

    ``overlap`` is the fraction in [0, 1) shared by consecutive epochs. Each epoch's
    ``meta["epoch"]`` is its index and ``meta["onset_s"]`` its start time.
    """
    _need_continuous(rec, "epoch")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: must be in [0, 1), got {overlap}")
    size = int(round(seconds * rec.fs))
    n = rec.data.shape[-1]
    if size < 2 or size > n:
        raise ValueError(
            f"epoch: {seconds} s is {size} samples; needs 2..{n} for {rec.meta.get('path')} ({n / rec.fs:.1f} s long)"
        )
    step = max(1, int(round(size * (1 - overlap))))
    return [
        rec.replace(data=rec.data[:, start:start + size].copy(), meta={"epoch": i, "onset_s": start / rec.fs})
        for i, start in enumerate(range(0, n - size + 1, step))
    ]


def trim_flat_edges(rec: Recording, *, min_run: int = 8, max_burst: int = 32) -> Recording:
    """Drop constant padding at the start and end of a continuous recording.

    Padding written by exporters (or an amplifier stopped before the file was closed) holds every
    channel constant; fractal estimators read it as a real flat signal. Padding may come in
    pieces: eegmat-dev's rest files end with 1 s at one constant, a 20-sample burst, then 0.87 s
    at another. From each end, stretches where every channel stays constant for at least
    ``min_run`` samples are cut, together with bursts shorter than ``max_burst`` samples that sit
    between two such stretches. ``meta["trimmed_s"]`` records the seconds cut at each end.
    """
    _need_continuous(rec, "trim_flat_edges")
    n = rec.data.shape[-1]
    if n < 2:
        return rec
    moving = np.any(np.diff(rec.data, axis=-1) != 0, axis=0)  # transition i -> i + 1 changes somewhere
    if not moving.any():
        raise ValueError(f"{rec.meta.get('path', 'recording')}: every channel is constant; nothing to measure")
    head = _padding_transitions(moving, min_run, max_burst)
    tail = _padding_transitions(moving[::-1], min_run, max_burst)
    if head == 0 and tail == 0:
        return rec
    return rec.replace(data=rec.data[:, head:n - tail].copy(), meta={"trimmed_s": [head / rec.fs, tail / rec.fs]})


def _padding_transitions(moving: np.ndarray, min_run: int, max_burst: int) -> int:
    """Transitions of padding at the start of ``moving``: flat runs >= min_run - 1, short bursts between."""
    change = np.flatnonzero(np.diff(moving.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [moving.size]])
    runs = [(bool(moving[lo]), int(hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    cut, i = 0, 0
    while i < len(runs):
        is_moving, length = runs[i]
        if not is_moving and length >= min_run - 1:  # k still transitions = k + 1 equal samples
            cut += length
        elif cut and is_moving and length < max_burst and i + 1 < len(runs) and runs[i + 1][1] >= min_run - 1:
            cut += length  # a short step between two padding stretches
        else:
            break
        i += 1
    return cut


def filter_ectopic(
    rec: Recording, *, min_ms: float = 300.0, max_ms: float = 2000.0, window: int = 11, tolerance: float = 0.2
) -> Recording:
    """Drop ectopic beats and artefacts from an RR series.

    Keeps intervals within ``[min_ms, max_ms]`` that also lie within ``tolerance`` (fraction) of
    the centred ``window``-beat running mean of the in-range intervals. ``meta["n_removed"]``
    counts the dropped intervals.
    """
    from scipy.ndimage import uniform_filter1d

    if rec.kind != "intervals":
        raise ValueError(f"filter_ectopic: needs an interval series; {rec.meta.get('path')} is continuous")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window: must be an odd number of beats >= 1, got {window}")
    rr = rec.data
    in_range = (rr >= min_ms) & (rr <= max_ms)
    kept = rr[in_range]
    if kept.size < window:
        raise ValueError(
            f"filter_ectopic: only {kept.size} intervals in [{min_ms}, {max_ms}] ms in {rec.meta.get('path')}; "
            f"need at least window={window}"
        )
    local_mean = uniform_filter1d(kept, size=window, mode="nearest")
    good = np.abs(kept - local_mean) <= tolerance * local_mean
    clean = kept[good]
    return rec.replace(data=clean, fs=1000.0 / float(clean.mean()),
                       meta={"n_removed": int(rr.size - clean.size),
                             "ectopic_filter": [min_ms, max_ms, window, tolerance]})
