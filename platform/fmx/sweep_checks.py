"""Checks of a sweep file against the config composed from its base overrides (:func:`check_sweep_paths`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

# fmx.config re-exports check_sweep_paths, so its names are imported inside the functions (no import cycle)


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def check_sweep_paths(sweep, *, file: str | Path = "<sweep>") -> dict:
    """Check every parameter key path against the config composed from ``sweep.base``; return that config.

    A path must exist; numeric distributions need a numeric (or null) value there; categorical/grid values must
    have the type of the value they replace (ints may stand for floats). Group keys (``model``, ``data``, ...)
    take option names and are checked by composing each option.
    """
    from fmx.config import compose, conf_dir, get_path, trainer_options
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
    from fmx.config import TRAINER_KEYS, trainer_options
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

    from fmx.config import compose, get_path

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
    from fmx.config import compose
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
    from fmx.config import compose, get_path
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
    from fmx.config import compose, get_path
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
