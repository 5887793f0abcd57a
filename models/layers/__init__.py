"""Small reusable layers: norms and multi-scale (fractal) encodings."""
from models.layers.norms import RMSNorm, RMSNormGated

__all__ = ["RMSNorm", "RMSNormGated"]
