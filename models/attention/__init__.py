"""Attention kernels beyond torch SDPA: the fractal patterns (:mod:`models.attention.fractal`)."""
from models.attention.fractal import (
    PATTERNS,
    CantorAttention,
    DragonAttention,
    FractalBlendAttention,
    FractalMultiheadAttention,
    HilbertAttention,
    JuliaAttention,
    build_pattern,
    mark_cross_attention,
)

__all__ = [
    "PATTERNS",
    "CantorAttention",
    "DragonAttention",
    "FractalBlendAttention",
    "FractalMultiheadAttention",
    "HilbertAttention",
    "JuliaAttention",
    "build_pattern",
    "mark_cross_attention",
]
