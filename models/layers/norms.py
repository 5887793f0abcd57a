"""RMSNorm and the gated RMSNorm of Mamba-2, parameter names matching ``mamba_ssm``.

Both keep a single ``weight`` and no bias, like ``mamba_ssm.ops.triton.layernorm_gated.RMSNorm``,
so state dicts load across the portable and fused paths.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["RMSNorm", "RMSNormGated"]


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis: ``x / rms(x) * weight``.

    Shape:
        - x: ``(..., D)``; output: same shape and dtype
    """

    def __init__(self, dim: int, *, eps: float = 1e-5):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim: must be >= 1, got {dim}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


class RMSNormGated(nn.Module):
    """Mamba-2's gated norm: ``rmsnorm(x * silu(z)) * weight`` with the RMS taken per group.

    ``norm_before_gate=False`` (the Mamba-2 default) gates first, then normalizes. ``group_size``
    equals ``d_ssm // ngroups`` in Mamba-2, so each group of heads is normalized on its own.

    Shape:
        - x, z: ``(..., D)``; output: ``(..., D)``
    """

    def __init__(self, dim: int, *, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = False):
        super().__init__()
        group_size = dim if group_size is None else group_size
        if group_size < 1 or dim % group_size:
            raise ValueError(f"group_size: must divide dim={dim}, got {group_size}")
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(dim))

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        g = x.unflatten(-1, (-1, self.group_size))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.flatten(-2)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        zf = None if z is None else z.to(xf.dtype)
        if zf is not None and not self.norm_before_gate:
            xf = xf * F.silu(zf)
        y = self._rms(xf) * self.weight.to(xf.dtype)
        if zf is not None and self.norm_before_gate:
            y = y * F.silu(zf)
        return y.to(dtype)
