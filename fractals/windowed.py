"""Every temporal metric over sliding windows.

:func:`windowed` turns a ``(..., T)`` series into a ``(..., n_windows, window_size)`` view with
``Tensor.unfold`` (no copy) and applies a batched metric to all windows at once, so a metric that
is vectorized over leading dimensions is automatically vectorized over windows too. The defaults
(1024-sample windows, hop 256) are the design document's ``fractals.metrics.window_size`` and
``hop_size`` (not keys of ``conf/fractals/default.yaml``: training reads no windowed measure).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Union

import numpy as np
import torch

from fractals._checks import as_tensor, to_input_kind
from fractals.temporal import check_not_scalar

__all__ = [
    "windowed",
    "windowed_higuchi_fd",
    "windowed_katz_fd",
    "windowed_hurst_rs",
    "windowed_dfa_alpha",
    "windowed_spectral_beta",
]

WINDOW_SIZE = 1024  # the design document's fractals.metrics.window_size
HOP_SIZE = 256  # the design document's fractals.metrics.hop_size
FRAME_BLOCK_BYTES = 8 << 20  # CPU: frames handed to one metric call


def _metric_by_name(name: str) -> Callable:
    from fractals import dfa, temporal

    table = {
        "higuchi_fd": temporal.higuchi_fd,
        "katz_fd": temporal.katz_fd,
        "hurst_rs": temporal.hurst_rs,
        "dfa_alpha": dfa.dfa_alpha,
    }
    if name == "spectral_beta":
        from fractals.spectral import spectral_beta

        return spectral_beta
    if name not in table:
        raise ValueError(f"metric: unknown name {name!r}; use a callable or one of {sorted(table) + ['spectral_beta']}")
    return table[name]


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ValueError(f"{name}: needs an integer > 0 (samples), got {value!r}")
    return int(value)


def windowed(metric: Union[Callable, str], x, window_size: int, hop_size: int, **kwargs):
    """Apply a batched metric to sliding windows of every series.

    Parameters
    ----------
    metric : callable or str
        A function ``(..., W) -> (...)`` such as :func:`fractals.temporal.higuchi_fd`, or one of
        the names "higuchi_fd", "katz_fd", "hurst_rs", "dfa_alpha", "spectral_beta".
    x : torch.Tensor or numpy.ndarray
        ``(..., T)``, time on the last axis.
    window_size : int
        Window length W in samples, 0 < W <= T.
    hop_size : int
        Step between window starts, > 0. Trailing samples that do not fill a window are dropped.
    **kwargs
        Passed to ``metric``.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        ``(..., n_windows)`` with ``n_windows = (T - W) // hop_size + 1``; window i starts at
        sample ``i * hop_size``. Same kind as ``x``.

    Shape:
        ``(..., T) -> (..., n_windows)``. The windows are a strided view; each metric makes its
        own temporaries, so memory is that of one metric call on ``n_windows`` times more series.
    """
    fn = _metric_by_name(metric) if isinstance(metric, str) else metric
    if not callable(fn):
        raise ValueError(f"metric: needs a callable or a metric name, got {metric!r}")
    check_not_scalar(x)
    t, was_numpy = as_tensor(x, "x")
    window_size = _check_size(window_size, "window_size")
    hop_size = _check_size(hop_size, "hop_size")
    n = t.shape[-1]
    if window_size > n:
        raise ValueError(f"window_size: {window_size} exceeds the series length T={n}; needs window_size <= T")
    n_windows = (n - window_size) // hop_size + 1
    lead = t.shape[:-1]
    rows = int(np.prod(lead)) if lead else 1
    # Metrics copy non-contiguous frames into (rows, W) blocks; on CPU bound that copy by feeding
    # series in groups (~8 MB of frames each). On CUDA one call covers the whole batch.
    per = max(1, FRAME_BLOCK_BYTES // max(1, n_windows * window_size * t.element_size()))
    try:
        if t.device.type != "cpu" or rows <= per:
            out = fn(t.unfold(-1, window_size, hop_size), **kwargs)  # (..., n_windows, W) view in
        else:
            flat = t.reshape(rows, n)
            blocks = [fn(b.unfold(-1, window_size, hop_size), **kwargs) for b in flat.split(per)]
            out = _join_blocks(blocks, lead, n_windows)
    except ValueError as exc:  # the metric saw one window as "x": say so, or "T=15" reads as the recording
        raise ValueError(f"{exc} [in sliding windows: window_size={window_size} hop_size={hop_size} of T={n}]") from exc
    return to_input_kind(out, was_numpy)


def _join_blocks(blocks: list, lead: tuple, n_windows: int, nested: bool = False):
    """Concatenate per-block metric results into ``(*lead, n_windows, ...)``.

    Metrics return a tensor (concatenated as is) or, with ``return_fit=True`` / MFDFA, a tuple,
    dict or dataclass of them. Inside those, per-series leaves are ``(block_rows, n_windows, ...)``;
    shared leaves (scales, q, frequencies) are 1-D and identical in every block: the first is kept.
    """
    first = blocks[0]
    if isinstance(first, torch.Tensor):
        if nested and (first.ndim < 2 or first.shape[1] != n_windows):
            return first
        out = torch.cat(blocks, 0)
        return out.reshape(*lead, *out.shape[1:])
    if isinstance(first, dict):
        return {k: _join_blocks([b[k] for b in blocks], lead, n_windows, True) for k in first}
    if isinstance(first, tuple):
        return tuple(_join_blocks(list(parts), lead, n_windows, True) for parts in zip(*blocks))
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        names = [f.name for f in dataclasses.fields(first) if f.init]
        return dataclasses.replace(first, **{k: _join_blocks([getattr(b, k) for b in blocks], lead, n_windows, True)
                                             for k in names})
    return first


def windowed_higuchi_fd(x, window_size: int = WINDOW_SIZE, hop_size: int = HOP_SIZE, **kwargs):
    """Higuchi FD per window; ``kwargs`` go to :func:`fractals.temporal.higuchi_fd` (e.g. kmax).

    Shape:
        ``(..., T) -> (..., n_windows)``.
    """
    from fractals.temporal import higuchi_fd

    return windowed(higuchi_fd, x, window_size, hop_size, **kwargs)


def windowed_katz_fd(x, window_size: int = WINDOW_SIZE, hop_size: int = HOP_SIZE, **kwargs):
    """Katz FD per window (:func:`fractals.temporal.katz_fd`).

    Shape:
        ``(..., T) -> (..., n_windows)``.
    """
    from fractals.temporal import katz_fd

    return windowed(katz_fd, x, window_size, hop_size, **kwargs)


def windowed_hurst_rs(x, window_size: int = WINDOW_SIZE, hop_size: int = HOP_SIZE, **kwargs):
    """R/S Hurst exponent per window (:func:`fractals.temporal.hurst_rs`; default windows 16..W/4).

    Shape:
        ``(..., T) -> (..., n_windows)``.
    """
    from fractals.temporal import hurst_rs

    return windowed(hurst_rs, x, window_size, hop_size, **kwargs)


def windowed_dfa_alpha(x, window_size: int = WINDOW_SIZE, hop_size: int = HOP_SIZE, **kwargs):
    """DFA alpha per window (:func:`fractals.dfa.dfa_alpha`; default scales 16..W/4).

    Shape:
        ``(..., T) -> (..., n_windows)``. Differentiable, like :func:`fractals.dfa.dfa_alpha`.
    """
    from fractals.dfa import dfa_alpha

    return windowed(dfa_alpha, x, window_size, hop_size, **kwargs)


def windowed_spectral_beta(x, window_size: int = WINDOW_SIZE, hop_size: int = HOP_SIZE, **kwargs):
    """Aperiodic 1/f slope per window (:func:`fractals.spectral.spectral_beta`; pass ``fs=``).

    Shape:
        ``(..., T) -> (..., n_windows)``.
    """
    from fractals.spectral import spectral_beta

    return windowed(spectral_beta, x, window_size, hop_size, **kwargs)
