"""Compose the fingerprint job configuration from the Hydra group ``conf/fingerprint``.

``load_config(["eeg", "fou.steps=100"])``: the first item without ``=`` names a file in the group
(default ``default``); the others are Hydra overrides. The result is a plain dict, so it can be
hashed for the resume key, sent to Ray workers and logged to MLflow.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CONF_DIR", "load_config", "available_configs", "config_hash", "check_config"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "fingerprint"


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def load_config(items: Sequence[str] | None = None) -> dict[str, Any]:
    """Compose ``NAME`` plus ``key=value`` overrides (Hydra grammar) into a plain dict."""
    items = list(items or [])
    names = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    if len(names) > 1:
        raise ValueError(f"config: give at most one config name, got {names}; the rest must be key=value overrides")
    name = names[0] if names else "default"
    if name not in available_configs():
        raise ValueError(f"config: unknown name {name!r}; available in {CONF_DIR}: {available_configs()}")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():
        # Inside another Hydra app (e.g. a sweep): compose without touching its global state.
        cfg = _compose_plain(name, overrides)
    else:
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                cfg = compose(config_name=name, overrides=overrides)
        except HydraException as exc:
            raise ValueError(f"config: cannot apply overrides {overrides} to {name!r} ({exc})") from exc
    return OmegaConf.to_container(cfg, resolve=True)


def _compose_plain(name: str, overrides: list[str]):
    from omegaconf import OmegaConf

    raw = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    parents = [d for d in raw.pop("defaults", []) if d != "_self_"]
    merged = OmegaConf.merge(*[_compose_plain(p, []) for p in parents], raw) if parents else raw
    return OmegaConf.merge(merged, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))


def config_hash(*parts: Mapping[str, Any] | str | int | float | None) -> str:
    """A short stable hash of JSON-able parts (dict key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return _number(v) and float(v).is_integer()


def _band(v: Any, low_ok) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(x is None or _number(x) for x in v) \
        and (v[0] is None or low_ok(v[0])) and (None in v or v[0] < v[1])


# section -> key -> (check, what the value needs); None is always allowed where the default is null
_RULES: dict[str, dict[str, tuple[Any, str, bool]]] = {
    "fou": {"enable": (lambda v: isinstance(v, bool), "true or false", False),
            "freq_band": (lambda v: _band(v, lambda lo: lo >= 0) and None not in v, "[low, high] Hz, 0 <= low < high",
                          True),
            "n_bins": (lambda v: _whole(v) and v >= 8, "a whole number >= 8", False),
            "steps": (lambda v: _whole(v) and v >= 1, "a whole number >= 1", False)},
    "preprocess": {"channels": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v),
                                "a list of channel names", True),
                   "trim_flat_edges": (lambda v: isinstance(v, bool), "true or false", False),
                   "reject_by_annotation": (lambda v: isinstance(v, bool), "true or false", False),
                   "notch": (lambda v: _number(v) and v > 0, "a line frequency > 0 Hz (null: no notch)", True),
                   "band": (lambda v: _band(v, lambda lo: lo > 0), "[low, high] Hz with 0 < low < high", True),
                   "resample": (lambda v: _number(v) and v > 0, "a rate > 0 Hz (null: keep)", True),
                   "epoch": (lambda v: _number(v) and v > 0, "seconds > 0 (null: whole recording)", True)},
    "intervals": {"ectopic_filter": (lambda v: isinstance(v, bool), "true or false", False),
                  "min_ms": (lambda v: _number(v) and v >= 0, "ms >= 0", False),
                  "max_ms": (lambda v: _number(v) and v > 0, "ms > 0", False),
                  "window": (lambda v: _whole(v) and v >= 1 and v % 2 == 1, "an odd whole number of beats", False),
                  "tolerance": (lambda v: _number(v) and v > 0, "a fraction > 0 of the running mean", False)},
}


def check_config(cfg: Mapping[str, Any]) -> None:
    """Refuse a job config a recording could not use, naming the key, before any recording is read.

    A bad value otherwise failed every recording with the same error (``fou.steps=abc``: "invalid literal for
    int()"), and a quoted switch (``fou.enable=no``) or a misspelt key (``+fou.stepz=3``) was silently taken
    as on or ignored.
    """
    from fractals.fingerprint import resolve_config

    unknown = set(cfg) - {"fingerprint", *_RULES}
    if unknown:
        raise ValueError(f"config: unknown section(s) {sorted(unknown)}; allowed: {sorted({'fingerprint', *_RULES})}")
    try:
        resolve_config(cfg.get("fingerprint") or None)
    except ValueError as exc:  # its paths start with "config"; in a job the section is `fingerprint`
        raise ValueError(f"fingerprint{str(exc)[len('config'):]}" if str(exc).startswith("config") else str(exc)) \
            from None
    for section, rules in _RULES.items():
        values = cfg.get(section) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{section}: needs a mapping of {sorted(rules)}, got {values!r}")
        for key, value in values.items():
            if key not in rules:
                raise ValueError(f"{section}: unknown key {key!r}; allowed: {sorted(rules)}")
            check, needs, nullable = rules[key]
            if value is None and nullable:
                continue
            if not check(value):
                raise ValueError(f"{section}.{key}: needs {needs}, got {value!r}; set it with --config "
                                 f"{section}.{key}=VALUE")
    iv = cfg.get("intervals") or {}
    if _number(iv.get("min_ms")) and _number(iv.get("max_ms")) and not iv["min_ms"] < iv["max_ms"]:
        raise ValueError(f"intervals.min_ms, intervals.max_ms: need min_ms < max_ms, got {iv['min_ms']!r}, "
                         f"{iv['max_ms']!r}")
