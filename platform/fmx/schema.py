"""The sweep file: a W&B-style YAML that runs on Ray Tune, validated by pydantic.

A sweep file names a base Hydra config (overrides of ``platform/fmx/conf/config.yaml``), a search method, a
metric, distributions over Hydra key paths, early stopping, a trial budget, per-trial resources, the acceptance
benchmarks to run and where checkpoints and tracking go. :func:`load_sweep` reads and validates one file; every
error is a :class:`SweepFileError` naming the file, the key path, the bad value and what is allowed. Key paths are
checked against the composed Hydra config by :func:`fmx.config.check_sweep_paths` (called by
:func:`load_sweep` unless ``check_config=False``).

The JSON Schema of this model is exported to ``docs/sweep_schema.json`` (``python -m fmx.schema``).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from fmx.distributions import (  # noqa: F401  re-exported: the parameter distributions of a sweep file
    NUMERIC, Categorical, Constant, Distribution, Grid, IntRange, LogUniform, StrictInt, Uniform, _no_bool, _Strict)
from fmx.targets import (  # noqa: F401  re-exported: where checkpoints and runs go
    DEFAULT_STORAGE_PATH, DEFAULT_TRACKING_URI, SOURCE_DEFAULT, SOURCE_FILE, STORAGE_ENV, TRACKING_ENV,
    TRACKING_URI_FORMS, choose_target, mask_uri_password, tracking_uri_problem, uri_has_password)

MAX_SEED = 2**32 - 1  # numpy's SeedSequence, Optuna's samplers and Tune's variant generator take 0 .. 2**32 - 1
RAY_RESOURCE_UNIT = 1e-4  # Ray refuses a fractional resource quantity below 0.0001 when it schedules the workers
ACCEPTANCE_BENCHMARKS = ("numerics", "training", "ablation", "stability", "speed")
CONFIG_GROUPS = ("model", "data", "fractals", "trainer")
# Keys that would put a secret into a sweep file (and so into params and artifacts): refused anywhere.
# "token" followed by a letter is another word (model.tokenizers, n_summary_tokens), not a credential.
_SECRET_KEY = re.compile(r"(secret|password|token(?![a-z])|access_key|credential)", re.IGNORECASE)


class SweepFileError(ValueError):
    """A sweep file is malformed: ``file: key.path: problem; got VALUE; allowed: ...``."""

    def __init__(self, file: str | Path, path: str, problem: str, *, value: Any = None, allowed: str = ""):
        self.file, self.path, self.problem, self.value, self.allowed = str(file), path, problem, value, allowed
        msg = f"{file}: {path or '<top level>'}: {problem}"
        if value is not None:
            msg += f"; got {value!r}"
        if allowed:
            msg += f"; allowed: {allowed}"
        super().__init__(msg)


# --------------------------------------------------------------------------------------------- sections
class Metric(_Strict):
    """The metric the search optimises; a name the LightningModule or the acceptance step logs."""

    name: str = Field(min_length=1, description="e.g. val/loss, val/latent_beta, acceptance/score")
    goal: Literal["minimize", "maximize"]

    @field_validator("name")
    @classmethod
    def _namespaced(cls, v: str) -> str:
        if any(c.isspace() for c in v):  # no trial reports "val/loss ": the run would stop after its first one
            raise ValueError("metric names have no spaces; e.g. val/loss")
        # every metric a trial reports is namespaced (val/loss, train/loss, fingerprint/..., acceptance/...);
        # a W&B-style val_loss would pass here and stop the sweep after its first epoch
        if "/" not in v:
            prefix, sep, rest = v.partition("_")
            hint = f"did you mean '{prefix}/{rest}'? " if sep and prefix in (
                "val", "train", "acceptance", "fingerprint") else ""
            raise ValueError(f"{hint}metric names have a namespace, as the trials report them: val/loss, "
                             "val/latent_beta, val/<head>_loss, val/acc (two_moons), acceptance/<benchmark>_<quantity>")
        return v

    @property
    def mode(self) -> str:
        return "min" if self.goal == "minimize" else "max"


class EarlyTerminate(_Strict):
    """Stop unpromising trials: ASHA (successive halving) or the median rule; epochs are the time unit."""

    type: Literal["asha", "median", "none"] = "none"
    grace_period: StrictInt = Field(1, ge=1, description="epochs a trial always runs before it can be stopped")
    reduction_factor: StrictInt = Field(2, ge=2, description="ASHA: keep 1/reduction_factor at each rung")


class Resources(_Strict):
    """Per-trial resources: a TorchTrainer with `workers` DDP workers."""

    workers: StrictInt = Field(1, ge=1, le=512, description="DDP workers per trial")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="0 = CPU; fractions (0.25, 0.5) pack trials on one GPU")

    @field_validator("cpus_per_worker", "gpus_per_worker")
    @classmethod
    def _schedulable(cls, v: float, info) -> float:
        if not math.isfinite(v):
            raise ValueError(f"{info.field_name} must be a finite number (got {v})")
        if 0 < v < RAY_RESOURCE_UNIT:
            raise ValueError(f"{info.field_name} must be 0 or at least {RAY_RESOURCE_UNIT:g} (got {v:g}): Ray "
                             "refuses smaller fractions when it schedules the workers")
        return v

    @field_validator("gpus_per_worker")
    @classmethod
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"gpus_per_worker above 1 must be a whole number (got {v}); use a fraction <= 1 "
                             "to share a GPU or an integer to give a worker several")
        return v


_S3_KEYS = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment or FMX_S3_SECRET_FILE"


def _refuse_password(v: str | None, field: str, fix: str) -> str | None:
    """A sweep file is logged and shared: a URI carrying user:password@ is refused with the fix."""
    if v is not None and uri_has_password(v):
        raise ValueError(f"credentials never go in {field} (user:password@): {fix}")
    return v


class Storage(_Strict):
    """Where Ray keeps trial checkpoints: a local folder (relative to the project) or s3://bucket/prefix."""

    path: str = Field(DEFAULT_STORAGE_PATH, description="local folder or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS, CoreWeave)")
    region: str | None = None
    keep_best: StrictInt = Field(2, ge=1, description="checkpoints kept by metric score (the latest is always kept)")

    @field_validator("path")
    @classmethod
    def _uri(cls, v: str) -> str:
        _refuse_password(v, "storage.path", "use s3://bucket/prefix and " + _S3_KEYS)  # first: the others echo v
        if "://" in v and not v.startswith("s3://"):
            raise ValueError(f"only local paths and s3:// URIs are supported (got {v!r})")
        if v.startswith("s3://") and not re.match(r"^s3://[^/\s]+", v):  # s3:///ray would make "ray" the bucket
            raise ValueError("s3:// URI needs a bucket: s3://bucket/prefix")
        if v.lower().startswith("s3:") and "://" not in v:  # else a local folder "s3:" (caught only at run time)
            raise ValueError(f"{v!r} is an S3 URI missing a slash: write s3://bucket/prefix (pathlib joins drop one: "
                             "build S3 URIs as text)")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        _refuse_password(v, "storage.endpoint_url", "use " + _S3_KEYS)
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"endpoint_url must be http(s)://host[:port] (got {v!r})")
        return v


class Tracking(_Strict):
    """MLflow: a tracking URI (http(s)://, sqlite:///, file path) and the experiment name."""

    uri: str = Field(DEFAULT_TRACKING_URI, description="relative sqlite/file paths resolve to the project")
    experiment: str | None = Field(None, description="defaults to fmx-<sweep name>")
    artifact_location: str | None = Field(None, description="e.g. s3://bucket/mlflow for a new experiment")

    @field_validator("uri")
    @classmethod
    def _no_password(cls, v: str) -> str:
        _refuse_password(v, "tracking.uri",
                         "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment")
        problem = tracking_uri_problem(v)
        if problem:  # MLflow would refuse it only after Ray had started
            raise ValueError(f"the tracking URI {problem}; use {TRACKING_URI_FORMS}")
        return v

    @field_validator("artifact_location")
    @classmethod
    def _no_artifact_password(cls, v: str | None) -> str | None:
        return _refuse_password(v, "tracking.artifact_location", "use " + _S3_KEYS)


class Sweep(_Strict):
    """A sweep file. See docs/sweeps.md for every field with an example."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="folder and experiment name: letters, digits, _ . - (64 at most)")
    description: str = ""
    base: list[str] = Field(default_factory=list, description="Hydra overrides applied to every trial")
    method: Literal["tpe", "cmaes", "random", "grid"] = "tpe"
    metric: Metric
    parameters: dict[str, Union[Distribution, Constant]] = Field(default_factory=dict)
    early_terminate: EarlyTerminate = EarlyTerminate()
    run_cap: StrictInt = Field(8, ge=1, le=10_000,
                               description="trials to sample (default 8); grid: passes over the full grid, each with "
                                           "the same seed (default 1; more only when something is drawn per point)")
    max_concurrent: StrictInt = Field(1, ge=1, le=1024)
    max_failures: StrictInt = Field(2, ge=0,
                                    description="worker crashes a trial survives, resuming from its checkpoint")
    resources: Resources = Resources()
    acceptance: list[Literal["numerics", "training", "ablation", "stability", "speed"]] = Field(default_factory=list)
    storage: Storage = Storage()
    tracking: Tracking = Tracking()
    seed: StrictInt = 0

    @field_validator("base")
    @classmethod
    def _overrides(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item:
                raise ValueError(f"each base entry is a Hydra override key=value (got {item!r})")
        return v

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        if not 0 <= v <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED} (numpy, Optuna and Tune seed with it)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _one_grid_pass(cls, data: Any) -> Any:
        # run_cap counts passes over the grid, each with the same seed: the default 8 ran every grid point 8 times
        # over, identically. A W&B grid sweep makes one pass; so does an omitted run_cap with method grid.
        if isinstance(data, dict) and data.get("method") == "grid" and "run_cap" not in data:
            data = {**data, "run_cap": 1}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        seed = self.parameters.get("seed")
        seeds = (seed.values if isinstance(seed, (Categorical, Grid)) else [seed.value] if isinstance(seed, Constant)
                 else [seed.min, seed.max] if isinstance(seed, IntRange) else [])
        bad = [v for v in seeds if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_SEED]
        if bad:
            raise ValueError(f"parameters.seed: seeds must be between 0 and {MAX_SEED} (got {bad[0]})")
        grids = [k for k, p in self.parameters.items() if isinstance(p, Grid)]
        if grids and self.method in ("tpe", "cmaes"):
            raise ValueError(f"grid distributions ({', '.join(grids)}) need method: grid or random, "
                             f"not {self.method}")
        if self.method == "grid" and not grids:
            raise ValueError("method: grid needs at least one parameter with distribution: grid")
        if self.method == "cmaes":
            cats = [k for k, p in self.parameters.items() if isinstance(p, Categorical)]
            if cats:
                raise ValueError(f"cmaes samples numbers only; categorical parameters {cats} need method tpe/random")
        if self.metric.name.startswith("acceptance/"):
            if self.early_terminate.type != "none":
                raise ValueError(f"metric {self.metric.name} is known only when a trial ends: early_terminate "
                                 f"{self.early_terminate.type} needs a per-epoch metric (val/...); use type: none")
            bench = self.metric.name.split("/", 1)[1].split("_", 1)[0]
            if bench not in self.acceptance:
                raise ValueError(f"metric {self.metric.name} needs {bench!r} in acceptance (got {self.acceptance})")
        if len(set(self.acceptance)) != len(self.acceptance):
            raise ValueError(f"acceptance lists a benchmark twice: {self.acceptance}")
        return self


# ------------------------------------------------------------------------------------------------ loading
def _secret_keys(obj: Any, prefix: str = "") -> list[str]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if _SECRET_KEY.search(str(k)):
                found.append(path)
            found += _secret_keys(v, path)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, str) and "=" in v and _SECRET_KEY.search(v.split("=", 1)[0]):
                found.append(f"{prefix}[{i}]")
    return found


def _loc_to_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("uniform", "log_uniform", "int", "categorical", "grid", "Constant", "bool", "float", "str") or \
                str(item).startswith(("function-", "union[", "tagged-union")):
            continue  # pydantic's union branch names are not key paths in the file
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_sweep(data: Any, *, file: str | Path = "<sweep>") -> Sweep:
    """Validate an already-loaded mapping against the schema; raise :class:`SweepFileError` for the first problem.

    Key paths are not checked against the composed Hydra config here (a mistyped ``model.lrr`` passes, and every
    trial of :func:`fmx.runner.run_sweep` then fails): call :func:`fmx.config.check_sweep_paths` (and
    :func:`fmx.trial_build.check_trials_build`) on the result, as :func:`load_sweep` does.
    """
    if not isinstance(data, dict):
        raise SweepFileError(file, "", "a sweep file must be a YAML mapping (key: value lines)",
                             value=type(data).__name__, allowed="a mapping with name, metric, parameters, ...")
    secrets = _secret_keys(data)
    if secrets:
        raise SweepFileError(file, secrets[0], "credentials never go in a sweep file",
                             value="<redacted>", allowed="AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the "
                             "environment or a mounted secret file (FMX_S3_SECRET_FILE)")
    params = data.get("parameters")
    if isinstance(params, dict):
        for key, spec in params.items():
            if isinstance(spec, dict) and "distribution" in spec and spec["distribution"] not in _DIST_NAMES:
                raise SweepFileError(file, f"parameters.{key}.distribution", "unknown distribution",
                                     value=spec["distribution"], allowed=", ".join(_DIST_NAMES))
    try:
        return Sweep.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        spec = err.get("input")
        if err["type"] == "union_tag_not_found" and isinstance(spec, dict) and "value" in spec:
            # {value: V} is a constant: its own problem (a list, an extra key) says more than the missing tag
            err = next((e for e in errors if "Constant" in e["loc"]), err)
        path = _loc_to_path(tuple(err["loc"]))
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        allowed = ""
        if err["type"] == "extra_forbidden":
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            msg = "unknown key"
            value = path.rsplit(".", 1)[-1]
            # inside a parameter, pydantic's loc names the distribution's model: its fields are what is allowed
            branch = next((_BRANCHES[x] for x in err["loc"] if isinstance(x, str) and x in _BRANCHES), None)
            allowed = ", ".join(branch.model_fields) if branch else ", ".join(_fields_at(parent))
        elif err["type"] == "missing":
            msg, value = "required key is missing", None
            allowed = "see docs/sweeps.md"
        elif path.startswith("parameters.") and path.count(".") >= 1 and not isinstance(value, dict) \
                and err["type"] in ("model_type", "dict_type", "model_attributes_type"):
            msg = "a parameter is a mapping"
            allowed = "{distribution: uniform|log_uniform|int|categorical|grid, ...} or {value: V}"
        elif err["type"] == "union_tag_not_found":
            msg = "a parameter needs distribution: or value:"
            allowed = "{distribution: uniform|log_uniform|int|categorical|grid, ...} or {value: V}"
        elif err["loc"] and err["loc"][-1] in ("bool", "int", "float", "str") and \
                err["type"] in ("bool_type", "int_type", "float_type", "string_type"):
            msg = "value not allowed"  # pydantic names only the first scalar type it tried
            allowed = "a number, a string or a boolean"
        elif path.split("[")[0] == "base" and err["type"] in ("list_type", "string_type") and value is not None:
            # `base: model=tiny`, a Hydra-style mapping, or `- trainer.max_epochs: 2` (a colon makes a mapping)
            msg = ("base is a list of Hydra overrides" if path == "base" else
                   "a base entry is one Hydra override key=value" + ("; 'key: value' in a list reads as a mapping"
                                                                      if isinstance(value, dict) else ""))
            allowed = "key=value entries, e.g. base: [model=tiny, trainer.max_epochs=2]"
        elif err["type"] == "literal_error":
            allowed = msg.removeprefix("Input should be ")
            msg = "value not allowed"
        if value is None and "input" in err and err["type"] != "missing":
            msg += "; got null"  # SweepFileError leaves a None value out (an empty key reads as null)
        if not err["loc"] and err["type"] == "value_error":
            value = None  # a check across fields: its message names them, the input is the whole file
        if isinstance(value, dict) and err["type"] != "missing":
            value = {k: v for k, v in value.items() if not _SECRET_KEY.search(str(k))}
        if isinstance(value, str):
            value = mask_uri_password(value)
        raise SweepFileError(file, path, msg, value=value, allowed=allowed) from None


def planned_grid_points(sweep: Sweep) -> int:
    """Points of the full grid: the product of the grid parameters' value counts."""
    return math.prod(len(p.values) for p in sweep.parameters.values() if isinstance(p, Grid))


def check_search_space(sweep: Sweep, *, file: str | Path = "<sweep>", resumed: bool = False) -> None:
    """Refuse a TPE/CMA-ES sweep with nothing to search (Optuna would fail at the first trial, mid-run), and a
    categorical parameter or identical repeated passes (``run_cap`` > 1 with nothing drawn) in a grid sweep (not
    when ``resumed``: such a sweep recorded by an older version continues as it began).

    Checked here, not in :class:`Sweep`: a sweep recorded by an older version still reads back for status/resume.
    """
    if sweep.method == "grid" and not resumed:
        cats = [k for k, p in sweep.parameters.items() if isinstance(p, Categorical)]
        if cats:  # a W&B grid tries every listed value; Tune's grid draws a categorical once per grid point
            raise SweepFileError(file, f"parameters.{cats[0]}", "method grid tries every value of distribution: grid "
                                 "parameters only; a categorical one is drawn at random once per grid point (some "
                                 "values never, others twice)", value=sweep.parameters[cats[0]].model_dump(),
                                 allowed="distribution: grid to try each value, or method: random to draw them")
        points = planned_grid_points(sweep)
        if sweep.run_cap > 1 and all(isinstance(p, (Grid, Constant)) for p in sweep.parameters.values()):
            raise SweepFileError(file, "run_cap", f"method grid runs run_cap passes over the {points} grid points, "
                                 "each with the same seed and nothing drawn: every pass after the first repeats it",
                                 value=sweep.run_cap, allowed="run_cap: 1 (one pass, as a W&B grid sweep); for "
                                 "replicates, seed as a grid parameter (seed: {distribution: grid, values: [0, 1, 2]})")
    if sweep.method in ("tpe", "cmaes") and all(isinstance(p, Constant) for p in sweep.parameters.values()):
        raise SweepFileError(file, "parameters", f"method {sweep.method} needs at least one parameter with a "
                             "distribution", value=sorted(sweep.parameters) or {},
                             allowed="a distribution (uniform, log_uniform, int, categorical), or method: random "
                             "to run the base config run_cap times")


_DIST_NAMES = ("uniform", "log_uniform", "int", "categorical", "grid")
_BRANCHES = {"uniform": Uniform, "log_uniform": LogUniform, "int": IntRange, "categorical": Categorical,
             "grid": Grid, "Constant": Constant}


def _fields_at(path: str) -> list[str]:
    model: Any = Sweep
    for part in [p for p in path.split(".") if p]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden on purpose
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first at line {first[key] + 1})", key_node.start_mark)
            first[key] = key_node.start_mark.line
        except TypeError:  # an unhashable key: construct_mapping reports it
            pass
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
# PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent: 1e-3 and 1.0e3 were the strings '1e-3'
# and '1.0e3', so `values: [0.0, 1e-2]` was refused as a string on a float key and `{value: 1e-3}` too. YAML 1.2,
# JSON, Python and Hydra's own overrides (optim.lr=1e-3) read them as numbers.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_sweep(path: str | Path, *, check_config: bool = True, check_build: bool = False) -> Sweep:
    """Read, validate and (by default) check a sweep file's key paths against the composed Hydra config.

    Parameters
    ----------
    path : str or Path
        The sweep YAML file.
    check_config : bool
        Compose the Hydra config with the file's ``base`` overrides and check that every parameter key path
        exists there and holds a value of a fitting type (see :func:`fmx.config.check_sweep_paths`).
    check_build : bool
        Also build the model and data module of the trials at the edges of the search space
        (:func:`fmx.trial_build.check_trials_build`; seconds: it imports torch and the model code). ``fmx sweep validate``
        and ``fmx sweep run`` do.

    Raises
    ------
    SweepFileError
        Naming the file, the key path, the bad value and what is allowed.
    """
    path = Path(path)
    if path.is_dir():
        raise SweepFileError(path, "", "is a folder, not a sweep file", allowed="a path to a .yaml file")
    if not path.is_file():
        raise SweepFileError(path, "", "sweep file not found", allowed="a path to an existing .yaml file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as exc:
        raise SweepFileError(path, "", f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                             allowed="a YAML file saved as UTF-8") from None
    except OSError as exc:
        raise SweepFileError(path, "", f"cannot read the file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise SweepFileError(path, "", f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}",
                             allowed="YAML mappings and lists") from None
    sweep = parse_sweep(data, file=path)
    check_search_space(sweep, file=path)
    if check_config:
        from fmx.config import check_sweep_paths

        check_sweep_paths(sweep, file=path)
        if check_build:
            from fmx.trial_build import check_trials_build

            check_trials_build(sweep, file=path)
    return sweep


def json_schema() -> dict:
    """The JSON Schema of a sweep file (for editors and docs/sweep_schema.json)."""
    schema = Sweep.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fmx sweep file"
    return schema


def export_json_schema(path: str | Path) -> Path:
    """Write :func:`json_schema` to ``path`` atomically."""
    import os
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(json_schema(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":  # python -m fmx.schema [docs/sweep_schema.json]
    import sys

    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):  # --help wrote a file "--help"
        print("usage: python -m fmx.schema [OUT.json]   (default docs/sweep_schema.json): export the sweep file's "
              "JSON Schema", file=sys.stderr)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    print(export_json_schema(sys.argv[1] if len(sys.argv) > 1 else "docs/sweep_schema.json"))
