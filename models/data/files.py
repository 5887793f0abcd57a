"""File datasets: a folder of recordings (EDF/BDF/FIF, NWB, npz, CSV) cut into fixed-length windows.

Recordings are read once with :func:`models.data.readers.read_recording` (optionally channel-picked;
constant padding at either end cut; then optionally resampled), kept in memory as float32 and windowed
into ``window`` samples every ``stride`` samples. Train and validation splits are made by file or by
subject (``split_by``, a seeded permutation), so no recording (or subject) leaks across splits. Channel
names across all files form one vocabulary (case-insensitive: 'FP1' and 'Fp1' are one channel) whose indices become
``<key>_channel_ids``; recordings with fewer channels are padded and masked by the collate function.
The subject label comes from a BIDS ``sub-XX`` entity in the path (else the file stem).
Windows that share a sample with a span annotated as bad (MNE's ``BAD_...`` annotations, see
:mod:`models.data.bad_spans`) are left out unless ``reject_by_annotation`` is false; the datamodule's
``info["windows_dropped_bad"]`` counts them per split.
"""
from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from models.data.bad_spans import bad_spans, longest_clean, windows_clear_of_bad
from models.data.batch import CHANNEL_KEYS, TIME_MAJOR_KEYS
from models.data.readers import (SUPPORTED_EXTENSIONS, Recording, fif_continuations, read_recording, resample,
                                 trim_flat_edges)

__all__ = ["RecordingWindows", "find_recordings", "load_recordings", "subject_of", "build_files_datamodule"]

log = logging.getLogger(__name__)
_SUB = re.compile(r"sub-([A-Za-z0-9]+)")
_BIDS_TABLES = {"participants.tsv", "samples.tsv"}
_BIDS_SIDECARS = ("events", "channels", "electrodes", "scans", "sessions", "coordsystem", "photo", "beh")
_FILES_KEYS = {"name", "root", "pattern", "key", "window", "stride", "val_stride", "val_fraction", "resample_hz",
               "channels", "max_files", "split_by", "batch_size", "num_workers", "seed", "reject_by_annotation"}


# Documentation that data sets ship beside recordings (PhysioNet: LICENSE.txt, SHA256SUMS.txt); .txt is
# also the RR-interval format, so these names would otherwise be read as recordings and fail.
_DOC_STEMS = ("readme", "license", "licence", "changes", "changelog", "sha256sums", "md5sums", "notes")


def _is_sidecar(path: Path) -> bool:
    """BIDS metadata tables (participants.tsv, *_events.tsv, ...) and data-set documentation (README.txt,
    LICENSE.txt, SHA256SUMS.txt) sit beside recordings but hold no signal."""
    name = path.name.lower()
    if path.suffix.lower() == ".txt" and path.stem.lower() in _DOC_STEMS:
        return True
    return name in _BIDS_TABLES or any(name.endswith(f"_{kind}.tsv") for kind in _BIDS_SIDECARS)


def find_recordings(root: str | Path, pattern: str = "**/*") -> list[Path]:
    """Sorted files under ``root`` matching ``pattern`` with a readable extension (BIDS tables, data-set
    documentation such as LICENSE.txt, and hidden files or folders under ``root`` skipped). Linked folders
    are followed; a file reachable by several paths (links) is listed once."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data.root: {str(root)!r} is not a folder; point it at a folder of recordings")
    if Path(pattern).is_absolute():
        raise ValueError(f"data.pattern: {pattern!r} is an absolute path; give a glob relative to data.root, "
                         f"e.g. '**/*.edf' (data.root={str(root)!r})")
    # glob.glob follows linked folders under '**' (pathlib's glob skipped them: a root of links to subject
    # folders lost those subjects silently); a link loop ends at the system's link limit.
    found = (root / rel for rel in glob.glob(pattern, root_dir=str(root), recursive=True, include_hidden=True))
    readable = [p for p in found if p.is_file() and
                (p.suffix.lower() in SUPPORTED_EXTENSIONS or p.name.lower().endswith(".fif.gz"))]
    matched = _one_path_per_file(root, readable)
    # Hidden names under the root are copies, not recordings: macOS '._x.edf' AppleDouble files,
    # '.ipynb_checkpoints/'; they would fail to read and stop the whole dataset.
    hidden = {p for p in matched if any(part.startswith(".") and part not in (".", "..")
                                        for part in p.parts[len(root.parts):])}
    if hidden:
        log.info("skipping %d hidden file(s), e.g. %s", len(hidden), min(hidden))
        matched = [p for p in matched if p not in hidden]
    parts = fif_continuations([p.as_posix() for p in matched])
    if parts:  # MNE reads them with the first part of their split file
        log.info("skipping %d continuation part(s) of split FIF files, e.g. %s", len(parts), min(parts))
        matched = [p for p in matched if p.as_posix() not in parts]
    sidecars = [p for p in matched if _is_sidecar(p)]
    if sidecars:
        log.info("skipping %d metadata file(s) (BIDS tables, README/LICENSE), e.g. %s", len(sidecars), sidecars[0].name)
    paths = sorted(p for p in matched if not _is_sidecar(p))
    if not paths:
        raise ValueError(
            f"data.root: no recordings matching {pattern!r} under {str(root)!r} (extensions: {SUPPORTED_EXTENSIONS})"
        )
    return paths


def _one_path_per_file(root: Path, paths: list[Path]) -> list[Path]:
    """One path per real file: a link beside its target (``latest.edf``) or a file seen again through a
    linked folder would be read twice, and could land in train and validation both. The path that has
    no link under ``root`` wins (it carries the folder names the subject label comes from), then the shortest."""
    real_root = root.resolve()
    best: dict[Path, Path] = {}
    for p in sorted(paths, key=lambda p: (len(p.parts), str(p))):
        real = p.resolve()
        if real not in best or (best[real].resolve() != real_root / best[real].relative_to(root)
                                and real == real_root / p.relative_to(root)):
            best[real] = p
    if len(best) < len(paths):
        log.info("skipping %d path(s) that reach an already listed file through a link", len(paths) - len(best))
    return list(best.values())


def subject_of(path: Path) -> str:
    """BIDS subject label (``sub-XX`` in the path) or, failing that, the file stem."""
    for part in reversed(path.parts):
        m = _SUB.search(part)
        if m:
            return m.group(1)
    return path.stem


def load_recordings(paths: Sequence[Path], *, resample_hz: Optional[float] = None,
                    channels: Optional[Sequence[str]] = None) -> list[Recording]:
    """Read continuous recordings, constant padding at either end cut (:func:`~models.data.readers.trim_flat_edges`);
    all must share one sampling rate (resample otherwise)."""
    channels = _channel_list(channels)  # one name (data.channels=Cz) is not its letters; [1, 2] names '1', '2'
    recs = []
    for i, path in enumerate(paths):
        rec = read_recording(path, channels=channels)
        if rec.kind != "continuous":
            raise ValueError(
                f"{path}: is an interval series ({rec.kind}); the files dataset windows continuous signals: "
                "narrow data.pattern (e.g. '**/*.edf')"
            )
        # constant padding at either end (eegmat-dev rest files end with 1.9 s of it) is not signal: the last
        # window of such a file would teach the model padding (the fingerprint jobs trim it too)
        if rec.data.shape[-1] > 1 and np.any(rec.data[:, 1:] != rec.data[:, :-1]):  # an all-constant file stays
            rec = trim_flat_edges(rec)
        if resample_hz:  # after the trim: resampled, the padding rings and is no longer constant
            rec = resample(rec, resample_hz)
        twice = sorted({c for c in rec.channel_names if rec.channel_names.count(c) > 1})
        if twice:  # one name, one channel id: the model could not tell these channels apart
            raise ValueError(f"{path}: channel name(s) {twice} appear more than once in channel_names "
                             f"{list(rec.channel_names)}; rename them in the file, or pick one with data.channels")
        changes: dict[str, Any] = {"data": np.asarray(rec.data, dtype=np.float32)}
        _check_finite(changes["data"], rec.channel_names, rec.fs, path)
        if channels:  # picked case-insensitively; one spelling per channel keeps one id per channel
            changes["channel_names"] = tuple(str(c) for c in channels)
        if resample_hz and abs(rec.fs - float(resample_hz)) <= 1e-3 * float(resample_hz):
            changes["fs"] = float(resample_hz)  # the polyphase ratio is approximated to 1/1000
        recs.append(rec.replace(**changes))
        if (i + 1) % 20 == 0:
            log.info("read %d/%d recordings", i + 1, len(paths))
    rates = sorted({float(r.fs) for r in recs})
    if len(rates) > 1:
        raise ValueError(f"data.resample_hz: recordings have different rates {rates} Hz; set one rate to resample to")
    return recs


def _check_finite(data: np.ndarray, names: Sequence[str], fs: float, path: Path) -> None:
    bad = ~np.isfinite(data)
    if bad.any():
        ch, t = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: {int(bad.sum())} non-finite sample(s) (NaN/inf), the first in channel {names[ch]!r} at "
            f"{t / fs:.1f} s; every window over them would train on NaN: interpolate the gaps or cut the file"
        )


class RecordingWindows(Dataset):
    """Fixed-length windows over in-memory recordings (map-style; works with DistributedSampler).

    Parameters
    ----------
    recordings : sequence of Recording
        Continuous recordings with one common ``fs``.
    window, stride : int
        Window length and hop in samples; recordings shorter than ``window`` yield no window.
    key : str
        Batch key for the signal (``eeg``, ``ecog``, ``ieeg``, ``lfp``, ``emg``).
    channel_vocab : sequence of str
        Channel names indexing ``<key>_channel_ids`` (default: the sorted names of these recordings).
    subject_vocab : sequence of str
        Subject labels indexing ``subject`` (default: the sorted labels of these recordings).
    reject_by_annotation : bool
        Leave out every window that shares a sample with a span annotated as bad (description starting
        with "bad", any case: MNE's ``BAD_`` convention and default); ``n_dropped_bad`` counts them.

    Shape:
        One sample: ``<key> (C, window)`` float32, ``<key>_channel_ids (C,)``, ``subject ()`` long,
        ``fs`` float; ``C`` may differ between recordings (the collate pads and masks).
    """

    def __init__(self, recordings: Sequence[Recording], *, window: int, stride: int, key: str = "eeg",
                 channel_vocab: Optional[Sequence[str]] = None, subject_vocab: Optional[Sequence[str]] = None,
                 reject_by_annotation: bool = True):
        if not isinstance(window, (int, np.integer)) or window < 2:
            raise ValueError(f"data.window: must be an integer >= 2 samples, got {window!r}")
        if not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"data.stride: must be an integer >= 1 sample, got {stride!r}")
        continuous = [k for k in CHANNEL_KEYS if k not in TIME_MAJOR_KEYS]  # (C, T) keys of models.data.batch
        if key not in continuous:
            raise ValueError(f"data.key: {key!r} is not a continuous batch key; use one of {continuous}")
        self.recordings, self.window, self.key = list(recordings), int(window), key
        if not self.recordings:
            raise ValueError("recordings: empty; nothing to window")
        self.fs = float(self.recordings[0].fs)
        self.channel_vocab = list(channel_vocab or sorted({c for r in self.recordings for c in r.channel_names}))
        subjects = [subject_of(Path(r.meta.get("path", f"rec{i}"))) for i, r in enumerate(self.recordings)]
        self.subject_vocab = list(subject_vocab or sorted(set(subjects)))
        lookup = {c: i for i, c in enumerate(self.channel_vocab)}
        missing = sorted({c for r in self.recordings for c in r.channel_names} - set(lookup))
        if missing:
            raise ValueError(f"channel_vocab: lacks channel(s) {missing[:10]}; build it from all recordings")
        self._ids = [torch.tensor([lookup[c] for c in r.channel_names], dtype=torch.long) for r in self.recordings]
        self._subject = [self.subject_vocab.index(s) for s in subjects]
        self.index: list[tuple[int, int]] = []
        self.n_dropped_bad = 0
        short, all_bad = [], []
        for i, r in enumerate(self.recordings):
            n = r.data.shape[-1]
            if n < self.window:
                short.append(r.meta.get("path", f"rec{i}"))
            starts = np.arange(0, n - self.window + 1, int(stride))
            if reject_by_annotation:  # MNE's reject_by_annotation: artefacts marked BAD_... never reach the model
                clear = windows_clear_of_bad(bad_spans(r), starts, self.window)
                self.n_dropped_bad += int((~clear).sum())
                if starts.size and not clear.any():
                    all_bad.append(r.meta.get("path", f"rec{i}"))
                starts = starts[clear]
            self.index.extend((i, int(start)) for start in starts)
        if short:
            log.warning("%d recording(s) shorter than window=%d samples give no window: %s",
                        len(short), self.window, short[:5])
        if self.n_dropped_bad:
            log.info("left out %d window(s) overlapping spans annotated BAD (%d kept)%s", self.n_dropped_bad,
                     len(self.index), f"; no clean window at all in {all_bad[:5]}" if all_bad else "")
        if not self.index:
            if all_bad:
                raise ValueError(f"data.window: every window of {all_bad[:5]} overlaps a span annotated BAD "
                                 f"(window={self.window} samples); lower data.window, or set "
                                 "data.reject_by_annotation=false to train on the marked artefacts")
            raise ValueError(f"data.window: {self.window} samples is longer than every recording; lower it")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec_i, start = self.index[int(i)]
        data = self.recordings[rec_i].data[:, start:start + self.window]
        return {
            self.key: torch.from_numpy(data.copy()),  # a copy: a one-channel slice would be a view of the recording
            f"{self.key}_channel_ids": self._ids[rec_i].clone(),
            "subject": torch.tensor(self._subject[rec_i], dtype=torch.long),
            "fs": self.fs,
        }


def _one_spelling_per_channel(recs: dict[Path, Recording], paths: Sequence[Path]) -> dict[Path, Recording]:
    """Name each channel with one spelling across files ('FP1' and 'Fp1' are one electrode, so one id), as
    channel picking already matches names case-insensitively. A file holding two names that differ only in
    case keeps its own names (two channels there)."""
    spelling: dict[str, str] = {}
    for name in sorted({c for p in paths for c in recs[p].channel_names}):
        spelling.setdefault(name.casefold(), name)
    out = dict(recs)
    for p in paths:
        names = recs[p].channel_names
        if len({c.casefold() for c in names}) == len(names):
            canonical = tuple(spelling[c.casefold()] for c in names)
            if canonical != names:
                out[p] = recs[p].replace(channel_names=canonical)
    return out


def _rate(value: Any) -> Optional[float]:
    """``data.resample_hz``: ``None`` or a finite rate > 0 (text such as "250" from a command line is read)."""
    if value is None:
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    if isinstance(value, bool) or not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"data.resample_hz: must be a rate in Hz > 0, or null to keep the files' rate; got {value!r}")
    return rate


def _channel_list(value: Any) -> Optional[list[str]]:
    """``data.channels`` as names: one name, or a list; numbered channels may come as ints (Hydra reads
    ``[1,2]`` as ints), which name channels '1' and '2'."""
    if value is None:
        return None
    names = [value] if isinstance(value, (str, int)) else list(value)
    bad = [c for c in names if isinstance(c, bool) or not isinstance(c, (str, int, np.integer))]
    if bad:
        raise ValueError(f"data.channels: {bad} are not channel names; give names such as ['Cz', 'Pz'], got {value!r}")
    names = [str(c) for c in names]
    folded = [c.casefold() for c in names]
    twice = sorted({c for c, f in zip(names, folded) if folded.count(f) > 1})
    if twice:
        raise ValueError(f"data.channels: {twice} listed more than once (names match case-insensitively); "
                         f"give each channel once, got {value!r}")
    return names


def _count(data: Mapping[str, Any], name: str, default: Optional[int], least: int, meaning: str, *,
           prefix: str = "data") -> Optional[int]:
    """An integer config field ``>= least`` (``None`` = ``default``); 2.5, -1 or 'ten' are named, not coerced."""
    value = data.get(name)
    if value is None:
        return default
    try:
        number = None if isinstance(value, bool) else int(value)
        exact = number is not None and float(value) == number
    except (TypeError, ValueError):
        exact = False
    if not exact or number < least:
        raise ValueError(f"{prefix}.{name}: must be an integer >= {least} ({meaning}), got {value!r}")
    return number


def _split_files(paths: list[Path], val_fraction: float, seed: int, split_by: str) -> tuple[list[Path], list[Path]]:
    """Seeded split of whole files (``split_by="file"``) or whole subjects (``"subject"``)."""
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        pass  # named below with the value as given
    if not (isinstance(val_fraction, float) and 0 < val_fraction < 1):  # at least one file (or subject) is
        # always held out, so 0 cannot mean none
        raise ValueError(f"data.val_fraction: must lie in (0, 1), got {val_fraction!r}")
    if split_by not in ("file", "subject"):
        raise ValueError(f"data.split_by: must be 'file' or 'subject', got {split_by!r}")
    groups = sorted({str(p) if split_by == "file" else subject_of(p) for p in paths})
    if len(groups) < 2:
        log.warning("one %s only: validation windows come from the same data as training", split_by)
        return paths, paths
    order = np.random.default_rng(seed).permutation(len(groups))
    n_val = min(len(groups) - 1, max(1, int(round(val_fraction * len(groups)))))
    val_groups = {groups[i] for i in order[:n_val]}
    in_val = [(str(p) if split_by == "file" else subject_of(p)) in val_groups for p in paths]
    return [p for p, v in zip(paths, in_val) if not v], [p for p, v in zip(paths, in_val) if v]


def build_files_datamodule(cfg: Mapping[str, Any], module_cls, batch_size: int):
    """The ``files`` datamodule (see platform/fmx/conf/data/files.yaml for the fields)."""
    data = dict(cfg.get("data", {}) or {})
    unknown = sorted(set(data) - _FILES_KEYS)
    if unknown:
        raise ValueError(f"data: unknown key(s) {unknown} for the files dataset; known: {sorted(_FILES_KEYS)}")
    root = data.get("root")
    if root in (None, "", "???"):
        raise ValueError("data.root: not set; give the folder of recordings, e.g. data.root=../shared/data/eegmat-dev")
    seed = _count(data, "seed", int(cfg.get("seed", 0) or 0), 0,
                  "the train/val split and the shuffle; null = the root seed")
    window = _count(data, "window", 256, 2, "samples per window")
    stride = _count(data, "stride", window, 1, "train hop in samples; null = window")
    val_stride = _count(data, "val_stride", window, 1, "validation hop in samples; null = window")
    max_files = _count(data, "max_files", None, 1, "files to read; null reads all")
    reject = data.get("reject_by_annotation", True)
    if not isinstance(reject, bool):
        raise ValueError(f"data.reject_by_annotation: must be true or false, got {reject!r}")
    paths = find_recordings(root, data.get("pattern") or "**/*")
    if max_files is not None:
        paths = paths[:max_files]
    recs = dict(zip(paths, load_recordings(paths, resample_hz=_rate(data.get("resample_hz")),
                                           channels=_channel_list(data.get("channels")))))
    # Files shorter than a window yield nothing: drop them before the split so none takes a split's place.
    short = [p for p in paths if recs[p].data.shape[-1] < window]
    if short:
        log.warning("%d recording(s) shorter than window=%d samples give no window: %s", len(short), window,
                    [str(p) for p in short[:5]])
        paths = [p for p in paths if recs[p].data.shape[-1] >= window]
        if not paths:
            raise ValueError(f"data.window: {window} samples is longer than every recording; lower it")
    if reject:  # as short files: one with no clean window would take a split's place and leave it empty
        clean = {p: longest_clean(recs[p]) for p in paths}

        def clear_on_grid(p, hop: int) -> bool:  # windows start on the hop grid: a clean stretch may fit none
            starts = np.arange(0, recs[p].data.shape[-1] - window + 1, hop)
            return bool(windows_clear_of_bad(bad_spans(recs[p]), starts, window).any())

        # the file may land in either split: it needs a clear window on both grids
        all_bad = [p for p in paths if clean[p] < window or not (clear_on_grid(p, stride)
                                                                 and clear_on_grid(p, val_stride))]
        if all_bad:
            shown = [f"{p} (longest clean stretch {clean[p]} samples)" for p in all_bad[:5]]
            log.warning("%d recording(s) have no window of %d samples clear of spans annotated BAD: %s",
                        len(all_bad), window, shown)
            paths = [p for p in paths if p not in all_bad]
            if not paths:
                raise ValueError(f"data.window: no recording has {window} samples in a row clear of spans annotated "
                                 f"BAD, e.g. {shown[:3]}; lower data.window, or set data.reject_by_annotation=false "
                                 "to train on the marked artefacts")
    train_paths, val_paths = _split_files(paths, data.get("val_fraction", 0.2), seed,
                                          str(data.get("split_by", "file")))
    key = str(data.get("key", "eeg"))
    recs = _one_spelling_per_channel(recs, paths)
    channel_vocab = sorted({c for p in paths for c in recs[p].channel_names})
    subject_vocab = sorted({subject_of(p) for p in paths})
    common = dict(window=window, key=key, channel_vocab=channel_vocab, subject_vocab=subject_vocab,
                  reject_by_annotation=reject)
    train = RecordingWindows([recs[p] for p in train_paths], stride=stride, **common)
    val = RecordingWindows([recs[p] for p in val_paths], stride=val_stride, **common)
    info = {"fs": train.fs, "n_time": window, "modalities": [key], "n_channel_ids": len(channel_vocab),
            "channel_names": channel_vocab, "n_subjects": len(subject_vocab), "subjects": subject_vocab,
            "train_files": [str(p) for p in train_paths], "val_files": [str(p) for p in val_paths],
            "windows_dropped_bad": {"train": train.n_dropped_bad, "val": val.n_dropped_bad}}
    return module_cls(train=train, val=val, batch_size=batch_size,
                      num_workers=_count(data, "num_workers", 0, 0, "loader processes"), info=info, seed=seed)
