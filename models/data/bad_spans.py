"""Spans marked bad by annotations (MNE's ``BAD_...`` convention), and the clean data between them.

MNE users mark artefacts (blinks, movement, electrode pops) as annotations whose description starts
with ``"bad"`` in any case (``BAD_blink``, ``bad muscle``, ``BAD_ACQ_SKIP``), and MNE's own analyses
leave those spans out by default (``reject_by_annotation=True``). The readers keep a recording's
annotations in ``meta["annotations"]`` as ``(onset_s, duration_s, text)`` from its first sample;
:func:`bad_spans` turns the bad ones into sample ranges, :func:`windows_clear_of_bad` tells which
fixed-length windows avoid them, and :func:`clean_segments` cuts the pieces between them.

A span covers samples ``round(onset * fs)`` up to, not including, ``round((onset + duration) * fs)``
(MNE's rounding of times to samples); a zero-duration bad annotation still covers the sample it marks.
So the zero-duration ``BAD boundary`` that ``mne.concatenate_raws`` puts at each join keeps windows and
fingerprint pieces from straddling the join, as MNE keeps epochs from doing.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from models.data.recording import Recording

__all__ = ["is_bad", "bad_spans", "longest_clean", "windows_clear_of_bad", "clean_segments", "shift_annotations"]


def is_bad(description: str) -> bool:
    """MNE's rule: an annotation marks bad data when its description starts with 'bad', in any case."""
    return str(description).strip().lower().startswith("bad")


def shift_annotations(annotations: Sequence[Any], seconds: float) -> tuple:
    """Annotations of a recording whose first ``seconds`` were cut (onsets move back by that much)."""
    return tuple((float(onset) - seconds, float(duration), text) for onset, duration, text in annotations)


def shifted_meta(rec: Recording, seconds: float) -> dict:
    """``meta`` changes for a piece starting ``seconds`` into ``rec``: annotations and events (onsets from the first
    sample, as the readers give them) count from the piece's first sample."""
    changes: dict = {}
    if rec.meta.get("annotations"):
        changes["annotations"] = shift_annotations(rec.meta["annotations"], seconds)
    events = rec.meta.get("events")
    if events is not None and len(events):
        shifted = np.array(events, dtype=np.float64)
        shifted[:, 0] -= seconds
        changes["events"] = shifted
    return changes


def bad_spans(rec: Recording) -> np.ndarray:
    """Merged ``[start, stop)`` sample ranges of ``rec`` covered by bad annotations.

    Shape:
        ``(n_spans, 2)`` int64, sorted, non-overlapping, clipped to ``[0, n_samples]``.
    """
    n = rec.data.shape[-1]
    spans = []
    for onset, duration, text in rec.meta.get("annotations", ()) or ():
        if not is_bad(text):
            continue
        start = int(round(float(onset) * rec.fs))
        stop = max(int(round((float(onset) + max(float(duration), 0.0)) * rec.fs)), start + 1)
        start, stop = max(start, 0), min(stop, n)
        if stop > start:
            spans.append((start, stop))
    if not spans:
        return np.zeros((0, 2), dtype=np.int64)
    spans.sort()
    merged = [list(spans[0])]
    for start, stop in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return np.asarray(merged, dtype=np.int64)


def longest_clean(rec: Recording) -> int:
    """Samples in the longest stretch of ``rec`` that no bad span touches."""
    n = rec.data.shape[-1]
    edges = np.concatenate([[0], bad_spans(rec).reshape(-1), [n]]).reshape(-1, 2)
    return int(np.diff(edges, axis=1).max())


def windows_clear_of_bad(spans: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Which windows ``[start, start + window)`` share no sample with a span of ``spans`` (bool per start)."""
    starts = np.asarray(starts, dtype=np.int64)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(spans) == 0:
        return np.ones(starts.shape, dtype=bool)
    # spans are sorted and disjoint (bad_spans merges them): the first span ending after a window's start is
    # the only one that can begin before the window ends
    first = np.searchsorted(spans[:, 1], starts, side="right")
    inside = first < len(spans)
    clear = np.ones(starts.shape, dtype=bool)
    clear[inside] = spans[first[inside], 0] >= starts[inside] + window
    return clear


def clean_segments(rec: Recording, *, min_samples: int = 1) -> list[Recording]:
    """The pieces of ``rec`` between its bad spans that hold at least ``min_samples`` samples.

    Each piece's ``meta["onset_s"]`` is its start in ``rec``, ``meta["segment"]`` its index among
    all clean pieces, and its annotations and events are shifted to its own first sample. A recording without
    bad spans comes back whole (``[rec]``) when it is long enough.

    Each piece's ``data`` is a view into ``rec.data`` (no copy: copies duplicated the clean part of the
    recording, +0.9 GB for 64 channels x 30 min at 1 kHz), so writing into a piece writes into ``rec``; copy
    first (``p.data.copy()``) to modify one in place. A piece kept after ``rec`` is dropped keeps all of
    ``rec.data`` in memory.
    """
    if rec.kind != "continuous":  # an interval series has no clock for annotations to mark
        return [rec]
    n = rec.data.shape[-1]
    spans = bad_spans(rec)
    if len(spans) == 0:
        return [rec] if n >= min_samples else []
    edges = np.concatenate([[0], spans.reshape(-1), [n]]).reshape(-1, 2)  # clean [start, stop) pairs
    pieces = []
    for k, (start, stop) in enumerate(edges):
        if stop - start >= max(min_samples, 1):
            onset = start / rec.fs
            pieces.append(rec.replace(
                data=rec.data[:, start:stop],
                meta={"onset_s": onset, "segment": k, "annotations": (), **shifted_meta(rec, onset)}))
    return pieces
