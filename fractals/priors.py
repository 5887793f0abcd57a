"""``FractalPriors``: the three differentiable priors of :mod:`fractals.regularizers` as one loss module.

Configured like ``conf/fractals/default.yaml`` (``enable``, ``metrics``, ``priors``); handles warmup,
skips zero-weight terms, and optionally runs the terms through ``torch.compile``.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from fractals._checks import check_finite, check_positive
from fractals.regularizers import (
    _LATENTS_CHECKED, _check_latents, _check_time_dim, _check_weight, _finite, _spec_bins, _spec_loss_binned,
    _zero_like, l_graph_fd, l_multifractal, l_spec_1overf,
)

__all__ = ["FractalPriors"]


def _int_list(values, name: str) -> list[int]:
    """Sizes from a config list; 12.5 is a typo, not silently the integer 12."""
    out = []
    for v in values:
        try:
            ok = not isinstance(v, bool) and float(v).is_integer()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name}: needs integer sizes, got {list(values)!r}")
        out.append(int(v))
    return out


class FractalPriors(nn.Module):
    """The three fractal priors as one loss module, configured like ``conf/fractals/default.yaml``.

    ``forward(latents, step=None, *, fs=None)`` returns ``(total, parts)`` with ``parts`` holding the
    weighted ``spec``, ``mf`` and ``graphfd`` terms (0-dim tensors). Nothing is computed (all zeros)
    when ``enable`` is false or ``step < warmup_steps``; a term with zero lambda is never computed.
    ``step=None`` means the caller handles warmup.

    Parameters
    ----------
    enable : bool
        Master switch (``fractals.enable``).
    spectral_beta_target, lambda_spec, lambda_mf, lambda_graphfd, warmup_steps
        The ``priors`` block: 1/f target and the three weights; priors start at ``warmup_steps``.
    fs : float
        Latent sampling rate in Hz (``metrics.sample_rate_hz``); override per call with ``fs=``.
    band : (lo, hi)
        Fit band of the 1/f prior (``metrics.temporal.psd_freq_band``).
    exclude_peaks : bool
        Mask oscillatory peaks in the 1/f prior (``priors.exclude_peaks``; off by default, see
        :func:`l_spec_1overf`; ``metrics.temporal.exclude_peaks`` configures the estimators only).
    q_vals, scales
        MFDFA moments and scales (``metrics.multifractal``); scales above T/2 are dropped per call.
    tau_target : sequence, optional
        Target tau(q) for the multifractal match term.
    eps_values, corr_threshold
        Hop radii and |r| threshold of the graph term (``metrics.graph``).
    graph_D_target : float, optional
        Target graph dimension; None stabilises D across the batch instead.
    time_dim : int
        Time axis of the latents (1 for ``(B, T, C)``).
    compile : {"auto", True, False}
        Run the three terms through ``torch.compile`` (``priors.compile``). Their forward and backward
        are ~1000 small ops, launch-bound on a GPU; compiled, inductor fuses them into a few kernels.
        ``"auto"`` compiles on CUDA only (on CPU the gain, 1.26x on (8, 1024, 64), does not repay the
        compile time of short runs). If compiling fails (no C compiler, an inductor bug), one warning
        is logged and the eager terms run for the rest of the process; values equal eager's.

    Shape:
        latents: ``(B, T, C)`` with time on ``time_dim``.
    """

    def __init__(
        self,
        *,
        enable: bool = True,
        spectral_beta_target: float = 1.0,
        lambda_spec: float = 0.05,
        lambda_mf: float = 0.02,
        lambda_graphfd: float = 0.01,
        warmup_steps: int = 1000,
        fs: float = 1000.0,
        band: Sequence[float] = (2.0, 80.0),
        exclude_peaks: bool = False,
        q_vals: Sequence[float] = (-5, -3, -1, 0, 1, 3, 5),
        scales: Sequence[int] = (8, 16, 32, 64, 128, 256),
        tau_target: Optional[Sequence[float]] = None,
        eps_values: Sequence[int] = (1, 2, 3, 4, 5, 6),
        corr_threshold: float = 0.3,
        graph_D_target: Optional[float] = None,
        time_dim: int = 1,
        compile: bool | str = "auto",
    ):
        super().__init__()
        if compile not in ("auto", True, False):
            raise ValueError(f"compile: needs 'auto' (CUDA only), true or false, got {compile!r}")
        # Normalised: compile=1 (a Hydra override) passes the check above as True but is not `True`.
        self.compile = compile if isinstance(compile, str) else bool(compile)
        self._compiled = None  # torch.compile of _terms, made on first use
        self.enable = bool(enable)
        self.spectral_beta_target = _finite(spectral_beta_target, "spectral_beta_target")
        self.lambda_spec = _check_weight(lambda_spec, "lambda_spec")
        self.lambda_mf = _check_weight(lambda_mf, "lambda_mf")
        self.lambda_graphfd = _check_weight(lambda_graphfd, "lambda_graphfd")
        # 1000.0 (a float from a sweep) is fine; 2.5 or "abc" is a typo, not silently truncated.
        if (isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Real)
                or not float(warmup_steps).is_integer() or warmup_steps < 0):
            raise ValueError(f"warmup_steps: must be an integer >= 0 (optimizer steps), got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        check_positive(fs, "fs")
        self.fs = float(fs)
        if len(band) != 2 or not 0 <= float(band[0]) < float(band[1]):
            raise ValueError(f"band: needs (lo, hi) with 0 <= lo < hi, got {band!r}")
        self.band = (float(band[0]), float(band[1]))
        self.exclude_peaks = bool(exclude_peaks)
        self.q_vals = [float(q) for q in q_vals]
        # Checked here, not first after warmup (possibly hours into a run), like the targets above.
        if not all(math.isfinite(q) for q in self.q_vals) or any(b <= a for a, b in zip(self.q_vals, self.q_vals[1:])):
            raise ValueError(f"q_vals: needs finite, strictly increasing moment orders, got {list(q_vals)!r}")
        self.scales = _int_list(scales, "scales")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales: sizes must be distinct, got {list(scales)!r}")
        self.tau_target = None if tau_target is None else [_finite(t, "tau_target") for t in tau_target]
        if self.tau_target is not None and len(self.tau_target) != len(self.q_vals):
            raise ValueError(f"tau_target: needs one value per q ({len(self.q_vals)}), got {len(self.tau_target)}")
        self.eps_values = _int_list(eps_values, "eps_values")
        self.corr_threshold = _finite(corr_threshold, "corr_threshold")
        if not 0.0 < self.corr_threshold < 1.0:
            raise ValueError(f"corr_threshold: must lie in (0, 1) (the |r| that links two channels), "
                             f"got {corr_threshold!r}")
        if len(set(self.eps_values)) != len(self.eps_values) or len(self.eps_values) < 2 or min(self.eps_values) < 1:
            raise ValueError(f"eps_values: needs >= 2 distinct hop radii >= 1, got {list(eps_values)!r}")
        self.graph_D_target = None if graph_D_target is None else _finite(graph_D_target, "graph_D_target")
        self.time_dim = int(time_dim)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **overrides) -> "FractalPriors":
        """Build from the ``fractals`` config block (``enable``, ``metrics``, ``priors``); keyword
        overrides win (e.g. ``fs=`` for the latent rate, ``graph_D_target=``)."""
        if not isinstance(cfg, Mapping):
            raise ValueError(f"cfg: needs the fractals config mapping, got {type(cfg).__name__}")
        metrics = cfg.get("metrics", {}) or {}
        temporal = metrics.get("temporal", {}) or {}
        mf = metrics.get("multifractal", {}) or {}
        graph = metrics.get("graph", {}) or {}
        priors = dict(cfg.get("priors", {}) or {})
        priors.pop("ramp_steps", None)  # a training-schedule key: models.lightning.NeuroFMxModule reads it
        known = {"spectral_beta_target", "lambda_spec", "lambda_mf", "lambda_graphfd", "warmup_steps",
                 "tau_target", "graph_D_target", "exclude_peaks", "compile"}
        unknown = set(priors) - known
        if unknown:
            raise ValueError(f"fractals.priors: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        enable = cfg.get("enable", True)
        if not isinstance(enable, bool):  # bool("false") is True: the priors would run
            raise ValueError(f"fractals.enable: must be true or false, got {enable!r}")

        def number(section: Mapping[str, Any], path: str, default: float) -> float:
            value = section.get(path.rsplit(".", 1)[-1], default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"fractals.metrics.{path}: must be a number, got {value!r}")
            return float(value)

        def sequence(section: Mapping[str, Any], path: str, default: tuple) -> list:
            value = section.get(path.rsplit(".", 1)[-1], default)
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                raise ValueError(f"fractals.metrics.{path}: must be a list, got {value!r}; e.g. {list(default)}")
            return list(value)

        kwargs = dict(
            enable=enable,
            fs=number(metrics, "sample_rate_hz", 1000.0),
            band=tuple(sequence(temporal, "temporal.psd_freq_band", (2.0, 80.0))),
            q_vals=sequence(mf, "multifractal.q_vals", (-5, -3, -1, 0, 1, 3, 5)),
            scales=sequence(mf, "multifractal.scales", (8, 16, 32, 64, 128, 256)),
            eps_values=sequence(graph, "graph.box_eps", (1, 2, 3, 4, 5, 6)),
            corr_threshold=number(graph, "graph.corr_threshold", 0.3),
        )
        kwargs.update(priors)
        kwargs.update(overrides)
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return (f"enable={self.enable}, beta*={self.spectral_beta_target}, lambda_spec={self.lambda_spec}, "
                f"lambda_mf={self.lambda_mf}, lambda_graphfd={self.lambda_graphfd}, warmup={self.warmup_steps}")

    def forward(self, latents: torch.Tensor, step: Optional[int] = None, *, fs: Optional[float] = None):
        if not isinstance(latents, torch.Tensor):  # else a TypeError from torch.zeros(dtype=numpy dtype)
            raise ValueError(f"latents: needs a torch.Tensor (B, T, C), got {type(latents).__name__}")
        zero = _zero_like(latents)
        parts = {"spec": zero, "mf": zero, "graphfd": zero}
        if not self.enable or (step is not None and int(step) < self.warmup_steps):
            return zero, parts
        fs = self.fs if fs is None else fs
        if self.compile is True or (self.compile == "auto" and latents.is_cuda):
            # The host-side checks of the eager terms, here: the graph skips the NaN/inf check (a host sync),
            # so NaN latents gave a NaN or, through the dead-channel masks, a finite loss without a word.
            if self.lambda_spec > 0 or self.lambda_mf > 0 or self.lambda_graphfd > 0:
                _check_latents(latents, self.time_dim)
            # fs and the band reach the graph as tensors: as Python floats they were baked in, and every new
            # rate (one per modality) recompiled the terms (~10 s on CPU) until torch's recompile limit.
            bins = _spec_bins(latents, fs, self.band, time_dim=self.time_dim) if self.lambda_spec > 0 else None
            if self._compiled is None:
                self._compiled = torch.compile(self._binned_terms)
            try:
                return self._compiled(latents, bins)
            except ValueError:  # bad input, which the eager terms reject the same way
                raise
            except Exception as exc:  # noqa: BLE001 - any compile failure: say so once, run eager
                logging.getLogger("fractals").warning(
                    "FractalPriors: torch.compile failed (%s: %s); running the priors eagerly (set "
                    "fractals.priors.compile: false to skip the attempt)", type(exc).__name__, str(exc)[:300])
                self.compile, self._compiled = False, None
        return self._terms(latents, fs)

    def _terms(self, latents: torch.Tensor, fs: float):
        on = sum(w > 0 for w in (self.lambda_spec, self.lambda_mf, self.lambda_graphfd))
        if on > 1 and not torch.compiler.is_compiling():  # one NaN/inf check (a host sync) for all the terms
            check_finite(latents, "latents")
            token = _LATENTS_CHECKED.set(True)
            try:
                return self._unchecked_terms(latents, fs)
            finally:
                _LATENTS_CHECKED.reset(token)
        return self._unchecked_terms(latents, fs)

    def _binned_terms(self, latents: torch.Tensor, bins: Optional[list]):
        """The compiled entry: :meth:`_unchecked_terms` with the 1/f band from ``_spec_bins`` (forward checked the
        latents)."""
        return self._unchecked_terms(latents, None, bins)

    def _unchecked_terms(self, latents: torch.Tensor, fs: Optional[float], bins: Optional[list] = None):
        zero = _zero_like(latents)
        parts = {"spec": zero, "mf": zero, "graphfd": zero}
        if self.lambda_spec > 0 and bins is not None:
            parts["spec"] = _spec_loss_binned(latents, bins, self.spectral_beta_target, self.lambda_spec,
                                              time_dim=self.time_dim, exclude_peaks=self.exclude_peaks)
        elif self.lambda_spec > 0:
            parts["spec"] = l_spec_1overf(latents, fs, self.band, self.spectral_beta_target, self.lambda_spec,
                                          time_dim=self.time_dim, exclude_peaks=self.exclude_peaks)
        if self.lambda_mf > 0:
            _check_time_dim(self.time_dim, latents.shape)  # else an IndexError from shape[time_dim]
            n = latents.shape[self.time_dim]
            scales = [s for s in self.scales if s <= n // 2]
            parts["mf"] = l_multifractal(latents, self.q_vals, scales, self.lambda_mf, self.tau_target,
                                         time_dim=self.time_dim)
        if self.lambda_graphfd > 0:
            parts["graphfd"] = l_graph_fd(latents, self.eps_values, self.corr_threshold, self.graph_D_target,
                                          self.lambda_graphfd, time_dim=self.time_dim)
        total = parts["spec"] + parts["mf"] + parts["graphfd"]
        return total, parts

    def __getstate__(self):
        # A compiled function does not pickle or deep-copy; it is remade on first use.
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state
