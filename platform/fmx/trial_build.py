"""Build what a sweep's trials build, before Ray starts: the model (on the meta device) and the data module for
the base config at the edges of the search space. The builders check values no schema knows (``optim.lr=inf``,
``data.fs=0``, a negative prior weight); without this every trial would fail that way after Ray had started."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from fmx.config import absolute_data_paths, trial_config


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
    family = (cfg.get("model") or {}).get("family", "neurofmx")
    ignored = list(FAMILY_IGNORES.get(family, ()))
    if (cfg.get("data") or {}).get("batch_size") is not None:
        ignored.append("trainer.batch_size")
    return tuple(ignored)


def check_parameters_are_read(sweep, params: Mapping[str, Any], cfg: Mapping[str, Any], *,
                              file: str | Path = "<sweep>") -> None:
    """Refuse a sampled key path the trial's model family or data group never reads (a silent no-op axis)."""
    from fmx.schema import SweepFileError

    ignored = ignored_key_paths(cfg)
    family = (cfg.get("model") or {}).get("family", "neurofmx")
    for key in params:
        hit = next((p for p in ignored if key == p or key.startswith(p + ".")), None)
        if hit is None:
            continue
        if hit == "trainer.batch_size":
            why = (f"data.batch_size={cfg['data']['batch_size']} (data={cfg['data'].get('name')}) wins over it; "
                   "sample data.batch_size instead")
        else:
            why = (f"model.family {family} does not read {hit} (see platform/fmx/conf/model/{family}.yaml for what "
                   "it reads, e.g. model.lr)")
        raise SweepFileError(file, f"parameters.{key}", f"every trial would train alike: {why}",
                             value=sweep.parameters[key].model_dump(exclude_defaults=True)
                             if hasattr(sweep.parameters[key], "model_dump") else None)


def _corners(sweep, limit: int = 6) -> list[dict[str, Any]]:
    """Parameter sets at the edges of the search space: numeric distributions at their min and at their max,
    every categorical/grid value at least once (up to ``limit`` sets), constants as given."""
    lists = [len(spec.values) for spec in sweep.parameters.values() if hasattr(spec, "values")]
    n = min(limit, max([2, *lists]))
    corners = []
    for i in range(n):
        params = {}
        for key, spec in sweep.parameters.items():
            if hasattr(spec, "values"):
                params[key] = spec.values[i % len(spec.values)]
            elif hasattr(spec, "value"):
                params[key] = spec.value
            else:
                params[key] = spec.min if i % 2 == 0 else spec.max
        if params not in corners:
            corners.append(params)
    return corners or [{}]


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
    for params in _corners(sweep):
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
            raise SweepFileError(file, path, f"a trial would fail to build its model or data ({exc})",
                                 value=value) from None
        except Exception:  # noqa: BLE001 - anything else (an optional package, a CUDA-only part) is the trial's
            continue
        check_parameters_are_read(sweep, params, cfg, file=file)  # after the build: a family/data mismatch first


def _blame(sweep, params: Mapping[str, Any], message: str) -> tuple[str, Any]:
    """The key path of the sweep file a builder's message names (``optim.lr: ...``), and its value there."""
    import re

    named = message.split(":", 1)[0].strip()

    def score(key: str) -> int:  # the key itself beats a section holding it (data.fs=0 beats data=synthetic)
        if key == named or key.endswith("." + named):
            return 3 + key.count(".")
        if re.search(rf"\b{re.escape(key.rsplit('.', 1)[-1])}\b", message):  # "model.ssm: n_taps: ..."
            return 2
        return 1 if named.startswith(key + ".") else 0

    candidates = [(score(key), 1, 0, f"parameters.{key}", value) for key, value in params.items()]
    candidates += [(score(str(item).partition("=")[0].lstrip("+~")), 0, i, f"base[{i}]", item)
                   for i, item in enumerate(sweep.base)]
    best = max(candidates, key=lambda c: c[:3], default=None)  # sampled beat base values; a later entry an earlier
    if best is not None and best[0] > 0:
        return best[3], best[4]
    return ("parameters" if params else "base"), (dict(params) if params else None)
