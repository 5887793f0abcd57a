"""What the optional Triton kernels share: the guarded import and the warning when one falls back.

Triton ships with CUDA builds of torch; :mod:`fractals` itself needs only torch, NumPy and SciPy, so
without it (or on CPU) the torch paths run.
"""
from __future__ import annotations

import logging

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - any import failure means "use the torch paths"
    triton = tl = None

__all__ = ["triton", "tl", "warn_fallback"]


def warn_fallback(kernel: str, exc: Exception) -> None:
    """Say once why a kernel that could not compile or launch (e.g. Triton finds no C compiler) gives
    way to the torch path for the rest of the process."""
    logging.getLogger("fractals").warning("%s: Triton kernel failed (%s: %s); using the torch path",
                                          kernel, type(exc).__name__, exc)
