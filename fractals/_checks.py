"""Input conversion and validation shared by every estimator.

Every public function in :mod:`fractals` accepts a torch tensor or a NumPy array with time on the
last axis and returns the same kind it was given. Bad input raises :class:`ValueError` naming the
argument, the offending value and what is needed, so no estimator ever returns a silent NaN.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "to_input_kind",
    "numpy_io",
    "check_finite",
    "check_min_length",
    "check_not_constant",
    "check_positive",
    "check_ndim",
    "pow2_scale",
]


def as_tensor(x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)``; integers and bools become float64, floats keep their dtype."""
    was_numpy = not isinstance(x, torch.Tensor)
    if was_numpy:
        if isinstance(x, np.ma.MaskedArray) and np.ma.getmask(x) is not np.ma.nomask and np.ma.getmask(x).any():
            # np.asarray drops the mask: the masked samples would be measured as data
            raise ValueError(f"{name}: a masked array with {int(np.ma.getmask(x).sum())} masked value(s); the "
                             "measures take no mask: drop them (x.compressed() for a 1-D series) or fill them "
                             "(x.filled(...)) first")
        if hasattr(x, "toarray") and not isinstance(x, np.ndarray):  # scipy.sparse: asarray gave dtype object
            raise ValueError(f"{name}: a sparse {type(x).__name__}; pass a dense array ({name}.toarray())")
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name}: needs a numeric array, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise _complex_error(name, arr.dtype)
        if arr.dtype not in (np.float16, np.float32, np.float64):  # ints, bools, long double (torch has none)
            arr = arr.astype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = x
        if t.is_complex():
            raise _complex_error(name, t.dtype)
        if not torch.is_floating_point(t):
            t = t.to(torch.float64)
    if t.dtype in (torch.float16, torch.bfloat16):
        # Reductions over thousands of samples lose too much in half precision.
        t = t.float()
    return t, was_numpy


def _complex_error(name: str, dtype) -> ValueError:
    # Casting to float would silently drop the imaginary part (lost data).
    return ValueError(f"{name}: complex input (dtype {dtype}) is not supported; pass a real signal, "
                      "e.g. its real part or magnitude")


def to_input_kind(out: Any, was_numpy: bool) -> Any:
    """Convert a tensor (or a dict/tuple/dataclass of tensors) back to NumPy when the input was NumPy."""
    if not was_numpy:
        return out
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    if isinstance(out, dict):
        return {k: to_input_kind(v, was_numpy) for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(to_input_kind(v, was_numpy) for v in out)
    if dataclasses.is_dataclass(out) and not isinstance(out, type):  # SpectralFit from windowed(..., return_fit=True)
        return dataclasses.replace(out, **{f.name: to_input_kind(getattr(out, f.name), was_numpy)
                                           for f in dataclasses.fields(out) if f.init})
    return out


def numpy_io(fn: Callable) -> Callable:
    """Decorator: convert the first argument with :func:`as_tensor` and the result back."""
    import functools

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        t, was_numpy = as_tensor(x, "x")
        return to_input_kind(fn(t, *args, **kwargs), was_numpy)

    return wrapper


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    if not (x.is_floating_point() or x.is_complex()):
        return  # integer and bool tensors hold no NaN or inf
    # One sum is ~10-30x cheaper than isfinite().all() on CPU (more on strided views) and is
    # non-finite whenever any value is (or on overflow); only then run the exact check.
    if bool(torch.isfinite(x.sum())):
        return
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name}: contains {n_bad} NaN or inf value(s) out of {x.numel()}; "
            "remove or interpolate them before estimating"
        )


def check_ndim(x: torch.Tensor, min_ndim: int, name: str = "x", layout: str = "(..., T)") -> None:
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: needs at least {min_ndim} dimension(s) {layout}, got shape {tuple(x.shape)}")


def check_min_length(x: torch.Tensor, min_len: int, name: str = "x", why: str = "") -> None:
    n = x.shape[-1] if x.ndim else 0
    if n < min_len:
        extra = f" ({why})" if why else ""
        raise ValueError(f"{name}: time axis has {n} samples, needs at least {min_len}{extra}")


def check_not_constant(x: torch.Tensor, name: str = "x") -> None:
    flat = x.reshape(-1, x.shape[-1])
    const = (flat.amax(-1) - flat.amin(-1)) == 0
    if bool(const.any()):
        idx = int(torch.nonzero(const)[0])
        raise ValueError(
            f"{name}: series {idx} (flattened) is constant; fractal measures are undefined for a "
            "constant signal: drop flat channels first"
        )


def check_positive(value: float, name: str) -> None:
    # numbers.Real takes NumPy scalars too (np.float32(250) is a valid sampling rate); bool is not a rate.
    # math.isfinite, not np.isfinite: under torch.compile NumPy calls on Python numbers break the graph.
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


def check_open_unit(value: Any, name: str) -> None:
    """Refuse a value outside the open interval (0, 1), naming ``name``; None or a list too (float() raised)."""
    try:
        inside = 0.0 < float(value) < 1.0
    except (TypeError, ValueError):
        inside = False
    if not inside:
        raise ValueError(f"{name}: must lie in (0, 1), got {value!r}")


def pow2_scale(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Per-series power of two near ``max |x|`` along ``dim`` (keepdim, detached).

    Dividing by it is exact (only the exponent changes) and brings every series to magnitude ~1,
    so sums of squares neither overflow (float32 |x| >= 1e19) nor underflow (|x| <= 1e-20).
    Scale-free estimates are unchanged, and detaching is exact for their gradients (a quantity
    that does not depend on a series' scale has zero derivative along it). Works under
    torch.compile (exp2 / log2, no frexp).
    """
    xd = x.detach()
    # max(amax, -amin): two plain reductions, ~15x faster on CPU than abs().amax (a temporary).
    top = torch.maximum(xd.amax(dim, keepdim=True), -xd.amin(dim, keepdim=True))
    return torch.exp2(torch.floor(torch.log2(top.clamp_min(torch.finfo(x.dtype).tiny))))


def autocast_off(fn: Callable) -> Callable:
    """Run an estimator with autocast disabled: its least-squares slopes, detrending and Gram matrices
    need float32 or better, and inside a bf16 autocast region (a mixed-precision validation or
    training step) their matmuls would silently run in bf16 (measured: DFA, Higuchi and R/S estimates
    move by ~2e-3 under CPU bf16 autocast). Outside autocast it adds two flag reads."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # Plain with-statements, not a contextlib.ExitStack: torch.compile traces these, while entering
        # autocast through an ExitStack broke the compiled priors into 5 graphs inside an autocast region.
        on_cpu, on_cuda = torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda")
        if on_cuda and on_cpu:
            with torch.autocast(device_type="cuda", enabled=False), torch.autocast(device_type="cpu", enabled=False):
                return fn(*args, **kwargs)
        if on_cuda or on_cpu:
            with torch.autocast(device_type="cuda" if on_cuda else "cpu", enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def check_segments_counted(count: torch.Tensor, windows: list[int]) -> None:
    """R/S: raise unless every window has a non-constant segment in every series. ``count`` is
    ``(rows, n_windows)`` non-constant segments; one host sync for all windows."""
    empty = (count == 0).any(0)
    if bool(empty.any()):
        w_bad = windows[int(torch.nonzero(empty)[0])]
        raise ValueError(
            f"x: every segment of length {w_bad} is constant in some series; R/S is undefined: "
            "drop those series or use larger windows"
        )
