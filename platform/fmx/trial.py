"""One trial of a sweep, run as a Tune function: its MLflow child run, a TorchTrainer fit, acceptance, final report."""
from __future__ import annotations

import json
from typing import Any, Mapping

from fmx import storage as st
from fmx import tracking
from fmx.sweep_plan import SweepPlan
from fmx.trial_support import (best_finite_checkpoint, last_logged_step, masked_trial_error, process_group_backend,
                               set_report_poll_interval)


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
    set_report_poll_interval()  # the controller TorchTrainer.fit starts reads it: no epoch waits on a 2 s poll
    trainer = TorchTrainer(
        _worker_loop, torch_config=TorchConfig(backend=backend) if backend else None,
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
            # Outside the Train workers the sweep's own S3 endpoint is not at hand: fetch an s3:// init_from with it
            # here (the trial's node has it cached already, from its workers, unless they ran elsewhere).
            from fmx.init_from import localize_init_from

            cfg = localize_init_from(cfg, endpoint_url=plan.endpoint_url, region=plan.region)
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


def _worker_loop(config: Mapping[str, Any]) -> None:
    """:func:`fmx.train_worker.train_loop`, imported in the Train worker that runs it.

    Naming ``train_loop`` directly would import Lightning into the trial's own process as well, which only
    waits on the TorchTrainer: about 4 s of CPU on the critical path of every trial (measured on 2 cores).
    """
    from fmx.train_worker import train_loop

    train_loop(config)


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
