"""EDF/BDF channels recorded at different rates: refused, or read at the one rate of the channels picked.

EDF and BDF store each signal with its own samples per data record, so one file may hold EEG at
256 Hz beside a respiration belt at 32 Hz. MNE reads such a file at the highest rate and silently
interpolates the slower channels up to it: the model or the fractal measures would then see
made-up samples. :func:`one_rate_channels` checks the header's rates (MNE keeps them in
``raw._raw_extras[0]["n_samps"]``) before the data are loaded.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["one_rate_channels"]

log = logging.getLogger(__name__)


def one_rate_channels(raw: Any, path: Path, channels: Sequence[str] | None) -> list[str] | None:
    """Refuse EDF/BDF signals at different rates, which MNE would silently resample to the highest one.

    Returns ``None`` when every signal channel has MNE's rate, else the header names to read (the
    selected channels, all at one rate, plus the trigger channels at that rate) so that MNE reads them
    at that rate. A trigger channel at another rate is left out, with a warning: MNE would size the
    data by its rate and stretch the signals' time axis.
    """
    extras = raw._raw_extras[0] if getattr(raw, "_raw_extras", None) else {}
    if not all(key in extras for key in ("n_samps", "sel", "record_length")):  # a private MNE layout that moved
        return None
    seconds, per = (float(v) for v in extras["record_length"])
    rates = np.asarray(extras["n_samps"], dtype=np.float64)[extras["sel"]] * per / seconds
    kinds = raw.get_channel_types() if raw.ch_names else []
    signal = {name: float(rate) for name, rate, kind in zip(raw.ch_names, rates, kinds) if kind != "stim"}
    if isinstance(channels, str):
        channels = [channels]
    lookup = {name.lower(): name for name in signal}
    if channels and any(str(c).lower() not in lookup for c in channels):
        return None  # read_recording's channel pick names the missing ones, with every channel available
    wanted = [lookup[str(c).lower()] for c in channels or ()] or list(signal)
    found = sorted({signal[name] for name in wanted})
    if len(found) > 1:
        by_rate = {rate: [n for n in wanted if signal[n] == rate] for rate in found}
        listing = "; ".join(f"{rate:g} Hz: {names}" for rate, names in by_rate.items())
        raise ValueError(
            f"{path}: channels are recorded at different rates ({listing}); MNE would resample them all to "
            f"{max(found):g} Hz. Select channels of one rate (data.channels in training, --channels / "
            "preprocess.channels in fingerprint jobs, channels= in read_recording), or split the file by rate"
        )
    if not wanted:
        return None
    stim = {name: float(rate) for name, rate, kind in zip(raw.ch_names, rates, kinds) if kind == "stim"}
    # A faster trigger makes MNE size the data by the trigger's rate (a stretched time axis); a slower one it holds
    # up to the signals' rate, and its events land on the right samples.
    off_rate = [name for name, rate in stim.items() if rate > found[0]]
    if off_rate:
        log.warning("%s: leaving out trigger channel(s) %s recorded at %s Hz, faster than the signals' %g Hz (MNE would "
                    "misread the file's time axis); their events are not read", path, off_rate,
                    sorted({stim[n] for n in off_rate}), found[0])
    elif found[0] == float(raw.info["sfreq"]):
        return None
    return [n for n in raw.ch_names if n in set(wanted) or (n in stim and n not in off_rate)]
