"""Hydra config composition for sweeps and trials (compose API: the working directory never changes).

:func:`compose` builds the root config ``platform/fmx/conf/config.yaml`` with Hydra overrides and returns a plain
dict (``OmegaConf.to_container(resolve=True)``), the form Ray and ``models.registry`` take.
:func:`trial_config` adds one trial's sampled values; :func:`check_sweep_paths` checks a sweep file's key paths.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import os

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


# Data locations a trial's datamodule opens. Trials run in Ray workers whose working directory is not the
# one the sweep was submitted from, so a relative path would point elsewhere (or nowhere) there.
DATA_PATH_KEYS = ("data.root", "data.path")


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


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def check_sweep_paths(sweep, *, file: str | Path = "<sweep>") -> dict:
    """Check every parameter key path against the config composed from ``sweep.base``; return that config.

    A path must exist; numeric distributions need a numeric (or null) value there; categorical/grid values must
    have the type of the value they replace (ints may stand for floats). Group keys (``model``, ``data``, ...)
    take option names and are checked by composing each option.
    """
    from fmx.schema import CONFIG_GROUPS, NUMERIC, Categorical, Constant, Grid, SweepFileError, Uniform

    conf_dir()  # a wrong FMX_CONF_DIR is its own error, not one of the first base override
    try:
        cfg = compose(sweep.base)
    except ValueError:
        for i, item in enumerate(sweep.base):  # find the first override that breaks composition
            try:
                compose(sweep.base[: i + 1])  # cumulative: a key may exist only after a group choice
            except ValueError as exc:
                add = _missing_key_hint(str(item), list(sweep.base[:i])) if "not in struct" in str(exc) else ""
                raise SweepFileError(file, f"base[{i}]", f"override does not apply to the config ({exc})",
                                     value=item, allowed="an existing key path key=value or group=option "
                                     f"(groups: {', '.join(CONFIG_GROUPS)}){add}") from None
        raise
    _check_base_types(sweep.base, cfg, file=file)
    _check_base_read(sweep.base, file=file)
    _check_base_unread_keys(sweep.base, cfg, file=file)
    for key, spec in sweep.parameters.items():
        where = f"parameters.{key}"
        if key in CONFIG_GROUPS:
            options = spec.values if isinstance(spec, (Categorical, Grid)) else \
                [spec.value] if isinstance(spec, Constant) else None
            if options is None:
                raise SweepFileError(file, where, "a config group takes option names", value=spec.model_dump(),
                                     allowed="distribution: categorical or grid with option names")
            for option in options:
                try:
                    compose(list(sweep.base) + [f"{key}={option}"])
                except ValueError as exc:
                    available = sorted(p.stem for p in (conf_dir() / key).glob("*.yaml"))
                    if str(option) in available:  # the option exists: a base override does not apply with it
                        raise SweepFileError(file, where, f"the base overrides do not apply with {key}={option} "
                                             f"({exc})", value=option, allowed="base overrides every option of "
                                             f"{key} has, or a sweep per option") from None
                    raise SweepFileError(file, where, "unknown option of config group", value=option,
                                         allowed=", ".join(available)) from None
            continue
        if key.startswith(("+", "~")):  # Hydra's add/delete prefixes belong to overrides, not to sampled key paths
            bare = key.lstrip("+~")
            example = _spec_values(spec)[0]
            shown = str(example).lower() if isinstance(example, bool) else example
            raise SweepFileError(file, where, f"a parameter sets a key the composed config has; Hydra's {key[0]} "
                                 "(add or delete a key) works in base only", value=key,
                                 allowed=f"add the key in base (+{bare}={shown}) and sample {bare}" if key[0] == "+"
                                 else f"remove the key in base ({key}) and leave it out of parameters")
        try:
            current = get_path(cfg, key)
        except KeyError as missing:
            # list what exists where the path stops matching (not under the key's own parent, which may not exist)
            parent = ".".join(missing.args[0].split(".")[:-1])
            node = get_path(cfg, parent) if parent else cfg
            if isinstance(node, Mapping):
                allowed = f"keys under {parent or 'the root'}: {', '.join(map(str, sorted(node, key=str)))}"
            elif isinstance(node, list):
                allowed = f"{parent} is a list: indexes 0 to {len(node) - 1}"
            else:
                allowed = f"{parent} holds a value ({node!r}), not keys: a key path ends there"
            raise SweepFileError(file, where, f"unknown config key path (no {missing.args[0]!r} in the "
                                 "composed config)", value=key, allowed=allowed) from None
        if isinstance(current, (dict, list)) and not isinstance(spec, (Categorical, Grid, Constant)):
            raise SweepFileError(file, where, "a numeric distribution cannot replace a config section",
                                 value=_type_name(current), allowed="a leaf key path (number)")
        if isinstance(spec, NUMERIC):
            if isinstance(current, bool) or not isinstance(current, (int, float, type(None))):
                raise SweepFileError(file, where, f"{spec.distribution} samples numbers but the config holds a "
                                     f"{_type_name(current)} here", value=current,
                                     allowed="categorical or grid values of that type")
            if isinstance(current, int) and isinstance(spec, Uniform):  # LogUniform too: fractions would
                raise SweepFileError(file, where, f"{spec.distribution} samples fractions but the config key "
                                     "holds an integer", value=current,  # break epochs, sizes, counts
                                     allowed="distribution: int (with min, max and an optional step)")
        else:
            values = spec.values if isinstance(spec, (Categorical, Grid)) else [spec.value]
            for v in values:
                if not _compatible(current, v) and isinstance(v, str) and (
                        _is_number(v) and isinstance(current, (int, float)) and not isinstance(current, bool)
                        or v.strip().lower() in ("true", "false") and isinstance(current, bool)):
                    raise SweepFileError(file, where, f"the config holds a {_type_name(current)} here, and a "
                                         "value in quotes is a string", value=v,
                                         allowed=f"the value without quotes ({v.strip()})")
                if not _compatible(current, v):
                    raise SweepFileError(file, where, f"value does not fit the config's {_type_name(current)}",
                                         value=v, allowed=f"values of type {_type_name(current)} "
                                         f"(current value {current!r})")
    try:  # a +trainer.<key> no trial reads would be ignored without a word
        trainer_options(cfg.get("trainer", {}) or {})
    except ValueError as exc:
        raise SweepFileError(file, "base", str(exc)) from None
    _check_sampled_trainer_values(sweep, cfg, file=file)
    _check_run_shape(sweep, cfg, file=file)
    return cfg


def _spec_values(spec) -> list:
    """The values a parameter can take that matter for a check: its list, its constant, or its bounds."""
    if hasattr(spec, "values"):
        return list(spec.values)
    if hasattr(spec, "value"):
        return [spec.value]
    return [spec.min, getattr(spec, "top", spec.max)]  # int with a step: the largest value a trial draws


def _check_sampled_trainer_values(sweep, cfg: Mapping[str, Any], *, file) -> None:
    """A ``trainer.<key>`` parameter gets the checks of :func:`trainer_options` for each value it can take (a
    value Lightning refuses would otherwise fail every trial that draws it)."""
    from fmx.schema import SweepFileError

    for key, spec in sweep.parameters.items():
        section, _, leaf = key.partition(".")
        if section != "trainer" or leaf not in TRAINER_KEYS:
            continue
        for value in _spec_values(spec):
            try:
                trainer_options({**(cfg.get("trainer") or {}), leaf: value})
            except ValueError as exc:
                raise SweepFileError(file, f"parameters.{key}", str(exc), value=value) from None


def _check_run_shape(sweep, cfg: Mapping[str, Any], *, file) -> None:
    """Refuse settings that validate one by one but make the run pointless: early stopping that can never stop a
    trial (grace_period >= the longest max_epochs), and a val/ metric with validation switched off."""
    from fmx.schema import SweepFileError

    trainer = cfg.get("trainer") or {}
    et = sweep.early_terminate
    if et.type != "none":
        epochs = [trainer.get("max_epochs", 1)]
        if "trainer.max_epochs" in sweep.parameters:
            epochs += _spec_values(sweep.parameters["trainer.max_epochs"])
        longest = max(int(e) for e in epochs if isinstance(e, (int, float)) and not isinstance(e, bool))
        if et.grace_period >= longest:
            raise SweepFileError(file, "early_terminate.grace_period", f"{et.type} stops a trial only after "
                                 f"grace_period epochs, and no trial runs more than trainer.max_epochs={longest}: "
                                 "it would never stop one", value=et.grace_period,
                                 allowed=f"a grace_period below {longest}, or early_terminate type: none")
    from fmx.trial_build import check_sections_switched_on

    check_sections_switched_on(sweep, cfg, file=file)
    if sweep.metric.name.startswith("val/") and trainer.get("limit_val_batches", 1.0) == 0:
        raise SweepFileError(file, "base", f"trainer.limit_val_batches=0 switches validation off, so no trial ever "
                             f"reports {sweep.metric.name}", value=0,
                             allowed="limit_val_batches > 0, or a metric the trials report without validation")


def _missing_key_hint(item: str, before: list[str]) -> str:
    """For ``key=value`` naming a key the config lacks: the sibling it was probably meant to be, else Hydra's ``+``
    (the presets leave optional keys such as ``model.perceiver.attention`` out)."""
    import difflib

    key = item.partition("=")[0]
    if key.startswith(("+", "~")):
        return ""
    parent, _, leaf = key.rpartition(".")
    try:
        siblings = [str(k) for k in get_path(compose(before), parent)] if parent else []
    except (KeyError, TypeError, ValueError):
        siblings = []
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.8)  # "attention" is not "latent_attention"
    if close:
        return f"; did you mean {parent}.{close[0]}?"
    return f", or +{item} to add an optional key the config leaves out"


def _check_base_read(base: list[str], *, file: str | Path) -> None:
    """Refuse base entries no trial would see: ``seed=N`` (:func:`trial_config` gives every trial the sweep's own
    ``seed``) and ``+section.key=V`` adding a root section (the builders read only the root config's sections)."""
    from fmx.schema import CONFIG_GROUPS, SweepFileError

    roots = None
    for i, item in enumerate(base):
        key = str(item).partition("=")[0]
        bare = key.lstrip("+~")
        if bare == "seed":
            raise SweepFileError(file, f"base[{i}]", "every trial gets the sweep's own seed instead (the top-level "
                                 "seed:, default 0)", value=item, allowed="seed: N at the top level of the file, "
                                 "or a seed parameter to sample it")
        if key.startswith("+"):
            if roots is None:
                groups = [b for b in base if str(b).partition("=")[0].lstrip("+~") in CONFIG_GROUPS]
                roots = sorted(compose(groups))
            if bare.split(".")[0] not in roots:
                raise SweepFileError(file, f"base[{i}]", f"adds the root section {bare.split('.')[0]!r}, which no "
                                     "trial reads", value=item, allowed=f"keys under the root: {', '.join(roots)}")


def _check_base_unread_keys(base: list[str], cfg: Mapping[str, Any], *, file: str | Path) -> None:
    """Refuse a base override that changes a key the base config's model family or data group never reads
    (``optim.lr=0.01`` for the two-moons MLP, which trains at ``model.lr``): the user believes it applies.

    Switching off what is not read (``fractals.enable=false``) and restating a default pass: they change nothing.
    """
    from fmx.schema import CONFIG_GROUPS, SweepFileError
    from fmx.trial_build import unread_key, unread_reason

    groups = [item for item in base if str(item).partition("=")[0].lstrip("+~") in CONFIG_GROUPS]
    last = {str(item).partition("=")[0]: i for i, item in enumerate(base)}  # the entry that sets the final value
    reference = None
    for key, i in last.items():
        bare = key.lstrip("+")
        if key.startswith("~") or bare in CONFIG_GROUPS:
            continue
        hit = unread_key(bare, cfg)
        if hit is None:
            continue
        try:
            value = get_path(cfg, bare)
        except (KeyError, TypeError):
            continue
        if bare.endswith(".enable") and value is False:
            continue
        if reference is None:
            reference = compose(groups)
        try:
            if get_path(reference, bare) == value:
                continue
        except (KeyError, TypeError):
            pass
        raise SweepFileError(file, f"base[{i}]", f"no trial reads {bare}: {unread_reason(hit, cfg, verb='set')}",
                             value=base[i], allowed=f"leave {bare} out of base")


def _check_base_types(base: list[str], cfg: Mapping[str, Any], *, file: str | Path) -> None:
    """Refuse a base override whose value has the wrong kind for its key: Hydra keeps ``fractals.enable=no`` as the
    string ``'no'`` (truthy: the priors would run) and ``trainer.max_epochs=two`` as ``'two'``.

    The reference is the config composed from the group choices alone; ints and floats stand for each other,
    and null and keys the defaults leave null are not checked.
    """
    from fmx.schema import CONFIG_GROUPS, SweepFileError

    groups = [item for item in base if str(item).partition("=")[0].lstrip("+~") in CONFIG_GROUPS]
    last = {str(item).partition("=")[0]: i for i, item in enumerate(base)}  # the entry that sets the final value
    reference = None
    for key, i in last.items():
        if key.startswith(("+", "~")) or key in CONFIG_GROUPS or "=" not in str(base[i]):
            continue
        if reference is None:
            reference = compose(groups)
        try:
            current, value = get_path(reference, key), get_path(cfg, key)
        except (KeyError, TypeError):
            continue
        if current is None or value is None or isinstance(current, (dict, list)):
            continue
        if isinstance(current, bool):
            wanted = "true or false" if not isinstance(value, bool) else ""
        elif isinstance(current, (int, float)):
            wanted = "a number" if isinstance(value, bool) or not isinstance(value, (int, float)) else ""
        else:
            wanted = ""
        if wanted:
            shown = str(current).lower() if isinstance(current, bool) else repr(current)  # Hydra's spelling
            raise SweepFileError(file, f"base[{i}]", f"{key} takes a {_type_name(current)} but the override gives "
                                 f"the {_type_name(value)} {value!r}", value=base[i],
                                 allowed=f"{wanted} (the default is {key}={shown})")


def _is_number(text: str) -> bool:
    """``'1e-3'``, ``' 2 '``: a finite number written as a string (quoted in the YAML file)."""
    import math

    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _compatible(current: Any, value: Any) -> bool:
    if current is None:
        return True
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, int):  # a float would break integer settings (epochs, sizes): ints only
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(current, float):  # ints may stand for floats
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(current, str):
        # "auto | true | false" switches (fractals.priors.compile) default to "auto"; the builders check the rest
        return isinstance(value, str) or (current == "auto" and isinstance(value, bool))
    return isinstance(value, type(current))


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
