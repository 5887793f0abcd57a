"""Split FIF recordings: MNE writes files over 2 GB as parts (``x_raw.fif``, ``x_raw-1.fif``; BIDS
``_split-01``, ``_split-02``) and reads the later parts with the first, so they are one recording."""
from __future__ import annotations

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
        if m and f"{prefix}{m['base']}{m['ext']}" in names:
            out.add(path)
            continue
        m = _BIDS_SPLIT.match(name)
        if m and int(m["n"]) > 1 and any(
                f"{prefix}{m['head']}{first}{m['tail']}" in names for first in ("01", "1", "001")):
            out.add(path)
    return out
