"""Welch PSD and the aperiodic 1/f slope with peak exclusion (work in progress)."""
from __future__ import annotations

__all__ = ["welch_psd", "spectral_beta"]


def welch_psd(x, fs, nperseg=None, noverlap=None, window="hann"):
    raise NotImplementedError("welch_psd is being implemented")


def spectral_beta(x, fs, freq_band=(2.0, 80.0), exclude_peaks=True, return_fit=False):
    raise NotImplementedError("spectral_beta is being implemented")
