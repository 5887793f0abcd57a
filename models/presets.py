"""Size presets of NeuroFMx: where they live, how to load them, and parameter counting.

Presets are Hydra config groups in ``platform/fmx/conf/model/<name>.yaml`` (``tiny``, ``small``,
``medium``, ``large``). Counting builds the model on the ``meta`` device, so even the 150M preset
is counted in well under a second without allocating its weights.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["PRESETS", "PRESET_TARGETS", "preset_dir", "load_preset", "count_parameters", "parameter_breakdown"]

PRESETS = ("tiny", "small", "medium", "large")
# Target total parameter counts (the presets are sized to within 10 % of these; tests check it).
PRESET_TARGETS = {"small": 20_000_000, "medium": 50_000_000, "large": 150_000_000}


def preset_dir() -> Path:
    """Folder holding the model preset YAMLs (source checkout, else the installed ``fmx`` package data)."""
    here = Path(__file__).resolve().parents[1] / "platform" / "fmx" / "conf" / "model"
    if here.is_dir():
        return here
    spec = importlib.util.find_spec("fmx")  # locates the package without importing it
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "conf" / "model"
            if cand.is_dir():
                return cand
    raise FileNotFoundError("model presets not found: expected platform/fmx/conf/model/ beside models/")


def load_preset(name: str) -> dict[str, Any]:
    """The ``model`` block of preset ``name`` as a plain dict."""
    import yaml

    path = preset_dir() / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in preset_dir().glob("*.yaml"))
        raise ValueError(f"model preset: unknown {name!r}; available: {available}")
    return yaml.safe_load(path.read_text())


def _build_on_meta(cfg: Mapping[str, Any]):
    from models.neurofmx import NeuroFMx

    full = dict(cfg) if "model" in cfg else {"model": dict(cfg)}
    with torch.device("meta"):
        return NeuroFMx.from_config(full)


def count_parameters(cfg: Mapping[str, Any], *, trainable_only: bool = False) -> int:
    """Parameters of the NeuroFMx built from ``cfg`` (a composed config or a ``model`` block).

    With a composed config the ``fractals.backbone`` switches count too (fractional kernels add
    ``2 * conv_dim`` parameters per block, scale encodings a small projection).
    """
    model = _build_on_meta(cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(cfg: Mapping[str, Any]) -> dict[str, int]:
    """Parameters per top-level submodule (tokenizer, perceiver, backbone, popt, heads...)."""
    model = _build_on_meta(cfg)
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        out[top] = out.get(top, 0) + p.numel()
    return out
