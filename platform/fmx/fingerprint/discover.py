"""Find the recordings of a cohort: a BIDS-like folder, a manifest CSV, or a multi-subject RR file.

``discover(DATA)`` returns one row per recording with the columns ``path``, ``member``,
``subject``, ``session``, ``condition``, ``modality`` plus every column of ``participants.tsv``
when present. Missing sessions and conditions are empty strings (not NaN: pandas drops NaN keys
when grouping). ``DATA`` may be:

* a folder or ``s3://`` prefix in a BIDS-like layout:
  ``sub-XX/[ses-YY/]<modality>/sub-XX[_ses-YY]_task-<condition>[_run-N]_<modality>.<ext>``,
  with an optional ``participants.tsv`` (``participant_id`` column holding ``sub-XX``);
* a manifest ``.csv``/``.tsv`` with a ``path`` column (relative paths are taken from the
  manifest's folder) and optional ``subject``, ``session``, ``condition`` columns (missing ones
  are parsed from BIDS-like file names), plus any extra per-subject columns;
* an ``.npz`` in the multi-subject RR layout (``rr_ms`` + ``offsets`` + ``subject_ids`` [+ ``group``]):
  one row per subject, ``member`` set to the subject id and ``group`` as a participant column.
"""
from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from fmx.fingerprint import storage
from models.data.readers import SUPPORTED_EXTENSIONS, fif_continuations

__all__ = ["discover", "parse_bids_name", "read_participants", "KEY_COLUMNS"]

log = logging.getLogger(__name__)

KEY_COLUMNS = ("subject", "session", "condition")
_BIDS = re.compile(
    r"^(?P<subject>sub-[A-Za-z0-9]+)"
    r"(?:_ses-(?P<session>[A-Za-z0-9]+))?"
    r"(?:_task-(?P<condition>[A-Za-z0-9]+))?"
    r"(?:_[a-z]+-[A-Za-z0-9]+)*"
    r"_(?P<modality>[A-Za-z0-9]+)"
    r"(?P<ext>\.[A-Za-z0-9.]+)$"
)
_SES_FOLDER = re.compile(r"^ses-[A-Za-z0-9]+$")
# signal files for sure (.txt/.csv/.tsv/.npz are also tables and notes): one of these left out for its name is said
_SIGNAL_EXTENSIONS = (".edf", ".bdf", ".fif", ".fif.gz", ".nwb")
# BIDS side-car suffixes: tables and descriptions next to the signals, never signals themselves.
_SIDE_CARS = {"events", "channels", "electrodes", "scans", "sessions", "coordsystem", "participants", "beh"}
# BIDS top-level folders that hold processed, source or code files: copies of a recording there are not recordings.
_NOT_RAW = {"derivatives", "sourcedata", "code"}


def parse_bids_name(name: str) -> dict[str, str] | None:
    """Entities of a BIDS-like file name, or None when it does not match.

    >>> parse_bids_name("sub-01_ses-2_task-rest_run-1_eeg.edf")["condition"]
    'rest'
    """
    m = _BIDS.match(PurePosixPath(name).name)
    if not m:
        return None
    out = {k: (v or "") for k, v in m.groupdict().items()}
    if out["session"]:
        out["session"] = f"ses-{out['session']}"
    return out


def read_participants(uri: str) -> "pd.DataFrame":  # noqa: F821
    """``participants.tsv`` as a frame keyed by ``subject`` (values like ``sub-01``), all text columns as str."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in frame.columns:
        raise ValueError(f"{uri}: needs a 'participant_id' column (values like sub-01); found {list(frame.columns)}")
    frame = frame.rename(columns={"participant_id": "subject"})
    frame["subject"] = [s if s.startswith("sub-") else f"sub-{s}" for s in frame["subject"].str.strip()]
    twice = sorted(set(frame["subject"][frame["subject"].duplicated()]))
    if twice:  # merged onto the recordings, each would be fitted and counted once per row
        raise ValueError(f"{uri}: participant_id {twice} listed more than once; keep one row per participant")
    for column in frame.columns:
        # BIDS writes a missing value as 'n/a': an age column with one 'n/a' is still numbers (NaN there)
        missing = frame[column].str.strip().isin(("n/a", "N/A", "NA", ""))
        numeric = pd.to_numeric(frame[column].mask(missing), errors="coerce")
        if column != "subject" and numeric[~missing].notna().all() and not missing.all():
            frame[column] = numeric
    return frame.drop(columns=[c for c in ("path", "member", "session", "condition", "modality") if c in frame.columns])


def discover(data: str, *, modality: str | None = None) -> "pd.DataFrame":  # noqa: F821
    """One row per recording under ``data`` (see the module docstring for the accepted layouts)."""
    data = str(data)
    if not storage.exists(data):
        raise ValueError(f"data: {data!r} does not exist; give a folder, an s3:// prefix, a manifest CSV or an .npz")
    lower = data.lower()
    if lower.endswith((".csv", ".tsv")):
        frame = _from_manifest(data)
    elif lower.endswith(".npz"):
        frame = _from_rr_cohort(data)
    elif _is_file(data):
        frame = _from_files([data], root=None)
    else:
        files = storage.list_files(data) if storage.is_s3(data) else _local_files(data)
        frame = _from_files(files, root=data)
        participants = storage.join(data, "participants.tsv")
        if storage.exists(participants):
            frame = frame.merge(read_participants(participants), on="subject", how="left")
    if modality:
        frame = frame[frame["modality"] == modality].reset_index(drop=True)
    if frame.empty:
        raise ValueError(
            f"data: no recordings found in {data!r}"
            + (f" for modality {modality!r}" if modality else "")
            + "; expected sub-XX/[ses-YY/]<modality>/sub-XX_task-<condition>_<modality>.<ext> files, a manifest "
            "CSV with a 'path' column, or an RR cohort .npz"
        )
    dup = frame.duplicated(["subject", "session", "condition", "member"], keep=False)
    if dup.any():
        shown = frame.loc[dup, "path"].tolist()[:4]
        raise ValueError(
            f"data: several recordings share subject/session/condition, e.g. {shown}; give them distinct "
            "sessions or conditions (a manifest CSV can set both)"
        )
    for column in ("subject", "session", "condition", "modality", "member"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame.sort_values(["subject", "session", "condition"]).reset_index(drop=True)


def _local_files(root: str) -> list[str]:
    """Every file under a local folder, following linked folders (a cohort folder of links to subject
    folders kept elsewhere: ``Path.rglob`` skips those links, and their subjects went missing unnoticed).
    A folder reached again through a link loop is walked once."""
    seen: set[str] = set()
    out = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        # str(Path(...)) as storage.list_files writes them ('./a' is 'a'): paths key resumable results
        out.extend(str(Path(folder, n)) for n in names if os.path.isfile(os.path.join(folder, n)))
    return sorted(out)


def _is_file(uri: str) -> bool:
    if storage.is_s3(uri):
        return any(uri.lower().endswith(ext) for ext in SUPPORTED_EXTENSIONS)
    return Path(uri).is_file()


def _from_files(paths: list[str], root: str | None):
    import pandas as pd

    rows, unnamed = [], []
    parts = fif_continuations([p.replace("\\", "/") for p in paths])  # read with their first part by MNE
    for path in paths:
        if path.replace("\\", "/") in parts:
            continue
        if path.lower().endswith("participants.tsv") or _not_raw(path, root) or _hidden(path, root):
            continue
        if path.replace("\\", "/").rsplit("/", 1)[-1].startswith("."):  # macOS ._x AppleDouble files, editors' copies
            continue
        entities = parse_bids_name(path.replace("\\", "/"))
        if entities is None or not entities["ext"].lower().endswith(SUPPORTED_EXTENSIONS):
            if path.lower().endswith(_SIGNAL_EXTENSIONS):
                unnamed.append(path)
            continue
        if entities["modality"].lower() in _SIDE_CARS:
            continue
        if not entities["session"]:  # 'sub-01/ses-pre/eeg/sub-01_task-rest_eeg.edf': the session is the folder's
            folders = [part for part in path.replace("\\", "/").split("/")[:-1] if _SES_FOLDER.match(part)]
            entities["session"] = folders[-1] if folders else ""
        rows.append({"path": path, "member": "", **{k: entities[k] for k in (*KEY_COLUMNS, "modality")}})
    if unnamed and rows:  # with no row at all, discover's error says which names it expects
        log.warning("left out %d recording(s) not named sub-XX[_ses-YY][_task-COND]_<modality>.<ext>, e.g. %s; "
                    "rename them, or list them in a manifest CSV (path, subject, condition)", len(unnamed),
                    [os.path.basename(p) for p in unnamed[:3]])
    return pd.DataFrame(rows, columns=["path", "member", *KEY_COLUMNS, "modality"])


def _relative(path: str, root: str) -> str:
    if storage.is_s3(root):
        base = str(root).rstrip("/") + "/"
        return path[len(base):] if path.startswith(base) else path
    return os.path.relpath(path, root).replace("\\", "/")


def _hidden(path: str, root: str | None) -> bool:
    """Whether a folder of ``path`` under ``root`` is hidden (``.ipynb_checkpoints/``, ``.Trash/``): copies
    there would be read as extra recordings of their subject, or collide with the real ones."""
    if root is None:
        return False
    return any(part.startswith(".") and part not in (".", "..") for part in _relative(path, root).split("/")[:-1])


def _not_raw(path: str, root: str | None) -> bool:
    """Whether ``path`` lies in a BIDS ``derivatives/``, ``sourcedata/`` or ``code/`` folder of ``root``."""
    if root is None:
        return False
    if storage.is_s3(root):
        base = str(root).rstrip("/") + "/"
        relative = path[len(base):] if path.startswith(base) else path
    else:
        relative = os.path.relpath(path, root)
    return relative.replace("\\", "/").split("/", 1)[0] in _NOT_RAW


def _from_manifest(uri: str):
    import pandas as pd

    sep = "\t" if uri.lower().endswith(".tsv") else ","
    frame = pd.read_csv(io.BytesIO(storage.read_bytes(uri)), sep=sep, dtype=str, keep_default_na=False)
    if "path" not in frame.columns:
        raise ValueError(f"{uri}: a manifest needs a 'path' column; found {list(frame.columns)}")
    base = uri.rsplit("/", 1)[0] if storage.is_s3(uri) else str(Path(uri).resolve().parent)
    paths = []
    for p in frame["path"]:
        absolute = storage.is_s3(p) or Path(p).is_absolute()
        paths.append(p if absolute else storage.join(base, p))
    frame["path"] = paths
    for column in (*KEY_COLUMNS, "modality", "member"):
        if column not in frame.columns:
            frame[column] = ""
    for i, path in enumerate(frame["path"]):
        entities = parse_bids_name(path.replace("\\", "/")) or {}
        for column in (*KEY_COLUMNS, "modality"):
            if not frame.at[i, column]:
                frame.at[i, column] = entities.get(column, "")
        if not frame.at[i, "subject"]:
            raise ValueError(
                f"{uri}: row {i} ({path}) has no 'subject' and its file name is not BIDS-like; add a subject column"
            )
    return frame


def _from_rr_cohort(uri: str):
    import pandas as pd

    with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as z:
        if "offsets" not in z.files or "subject_ids" not in z.files:
            return _from_files([uri], root=None) if parse_bids_name(uri) else pd.DataFrame(
                [{"path": uri, "member": "", "subject": PurePosixPath(uri).stem, "session": "", "condition": "",
                  "modality": "npz"}]
            )
        ids = [str(s) for s in z["subject_ids"]]
        groups = [str(g) for g in z["group"]] if "group" in z.files else [""] * len(ids)
    return pd.DataFrame(
        {"path": uri, "member": ids, "subject": ids, "session": "", "condition": "", "modality": "rr", "group": groups}
    )
