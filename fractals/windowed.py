"""Sliding-window versions of the temporal metrics (work in progress)."""
from __future__ import annotations

__all__ = [
    "windowed",
    "windowed_higuchi_fd",
    "windowed_katz_fd",
    "windowed_hurst_rs",
    "windowed_dfa_alpha",
    "windowed_spectral_beta",
]


def windowed(metric, x, window_size, hop_size, **kwargs):
    raise NotImplementedError


def windowed_higuchi_fd(x, window_size, hop_size, **kwargs):
    raise NotImplementedError


def windowed_katz_fd(x, window_size, hop_size, **kwargs):
    raise NotImplementedError


def windowed_hurst_rs(x, window_size, hop_size, **kwargs):
    raise NotImplementedError


def windowed_dfa_alpha(x, window_size, hop_size, **kwargs):
    raise NotImplementedError


def windowed_spectral_beta(x, window_size, hop_size, **kwargs):
    raise NotImplementedError
