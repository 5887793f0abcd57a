"""Causal power-law (fractional) convolution kernels for the Mamba-2 conv stage.

A fractional integrator of order ``alpha`` has impulse response ``h[t] ~ (t+1)^-alpha``: memory that
decays as a power law instead of exponentially, the long-range dependence measured in neural data.
Truncated to ``n_taps`` and normalized to unit sum, it replaces part of the short depthwise conv of
each Mamba-2 block through a learned per-channel gate ``lambda``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from models._config_options import _is_real, _is_whole
from models.layers.causal_conv import causal_direct_conv, causal_fft_conv

__all__ = ["FractionalKernel", "causal_fft_conv", "causal_direct_conv"]


class FractionalKernel(nn.Module):
    """Depthwise causal conv with learned power-law taps ``h[t] = (t+1)^-alpha / sum``.

    ``alpha`` is learned per channel as ``min_alpha + (max_alpha - min_alpha) * sigmoid(raw)``, so it
    can never leave its bounds. :meth:`forward` returns the fractional response; :meth:`blend` mixes it
    with a standard conv output through ``lambda = sigmoid(gate_logit)`` per channel.

    Parameters
    ----------
    n_taps
        Kernel length (samples of memory). Longer than ``fft_threshold`` switches to FFT convolution.
    min_alpha, max_alpha
        Bounds on the decay exponent; 0 is no decay (running mean), 1 is ``1/t``. Equal bounds fix it.
    channels
        Number of depthwise channels.
    init_gate
        Initial ``lambda``; small so a fresh block behaves like plain Mamba-2.
    fft_threshold
        Tap count from which FFT beats direct conv on both CPU and GPU (measured crossover ~64).

    Shape:
        - x: ``(B, C, T)``; output: ``(B, C, T)``
    """

    def __init__(self, *, n_taps: int, min_alpha: float, max_alpha: float, channels: int,
                 init_gate: float = 0.1, fft_threshold: int = 64):
        super().__init__()
        if not _is_whole(n_taps, 1):  # 2.5 was read as 2, "abc" failed in int() without a name
            raise ValueError(f"n_taps: must be >= 1, got {n_taps!r}")
        if not _is_whole(channels, 1):
            raise ValueError(f"channels: must be >= 1, got {channels!r}")
        # min_alpha == max_alpha is a fixed exponent (a sweep's bounds can meet, e.g. both at 0.5).
        # An infinite alpha makes every tap NaN.
        if not (_is_real(min_alpha, 0.0) and _is_real(max_alpha, 0.0) and float(min_alpha) <= float(max_alpha)):
            raise ValueError(
                f"min_alpha/max_alpha: need 0 <= min_alpha <= max_alpha < inf, got {min_alpha}, {max_alpha}"
            )
        if not (_is_real(init_gate, 0.0, open_low=True) and float(init_gate) < 1.0):
            raise ValueError(f"init_gate: must lie in (0, 1), got {init_gate!r}")
        init_gate = float(init_gate)
        self.n_taps, self.channels = int(n_taps), int(channels)
        self.min_alpha, self.max_alpha = float(min_alpha), float(max_alpha)
        self.fft_threshold = int(fft_threshold)
        # Spread the initial exponents over the whole range so channels start with different memories.
        u = (torch.arange(channels, dtype=torch.float32) + 0.5) / channels
        self.alpha_raw = nn.Parameter(torch.log(u) - torch.log1p(-u))
        self.gate_logit = nn.Parameter(torch.full((channels,), math.log(init_gate / (1 - init_gate))))
        self.register_buffer("_log_t", torch.log(torch.arange(1, n_taps + 1, dtype=torch.float32)),
                             persistent=False)

    @property
    def alpha(self) -> torch.Tensor:
        """Per-channel decay exponents, ``(C,)``, always inside ``[min_alpha, max_alpha]``."""
        return self.min_alpha + (self.max_alpha - self.min_alpha) * torch.sigmoid(self.alpha_raw)

    @property
    def gate(self) -> torch.Tensor:
        """Per-channel mixing weight ``lambda`` in ``(0, 1)``, ``(C,)``."""
        return torch.sigmoid(self.gate_logit)

    def taps(self) -> torch.Tensor:
        """Normalized power-law taps, ``(C, n_taps)``, each row summing to 1."""
        log_h = -self.alpha.unsqueeze(-1) * self._log_t.to(self.alpha_raw.device)
        return torch.softmax(log_h, dim=-1)  # exp(log_h) / sum: normalization without overflow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.channels:
            raise ValueError(f"x: needs shape (batch, {self.channels}, time), got {tuple(x.shape)}")
        h = self.taps()
        if self.n_taps >= self.fft_threshold:
            return causal_fft_conv(x, h)
        return causal_direct_conv(x, h)

    def blend(self, x: torch.Tensor, standard: torch.Tensor) -> torch.Tensor:
        """``(1 - lambda) * standard + lambda * fractional(x)``; ``standard`` is the plain conv output."""
        lam = self.gate.to(standard.dtype).view(1, -1, 1)
        return (1 - lam) * standard + lam * self(x)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, n_taps={self.n_taps}, "
                f"alpha=[{self.min_alpha}, {self.max_alpha}]")
