"""The byte-level fractal Mamba model (design seed 003): bytes in, bytes out."""
