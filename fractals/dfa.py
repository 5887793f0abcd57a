"""DFA and MFDFA (work in progress)."""
from __future__ import annotations

__all__ = ["dfa_alpha", "hurst_from_dfa", "multifractal_spectrum"]


def dfa_alpha(x, windows=None, order=1, return_fit=False):
    raise NotImplementedError


def hurst_from_dfa(alpha, signal="fgn"):
    raise NotImplementedError


def multifractal_spectrum(x, q_vals=None, scales=None, order=1):
    raise NotImplementedError
