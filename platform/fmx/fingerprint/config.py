"""Compose the fingerprint job configuration from the Hydra group ``conf/fingerprint``.

``load_config(["eeg", "fou.steps=100"])``: the first item without ``=`` names a file in the group
(default ``default``); the others are Hydra overrides. The result is a plain dict, so it can be
hashed for the resume key, sent to Ray workers and logged to MLflow.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CONF_DIR", "load_config", "available_configs", "config_hash"]

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
