"""The NeuroFMx experiment platform: the `fmx` command and library. Depends on :mod:`models` and :mod:`fractals`."""
__version__ = "0.1.0"
