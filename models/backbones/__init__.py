"""Sequence backbones: Mamba-2 (fused ``mamba_ssm`` kernels or portable chunked SSD) and fractional kernels."""
from models.backbones.fractional import FractionalKernel, causal_direct_conv, causal_fft_conv
from models.backbones.mamba2 import Mamba2, Mamba2Stack, mamba_kernels_available
from models.backbones.ssd import segsum, ssd_chunked, ssd_naive

__all__ = [
    "Mamba2",
    "Mamba2Stack",
    "mamba_kernels_available",
    "FractionalKernel",
    "causal_direct_conv",
    "causal_fft_conv",
    "ssd_chunked",
    "ssd_naive",
    "segsum",
]
