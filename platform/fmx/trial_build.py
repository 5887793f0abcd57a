"""Build what a sweep's trials build, before Ray starts: the model (on the meta device) and the data module for
the base config at the edges of the search space. The builders check values no schema knows (``optim.lr=inf``,
``data.fs=0``, a negative prior weight); without this every trial would fail that way after Ray had started."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from fmx.config import _spec_values, absolute_data_paths, get_path, trial_config
from fmx.distributions import LogUniform, Uniform


# Config sections a model family never reads (models/criticality/two_moons.py: Adam at model.lr; models/byte/
# lightning.py: AdamW at model.lr with optim.weight_decay): a sweep parameter there trains every trial alike.
FAMILY_IGNORES = {
    "two_moons": ("fractals", "criticality", "optim"),
    "fractal_byte": ("fractals", "criticality", "optim.lr", "optim.betas", "optim.warmup_steps", "optim.schedule",
                     "optim.grad_clip", "optim.total_steps"),
}


def ignored_key_paths(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """Key-path prefixes the trial built from ``cfg`` never reads: its family's :data:`FAMILY_IGNORES`, and
    ``trainer.batch_size`` when the data group sets its own ``data.batch_size``."""
    model = cfg.get("model") or {}
    family = model.get("family", "neurofmx")
    ignored = list(FAMILY_IGNORES.get(family, ()))
    # without a model.lr of their own they read optim.lr: two_moons when model.lr is null, fractal_byte when the
    # key is gone (~model.lr)
    if (family == "two_moons" and model.get("lr") is None) or (family == "fractal_byte" and "lr" not in model):
        ignored = [p for p in ignored if p not in ("optim", "optim.lr")]
        if family == "two_moons":
            ignored += [f"optim.{k}" for k in ("weight_decay", "betas", "warmup_steps", "schedule", "grad_clip",
                                               "total_steps")]
    if (cfg.get("data") or {}).get("batch_size") is not None:
        ignored.append("trainer.batch_size")
    return tuple(ignored)


def unread_key(key: str, cfg: Mapping[str, Any]) -> str | None:
    """The prefix of :func:`ignored_key_paths` that ``key`` falls under for the trial built from ``cfg``, else None."""
    return next((p for p in ignored_key_paths(cfg) if key == p or key.startswith(p + ".")), None)


def unread_reason(hit: str, cfg: Mapping[str, Any], *, verb: str) -> str:
    """Why nothing reads the key path prefix ``hit`` (from :func:`unread_key`), and what to ``verb`` instead."""
    family = (cfg.get("model") or {}).get("family", "neurofmx")
    if hit == "trainer.batch_size":
        return (f"data.batch_size={cfg['data']['batch_size']} (data={cfg['data'].get('name')}) wins over it; "
                f"{verb} data.batch_size instead")
    return (f"model.family {family} does not read {hit} (see platform/fmx/conf/model/{family}.yaml for what "
            "it reads, e.g. model.lr)")


def check_parameters_are_read(sweep, params: Mapping[str, Any], cfg: Mapping[str, Any], *,
                              file: str | Path = "<sweep>") -> None:
    """Refuse a sampled key path the trial's model family or data group never reads (a silent no-op axis)."""
    from fmx.schema import SweepFileError

    for key in params:
        hit = unread_key(key, cfg)
        if hit is None:
            continue
        why = unread_reason(hit, cfg, verb="sample")
        raise SweepFileError(file, f"parameters.{key}", f"every trial would train alike: {why}",
                             value=sweep.parameters[key].model_dump(exclude_defaults=True)
                             if hasattr(sweep.parameters[key], "model_dump") else None)


# fractals.priors keys whose effect starts only at fractals.priors.warmup_steps (models/lightning.py)
PRIOR_AXES = ("spectral_beta_target", "lambda_spec", "lambda_mf", "lambda_graphfd", "ramp_steps")


def _most_train_steps(sweep, cfg: Mapping[str, Any]) -> int | None:
    """An upper bound on the optimizer steps of the longest trial (one worker, no accumulation), or None when it
    needs the size of data only the trials read (``data=files`` without an integer ``limit_train_batches``)."""
    import math

    def values(key: str) -> list:
        spec = sweep.parameters.get(key)
        return _spec_values(spec) if spec is not None else [get_path(cfg, key)]

    if "data" in sweep.parameters or "model" in sweep.parameters:  # the trials' data and family differ from cfg's
        return None
    try:
        epochs = max(values("trainer.max_epochs"))
        limits = values("trainer.limit_train_batches")
        data = cfg.get("data") or {}
        full = None
        if data.get("name") == "synthetic":  # windows per epoch / batch size, the last batch kept
            sizes = values("data.batch_size") if data.get("batch_size") is not None or \
                "data.batch_size" in sweep.parameters else values("trainer.batch_size")
            full = math.ceil(max(values("data.n_train")) / min(sizes))
    except (KeyError, TypeError, ValueError):
        return None
    batches = []
    for limit in limits:
        if isinstance(limit, int) and not isinstance(limit, bool):
            batches.append(limit if full is None else min(limit, full))
        elif full is not None and isinstance(limit, float):
            batches.append(math.ceil(limit * full))
        else:
            return None
    return int(epochs) * max(batches)


# Sections a switch turns off as a whole for the NeuroFMx family: a key sampled under one with its switch off in
# every trial trains every trial alike (models/lightning.py, models/neurofmx.py read them only when on)
SWITCHED_SECTIONS = (("fractals.priors.", "fractals.enable"), ("criticality.", "criticality.enable"),
                     ("fractals.backbone.fractional_kernels.", "fractals.backbone.fractional_kernels.enable"),
                     ("fractals.backbone.scale_encodings.", "fractals.backbone.scale_encodings.enable"))


def check_sections_switched_on(sweep, cfg: Mapping[str, Any], *, file: str | Path = "<sweep>") -> None:
    """Refuse sampling a section its switch turns off in every trial (``criticality.weight`` with
    ``criticality.enable=false``), and the fractal priors (beta*, the lambdas) when no trial runs past their warmup:
    every trial would train alike (the model's warning lands only in the Ray worker's log)."""
    from fmx.schema import SweepFileError

    for key, spec in sweep.parameters.items():
        for prefix, switch in SWITCHED_SECTIONS:
            if not key.startswith(prefix) or key == switch or switch in sweep.parameters or \
                    unread_key(key, cfg) is not None:  # a family that never reads it: check_parameters_are_read says so
                continue
            try:
                off = get_path(cfg, switch) is False
            except KeyError:
                continue
            if off:
                raise SweepFileError(file, f"parameters.{key}", f"every trial would train alike: {switch}=false "
                                     f"switches {prefix.rstrip('.')} off", value=spec.model_dump(exclude_defaults=True),
                                     allowed=f"{switch}=true in base, sample {switch} too, or leave "
                                     f"{prefix}* out of parameters")
    sampled = [k for k in sweep.parameters if k.startswith("fractals.priors.") and k.split(".")[-1] in PRIOR_AXES]
    if not sampled or unread_key(sampled[0], cfg) is not None:
        return
    try:
        warmup = min(v for v in (_spec_values(sweep.parameters["fractals.priors.warmup_steps"])
                                 if "fractals.priors.warmup_steps" in sweep.parameters
                                 else [get_path(cfg, "fractals.priors.warmup_steps")]))
    except (KeyError, TypeError, ValueError):
        return
    steps = _most_train_steps(sweep, cfg)
    if steps is None or not isinstance(warmup, (int, float)) or warmup < steps:
        return
    raise SweepFileError(file, f"parameters.{sampled[0]}", f"every trial would train alike: the fractal priors switch "
                         f"on after fractals.priors.warmup_steps={warmup} optimizer steps, and no trial runs more than "
                         f"{steps} (trainer.max_epochs x batches per epoch)", value=sweep.parameters[sampled[0]]
                         .model_dump(exclude_defaults=True),
                         allowed=f"fractals.priors.warmup_steps below {steps} in base (e.g. "
                         f"fractals.priors.warmup_steps={max(0, steps // 4)}), or longer trials")


def _corners(sweep, limit: int = 6, *, max_sets: int = 32) -> list[dict[str, Any]]:
    """Parameter sets at the edges of the search space: numeric distributions at their min and at their max,
    every categorical/grid value at least once, constants as given.

    When the categorical/grid values make at most ``max_sets`` sets (each numeric edge counted), every
    combination is built (a grid of models x data groups runs each pair, and one pair may not fit); otherwise
    value ``i`` of every list goes together (at least ``limit`` sets, as many as the longest list has values, up
    to ``max_sets``)."""
    import itertools

    listed = [key for key, spec in sweep.parameters.items() if hasattr(spec, "values")]
    numeric = [key for key, spec in sweep.parameters.items()
               if not hasattr(spec, "values") and not hasattr(spec, "value")]
    edges = 2 if numeric else 1
    combos = 1
    for key in listed:
        combos *= len(sweep.parameters[key].values)
    if combos * edges <= max_sets:
        picks = [(dict(zip(listed, values)), edge) for values in
                 itertools.product(*(sweep.parameters[k].values for k in listed)) for edge in range(edges)]
    else:
        n = min(max_sets, max([2, limit, *(len(sweep.parameters[k].values) for k in listed)]))
        picks = [({k: sweep.parameters[k].values[i % len(sweep.parameters[k].values)] for k in listed}, i % 2)
                 for i in range(n)]
    corners = []
    for chosen, edge in picks:
        params = {}
        for key, spec in sweep.parameters.items():
            if key in chosen:
                params[key] = chosen[key]
            elif hasattr(spec, "value"):
                params[key] = spec.value
            else:
                params[key] = spec.min if edge == 0 else getattr(spec, "top", spec.max)  # int: the largest drawn
        if params not in corners:
            corners.append(params)
    return corners or [{}]


def _inside(sweep, corner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``corner`` with every uniform/log-uniform parameter at a fraction inside its range, or nothing when there is
    none: uniform draws fractions, but its bounds are often whole (min 10, max 1000), so a key that takes integers
    only (optim.total_steps, data.stride, both null in the config) built at the edges and failed in every trial."""
    fractional = [key for key, spec in sweep.parameters.items() if isinstance(spec, (Uniform, LogUniform))]
    if not fractional:
        return []
    return [{**corner, **{key: _fraction_inside(sweep.parameters[key]) for key in fractional}}]


def _fraction_inside(spec) -> float:
    """A value strictly inside a uniform/log-uniform range that is not a whole number (what trials draw)."""
    import math

    t = 0.3819660112501051  # an irrational share of the range: whole bounds do not make it whole
    if isinstance(spec, LogUniform):
        value = math.exp(math.log(spec.min) + t * (math.log(spec.max) - math.log(spec.min)))
    else:
        value = spec.min + t * (spec.max - spec.min)
    return math.nextafter(value, spec.max) if float(value).is_integer() else value


def check_trials_build(sweep, *, file: str | Path = "<sweep>", root: str | Path | None = None) -> None:
    """Build the model and data module a trial builds, for the sweep's base config at the edges of its search space
    (:func:`_corners`), and turn a builder's ``ValueError`` into a :class:`~fmx.schema.SweepFileError`.

    The builders check values no schema knows (``optim.lr=inf``, ``data.fs=0``, a negative prior weight, an
    unknown ``optim.schedule``); without this every trial would fail that way after Ray had started. A data
    folder or file that does not exist here is left to the trials (it may exist on the cluster's nodes): the model
    is then built without fitting it to the data.
    """
    import torch
    from models import registry

    from fmx.schema import CONFIG_GROUPS, SweepFileError

    base = absolute_data_paths(sweep.base, root or os.getcwd())
    built: list[dict] = []
    infos: dict[str, dict] = {}  # per data section: reading recordings takes seconds, once is enough
    corners = _corners(sweep)
    for params in corners + _inside(sweep, corners[0]):
        try:
            cfg = trial_config(base, params, seed=sweep.seed)
        except KeyError as missing:  # a key path of the base config that a sampled group option lacks
            groups = {k: v for k, v in params.items() if k in CONFIG_GROUPS}
            raise SweepFileError(file, f"parameters.{missing.args[0]}", "unknown config key path when a trial samples "
                                 + ", ".join(f"{k}={v}" for k, v in groups.items()), value=missing.args[0],
                                 allowed="key paths every sampled group option has, or sample the option in "
                                 "another sweep") from None
        if cfg in built:
            continue
        built.append(cfg)
        data = cfg.get("data") or {}
        local = [data.get(k) for k in ("root", "path") if data.get(k)]
        try:
            fitted = cfg
            registry.check_data_family(cfg)  # registry.build_module_and_data refuses a mismatch first
            if not local or all(Path(str(p)).expanduser().exists() for p in local):
                # registry.build_module_and_data's steps, with the model on the meta device below
                from models.fit_to_data import fit_model_config

                key = repr((sorted(data.items()), cfg.get("seed"), (cfg.get("trainer") or {}).get("batch_size")))
                if key not in infos:
                    infos[key] = getattr(registry.build_datamodule(cfg), "info", None) or {}
                fitted, _ = fit_model_config(cfg, infos[key])
            with torch.device("meta"):  # the constructors' checks run; no memory or time for the weights
                registry.build_lightning_module(fitted)
        except ValueError as exc:
            path, value = _blame(sweep, params, str(exc))
            spec = sweep.parameters.get(path.removeprefix("parameters."))
            hint = "distribution: int (with min, max and an optional step)" if isinstance(
                spec, (Uniform, LogUniform)) and "integer" in str(exc) else ""
            raise SweepFileError(file, path, f"a trial would fail to build its model or data ({exc})",
                                 value=value, allowed=hint) from None
        except Exception:  # noqa: BLE001 - anything else (an optional package, a CUDA-only part) is the trial's
            continue
        check_parameters_are_read(sweep, params, cfg, file=file)  # after the build: a family/data mismatch first


def _blame(sweep, params: Mapping[str, Any], message: str) -> tuple[str, Any]:
    """The key path of the sweep file a builder's message names (``optim.lr: ...``), and its value there."""
    import re

    named = message.split(":", 1)[0].strip()

    def score(key: str) -> tuple[int, int]:  # the key itself beats a section holding it (data.fs=0 beats data=..)
        if key == named or key.endswith("." + named):
            return 4 + key.count("."), 0
        leaf = re.escape(key.rsplit(".", 1)[-1])
        if re.search(rf"(?<![\w.]){leaf}\s*:", message):  # named as a field: "model.ssm: n_taps: ..."
            return 3, 0
        # the section holding the key named (data for "data.name: ...") before a key named elsewhere in the
        # message ("... for model.family ..."); a sampled one before a base entry all the same
        if named.startswith(key + "."):
            return 2, 1
        return (2, 0) if re.search(rf"\b{leaf}\b", message) else (0, 0)

    def rank(key: str, sampled: int, index: int) -> tuple[int, int, int, int]:
        primary, section = score(key)
        return primary, sampled, section, index

    candidates = [(*rank(key, 1, 0), f"parameters.{key}", value) for key, value in params.items()]
    candidates += [(*rank(str(item).partition("=")[0].lstrip("+~"), 0, i), f"base[{i}]", item)
                   for i, item in enumerate(sweep.base)]
    best = max(candidates, key=lambda c: c[:4], default=None)  # sampled beat base values; a later entry an earlier
    if best is not None and best[0] > 0:
        return best[4], best[5]
    return ("parameters" if params else "base"), (dict(params) if params else None)
