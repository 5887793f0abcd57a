"""Multi-scale (fractal) encodings added to token features.

:class:`ScaleEncoding` is the dependency-free front end of the design (section 7B): log-spaced causal
filter-bank energies. For each scale ``s`` a causal Gabor band-pass centred on period ``s`` is
applied, its squared magnitude smoothed over ``s`` samples and log-compressed. A zero-initialised projection adds the energies to the tokens, so
switching the encoding on does not change a fresh model's output. Everything is causal: the energy
at token ``t`` uses tokens ``<= t`` only, which keeps the forecasting path causal.

:class:`WaveletScatteringEncoding` uses ``kymatio`` 1-D wavelet scattering when it is installed
(optional, non-causal; for encoders only). Config: ``fractals.backbone.scale_encodings.kind``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers.causal_conv import causal_fft_conv

__all__ = ["causal_moving_average", "band_energies", "ScaleEncoding", "WaveletScatteringEncoding"]


def causal_moving_average(x: torch.Tensor, width: int) -> torch.Tensor:
    """Mean of the last ``width`` samples (fewer at the start), along the last axis.

    Shape:
        - x: ``(..., T)``; output: same shape
    """
    if width < 1:
        raise ValueError(f"width: must be >= 1, got {width}")
    csum = torch.cumsum(F.pad(x, (1, 0)), dim=-1)  # csum[t] = sum x[:t]
    t = x.shape[-1]
    idx = torch.arange(1, t + 1, device=x.device)
    lo = (idx - width).clamp(min=0)
    count = (idx - lo).to(x.dtype)
    return (csum[..., idx] - csum[..., lo]) / count


def _gabor_bank(scales: Sequence[int], device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal Hann-windowed complex exponentials, 4 cycles long, one per scale (real, imag parts)."""
    length = 4 * max(scales)
    n = torch.arange(length, device=device, dtype=dtype)
    re, im = [], []
    for s in scales:
        w = torch.hann_window(4 * s, periodic=False, device=device, dtype=dtype)
        w = F.pad(w / w.sum(), (0, length - 4 * s))
        phase = 2 * torch.pi * n / s
        re.append(w * torch.cos(phase))
        im.append(w * torch.sin(phase))
    return torch.stack(re), torch.stack(im)


def band_energies(x: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """Causal log band energies at periods ``scales``: ``log1p(MA_s(|g_s * x|^2))``.

    ``g_s`` is a causal Gabor atom (Hann window over 4 periods of ``s`` samples), a band-pass about
    half an octave wide centred on period ``s``: a sine of period ``s`` lights up band ``s`` and
    leaves the octave neighbours near zero. A unit sine at period ``s`` gives ``log1p(1/4)``.

    Parameters
    ----------
    x
        Signal with time on the last axis.
    scales
        Band periods in samples (>= 2), e.g. ``[8, 16, 32, 64]`` (log-spaced).

    Shape:
        - x: ``(..., T)``; output: ``(..., S, T)``
    """
    scales = [int(s) for s in scales]
    if not scales or any(s < 2 for s in scales):
        raise ValueError(f"scales: need one or more integers >= 2, got {scales}")
    lead = x.shape[:-1]
    flat = x.reshape(-1, 1, x.shape[-1]).expand(-1, len(scales), -1)  # (N, S, T)
    re_k, im_k = _gabor_bank(scales, x.device, x.dtype)
    energy = causal_fft_conv(flat, re_k) ** 2 + causal_fft_conv(flat, im_k) ** 2
    smoothed = torch.stack([causal_moving_average(energy[:, i], s) for i, s in enumerate(scales)], 1)
    return torch.log1p(smoothed).reshape(*lead, len(scales), x.shape[-1])


class ScaleEncoding(nn.Module):
    """Adds log-spaced band energies of a low-rank view of the tokens to the tokens.

    Parameters
    ----------
    d_model
        Token width.
    scales
        Band scales in token steps (the config's ``wavelet_scales``).
    n_probe
        Channels the energies are computed on: a learned ``d_model -> n_probe`` projection keeps the
        cost ``O(n_probe * S * T)`` instead of ``O(d_model * S * T)``.

    Shape:
        - x: ``(B, T, d_model)``; output: ``(B, T, d_model)``
    """

    def __init__(self, *, d_model: int, scales: Sequence[int], n_probe: int = 8):
        super().__init__()
        try:  # int() would build a period-8 band for 8.5 without a word
            whole = all(not isinstance(s, bool) and float(s).is_integer() for s in scales)
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise ValueError(f"scales: need integer periods in token steps, got {list(scales)}")
        self.scales = [int(s) for s in scales]
        band_energies(torch.zeros(1, 4), self.scales)  # validates scales early, with the field name
        self.probe = nn.Linear(d_model, n_probe, bias=False)
        self.proj = nn.Linear(n_probe * len(self.scales), d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Band energies of the probe channels, ``(B, T, n_probe, S)``."""
        probe = self.probe(x).transpose(1, 2)  # (B, n_probe, T)
        work = probe.float() if probe.dtype in (torch.float16, torch.bfloat16) else probe
        return band_energies(work, self.scales).permute(0, 3, 1, 2).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"x: needs shape (batch, time, d_model), got {tuple(x.shape)}")
        return x + self.proj(self.energies(x).flatten(2))


def _scipy_sph_harm_shim() -> None:
    """Let kymatio 0.3.0 (the newest release) import under SciPy >= 1.17.

    ``import kymatio`` loads its 3-D frontend, which imports ``scipy.special.sph_harm``; SciPy 1.17
    removed that name in favour of ``sph_harm_y(n, m, theta, phi)`` (argument order and angle
    names swapped). The 1-D scattering used here never calls it, but the import fails without it.
    """
    import scipy.special as special

    if not hasattr(special, "sph_harm") and hasattr(special, "sph_harm_y"):
        special.sph_harm = lambda m, n, azimuth, polar: special.sph_harm_y(n, m, polar, azimuth)


class WaveletScatteringEncoding(nn.Module):
    """First/second-order 1-D wavelet scattering (``kymatio``) of probe channels, added to tokens.

    A learned linear probe reduces the ``d_model`` features to ``n_probe`` channels; each is
    scattered (averaging scale ``2**J``, ``Q`` wavelets per octave), log-compressed, brought back
    to the token rate and added through a zero-initialised projection, so switching it on leaves a
    fresh model unchanged. The number of coefficients depends on ``J`` and ``Q`` only, so one
    module serves any sequence length ``T >= 2**J``: a kymatio operator per length is built on
    first use and cached outside the state dict (it has no parameters).

    Non-causal: scattering averages over ``2**J`` samples both ways. Use it for encoders, never on
    the forecasting path (:class:`models.neurofmx.NeuroFMx` refuses that combination). Raises
    ``ImportError`` naming the fix when kymatio is not installed.

    Shape:
        - x: ``(B, T, d_model)``; output: same shape
    """

    def __init__(self, *, d_model: int, J: int = 3, Q: int = 1, n_probe: int = 4):
        super().__init__()
        self._scattering_class = _kymatio_scattering1d()
        if int(J) < 1 or int(Q) < 1 or int(n_probe) < 1:
            raise ValueError(f"WaveletScatteringEncoding: J, Q and n_probe must be >= 1, got J={J}, Q={Q}, n_probe={n_probe}")
        self.J, self.Q, self.n_probe = int(J), int(Q), int(n_probe)
        self._operators: dict = {}  # (T, device) -> kymatio Scattering1D; not parameters
        self.probe = nn.Linear(d_model, self.n_probe, bias=False)
        # A CPU probe even under a default-device context (presets count parameters on meta).
        cpu = torch.device("cpu")
        n_coef = int(self._operator(2 ** (self.J + 1), cpu)(torch.zeros(1, 2 ** (self.J + 1), device=cpu)).shape[-2])
        self.proj = nn.Linear(self.n_probe * n_coef, d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _operator(self, t: int, device: torch.device):
        key = (t, str(device))
        op = self._operators.get(key)
        if op is None:
            op = self._scattering_class(J=self.J, shape=t, Q=self.Q).to(device)
            self._operators[key] = op
        return op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"x: needs shape (batch, time, d_model), got {tuple(x.shape)}")
        b, t, _ = x.shape
        if t < 2**self.J:
            raise ValueError(f"x: needs at least 2**J = {2 ** self.J} time steps for scattering, got {t}: lower J")
        probe = self.probe(x).transpose(1, 2).float().contiguous()  # (B, n_probe, T); kymatio needs contiguous
        coef = self._operator(t, x.device)(probe)  # (B, n_probe, n_coef, ceil(T / 2**J))
        coef = F.interpolate(coef.flatten(1, 2), size=t, mode="nearest")  # back to token rate
        return x + self.proj(torch.log1p(coef.abs()).transpose(1, 2).to(x.dtype))


def _kymatio_scattering1d():
    try:
        _scipy_sph_harm_shim()
        from kymatio.torch import Scattering1D
    except Exception as exc:  # noqa: BLE001 - optional dependency
        raise ImportError(
            "WaveletScatteringEncoding needs kymatio: `pip install kymatio`, or set "
            f"fractals.backbone.scale_encodings.kind=filterbank, which needs nothing extra ({exc})"
        ) from exc
    return Scattering1D
