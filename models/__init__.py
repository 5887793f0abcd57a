"""NeuroFMx: multimodal neural foundation model with fractal priors. Depends on :mod:`fractals`."""
