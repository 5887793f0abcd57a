"""Public API of the fractal estimators: import from here.

Every function takes a torch tensor or NumPy array with time on the last axis (any leading shape),
returns the same kind it was given, runs on CPU or CUDA in float32 or float64, and raises
``ValueError`` on bad input instead of returning NaN. Implementations live one module per concern:

- :mod:`fractals.temporal`   Higuchi FD, Katz FD, Hurst R/S
- :mod:`fractals.dfa`        DFA exponent, MFDFA spectrum (shared profile and segment kernels)
- :mod:`fractals.spectral`   Welch PSD and the aperiodic 1/f slope with peak exclusion
- :mod:`fractals.graph`      functional connectivity, box-covering graph FD, power-law fits
- :mod:`fractals.windowed`   every temporal metric over sliding windows
"""
from fractals.dfa import dfa_alpha, fluctuation_functions, hurst_from_dfa, multifractal_spectrum
from fractals.graph import BoxCounts, PowerLawFit, functional_connectivity_latents, graph_fractal_dim, powerlaw_fit
from fractals.spectral import SpectralFit, fit_aperiodic, spectral_beta, welch_psd
from fractals.temporal import higuchi_fd, hurst_rs, katz_fd
from fractals.windowed import (
    windowed,
    windowed_dfa_alpha,
    windowed_higuchi_fd,
    windowed_hurst_rs,
    windowed_katz_fd,
    windowed_spectral_beta,
)

__all__ = [
    "higuchi_fd",
    "katz_fd",
    "hurst_rs",
    "dfa_alpha",
    "hurst_from_dfa",
    "multifractal_spectrum",
    "fluctuation_functions",
    "welch_psd",
    "spectral_beta",
    "fit_aperiodic",
    "SpectralFit",
    "functional_connectivity_latents",
    "graph_fractal_dim",
    "powerlaw_fit",
    "PowerLawFit",
    "BoxCounts",
    "windowed",
    "windowed_higuchi_fd",
    "windowed_katz_fd",
    "windowed_hurst_rs",
    "windowed_dfa_alpha",
    "windowed_spectral_beta",
]
