"""Preprocessing of a :class:`~models.data.recording.Recording`; each function returns a new one.

:func:`bandpass` and :func:`notch` (zero-phase, scipy.signal), :func:`resample` (polyphase),
:func:`epoch`, :func:`trim_flat_edges` (constant padding at either end), and :func:`filter_ectopic`
for RR series (the same rule as :func:`fractals.fingerprint.clean_rr_intervals`, which it calls).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from models.data.bad_spans import shifted_meta
from models.data.recording import Recording

__all__ = ["bandpass", "notch", "resample", "epoch", "trim_flat_edges", "filter_ectopic"]


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
    """Polyphase resampling to ``fs`` Hz (anti-aliased); the up/down ratio is approximated with denominators
    up to 1000 (up to 10**6 where that misses ``fs`` by more than 0.1 %, e.g. 30 kHz to 25 Hz)."""
    from scipy import signal

    _need_continuous(rec, "resample")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"resample: new rate must be > 0 Hz, got {fs!r}")
    if abs(fs - rec.fs) < 1e-9:
        return rec
    ratio = Fraction(fs / rec.fs).limit_denominator(1000)
    if abs(float(ratio) * rec.fs - fs) > 1e-3 * fs:  # below 1/1000 the capped ratio misses the rate (30 kHz -> 25 Hz)
        ratio = Fraction(fs / rec.fs).limit_denominator(10**6)
    if ratio == 0 or abs(float(ratio) * rec.fs - fs) > 1e-3 * fs:
        raise ValueError(f"resample: {fs!r} Hz is below 1/1e6 of the recording's {rec.fs} Hz "
                         f"({rec.meta.get('path', 'in memory')}); pick a rate closer to it")
    data = signal.resample_poly(rec.data, ratio.numerator, ratio.denominator, axis=-1)
    return rec.replace(data=data, fs=rec.fs * ratio.numerator / ratio.denominator, meta={"resampled_from": rec.fs})


_resample_recording = resample  # read_recording's `resample` argument shadows the function name


def epoch(rec: Recording, seconds: float, *, overlap: float = 0.0) -> list[Recording]:
    """Cut a continuous recording into epochs of ``seconds`` (the ragged tail is dropped).

    ``overlap`` is the fraction in [0, 1) shared by consecutive epochs. Each epoch's
    ``meta["epoch"]`` is its index and ``meta["onset_s"]`` its start time.

    Each epoch's ``data`` is a view into ``rec.data`` (no copy: copies duplicated the whole recording,
    +0.9 GB for 64 channels x 30 min at 1 kHz), so writing into an epoch writes into ``rec`` and into
    the overlapping epochs; copy first (``e.data.copy()``) to modify one in place.
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
        rec.replace(data=rec.data[:, start:start + size], meta={"epoch": i, "onset_s": start / rec.fs,
                                                                **shifted_meta(rec, start / rec.fs)})
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

    The result's ``data`` is a view into ``rec.data`` (no copy: a copy duplicated the recording, +0.9 GB
    for 64 channels x 30 min at 1 kHz), so writing into it writes into ``rec``; copy first
    (``out.data.copy()``) to modify it in place.
    """
    _need_continuous(rec, "trim_flat_edges")
    n = rec.data.shape[-1]
    if n < 2:
        return rec
    moving = _moving(rec.data)
    if not moving.any():
        raise ValueError(f"{rec.meta.get('path', 'recording')}: every channel is constant; nothing to measure")
    head = _padding_transitions(moving, min_run, max_burst)
    tail = _padding_transitions(moving[::-1], min_run, max_burst)
    # Channels settle onto padding one at a time (eegmat-dev, resampled 500 -> 250 Hz: over ~10 samples), so
    # the last samples before the all-flat stretch are a step response, not signal; they took sub-00's mean
    # multifractal width from 0.86 to 1.21. Cut up to where the first channel goes flat, within max_burst.
    if head:
        head += _settle(rec.data[:, head:n - tail], max_burst)
    if tail:
        tail += _settle(rec.data[:, head:n - tail][:, ::-1], max_burst)
    if head == 0 and tail == 0:
        return rec
    return rec.replace(data=rec.data[:, head:n - tail],
                       meta={"trimmed_s": [head / rec.fs, tail / rec.fs], **shifted_meta(rec, head / rec.fs)})


MOVING_BLOCK_BYTES = 32 << 20  # float differences formed at a time by _moving


def _moving(x: np.ndarray) -> np.ndarray:
    """``(T - 1,)`` bool: transition i -> i + 1 changes some channel of ``x`` (C, T).

    In time blocks of :data:`MOVING_BLOCK_BYTES`: the differences of the whole recording at once were a
    second copy of it (+0.9 GB for 64 channels x 30 min at 1 kHz)."""
    n = x.shape[-1]
    step = max(1, MOVING_BLOCK_BYTES // max(1, x.shape[0] * x.itemsize))
    moving = np.empty(n - 1, dtype=bool)
    for lo in range(0, n - 1, step):
        hi = min(lo + step, n - 1)
        moving[lo:hi] = np.any(np.diff(x[:, lo:hi + 1], axis=-1) != 0, axis=0)
    return moving


def _settle(x: np.ndarray, max_burst: int) -> int:
    """Samples at the start of ``x`` (C, T) where some channel still holds its first value: the longest such
    run shorter than ``max_burst`` (a channel flat for longer is a dead channel, not a settling one)."""
    window = x[:, :max_burst]
    same = np.cumprod(window == window[:, :1], axis=1)  # (C, max_burst): still at the first value
    runs = same.sum(axis=1)
    runs = runs[runs < window.shape[1]]
    return int(runs.max()) if runs.size and runs.max() > 1 else 0


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
    the centred ``window``-beat running mean of the in-range intervals (edges use the beats
    available): :func:`fractals.fingerprint.clean_rr_intervals`, so a fingerprint job and the
    fingerprint's own ``ectopic_filter`` clean a series identically. ``meta["n_removed"]`` counts the
    dropped intervals.
    """
    from fractals.fingerprint import clean_rr_intervals

    if rec.kind != "intervals":
        raise ValueError(f"filter_ectopic: needs an interval series; {rec.meta.get('path')} is continuous")
    rr = rec.data
    n_in_range = int(((rr >= min_ms) & (rr <= max_ms)).sum())
    if isinstance(window, (int, np.integer)) and n_in_range < window:
        raise ValueError(
            f"filter_ectopic: only {n_in_range} intervals in [{min_ms}, {max_ms}] ms in {rec.meta.get('path')}; "
            f"need at least window={window}"
        )
    clean = clean_rr_intervals(rr, min_ms=min_ms, max_ms=max_ms, window=window, tolerance=tolerance)
    return rec.replace(data=clean, fs=1000.0 / float(clean.mean()),
                       meta={"n_removed": int(rr.size - clean.size),
                             "ectopic_filter": [min_ms, max_ms, window, tolerance]})
