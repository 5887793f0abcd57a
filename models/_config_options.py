"""Reading NeuroFMx config options: integers that must be whole, parts built under their config path, and
head switches. Kept apart from :mod:`models.neurofmx` so the model file stays readable in one sitting."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch


def _is_whole(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer >= ``minimum`` (whole floats such as 2.0 count; 2.5, inf, "abc", None and
    True do not)."""
    try:
        return not isinstance(value, bool) and float(value) == int(value) and int(value) >= minimum
    except (TypeError, ValueError, OverflowError):
        return False


def _is_real(value: Any, low: float, *, open_low: bool = False) -> bool:
    """Whether ``value`` is a finite number >= ``low`` (> ``low`` with ``open_low``); NaN, inf, strings and bools
    are not."""
    if isinstance(value, bool):
        return False
    try:
        x = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(x) and (x > low if open_low else x >= low)


def _refuse_float16_weights(params: Iterable[torch.nn.Parameter]) -> None:
    """Raise a ValueError naming ``trainer.precision`` when the weights to optimise are float16 (``16-true``).

    Adam's ``eps`` (1e-8) rounds to 0 in float16, so every weight whose gradient is 0 gets the update 0/0 = NaN at
    the first step (and gradients below ~2e-4 square to 0). bfloat16 has float32's range and trains."""
    if any(p.requires_grad and p.dtype == torch.float16 for p in params):
        raise ValueError("trainer.precision: '16-true' trains float16 weights, and Adam's eps (1e-8) is 0 in float16: "
                         "the weights turn NaN at the first step. Use 16-mixed (float16 autocast over float32 "
                         "weights), bf16-mixed or bf16-true")


def _int_option(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming the config field (2.5, "abc" and True are refused)."""
    if not _is_whole(value, minimum):
        raise ValueError(f"{name}: needs an integer >= {minimum}, got {value!r}")
    return int(value)


# Size options the parts read with int(): 33.5 (a uniform sweep distribution) would run as 33 while the
# tracker logs 33.5. Whole floats (33.0) are fine.
_WHOLE_KEYS = frozenset({"n_units", "n_channels", "n_neurons", "n_rois", "n_channel_ids", "n_summary_tokens", "hidden",
                         "kernel_size", "embed_dim", "proj_dim", "n_domains", "n_taps", "J", "Q", "n_probe",
                         "n_features", "n_mels"})


def _refuse_fractions(tree: Mapping[str, Any], path: str) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _refuse_fractions(value, f"{path}.{key}")
        elif key in _WHOLE_KEYS and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{path}.{key}: needs an integer, got {value!r}")


def _build_part(path: str, cls, **kwargs: Any):
    """``cls(**kwargs)``; a bad or unknown option is reported under its config path ``path``."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        hint = "; see platform/fmx/conf/model/tiny.yaml for the options" if isinstance(exc, TypeError) else ""
        raise ValueError(f"{path}: {exc}{hint}") from exc


def _head_options(heads: Mapping[str, Any], kind: str) -> dict | None:
    """Options of head ``kind``: None when off (absent, null or false), {} for true or an empty mapping."""
    value = heads.get(kind)
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"model.heads.{kind}: needs a mapping of options (null turns the head off), got {value!r}")
    return dict(value)
