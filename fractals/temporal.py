"""Temporal fractal estimators: Higuchi FD, Katz FD, Hurst R/S (work in progress)."""
from __future__ import annotations

__all__ = ["higuchi_fd", "katz_fd", "hurst_rs"]


def higuchi_fd(x, kmax=8):
    raise NotImplementedError


def katz_fd(x):
    raise NotImplementedError


def hurst_rs(x, min_window=None):
    raise NotImplementedError
