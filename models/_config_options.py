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
    the first step (and gradients below ~2e-4 square to 0). bfloat16 has float32's range and trains, but drops small
    updates (see :func:`_bfloat16_weights_warning`)."""
    if any(p.requires_grad and p.dtype == torch.float16 for p in params):
        raise ValueError("trainer.precision: '16-true' trains float16 weights, and Adam's eps (1e-8) is 0 in float16: "
                         "the weights turn NaN at the first step. Use 16-mixed (float16 autocast over float32 "
                         "weights) or bf16-mixed (bf16-true trains, but rounds away small weight updates)")


def _frozen_share(weights: list[torch.Tensor], rate: float) -> float:
    """Share of the bfloat16 ``weights`` that an update of size ``rate`` cannot change: a weight with |w| in
    [2^e, 2^(e+1)) sits on a bfloat16 grid of spacing 2^(e-7), so a step up to half of that rounds back to w."""
    total = sum(w.numel() for w in weights)
    stuck = 0
    with torch.no_grad():
        for w in weights:
            half_spacing = torch.exp2(torch.floor(torch.log2(w.detach().abs().float())) - 8)  # 0 for w = 0
            stuck += int((half_spacing >= rate).sum())
    return stuck / max(total, 1)


def _bfloat16_weights_warning(params: Iterable[torch.nn.Parameter], lr: float, final_lr: float) -> str | None:
    """The warning for ``trainer.precision: bf16-true`` (bfloat16 weights to optimise), else None.

    bfloat16 keeps 8 significant bits, so an AdamW step (about ``lr`` per weight, less once gradients are noisy)
    below half the bfloat16 spacing at a weight rounds to nothing and the weight stops training, without an error.
    Measured on the tiny preset (200 steps, 1 CPU thread, same seed): at lr 1e-4, 84 % of the weights never
    changed and the validation loss fell 28 % less than with 32-true or bf16-mixed (0.146 vs 0.203); at lr 3e-4,
    51 % unchanged (22 % in 32-true: unused ids) and 4 % less. Not refused: at large learning rates it trains."""
    weights = [p for p in params if p.requires_grad and p.dtype == torch.bfloat16]
    if not weights:
        return None
    peak, final = _frozen_share(weights, lr), _frozen_share(weights, final_lr)
    return (f"trainer.precision: bf16-true trains bfloat16 weights (8 significant bits): an AdamW step smaller than "
            f"half the bfloat16 spacing at a weight rounds to nothing, so that weight does not train. A step of "
            f"optim.lr={lr:g} (Adam's typical step size) leaves {peak:.0%} of the weights to train unchanged "
            f"({final:.0%} at the schedule's final lr {final_lr:g}): the model learns less, or stops learning, "
            "without an error. "
            "Use trainer.precision=bf16-mixed (bfloat16 autocast over float32 weights) or 32-true.")


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


def _mapping_option(parent: Mapping[str, Any], name: str, path: str) -> Mapping[str, Any]:
    """``parent[name]`` as a mapping of options (missing or null: empty), else a ValueError naming ``path``.

    ``fractals.probes: true`` raised "'bool' object has no attribute 'get'" where the options were read."""
    value = parent.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: needs a mapping of options (or null), got {value!r}")
    return value
