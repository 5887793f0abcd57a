"""Causal depthwise convolutions: direct (short kernels) and FFT (long kernels), same results.

Shared by the fractional kernels of the backbone and the scale encodings.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["causal_direct_conv", "causal_fft_conv"]


def causal_direct_conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv ``y[c, t] = sum_k h[c, k] x[c, t-k]`` by ``F.conv1d``.

    Shape:
        - x: ``(B, C, T)``; h: ``(C, K)``; output: ``(B, C, T)``
    """
    k = h.shape[-1]
    # conv1d is cross-correlation: flip the taps and pad on the left only so no future sample leaks in.
    return F.conv1d(F.pad(x, (k - 1, 0)), h.flip(-1).unsqueeze(1).to(x.dtype), groups=x.shape[1])


def causal_fft_conv(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The same convolution as :func:`causal_direct_conv` by FFT, ``O(T log T)`` for long kernels.

    Shape:
        - x: ``(B, C, T)``; h: ``(C, K)``; output: ``(B, C, T)``
    """
    t, k = x.shape[-1], h.shape[-1]
    n = t + k - 1  # linear (not circular) convolution length
    n_fft = 1 << max(0, math.ceil(math.log2(n)))
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = torch.fft.rfft(x.to(work), n=n_fft)
    hf = torch.fft.rfft(h.to(work), n=n_fft)
    return torch.fft.irfft(xf * hf, n=n_fft)[..., :t].to(x.dtype)
