"""Run a sweep: Ray Tune (Optuna / random / grid search, ASHA or median stopping) over Ray Train trials.

Layout of one sweep run (``sweep_id = <name>-<UTC timestamp>``)::

    <storage>/<sweep_id>/                 Tune experiment folder (trial state, searcher state)
    <storage>/<sweep_id>/trials/<trial>/  the trial's TorchTrainer run: checkpoints (best-k + latest)
    <storage>/<name>.latest.json          pointer used by ``fmx sweep resume/status NAME``

Each trial is a Tune function (:func:`trial_fn`) that composes its config, opens (or reopens) its nested MLflow
child run, and fits a ``TorchTrainer`` with N DDP workers running :func:`fmx.train_worker.train_loop`.
``FailureConfig(max_failures)`` restarts a crashed worker group from the latest checkpoint; ``Tuner.restore``
resumes an interrupted sweep without re-running finished trials. The driver owns the MLflow lifecycle
(:class:`MlflowLifecycle`): children end FINISHED/FAILED with their trial, the parent with the sweep.

Where checkpoints and runs go is decided once, by :func:`resolve_targets`: a sweep file's own ``storage.path`` /
``tracking.uri`` wins; left at the defaults, ``FMX_STORAGE_PATH`` / ``MLFLOW_TRACKING_URI`` (set in cluster pods)
take their place; otherwise the local defaults (``runs/ray``, ``sqlite:///runs/mlflow.db`` under the project).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fmx import storage as st
from fmx import tracking
from fmx.schema import (DEFAULT_STORAGE_PATH, DEFAULT_TRACKING_URI, SOURCE_FILE, STORAGE_ENV, TRACKING_ENV,
                        Storage, Sweep, check_search_space, choose_target, mask_uri_password,
                        uri_has_password)
from fmx.lifecycle import MlflowLifecycle  # noqa: F401  also the name pickled in older sweeps' Tune state
from fmx.lifecycle import CallerProcessKept, SigtermAsInterrupt
from fmx.ray_setup import check_session_fits, check_trial_fits, init_ray  # noqa: F401  tests patch runner.init_ray
from fmx.ray_setup import TRIAL_CPU
from fmx.search import scheduler, search_algorithm, search_space
from fmx.trial_support import best_finite_checkpoint, last_logged_step, process_group_backend  # noqa: F401
from fmx.trial_support import masked_trial_error

logger = logging.getLogger(__name__)

# Test hook: '{"epoch": 1, "marker": "/tmp/x"}' makes rank 0 of the first trial to reach epoch 1 die (os._exit)
# in the middle of it, as a lost worker would; the marker file makes it happen once.
FAULT_ENV = "FMX_TEST_FAULT"


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


# --------------------------------------------------------------------------------------------- the trial
def trial_fn(config: Mapping[str, Any], plan: SweepPlan) -> None:
    """One trial: config, MLflow child run, a TorchTrainer fit, acceptance benchmarks, a final report.

    An exception that would carry secret values out of the trial (into the error files Tune stores beside the
    checkpoints) leaves as a :class:`~fmx.trial_support.MaskedTrialError` with them masked.
    """
    try:
        _run_trial(config, plan)
    except Exception as exc:
        masked = masked_trial_error(exc)
        if masked is None:
            raise
        raise masked from None


def _run_trial(config: Mapping[str, Any], plan: SweepPlan) -> None:
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from fmx.config import flatten, trial_config
    from fmx.train_worker import train_loop

    st.export_credentials(st.load_credentials())
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    params = dict(config.get("params", {}))
    cfg = trial_config(plan.base, params, seed=plan.seed)
    c = tracking.client(plan.tracking_uri)
    tags = {tracking.TAG_SWEEP_ID: plan.sweep_id, tracking.TAG_TRIAL: trial_id}
    run_id, created = tracking.get_or_create_run(
        c, plan.experiment_id, run_name=f"trial-{trial_id}",
        tags={**tags, tracking.TAG_PARENT: plan.parent_run_id},
        extra_tags={tracking.TAG_KIND: "trial", tracking.TAG_SWEEP: plan.name, "fmx.git_commit": tracking.git_commit()})
    if created:
        tracking.log_params(c, run_id, {**flatten(cfg), **{f"sweep.{k}": v for k, v in params.items()}})
    else:
        c.set_tag(run_id, "fmx.trial_restarts", str(int(c.get_run(run_id).data.tags.get("fmx.trial_restarts",
                                                                                          "0")) + 1))
    target = plan.target()
    use_gpu = plan.gpus_per_worker > 0
    resources = {"CPU": plan.cpus_per_worker, **({"GPU": plan.gpus_per_worker} if use_gpu else {})}
    backend = process_group_backend(plan.workers, plan.gpus_per_worker)
    trainer = TorchTrainer(
        train_loop, torch_config=TorchConfig(backend=backend) if backend else None,
        train_loop_config={"cfg": cfg, "tracking_uri": plan.tracking_uri, "run_id": run_id, "use_gpu": use_gpu,
                           "builders": plan.builders, "fault": plan.fault,
                           # metrics a tracking outage kept from MLflow: beside the checkpoints when they are local
                           "metrics_spool_dir": None if target.filesystem is not None else
                           target.join(plan.sweep_id, "trials", trial_id),
                           "threads_per_worker": max(1, int(plan.cpus_per_worker))},
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"trials/{trial_id}", storage_path=target.join(plan.sweep_id),
            storage_filesystem=target.filesystem, failure_config=FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=plan.keep_best, checkpoint_score_order=plan.mode,
                # acceptance metrics exist only after the fit: then the newest checkpoints are kept
                checkpoint_score_attribute=None if plan.metric.startswith("acceptance/") else plan.metric),
            callbacks=[TuneReportCallback()]))
    result = trainer.fit()
    final = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    if plan.acceptance and result.checkpoint is not None:
        from fmx.acceptance import AcceptanceReport, run_acceptance

        rel = f"{plan.sweep_id}/trials/{trial_id}/{ACCEPTANCE_FILE}"
        kept = st.read_bytes(target, rel)  # a restarted trial whose report was saved: not computed twice
        if kept is not None:
            report = AcceptanceReport(results=json.loads(kept)["benchmarks"])
        else:
            best = None
            if not plan.metric.startswith("acceptance/"):
                best = best_finite_checkpoint(result, plan.metric, plan.mode)
            report = run_acceptance(plan.acceptance, cfg=cfg, checkpoint=best or result.checkpoint,
                                    metrics=final, builders=plan.builders)
        record_acceptance(c, run_id, report, target=target, rel=rel,
                          metric=plan.metric if plan.metric.startswith("val/") else "val/loss",
                          default_step=int(final.get("step", 0)))
        final.update(report.metrics())
    if result.checkpoint is not None:
        c.set_tag(run_id, "fmx.checkpoint", result.checkpoint.path)
    final["fmx_complete"] = 1.0
    tune.report(final)


ACCEPTANCE_FILE = "acceptance.json"  # beside the trial's checkpoints: the record when MLflow did not take it


def record_acceptance(c, run_id: str, report, *, target: st.StorageTarget, rel: str, metric: str,
                      default_step: int) -> str:
    """Save an acceptance report under ``target``/``rel`` (atomically), then log it to MLflow run ``run_id``.

    The report is written first: a tracking outage while it is logged costs only the log (a warning names the
    saved file), not the minutes of benchmarks behind it. Its metrics go at the newest step of ``metric``, so
    MLflow's charts put acceptance beside the val/* it judged. Returns the saved file's path.
    """
    plain = json.dumps(report.to_dict(), indent=2, sort_keys=True,  # numpy/torch scalars stay numbers
                       default=lambda o: o.item() if hasattr(o, "item") else str(o))
    saved = st.write_bytes(target, rel, plain.encode())
    try:
        step = last_logged_step(c, run_id, metric, default=default_step)
        tracking.log_metrics(c, run_id, report.metrics(), step=step)
        tracking.log_json(c, run_id, report.to_dict(), "acceptance/acceptance.json")
    except Exception as exc:  # noqa: BLE001 - the saved report is the record; the trial's result carries it too
        print(f"fmx: WARNING: the acceptance report of run {run_id} was not logged to MLflow "
              f"({type(exc).__name__}: {st.redact(str(exc))[:300]}); it is saved in {st.redact(saved)}", flush=True)
    return saved


# ---------------------------------------------------------------------------------------- the driver
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


@dataclass
class SweepOutcome:
    """What ``fmx sweep run/resume`` prints: where things are and the best trial."""

    sweep_id: str
    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    storage_uri: str
    n_trials: int
    n_errors: int
    best: dict[str, Any] | None
    interrupted: bool = False
    stopped_by: str | None = None  # "SIGTERM" when a SIGTERM stopped it (Ctrl-C: None): the CLI's exit status


def planned_trials(sweep: Sweep) -> int:
    """How many trials a sweep runs: ``run_cap`` samples, each one pass over every grid parameter (Tune repeats
    the grid per sample, whatever the method)."""
    from fmx.schema import Grid

    n = sweep.run_cap
    for spec in sweep.parameters.values():
        if isinstance(spec, Grid):
            n *= len(spec.values)
    return n


def new_sweep_id(name: str) -> str:
    """``<name>-<UTC time>``, to the microsecond: two ``fmx sweep run`` of one file started in the same second
    must not share a Tune folder and a parent run."""
    from datetime import datetime, timezone

    return f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


def run_sweep(sweep: Sweep, *, sweep_text: str = "", address: str | None = None, resume_id: str | None = None,
              root: str | Path | None = None, builders: Mapping[str, str] | None = None,
              fault: Mapping[str, Any] | None = None, progress: bool = True,
              num_cpus: int | None = None) -> SweepOutcome:
    """Run (or with ``resume_id`` resume) a sweep; returns where results are and the best trial.

    Parameters
    ----------
    sweep : Sweep
        A validated sweep (:func:`fmx.schema.load_sweep`).
    sweep_text : str
        The sweep file's text, logged to the parent run.
    address : str, optional
        A Ray cluster address; a local Ray is started when omitted.
    resume_id : str, optional
        The sweep id to resume (``fmx sweep resume``): finished trials are kept, unfinished ones continue
        from their latest checkpoint.
    builders, fault
        Test hooks: ``module:function`` builders instead of the registry; a worker crash to inject.

    The caller's process is left as it was (a notebook keeps living): a Ray this call started or connected to
    is shut down when it returns or raises (one the caller had initialised stays up), and the signal handlers and
    environment variables that Tune and ``ray.init`` set are put back.
    """
    import dataclasses

    with CallerProcessKept(), SigtermAsInterrupt() as term:
        outcome = _run_sweep(sweep, sweep_text=sweep_text, address=address, resume_id=resume_id, root=root,
                             builders=builders, fault=fault, progress=progress, num_cpus=num_cpus, term=term)
    return dataclasses.replace(outcome, stopped_by="SIGTERM") if term.received else outcome


def _run_sweep(sweep: Sweep, *, sweep_text: str, address: str | None, resume_id: str | None,
               root: str | Path | None, builders: Mapping[str, str] | None, fault: Mapping[str, Any] | None,
               progress: bool, num_cpus: int | None, term: SigtermAsInterrupt) -> SweepOutcome:
    from ray import tune

    from fmx.compare import log_sweep_summary
    from fmx.progress import SweepProgress

    root = Path(root or os.getcwd())
    # before any run is recorded: Optuna would fail only at the first trial
    check_search_space(sweep, resumed=bool(resume_id))
    if fault is None and os.environ.get(FAULT_ENV):  # fault injection for end-to-end tests of the CLI
        fault = json.loads(os.environ[FAULT_ENV])
    sweep_id = resume_id or new_sweep_id(sweep.name)
    plan = make_plan(sweep, sweep_id=sweep_id, root=root, builders=builders, fault=fault)
    target = plan.target()
    # a store that refuses writes must stop the sweep before Ray starts and before a parent run is recorded
    st.check_writable(target, field="storage.path" if plan.storage_source == SOURCE_FILE else plan.storage_source)
    if resume_id:
        _check_resumable(sweep, plan, target, root)
    where = Targets(storage=target, storage_source=plan.storage_source, tracking_uri=plan.tracking_uri,
                    tracking_source=plan.tracking_source).describe()
    logger.info("sweep %s: %s", sweep_id, where)
    if progress:
        print(f"sweep {sweep_id}: {where}", flush=True)
    if plan.metric.startswith("acceptance/"):
        # the metric arrives with the trial's final report only; Tune must not require it every epoch
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Tune's newer console output prints an experiment banner even at verbose=0; fmx shows its own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # before any run or pointer is recorded: a refusal leaves none (a Ray this call started is shut down by
    # CallerProcessKept; the caller's own ray.init, too small for one trial, is refused, not waited on for ever)
    started = bool(init_ray(address, num_cpus=num_cpus))
    term.arm()  # at once: ray.init's own SIGTERM handlers abort the driver without cleanup
    check_session_fits(sweep.resources, started_here=started)
    c = tracking.client(plan.tracking_uri)
    experiment = sweep.tracking.experiment or f"fmx-{sweep.name}"
    plan.experiment_id = tracking.ensure_experiment(
        c, experiment, artifact_location=sweep.tracking.artifact_location
        or tracking.default_artifact_location(plan.tracking_uri, experiment))
    plan.parent_run_id, created = tracking.get_or_create_run(
        c, plan.experiment_id, run_name=sweep_id,
        tags={tracking.TAG_SWEEP_ID: sweep_id, tracking.TAG_KIND: "sweep"},
        extra_tags=st.redact({tracking.TAG_SWEEP: sweep.name, "fmx.git_commit": tracking.git_commit(),
                              "fmx.storage": plan.storage_uri, "fmx.storage_source": plan.storage_source,
                              "fmx.tracking_source": plan.tracking_source}))
    try:
        if created:
            tracking.log_params(c, plan.parent_run_id, {
                "sweep.method": sweep.method, "sweep.metric": sweep.metric.name, "sweep.goal": sweep.metric.goal,
                "sweep.run_cap": sweep.run_cap, "sweep.max_concurrent": sweep.max_concurrent,
                "sweep.early_terminate": sweep.early_terminate.type, "sweep.workers": sweep.resources.workers,
                "sweep.gpus_per_worker": sweep.resources.gpus_per_worker, "sweep.base": sweep.base,
                "sweep.storage": plan.storage_uri, "sweep.storage_source": plan.storage_source,
                "sweep.tracking_source": plan.tracking_source})
            if sweep_text:
                tracking.log_text(c, plan.parent_run_id, sweep_text, f"sweep/{sweep.name}.yaml")
        try:
            st.write_bytes(target, st.pointer_name(sweep.name), json.dumps({
                "sweep_id": sweep_id, "tracking_uri": plan.tracking_uri, "experiment_id": plan.experiment_id,
                "parent_run_id": plan.parent_run_id, "sweep": sweep.model_dump(mode="json"),
                "storage_uri": plan.storage_uri, "storage_source": plan.storage_source,
                "tracking_source": plan.tracking_source}, indent=2).encode())
        except OSError as exc:  # the store stopped taking writes since the check: no parent left RUNNING for ever
            tracking.end_run(c, plan.parent_run_id, "FAILED")
            raise ValueError(f"storage: cannot write the sweep pointer to {target.uri}: "
                             f"{st.redact(str(exc)).splitlines()[0]}") from None
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C before Tune started: the parent must not stay RUNNING for ever
        tracking.end_run(c, plan.parent_run_id, "KILLED")
        raise

    trainable = tune.with_resources(tune.with_parameters(trial_fn, plan=plan), {"CPU": TRIAL_CPU})
    reporter = SweepProgress(total=planned_trials(sweep), metric=plan.metric,
                             mode=plan.mode, enabled=progress)
    lifecycle = MlflowLifecycle(plan)
    run_config = tune.RunConfig(name=sweep_id, storage_path=plan.storage_path, storage_filesystem=target.filesystem,
                                callbacks=[lifecycle, reporter], verbose=0)
    # With a custom filesystem Tune wants the bucket-relative path (pyarrow refuses s3:// URIs): bucket/prefix/<id>
    exp_path = target.join(sweep_id)
    status = "FAILED"
    try:
        if resume_id and tune.Tuner.can_restore(exp_path, storage_filesystem=target.filesystem):
            tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=target.filesystem,
                                       param_space=search_space(sweep, root=root))
            # Tune restores the callbacks pickled with the first run: the progress shown by this one (and the
            # lifecycle whose pending run ends are retried below) would never be called
            internal = getattr(tuner, "_local_tuner", None)  # None through a Ray client (ray://): left as pickled
            if internal is not None:
                internal.get_run_config().callbacks = [lifecycle, reporter]  # no public way to pass them
        else:
            tuner = tune.Tuner(
                trainable, param_space=search_space(sweep, root=root),
                tune_config=tune.TuneConfig(metric=plan.metric, mode=plan.mode, search_alg=search_algorithm(sweep),
                                            # max_concurrent is enforced by the search algorithm itself (Tune
                                            # ignores max_concurrent_trials for a variant generator, with a warning)
                                            scheduler=scheduler(sweep, plan.max_epochs), num_samples=sweep.run_cap),
                run_config=run_config)
        with reporter:
            term.fitting = True
            try:
                grid = tuner.fit()
            except EOFError:  # the results are read back from an empty error.pkl: click said only "Aborted."
                raise ValueError(f"storage: a failed trial's error record under {target.join(sweep_id)} is empty, "
                                 "as a full disk leaves it; free space on the checkpoint store, then continue with "
                                 f"`fmx sweep resume {sweep.name} --storage {plan.storage_uri}` (failed trials run "
                                 "again)") from None
            finally:
                term.fitting = False
        status = "FINISHED"
    except KeyboardInterrupt:  # a second Ctrl-C (Tune's "press again to skip"): its trials' runs end KILLED too
        status = "KILLED"
        try:
            for run in tracking.child_runs(c, plan.experiment_id, plan.parent_run_id):
                if run.info.status == "RUNNING":
                    tracking.end_run(c, run.info.run_id, "KILLED")
        except Exception:  # noqa: BLE001 - the interrupt is what propagates; `fmx sweep resume` reopens them anyway
            pass
        raise
    finally:
        if status == "FAILED":  # Tune aborted (e.g. a metric the trials never report): no trial run left RUNNING
            try:
                for run in tracking.child_runs(c, plan.experiment_id, plan.parent_run_id):
                    if run.info.status == "RUNNING":
                        tracking.end_run(c, run.info.run_id, "FAILED")
            except Exception:  # noqa: BLE001 - Tune's error is what propagates; MLflow may be the problem
                pass
        if status != "FINISHED":
            tracking.end_run(c, plan.parent_run_id, status)
    lifecycle.finish_pending()  # the server is back (the summary below needs it too)
    n_errors = len(grid.errors)
    statuses = [t.status for t in grid._experiment_analysis.trials]  # noqa: SLF001 - no public accessor
    interrupted = any(st_ in ("PENDING", "RUNNING", "PAUSED") for st_ in statuses)
    # Tune's cleanup after Ctrl-C marks the trial that was training TERMINATED, so the statuses miss it; the
    # lifecycle ended every trial that completed or failed, so a child run still RUNNING is one the interrupt cut
    # short (the CLI alone used to see it: a library caller got interrupted=False and a parent run FINISHED)
    interrupted = interrupted or any(run.info.status == "RUNNING" for run in
                                     tracking.child_runs(c, plan.experiment_id, plan.parent_run_id))
    best = None
    try:
        best_result = grid.get_best_result(metric=plan.metric, mode=plan.mode, scope="all")
        if plan.metric not in (best_result.metrics or {}):
            raise KeyError(plan.metric)
        best = {"mode": plan.mode, "trial_id": best_result.metrics.get("trial_id"),
                "metrics": dict(best_result.metrics), "config": best_result.config, "path": best_result.path}
    except (RuntimeError, ValueError, KeyError):
        pass
    log_sweep_summary(c, plan.experiment_id, plan.parent_run_id, metric=plan.metric, mode=plan.mode)
    if interrupted:  # trials cut short stay resumable; their runs are marked KILLED until resumed
        for run in tracking.child_runs(c, plan.experiment_id, plan.parent_run_id):
            if run.info.status == "RUNNING":
                tracking.end_run(c, run.info.run_id, "KILLED")
    # Ctrl-C makes Tune save its state and return: the parent is KILLED until `fmx sweep resume` finishes it.
    tracking.end_run(c, plan.parent_run_id, "KILLED" if interrupted else "FINISHED" if n_errors == 0 else "FAILED")
    return SweepOutcome(sweep_id=sweep_id, parent_run_id=plan.parent_run_id, tracking_uri=plan.tracking_uri,
                        experiment_id=plan.experiment_id, storage_uri=plan.storage_uri, n_trials=len(grid),
                        n_errors=n_errors, best=best, interrupted=interrupted)


def _check_resumable(sweep: Sweep, plan: SweepPlan, target: st.StorageTarget, root: Path) -> None:
    """Refuse a ``resume_id`` of which nothing is found where this call looks: the relative default paths resolved
    against another folder (a notebook after ``os.chdir``, a restarted kernel) would otherwise start every trial
    again, in a new store, under the old sweep id. A sweep interrupted before Tune saved anything has its parent
    run only: it starts again under that run."""
    from ray import tune

    exp_path = target.join(plan.sweep_id)
    if tune.Tuner.can_restore(exp_path, storage_filesystem=target.filesystem):
        return
    c = tracking.client(plan.tracking_uri)
    experiment = c.get_experiment_by_name(sweep.tracking.experiment or f"fmx-{sweep.name}")
    if experiment is not None and tracking.find_run(c, experiment.experiment_id, {
            tracking.TAG_SWEEP_ID: plan.sweep_id, tracking.TAG_KIND: "sweep"}) is not None:
        return
    raise ValueError(st.redact(
        f"resume_id {plan.sweep_id!r}: nothing to resume: no Tune state under {exp_path} and no parent run in "
        f"{plan.tracking_uri}; resume with the storage.path and tracking.uri of the first run (relative paths "
        f"resolve against {root}; `fmx sweep resume {sweep.name}` reads them from the sweep's pointer)"))


def plan_dict(plan: SweepPlan) -> dict:
    return asdict(plan)
