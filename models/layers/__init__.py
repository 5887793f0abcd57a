"""Small reusable layers: norms, causal convolutions and multi-scale (fractal) encodings."""
from models.layers.causal_conv import causal_direct_conv, causal_fft_conv
from models.layers.norms import RMSNorm, RMSNormGated
from models.layers.scale_encoding import ScaleEncoding, WaveletScatteringEncoding, band_energies

__all__ = [
    "RMSNorm",
    "RMSNormGated",
    "causal_direct_conv",
    "causal_fft_conv",
    "ScaleEncoding",
    "WaveletScatteringEncoding",
    "band_energies",
]
