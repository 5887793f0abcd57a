"""Fast, batched, GPU-capable fractal measures of neural time series and graphs.

Subpackage map (one module per concern):

- :mod:`fractals.metrics` re-exports every estimator (temporal, spectral, multifractal, graph, windowed).
- :mod:`fractals.regularizers` (the prior terms) and :mod:`fractals.priors` (``FractalPriors``, the
  config-driven loss module), :mod:`fractals.probes`, :mod:`fractals.stimuli`,
  :mod:`fractals.simulators`, :mod:`fractals.plotting`, :mod:`fractals.fingerprint`.

Only torch, NumPy and SciPy are required.
"""
__version__ = "0.1.0"
