"""Model families and datasets by name, so the platform builds any of them from one config.

``cfg["model"]["family"]`` picks a LightningModule builder, ``cfg["data"]["name"]`` a
LightningDataModule builder. Families live in their own modules and are imported only when asked
for, so a CPU install never imports code it does not use.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

# family or dataset name -> module that defines ``build_lightning_module(cfg)`` /
# ``build_datamodule(cfg)``. Add a line here when a new family lands.
MODEL_MODULES: dict[str, str] = {
    "neurofmx": "models.lightning",
    "two_moons": "models.criticality.two_moons",
    "fractal_byte": "models.byte.lightning",
}
DATA_MODULES: dict[str, str] = {
    "synthetic": "models.data.datamodule",
    "files": "models.data.datamodule",
    "two_moons": "models.criticality.two_moons",
    "bytes": "models.byte.data",
}

# dataset name -> the family whose batches it produces. build_module_and_data refuses a known mismatch up front:
# otherwise it fails at the first step deep inside the model ("too many values to unpack"). Datasets left
# out here are not checked.
DATA_FAMILY: dict[str, str] = {"synthetic": "neurofmx", "files": "neurofmx", "two_moons": "two_moons",
                               "bytes": "fractal_byte"}


def _resolve(table: Mapping[str, str], key: str, field: str, attr: str) -> Callable[..., Any]:
    if not isinstance(key, str) or key not in table:  # a list failed as "unhashable type"
        raise ValueError(f"{field}: unknown value {key!r}; allowed: {sorted(table)}")
    module = importlib.import_module(table[key])
    return getattr(module, attr)


def build_lightning_module(cfg: Mapping[str, Any]):
    """Build the LightningModule named by ``cfg['model']['family']`` (default ``neurofmx``)."""
    family = (cfg.get("model", {}) or {}).get("family", "neurofmx")
    return _resolve(MODEL_MODULES, family, "model.family", "build_lightning_module")(cfg)


def build_datamodule(cfg: Mapping[str, Any]):
    """Build the LightningDataModule named by ``cfg['data']['name']`` (default ``synthetic``)."""
    name = (cfg.get("data", {}) or {}).get("name", "synthetic")
    return _resolve(DATA_MODULES, name, "data.name", "build_datamodule")(cfg)


def check_data_family(cfg: Mapping[str, Any]) -> None:
    """Raise a ValueError naming ``data.name`` when the dataset makes batches for another model family than
    ``model.family`` (it would fail at the first step deep inside the model)."""
    family = (cfg.get("model", {}) or {}).get("family", "neurofmx")
    name = (cfg.get("data", {}) or {}).get("name", "synthetic")
    if DATA_FAMILY.get(name, family) != family:
        fits = sorted(k for k, v in DATA_FAMILY.items() if v == family)
        raise ValueError(f"data.name: {name!r} makes batches for model.family {DATA_FAMILY[name]!r}, not {family!r}; "
                         f"use {' or '.join(f'data={k}' for k in fits) or 'a dataset of that family'}")


def build_module_and_data(cfg: Mapping[str, Any]):
    """The datamodule of ``cfg``, then the LightningModule with its config fitted to that data.

    A NeuroFMx config gets tokenizers and id vocabularies for the data's modalities
    (:func:`models.fit_to_data.fit_model_config`; e.g. 19-channel EEG from ``data=files`` on a preset
    written for synthetic LFP). Returns ``(module, datamodule)``.
    """
    from models.fit_to_data import fit_model_config

    check_data_family(cfg)
    data = build_datamodule(cfg)
    fitted, _ = fit_model_config(cfg, getattr(data, "info", None) or {})
    return build_lightning_module(fitted), data
