"""Hydra config composition for sweeps and trials (compose API: the working directory never changes).

:func:`compose` builds the root config ``platform/fmx/conf/config.yaml`` with Hydra overrides and returns a plain
dict (``OmegaConf.to_container(resolve=True)``), the form Ray and ``models.registry`` take.
:func:`trial_config` adds one trial's sampled values; :func:`check_sweep_paths` (in :mod:`fmx.sweep_checks`,
re-exported here) checks a sweep file's key paths.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import os

# The sweep-file checks live in fmx.sweep_checks; importable from here as before (fmx.trial_build, fmx.schema)
from fmx.sweep_checks import _spec_values, check_sweep_paths

__all__ = ["CONF_DIR", "DATA_PATH_KEYS", "FLOAT16_WEIGHTS", "LIGHTNING_PRECISIONS", "TRAINER_KEYS",
           "_spec_values", "absolute_data_paths", "check_sweep_paths", "compose", "conf_dir", "flatten",
           "get_path", "group_overrides", "set_path", "trainer_options", "trial_config"]

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the packaged configs; FMX_CONF_DIR may name another


def conf_dir() -> Path:
    """The config folder: ``FMX_CONF_DIR`` when set (read at each call), else the packaged :data:`CONF_DIR`.

    ``FMX_CONF_DIR`` names a site copy of the same layout (``config.yaml`` and its groups, with extra options);
    it is forwarded to Ray workers so trials compose from the same folder as the driver.

    Raises
    ------
    ValueError
        When ``FMX_CONF_DIR`` names no folder holding a ``config.yaml``.
    """
    chosen = os.environ.get("FMX_CONF_DIR")
    if not chosen:
        return CONF_DIR
    path = Path(chosen).expanduser()
    if not (path / "config.yaml").is_file():
        raise ValueError(f"FMX_CONF_DIR={chosen!r}: no config.yaml there; point it at a copy of {CONF_DIR} (the "
                         "root config.yaml and its group folders), or unset it to use the packaged configs")
    return path


def compose(overrides: list[str] | tuple[str, ...] = (), *, config_dir: str | Path | None = None) -> dict:
    """Compose the root config with Hydra ``overrides`` (``key=value``, ``group=option``) into a plain dict.

    Raises
    ------
    ValueError
        When an override names an unknown key or group option (Hydra's message is kept).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import OmegaConf

    folder = str(Path(config_dir or conf_dir()).resolve())
    caller_hydra = get_gh_backup()  # a Hydra the caller initialised (a notebook's own configs) is put back after
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=folder, version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except Exception as exc:  # hydra raises several types (ConfigCompositionException, OverrideParseException)
        cause = exc.__cause__ or exc
        raise ValueError(f"cannot compose the config with overrides {list(overrides)}: {cause}") from None
    finally:
        GlobalHydra.instance().clear()
        if caller_hydra is not None:
            restore_gh_from_backup(caller_hydra)
    return OmegaConf.to_container(cfg, resolve=True)


def get_path(cfg: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path``; ``KeyError`` naming the first missing part."""
    node: Any = cfg
    for i, part in enumerate(path.split(".")):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(".".join(path.split(".")[: i + 1]))
    return node


def set_path(cfg: dict, path: str, value: Any) -> None:
    """Set dotted ``path`` in place; the path must already exist (sweeps never add keys)."""
    parts = path.split(".")
    parent = get_path(cfg, ".".join(parts[:-1])) if len(parts) > 1 else cfg
    last = parts[-1]
    if isinstance(parent, list):
        parent[int(last)] = value
    else:
        if last not in parent:
            raise KeyError(path)
        parent[last] = value


def group_overrides(params: Mapping[str, Any]) -> list[str]:
    """Sampled values for whole config groups (``model: small``) become Hydra overrides."""
    from fmx.schema import CONFIG_GROUPS

    return [f"{k}={v}" for k, v in params.items() if k in CONFIG_GROUPS]


# Files and folders a trial opens: its data, and the checkpoint a fine-tuning run starts from. Trials run in Ray
# workers whose working directory is not the one the sweep was submitted from, so a relative path would point
# elsewhere (or nowhere) there: they are made absolute against the submit folder.
DATA_PATH_KEYS = ("data.root", "data.path", "model.init_from")


def absolute_data_paths(base: list[str] | tuple[str, ...], root: str | Path) -> list[str]:
    """The sweep's base overrides with relative (or ``~``) :data:`DATA_PATH_KEYS` values made absolute against
    ``root`` (where the sweep was submitted); URIs (``s3://...``) and ``null`` stay as written."""
    out = []
    for item in base:
        key, sep, value = str(item).partition("=")
        if sep and key.lstrip("+~") in DATA_PATH_KEYS and value and value != "null" and "://" not in value:
            path = Path(value.strip("'\"")).expanduser()
            if not path.is_absolute():
                path = (Path(root) / path).resolve()
            item = f"{key}={_hydra_quoted(str(path))}"
        out.append(item)
    return out


def _hydra_quoted(text: str) -> str:
    """``text`` as a Hydra override value: as is when plain, else single-quoted. The quotes a user put around
    ``data.root='/data/eeg (2024)'`` were stripped, and Hydra then refused the parentheses (or split at a comma)."""
    import re

    if re.fullmatch(r"[A-Za-z0-9_/.+@%-]+", text):
        return text
    # Hydra halves a run of backslashes only before a quote or at the end of a quoted value
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{escaped}'"


def trial_config(base: list[str], params: Mapping[str, Any], *, seed: int | None = None) -> dict:
    """Compose the config of one trial: the sweep's base overrides, group choices, then the sampled values.

    ``seed`` (the sweep file's) applies unless the trial samples ``seed`` itself: a sweep over seeds
    must train each trial with its own seed.
    """
    from fmx.schema import CONFIG_GROUPS

    cfg = compose(list(base) + group_overrides(params))
    for key, value in params.items():
        if key not in CONFIG_GROUPS:
            set_path(cfg, key, copy.deepcopy(value))
    if seed is not None and "seed" not in params:
        cfg["seed"] = int(seed)
    return cfg


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists stay values (MLflow params, comparison tables)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


# The ``trainer`` config keys a trial reads (the Lightning Trainer arguments they set, or the data module's
# per-worker batch size). Anything else would be silently ignored, so it is refused at submission.
TRAINER_KEYS = {
    "max_epochs": "epochs per trial (ASHA's max_t)",
    "batch_size": "per-worker batch size (data.batch_size overrides it)",
    "precision": "Lightning precision: 32-true, bf16-mixed, 16-mixed, 64-true",
    "limit_train_batches": "batches (int) or fraction (float) of the train set per epoch",
    "limit_val_batches": "batches (int) or fraction (float) of the val set per validation",
    "log_every_n_steps": "per-step metric logging interval",
    "val_check_interval": "validation interval within an epoch (1.0: at epoch end)",
    "find_unused_parameters": "DDP: needed when a batch skips tokenizers/heads",
    "accumulate_grad_batches": "batches whose gradients add up before an optimizer step",
}


# What pl.Trainer(precision=...) takes (Lightning's _PRECISION_INPUT; Hydra reads precision=16 as the int 16)
LIGHTNING_PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "64-true", "16-true", "bf16-true", "transformer-engine",
                        "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16)


FLOAT16_WEIGHTS = ("16-true", "transformer-engine-float16")  # Lightning accepts them; Adam's eps is 0 in float16


def trainer_options(tr: Mapping[str, Any]) -> dict[str, Any]:
    """The Lightning ``Trainer`` arguments of a composed ``trainer`` config, checked.

    Raises ``ValueError`` naming a key no trial reads (``+trainer.gradient_clip_val=1`` would otherwise be
    ignored without a word; gradient clipping is ``model.optim.grad_clip``), a count that is not a positive
    integer, or a precision, batch limit or validation interval ``pl.Trainer`` would refuse.
    """
    unknown = sorted(set(tr) - set(TRAINER_KEYS))
    if unknown:
        hint = " (gradient clipping is model.optim.grad_clip)" if "gradient_clip_val" in unknown else ""
        raise ValueError(f"trainer.{unknown[0]}: no trial reads this key{hint}; allowed trainer keys: "
                         f"{', '.join(sorted(TRAINER_KEYS))}")
    for key in ("max_epochs", "log_every_n_steps", "accumulate_grad_batches"):
        value = tr.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"trainer.{key}: needs an integer >= 1, got {value!r}")
    # Lightning refuses these only when a trial builds its Trainer: every trial would fail
    precision = tr.get("precision", "32-true")
    # 32.0 == 32 passed the membership test, and Lightning then failed every trial with "No precision set"
    if not isinstance(precision, (str, int)) or isinstance(precision, bool) or precision not in LIGHTNING_PRECISIONS:
        raise ValueError(f"trainer.precision: {precision!r} is not a Lightning precision; allowed: "
                         f"{', '.join(str(p) for p in LIGHTNING_PRECISIONS if isinstance(p, str) and p not in FLOAT16_WEIGHTS)}")
    if precision in FLOAT16_WEIGHTS:  # the models refuse it too, but only in each trial
        raise ValueError(f"trainer.precision: {precision!r} trains float16 weights, and Adam's eps (1e-8) is 0 in "
                         "float16: the weights turn NaN at the first step. Use 16-mixed or bf16-mixed (bf16-true "
                         "trains, but rounds away small weight updates)")
    for key, least in (("limit_train_batches", 0), ("limit_val_batches", -1), ("val_check_interval", 0)):
        value = tr.get(key, 1.0)
        if value is None:  # Lightning's default
            continue
        whole = isinstance(value, int) and not isinstance(value, bool) and value > least
        fraction = isinstance(value, float) and (least < value <= 1.0 if least == 0 else 0.0 <= value <= 1.0)
        if not (whole or fraction):
            counts = "an integer >= 1" if least == 0 else "an integer >= 0"
            span = "(0, 1]" if least == 0 else "[0, 1]"
            raise ValueError(f"trainer.{key}: needs {counts} (batches) or a fraction in {span}, got {value!r}")
    return dict(
        max_epochs=int(tr.get("max_epochs", 1)), precision=tr.get("precision", "32-true"),
        limit_train_batches=tr.get("limit_train_batches", 1.0), limit_val_batches=tr.get("limit_val_batches", 1.0),
        log_every_n_steps=int(tr.get("log_every_n_steps", 10)), val_check_interval=tr.get("val_check_interval", 1.0),
        accumulate_grad_batches=int(tr.get("accumulate_grad_batches", 1)))
