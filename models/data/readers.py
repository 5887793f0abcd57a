"""Read neural recordings from disk into one :class:`Recording` type, and clean them.

Formats (picked by file extension, see :func:`read_recording`):

========================  =====================================================================
``.edf`` ``.bdf``          EDF/BDF through MNE; values in volts. Trigger channels (BDF ``Status``,
                           EDF ``Trigger``) and ``EDF/BDF Annotations`` are not signal channels:
                           ``meta["events"]`` holds the triggers as ``(onset_s, code)`` rows,
                           ``meta["annotations"]`` the ``(onset_s, duration_s, text)`` annotations
                           (onsets from the first sample) and ``meta["stim_channels"]`` the names.
                           Signals recorded at different rates are refused (MNE would resample them
                           to the highest); ``channels=`` of one rate reads those at their rate.
``.fif`` ``.fif.gz``       MNE FIF raw files; values in SI units (volts for EEG); ``stim``
                           channels (``STI 014``) become ``meta["events"]`` as for EDF. Channels
                           marked bad (``raw.info["bads"]``) are left out, named in
                           ``meta["bad_channels"]``.
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

Annotations starting with "BAD" (MNE's artefact marks) stay in ``meta["annotations"]``: the file
datasets leave out windows over them and fingerprint jobs measure around them
(:mod:`models.data.bad_spans`).

Interval recordings have ``kind="intervals"``, ``data`` of shape ``(n,)`` in milliseconds and
``fs`` set to the mean event rate in Hz (events per second), so ``n / fs`` is still the duration.

Preprocessing helpers (defined in :mod:`models.data.preprocess`, re-exported here) work on a
:class:`Recording` (:mod:`models.data.recording`) and return a new one: :func:`bandpass` and
:func:`notch` (zero-phase, scipy.signal), :func:`resample` (polyphase), :func:`epoch`,
:func:`trim_flat_edges` (constant padding at either end), and :func:`filter_ectopic` for RR series.
"""
from __future__ import annotations

import functools
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.data.edf_rates import one_rate_channels
from models.data.fif_splits import fif_continuations  # noqa: F401  re-exported for files/discover
from models.data.preprocess import _resample_recording, bandpass, epoch, filter_ectopic, notch, resample, trim_flat_edges
from models.data.recording import Recording

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
    "fif_continuations",
]

log = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".edf", ".bdf", ".fif", ".fif.gz", ".nwb", ".npz", ".csv", ".tsv", ".rr", ".ibi", ".txt")
_RR_COLUMNS = {"rr_ms": 1.0, "ibi_ms": 1.0, "rr": 1.0, "intervals_ms": 1.0, "intervals_s": 1000.0, "intervals": 1000.0}


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
        rec = readers[ext](path, fs=fs, series=series, subject=subject, channels=channels)
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
        bads = [c for c in missing if c.lower() in {b.lower() for b in rec.meta.get("bad_channels", ())}]
        raise ValueError(
            f"channels: {missing} not in {rec.meta.get('path', 'the recording')}; available: {list(rec.channel_names)}"
            + (f"; {bads} are marked bad in the file (raw.info['bads']), so left out" if bads else "")
        )
    idx = [lookup[c.lower()] for c in channels]
    return rec.replace(data=rec.data[idx], channel_names=tuple(rec.channel_names[i] for i in idx))


# ---------------------------------------------------------------------------------------- formats


def _read_mne(path: Path, *, channels: Sequence[str] | None = None, **_: Any) -> Recording:
    import mne

    ext = _suffix(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if ext in (".edf", ".bdf"):
            read = mne.io.read_raw_edf if ext == ".edf" else mne.io.read_raw_bdf
            raw = read(path, preload=False, verbose="warning")
            include = one_rate_channels(raw, path, channels)
            if include is not None:  # MNE reads the included channels at their own rate
                raw = read(path, preload=False, include=include, verbose="warning")
            raw.load_data(verbose="warning")
        else:
            raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    if any("does not match the file size" in str(w.message) for w in caught):
        # a copy cut short (an interrupted download) reads as a shorter recording: say so, naming the file
        log.warning("%s: the header's record count does not match the file size (a truncated copy, or a recording "
                    "that was not stopped cleanly); reading the %.1f s the file holds%s", path,
                    raw.n_times / raw.info["sfreq"], _header_duration(path))
    meta: dict[str, Any] = {"path": str(path), "format": ext.lstrip(".")}
    meta.update(_events_and_annotations(raw, path))
    bads = [name for name in raw.info["bads"] if name in raw.ch_names]
    if bads and len(bads) == len(raw.ch_names):
        raise ValueError(f"{path}: every signal channel is marked bad ({bads}); clear raw.info['bads'] and save "
                         "it again, or leave the file out")
    if bads:  # marked bad in MNE (raw.info['bads']): as MNE's own analyses, leave them out of the signal
        raw.drop_channels(bads)
    meta["bad_channels"] = tuple(bads)
    # get_data() is already a float64 copy: astype copied it again (3x the data at the peak, with raw's own)
    data = np.asarray(raw.get_data(), dtype=np.float64)
    return Recording(data=data, fs=float(raw.info["sfreq"]), channel_names=tuple(raw.ch_names), units="V", meta=meta)


def _header_duration(path: Path) -> str:
    """' of the N s the header names', from the EDF/BDF fixed header (records x record seconds), or ''."""
    with open(path, "rb") as f:
        head = f.read(256)
    try:
        seconds = int(head[236:244]) * float(head[244:252])
    except ValueError:
        return ""
    return f" of the {seconds:g} s the header names" if seconds > 0 else ""


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
        # BioSemi BDF Status: trigger codes are bits 0-15; bits 16-23 are system flags (CMS in range,
        # battery, new epoch) that would add 65536.. to every code and make events of their own
        bdf = {"mask": 0xFFFF, "mask_type": "and"} if _suffix(path) == ".bdf" else {}
        found = mne.find_events(raw, stim_channel=stim, shortest_event=1, verbose="error", **bdf)
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
        if len(names) != data.shape[1] and len(names) == data.shape[0]:
            raise ValueError(f"{path}: {ts.name}.data has shape {tuple(ts.data.shape)} for {len(names)} electrodes: "
                             "stored as (channels, time), but NWB series are (time, channels); write data.T")
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
        given = tuple(_text(c) for c in np.asarray(z["channel_names"]).reshape(-1)) if "channel_names" in keys else None
        n_names = len(given) if given is not None else None
        if (data.shape[0] != n_names == data.shape[1]) or (n_names is None and data.shape[0] > data.shape[1]):
            # numpy/pandas code often keeps (time, channels): read as is it would be thousands of tiny channels
            raise ValueError(
                f"{path}: 'data' of shape {data.shape} looks like (time, channels)"
                + (f" ({n_names} channel_names)" if n_names is not None else " (more channels than samples)")
                + "; the npz layout is (channels, time): save data.T"
                + ("" if n_names is not None else
                   " (if it is (channels, time) already, save channel_names with one name per row)")
            )
        names = given if given is not None else tuple(f"ch{i}" for i in range(data.shape[0]))
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

    text = path.read_text(encoding="utf-8-sig")  # Windows editors and Excel start UTF-8 files with a BOM
    header_fs = None
    lines = text.splitlines()
    first = lines[0] if lines else ""
    if first.startswith("#"):
        found = _FS_LINE.search(first)  # '# fs=250', '# fs = 250', '# fs=250Hz'
        if found:
            header_fs = float(found.group(1))
    sep, decimal = "\t" if _suffix(path) == ".tsv" else ",", "."
    rows = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if sep == "," and rows and ";" in rows[0] and "," not in rows[0]:
        # a European Excel export: ';' between columns, ',' as the decimal mark ('1,5;2,5')
        sep, decimal = ";", ("," if any("," in row for row in rows[1:]) else ".")
    elif sep == "\t" and any("," in row for row in rows[1:]) and not any("." in row for row in rows[1:]):
        decimal = ","  # the same export as tab-separated text ('1,5\t2,5'): ',' never separates a TSV's columns
    frame = pd.read_csv(io.StringIO(text), sep=sep, decimal=decimal, comment="#")
    # 'Fz, Cz' (a space after each separator): ' Cz' would be another channel than the Cz of other files
    frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    if frame.empty:
        raise ValueError(f"{path}: no rows; a CSV recording needs one column per channel and one row per sample")
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        # rows hold more fields than the header has names: pandas would take the first column(s) as a row
        # index and shift every channel one column left. Empty extra fields are trailing separators.
        extra = frame.index.nlevels
        if frame.iloc[:, -extra:].isna().all().all():
            frame = pd.read_csv(io.StringIO(text), sep=sep, decimal=decimal, comment="#", index_col=False)
            frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
        else:
            raise ValueError(
                f"{path}: rows hold {extra} more value(s) than the header has names ({list(frame.columns)}); "
                "name every column in the header (one per channel, plus an optional 'time')"
            )
    names = [str(c).strip() for c in frame.columns]
    numbered = all(n.isdigit() for n in names) and sorted(map(int, names)) in (
        list(range(len(names))), list(range(1, len(names) + 1)))  # channels named 1..N (or 0..N-1) are a header
    if all(_is_number(n) for n in names) and not numbered:
        raise ValueError(
            f"{path}: the first line {list(frame.columns)} holds numbers, not channel names (no header row; it "
            "would be lost as data); add a header line naming each channel, e.g. 'Fz,Cz,Pz'"
        )
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


_FS_LINE = re.compile(r"\bfs\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", re.IGNORECASE)


def _is_number(name: Any) -> bool:
    try:
        float(str(name).replace(",", "."))
    except ValueError:
        return False
    return True


def _read_rr_text(path: Path, **_: Any) -> Recording:
    try:
        rr = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=1, encoding="utf-8-sig")  # BOM: see _read_csv
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
