"""Split FIF recordings: MNE writes files over 2 GB as parts (``x_raw.fif``, ``x_raw-1.fif``; BIDS
``_split-01``, ``_split-02``) and reads the later parts with the first, so they are one recording."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Sequence

_FIF_PART = re.compile(r"^(?P<base>.+)-(?P<n>[1-9][0-9]*)(?P<ext>\.fif(?:\.gz)?)$", re.IGNORECASE)
_BIDS_SPLIT = re.compile(r"^(?P<head>.+_split-)(?P<n>[0-9]+)(?P<tail>_[^/]*\.fif(?:\.gz)?)$", re.IGNORECASE)


def fif_continuations(paths: Sequence[str | Path]) -> set[str]:
    """The continuation parts of split FIF files among ``paths`` (``x_raw-1.fif`` beside ``x_raw.fif``,
    BIDS ``_split-02`` beside ``_split-01``): MNE reads them with their first part, so listing them as
    recordings of their own reads their samples twice."""
    names = {str(p) for p in paths}
    out = set()
    for path in names:
        folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
        prefix = f"{folder}/" if folder else ""
        m = _FIF_PART.match(name)
        first = f"{prefix}{m['base']}{m['ext']}" if m else None
        if first in names and _read_with(first, path):
            out.add(path)
            continue
        m = _BIDS_SPLIT.match(name)
        firsts = [f"{prefix}{m['head']}{n}{m['tail']}" for n in ("01", "1", "001")] if m and int(m["n"]) > 1 else []
        if any(f in names and _read_with(f, path) for f in firsts):
            out.add(path)
    return out


@functools.lru_cache(maxsize=256)
def _parts_of(first: str, mtime_ns: int) -> tuple[str, ...] | None:
    """The files MNE reads for the FIF file ``first`` (its split parts included), or None when it cannot
    open it (not a local file, or not readable FIF)."""
    try:
        import mne

        raw = mne.io.read_raw_fif(first, preload=False, verbose="error")
    except Exception:  # noqa: BLE001  any failure: fall back to the file names alone
        return None
    return tuple(os.path.realpath(str(f)) for f in raw.filenames)


def _read_with(first: str, part: str) -> bool:
    """Whether MNE reads ``part`` with ``first``. Names alone can mislead: ``trial.fif``, ``trial-1.fif`` may be
    whole recordings numbered by hand; only the first part's split pointer says."""
    parts = _parts_of(first, os.stat(first).st_mtime_ns) if os.path.isfile(first) else None  # mtime: rewritten files
    return True if parts is None else os.path.realpath(part) in parts
