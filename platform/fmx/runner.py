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
The trial itself lives in :mod:`fmx.trial`, the plan it runs by (:class:`SweepPlan`) in :mod:`fmx.sweep_plan`.

Where checkpoints and runs go is decided once, by :func:`resolve_targets`: a sweep file's own ``storage.path`` /
``tracking.uri`` wins; left at the defaults, ``FMX_STORAGE_PATH`` / ``MLFLOW_TRACKING_URI`` (set in cluster pods)
take their place; otherwise the local defaults (``runs/ray``, ``sqlite:///runs/mlflow.db`` under the project).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fmx import storage as st
from fmx import tracking
from fmx.schema import (DEFAULT_STORAGE_PATH, DEFAULT_TRACKING_URI, SOURCE_FILE, STORAGE_ENV, TRACKING_ENV,
                        Storage, Sweep, check_search_space, choose_target, mask_uri_password,
                        uri_has_password)
from fmx.lifecycle import MlflowLifecycle  # also the name pickled in older sweeps' Tune state
from fmx.lifecycle import CallerProcessKept, SigtermAsInterrupt
from fmx.ray_setup import check_session_fits, check_trial_fits, init_ray  # tests patch runner.init_ray
from fmx.ray_setup import TRIAL_CPU
from fmx.search import scheduler, search_algorithm, search_space
from fmx.trial_support import best_finite_checkpoint, last_logged_step, process_group_backend
from fmx.trial_support import masked_trial_error, report_poll_interval
# Split off into their own modules; importable from here as before: tests patch runner.make_plan, and older
# sweeps' Tune state holds the plan pickled as fmx.runner.SweepPlan.
from fmx.sweep_plan import SweepPlan, Targets, _longest_epochs, make_plan, plan_dict, resolve_targets
from fmx.trial import ACCEPTANCE_FILE, _run_trial, record_acceptance, trial_fn

__all__ = [
    "FAULT_ENV", "SweepOutcome", "planned_trials", "new_sweep_id", "run_sweep",
    # re-exported from fmx.sweep_plan and fmx.trial
    "SweepPlan", "Targets", "resolve_targets", "make_plan", "plan_dict", "_longest_epochs",
    "trial_fn", "_run_trial", "ACCEPTANCE_FILE", "record_acceptance",
    # re-exported from the modules the runner builds on
    "MlflowLifecycle", "init_ray", "check_session_fits", "check_trial_fits", "search_space", "search_algorithm",
    "scheduler", "best_finite_checkpoint", "last_logged_step", "process_group_backend", "masked_trial_error",
    "DEFAULT_STORAGE_PATH", "DEFAULT_TRACKING_URI", "SOURCE_FILE", "STORAGE_ENV", "TRACKING_ENV", "Storage",
    "choose_target", "mask_uri_password", "uri_has_password",
]

logger = logging.getLogger(__name__)

# Test hook: '{"epoch": 1, "marker": "/tmp/x"}' makes rank 0 of the first trial to reach epoch 1 die (os._exit)
# in the middle of it, as a lost worker would; the marker file makes it happen once.
FAULT_ENV = "FMX_TEST_FAULT"


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
    from fmx.schema import planned_grid_points

    return sweep.run_cap * planned_grid_points(sweep)


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
    report_poll_interval()  # a bad RAY_TRAIN_HEALTH_CHECK_INTERVAL_S fails here, not in every trial
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
