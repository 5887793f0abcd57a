"""The Mamba-2 block and a residual stack of them, on fused ``mamba_ssm`` kernels or portable PyTorch.

Parameter names and shapes match ``mamba_ssm.modules.mamba2.Mamba2`` (``in_proj``, ``conv1d``,
``dt_bias``, ``A_log``, ``D``, ``norm.weight``, ``out_proj``) and the stack matches its
``MixerModel`` (``layers.{i}.norm``, ``layers.{i}.mixer``, ``norm_f``), so a state dict moves between
the two paths. With ``mamba_ssm`` importable and the input on CUDA, the SSD scan runs in
``mamba_chunk_scan_combined``; otherwise in :func:`models.backbones.ssd.ssd_chunked`.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import numbers
import sys
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models._config_options import _is_real, _is_whole
from models.backbones.fractional import FractionalKernel
from models.backbones.ssd import ssd_chunked
from models.layers.norms import RMSNorm, RMSNormGated

__all__ = ["Mamba2", "Mamba2Stack", "mamba_kernels_available"]

log = logging.getLogger("models.backbones")

_FUSED: dict[str, Any] | None = None
_FUSED_ERROR: str = ""
_LOGGED: set[str] = set()


_SSD_MODULE = "mamba_ssm.ops.triton.ssd_combined"
FUSED_CHUNK_SIZE = 256  # mamba_ssm's own default: its Triton tiles are tuned for it


def _import_ssd_scan() -> tuple[Any, str]:
    """``mamba_chunk_scan_combined`` and how it was found.

    ``mamba_ssm/__init__.py`` imports its compiled Mamba-1 scan (and ``transformers``) unconditionally,
    so a source-only install (``MAMBA_SKIP_CUDA_BUILD=TRUE``, seconds instead of a long CUDA build) or
    an extension built against another torch fails there, although the Mamba-2 SSD is pure Triton and
    needs neither. When the plain import fails, the package is registered without running its
    ``__init__`` and only the Triton SSD modules are imported; then ``import mamba_ssm`` elsewhere
    yields that bare package instead of the error.
    """
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        return mamba_chunk_scan_combined, "mamba_ssm"
    except Exception as exc:  # noqa: BLE001 - retried below without the package __init__
        first = exc
    spec = importlib.util.find_spec("mamba_ssm") if "mamba_ssm" not in sys.modules else None
    if spec is None or spec.submodule_search_locations is None:
        raise first
    sys.modules["mamba_ssm"] = importlib.util.module_from_spec(spec)
    try:
        module = importlib.import_module(_SSD_MODULE)
    except Exception:  # noqa: BLE001 - report the original failure, which names the real cause
        for name in [n for n in sys.modules if n == "mamba_ssm" or n.startswith("mamba_ssm.")]:
            del sys.modules[name]
        raise first from None
    return module.mamba_chunk_scan_combined, f"mamba_ssm Triton SSD only; the package import failed: {first}"


def _load_fused() -> dict[str, Any]:
    """Import the fused kernels once. Any failure (ImportError, undefined symbol, CUDA init errors)
    falls back to the portable path rather than crash the model; ``_FUSED_ERROR`` keeps the reason."""
    global _FUSED, _FUSED_ERROR
    if _FUSED is not None:
        return _FUSED
    _FUSED = {}
    try:
        _FUSED["scan"], _FUSED["source"] = _import_ssd_scan()
    except Exception as exc:  # noqa: BLE001 - any import-time failure means "not usable here"
        _FUSED_ERROR = f"{type(exc).__name__}: {exc}"
        return _FUSED
    try:
        from causal_conv1d import causal_conv1d_fn

        _FUSED["conv"] = causal_conv1d_fn
    except Exception:  # noqa: BLE001 - optional: torch conv1d is the fallback
        pass
    return _FUSED


def _fused_failed(exc: Exception) -> None:
    """The fused scan failed at run time (compile or launch): the portable path from now on, said once."""
    global _FUSED, _FUSED_ERROR
    _FUSED, _FUSED_ERROR = {}, f"fused scan failed: {type(exc).__name__}: {exc}"
    log.warning("Mamba-2 SSD path: portable (%s)", _FUSED_ERROR)


def mamba_kernels_available() -> bool:
    """True when the fused ``mamba_ssm`` SSD kernel imports and a CUDA device is present."""
    return torch.cuda.is_available() and "scan" in _load_fused()


def _log_path_once(path: str, why: str) -> None:
    if path not in _LOGGED:
        _LOGGED.add(path)
        log.info("Mamba-2 SSD path: %s (%s)", path, why)


class Mamba2(nn.Module):
    """One Mamba-2 mixer: ``in_proj -> causal conv1d (+ fractional) -> SSD -> gated RMSNorm -> out_proj``.

    Parameters
    ----------
    d_model
        Model width.
    d_state
        SSM state size N per group.
    d_conv
        Causal depthwise conv width.
    expand
        Inner width is ``expand * d_model``.
    headdim
        Channels per SSM head P; ``nheads = expand * d_model / headdim``.
    ngroups
        Groups sharing B and C (like GQA); must divide ``nheads``.
    chunk_size
        SSD chunk length (portable path 64 on CPU; the fused kernel uses its own tiling).
    kernels
        ``"auto"`` (fused on CUDA when importable), ``"portable"`` or ``"fused"`` (error if unavailable).
    fractional
        ``None`` or a mapping ``{n_taps, min_alpha, max_alpha[, init_gate]}`` adding a gated :class:`FractionalKernel`
        on the conv stage.

    Shape:
        - u: ``(B, L, d_model)``; output: ``(B, L, d_model)``; final state: ``(B, nheads, headdim, d_state)``
    """

    def __init__(self, *, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, A_init_range: tuple[float, float] = (1.0, 16.0),
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 chunk_size: int = 64, kernels: str = "auto",
                 fractional: Mapping[str, Any] | None = None):
        super().__init__()
        for name, value in (("d_state", d_state), ("d_conv", d_conv), ("expand", expand), ("headdim", headdim),
                            ("ngroups", ngroups), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:  # 0 divides by 0
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.d_ssm = self.d_inner
        if self.d_ssm % headdim:
            raise ValueError(f"headdim: must divide expand*d_model={self.d_ssm}, got {headdim}")
        self.headdim = headdim
        self.nheads = self.d_ssm // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups: must divide nheads={self.nheads}, got {ngroups}")
        if kernels not in ("auto", "portable", "fused"):
            raise ValueError(f"kernels: must be 'auto', 'portable' or 'fused', got {kernels!r}")
        # As mamba_ssm asserts: a range reaching 0 or below gives log(A) = -inf/NaN and a NaN dt init (math domain
        # error for 0); NaN or inf trained with NaN gradients behind a finite loss.
        a_ok = isinstance(A_init_range, Sequence) and not isinstance(A_init_range, str) and len(A_init_range) == 2 \
            and all(_is_real(v, 0.0, open_low=True) for v in A_init_range) \
            and float(A_init_range[0]) <= float(A_init_range[1])
        if not a_ok:
            raise ValueError(f"A_init_range: needs [low, high] with 0 < low <= high < inf, got {A_init_range!r}")
        if not (_is_real(dt_min, 0.0, open_low=True) and _is_real(dt_max, 0.0, open_low=True)
                and float(dt_min) <= float(dt_max)):
            raise ValueError(f"dt_min/dt_max: need 0 < dt_min <= dt_max < inf, got {dt_min!r}, {dt_max!r}")
        if not _is_real(dt_init_floor, 0.0):
            raise ValueError(f"dt_init_floor: must be a finite number >= 0, got {dt_init_floor!r}")
        A_init_range = (float(A_init_range[0]), float(A_init_range[1]))
        dt_min, dt_max, dt_init_floor = float(dt_min), float(dt_max), float(dt_init_floor)
        self.ngroups, self.chunk_size, self.kernels = ngroups, chunk_size, kernels

        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads  # order: z, x, B, C, dt
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False)
        self.conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=True)
        # dt initialised log-uniform in [dt_min, dt_max]; dt_bias is its softplus inverse (as mamba_ssm).
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = RMSNormGated(self.d_ssm, eps=1e-5, group_size=self.d_ssm // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.fractional = None
        if fractional is not None:
            # Passed as given: the kernel checks them (int() read n_taps 2.5 as 2).
            self.fractional = FractionalKernel(n_taps=fractional["n_taps"], min_alpha=fractional["min_alpha"],
                                               max_alpha=fractional["max_alpha"], channels=self.conv_dim,
                                               init_gate=fractional.get("init_gate", 0.1))

    def _use_fused(self, x: torch.Tensor) -> bool:
        if self.kernels == "portable":
            _log_path_once("portable", "kernels='portable'")
            return False
        ok = x.is_cuda and "scan" in _load_fused()
        if self.kernels == "fused" and not ok:
            why = "input not on CUDA" if not x.is_cuda else _FUSED_ERROR
            raise RuntimeError(f"kernels='fused' but the mamba_ssm kernels cannot run: {why}; use kernels='auto' "
                               "(fused on CUDA when they load, the portable SSD otherwise) or 'portable'")
        if ok:
            _log_path_once("fused", f"mamba_chunk_scan_combined on CUDA from {_FUSED['source']}")
        else:
            _log_path_once("portable", "input on CPU" if not x.is_cuda
                           else f"mamba_ssm not importable: {_FUSED_ERROR}")
        return ok

    def _conv(self, xbc: torch.Tensor, fused: bool) -> torch.Tensor:
        seqlen = xbc.shape[1]
        xt = xbc.transpose(1, 2)
        if fused and self.fractional is None and "conv" in _FUSED:
            out = _FUSED["conv"](xt, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
            return out.transpose(1, 2)
        conv = self.conv1d(xt)[..., :seqlen]
        if self.fractional is not None:
            conv = self.fractional.blend(xt, conv)
        return F.silu(conv).transpose(1, 2)

    def forward(self, u: torch.Tensor, *, return_state: bool = False):
        if u.ndim != 3 or u.shape[-1] != self.d_model or u.shape[1] < 1:
            raise ValueError(f"u: needs shape (batch, length >= 1, {self.d_model}), got {tuple(u.shape)}")
        b, seqlen, _ = u.shape
        fused = self._use_fused(u)
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xbc = self._conv(xbc, fused)
        x, B, C = torch.split(xbc, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], -1)
        x = x.reshape(b, seqlen, self.nheads, self.headdim)
        B = B.reshape(b, seqlen, self.ngroups, self.d_state)
        C = C.reshape(b, seqlen, self.ngroups, self.d_state)
        # At least float32 (in half precision exp(A_log) can overflow), and float64 stays float64.
        work = torch.promote_types(self.A_log.dtype, torch.float32)
        A = -torch.exp(self.A_log.to(work))
        if fused:
            try:
                y, state = _FUSED["scan"](x, dt, A, B, C, chunk_size=FUSED_CHUNK_SIZE, D=self.D, z=None,
                                          dt_bias=self.dt_bias, dt_softplus=True, return_final_states=True)
            except Exception as exc:  # noqa: BLE001 - e.g. Triton cannot build its launcher (no C compiler)
                if self.kernels == "fused":
                    raise
                _fused_failed(exc)
                fused = False
        if not fused:
            dt = F.softplus(dt.to(work) + self.dt_bias.to(work))
            y, state = ssd_chunked(x, dt, A, B, C, chunk_size=self.chunk_size, D=self.D)
        y = self.norm(y.reshape(b, seqlen, self.d_ssm), z)
        out = self.out_proj(y)
        return (out, state) if return_state else out


class _Block(nn.Module):
    """Pre-norm residual block ``x + mixer(norm(x))`` (mamba_ssm's ``Block`` naming)."""

    def __init__(self, *, d_model: int, mixer_kwargs: Mapping[str, Any]):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = Mamba2(d_model=d_model, **mixer_kwargs)

    def forward(self, x: torch.Tensor):
        y, state = self.mixer(self.norm(x), return_state=True)
        return x + y, state


class Mamba2Stack(nn.Module):
    """``n_layers`` residual Mamba-2 blocks and a final RMSNorm (``MixerModel`` naming).

    Parameters
    ----------
    d_model, n_layers
        Width and depth.
    fractional_layers
        Indices of layers that get fractional kernels (``None``: all, when ``fractional`` is given).
    **mixer_kwargs
        Passed to every :class:`Mamba2` (``d_state``, ``headdim``, ``expand``, ``kernels``, ``fractional``...).

    Shape:
        - x: ``(B, L, d_model)``; output: ``(B, L, d_model)``; states: list of ``(B, H, P, N)``
    """

    def __init__(self, *, d_model: int, n_layers: int, fractional: Mapping[str, Any] | None = None,
                 fractional_layers: list[int] | None = None, **mixer_kwargs: Any):
        super().__init__()
        if not _is_whole(n_layers, 1):
            raise ValueError(f"n_layers: must be >= 1, got {n_layers!r}")
        n_layers = int(n_layers)
        if fractional_layers is not None and (
                isinstance(fractional_layers, str) or not isinstance(fractional_layers, Sequence)
                or not all(_is_whole(i, 0) and int(i) < n_layers for i in fractional_layers)):
            # [5] of 2 layers, [-1] or "0" matched no layer: the fractional kernels were silently off
            raise ValueError(f"fractional_layers: needs a list of layer indices in [0, {n_layers}) or null (every "
                             f"layer), got {fractional_layers!r}")
        chosen = set(range(n_layers) if fractional_layers is None else (int(i) for i in fractional_layers))
        self.layers = nn.ModuleList(
            _Block(d_model=d_model, mixer_kwargs={**mixer_kwargs,
                                                  "fractional": fractional if i in chosen else None})
            for i in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model)
        # GPT-2 style: scale residual-branch outputs by 1/sqrt(n_layers) so depth does not blow up
        # the residual stream at init (mamba_ssm's _init_weights with rescale_prenorm_residual).
        for layer in self.layers:
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(n_layers)

    def forward(self, x: torch.Tensor, *, return_states: bool = False):
        states = []
        for layer in self.layers:
            x, state = layer(x)
            states.append(state)
        x = self.norm_f(x)
        return (x, states) if return_states else x
