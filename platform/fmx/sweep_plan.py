"""A sweep resolved on the driver into the plain-data plan its trials run by: storage, tracking, epochs, resources."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fmx import storage as st
from fmx import tracking
from fmx.schema import (DEFAULT_STORAGE_PATH, DEFAULT_TRACKING_URI, SOURCE_FILE, STORAGE_ENV, TRACKING_ENV,
                        Storage, Sweep, choose_target, mask_uri_password, uri_has_password)


@dataclass
class SweepPlan:
    """Everything a trial needs, resolved on the driver (plain data: pickled to Tune actors)."""

    sweep_id: str
    name: str
    base: list[str]
    seed: int
    metric: str
    mode: str
    storage_uri: str
    storage_path: str
    endpoint_url: str | None
    region: str | None
    keep_best: int
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    max_epochs: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    acceptance: list[str] = field(default_factory=list)
    builders: dict[str, str] = field(default_factory=dict)
    fault: dict[str, Any] = field(default_factory=dict)  # tests only: {"epoch": k, "marker": path}
    storage_source: str = SOURCE_FILE   # where storage_uri came from (see resolve_targets)
    tracking_source: str = SOURCE_FILE  # where tracking_uri came from

    def target(self) -> st.StorageTarget:
        if self.storage_uri.startswith("s3://"):
            return st.StorageTarget(uri=self.storage_uri, storage_path=self.storage_path,
                                    filesystem=st.s3_filesystem(endpoint_url=self.endpoint_url, region=self.region))
        return st.StorageTarget(uri=self.storage_uri, storage_path=self.storage_path)


@dataclass(frozen=True)
class Targets:
    """Where a sweep's checkpoints and MLflow runs go, and where each choice came from.

    ``storage_source`` is ``"sweep file"``, ``"FMX_STORAGE_PATH"`` or ``"default"``; ``tracking_source`` is
    ``"sweep file"``, ``"MLFLOW_TRACKING_URI"`` or ``"default"``.
    """

    storage: st.StorageTarget
    storage_source: str
    tracking_uri: str
    tracking_source: str

    def describe(self) -> str:
        """One line for the console and the log (redacted)."""
        return st.redact(f"checkpoints: {self.storage.uri} (from {self.storage_source}); "
                         f"tracking: {self.tracking_uri} (from {self.tracking_source})")


def resolve_targets(sweep: Sweep, *, root: str | Path | None = None,
                    env: Mapping[str, str] | None = None) -> Targets:
    """Storage and tracking for a sweep: the sweep file's value, else the environment, else the local default.

    Parameters
    ----------
    sweep : Sweep
        The validated sweep; ``storage.path`` and ``tracking.uri`` count as set when they differ from
        ``runs/ray`` and ``sqlite:///runs/mlflow.db``.
    root : str or Path, optional
        The folder relative local paths resolve against (default: the current directory).
    env : mapping, optional
        The environment to read ``FMX_STORAGE_PATH`` and ``MLFLOW_TRACKING_URI`` from (default ``os.environ``);
        empty values count as unset.

    Raises
    ------
    ValueError
        When a variable that is used holds an unusable value (not a local path or s3://bucket/prefix, or a URI
        with ``user:password@`` in it), naming the variable and the fix.
    """
    env = os.environ if env is None else env
    root = Path(root or os.getcwd())
    path, storage_source = choose_target(sweep.storage.path, default=DEFAULT_STORAGE_PATH, env_var=STORAGE_ENV,
                                         env=env)
    if storage_source == STORAGE_ENV:
        try:
            Storage(path=path)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            problem = exc.errors()[0]["msg"].removeprefix("Value error, ") if hasattr(exc, "errors") else str(exc)
            raise ValueError(f"{STORAGE_ENV}={mask_uri_password(path)!r}: {problem}; set it to s3://bucket/prefix "
                             "or a local folder, or unset it to use the local default") from None
    uri, tracking_source = choose_target(sweep.tracking.uri, default=DEFAULT_TRACKING_URI, env_var=TRACKING_ENV,
                                         env=env)
    if tracking_source == TRACKING_ENV and uri_has_password(uri):
        raise ValueError(f"{TRACKING_ENV}={mask_uri_password(uri)!r} carries user:password@; drop them from the URI "
                         "and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead, so they never "
                         "reach params, logs or the sweep pointer")
    storage = st.resolve_storage(path, endpoint_url=sweep.storage.endpoint_url, region=sweep.storage.region,
                                 root=root, field="storage.path" if storage_source == SOURCE_FILE else storage_source)
    return Targets(storage=storage, storage_source=storage_source,
                   tracking_uri=tracking.resolve_tracking_uri(
                       uri, root=root, field="tracking.uri" if tracking_source == SOURCE_FILE else tracking_source),
                   tracking_source=tracking_source)


def _longest_epochs(sweep: Sweep, cfg: Mapping[str, Any]) -> int:
    """The most epochs any trial can run: the base config's, or the largest value the sweep gives
    ``trainer.max_epochs`` (ASHA's max_t comes from it; the base value alone would cut longer trials)."""
    epochs = [int(cfg.get("trainer", {}).get("max_epochs", 1))]
    spec = sweep.parameters.get("trainer.max_epochs")
    if spec is not None:
        values = ([getattr(spec, "value")] if hasattr(spec, "value") else list(getattr(spec, "values", [])) or
                  [getattr(spec, "max")])
        epochs += [math.ceil(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(epochs)


def make_plan(sweep: Sweep, *, sweep_id: str, root: Path, parent_run_id: str = "", experiment_id: str = "",
              builders: Mapping[str, str] | None = None, fault: Mapping[str, Any] | None = None,
              env: Mapping[str, str] | None = None) -> SweepPlan:
    from fmx.config import absolute_data_paths, compose

    targets = resolve_targets(sweep, root=root, env=env)
    target = targets.storage
    base = absolute_data_paths(sweep.base, root)
    cfg = compose(base)
    from fmx.config import trainer_options

    trainer_options(cfg.get("trainer", {}))  # a key no trial reads fails here, not silently in every trial
    return SweepPlan(
        sweep_id=sweep_id, name=sweep.name, base=base, seed=sweep.seed, metric=sweep.metric.name,
        mode=sweep.metric.mode, storage_uri=target.uri, storage_path=target.storage_path,
        endpoint_url=sweep.storage.endpoint_url or st.endpoint_from_env(), region=sweep.storage.region,
        keep_best=sweep.storage.keep_best, workers=sweep.resources.workers,
        cpus_per_worker=sweep.resources.cpus_per_worker, gpus_per_worker=sweep.resources.gpus_per_worker,
        max_failures=sweep.max_failures, max_epochs=_longest_epochs(sweep, cfg),
        tracking_uri=targets.tracking_uri, experiment_id=experiment_id,
        parent_run_id=parent_run_id, acceptance=list(sweep.acceptance), builders=dict(builders or {}),
        fault=dict(fault or {}), storage_source=targets.storage_source, tracking_source=targets.tracking_source)


def plan_dict(plan: SweepPlan) -> dict:
    return asdict(plan)
