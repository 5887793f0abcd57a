"""The sweep runner under faults a long sweep meets: a store that refuses writes, two runs of one sweep started
together, a tracking server that goes away. Real S3 servers (moto, SeaweedFS) where the fault lives in them."""
from __future__ import annotations

import pytest


def _sweep(name: str, **over):
    from fmx.schema import parse_sweep

    data = {"name": name, "base": ["model=tiny", "data=synthetic", "trainer.max_epochs=1",
                                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"],
            "method": "random", "metric": {"name": "val/loss", "goal": "minimize"},
            "parameters": {"optim.lr": {"distribution": "log_uniform", "min": 1e-4, "max": 1e-2}},
            "run_cap": 1, "resources": {"workers": 1, "cpus_per_worker": 1}}
    data.update(over)
    return parse_sweep(data)


def _no_ray(monkeypatch):
    """Fail loudly if the runner gets as far as starting Ray (the refusal must come before)."""
    from fmx import runner

    def init_ray(*a, **k):
        raise AssertionError("Ray was started for a sweep whose storage refuses writes")

    monkeypatch.setattr(runner, "init_ray", init_ray)


def _runs(tmp_path, db: str) -> list:
    from fmx import tracking

    c = tracking.client(f"sqlite:///{tmp_path / db}")
    return [(r.info.run_name, r.info.status) for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_s3_store_without_the_bucket_stops_the_sweep_before_any_run_is_recorded(moto_s3, tmp_path, monkeypatch):
    # Was: the parent MLflow run was created first, then the pointer write raised a raw pyarrow OSError,
    # leaving the parent RUNNING for ever and the CLI printing a traceback.
    from fmx.runner import run_sweep

    for k, v in moto_s3.env().items():
        monkeypatch.setenv(k, v)
    _no_ray(monkeypatch)
    sweep = _sweep("nobucket", storage={"path": "s3://no-such-bucket-fmx/ray", "endpoint_url": moto_s3.endpoint_url},
                   tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    with pytest.raises(ValueError, match=r"^storage.path: cannot write to s3://no-such-bucket-fmx/ray: .*bucket.*"
                                         r"create the bucket"):
        run_sweep(sweep, root=tmp_path, progress=False)
    assert _runs(tmp_path, "mlflow.db") == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_s3_store_refusing_the_keys_stops_the_sweep_and_never_shows_the_secret(seaweed_s3, tmp_path, monkeypatch):
    from fmx.runner import run_sweep

    for k, v in seaweed_s3.env().items():
        monkeypatch.setenv(k, v)
    bucket = seaweed_s3.make_bucket()
    wrong = "wrong-secret-" + "x" * 20
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    _no_ray(monkeypatch)
    sweep = _sweep("badkey", storage={"path": f"s3://{bucket}/ray", "endpoint_url": seaweed_s3.endpoint_url},
                   tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    with pytest.raises(ValueError) as exc:
        run_sweep(sweep, root=tmp_path, progress=False)
    msg = str(exc.value)
    assert msg.startswith(f"storage.path: cannot write to s3://{bucket}/ray") and "AWS_SECRET_ACCESS_KEY" in msg, msg
    assert wrong not in msg
    assert _runs(tmp_path, "mlflow.db") == []
    assert "Contents" not in seaweed_s3.client().list_objects_v2(Bucket=bucket)  # the good keys see nothing left


def test_unwritable_storage_from_the_environment_is_named_by_its_variable(tmp_path, monkeypatch):
    from fmx import storage as st
    from fmx.runner import run_sweep

    # root ignores file modes, so a plain file where the folder should be stands for a read-only store
    blocker = tmp_path / "ckpt"
    blocker.mkdir()
    target = st.StorageTarget(uri=str(blocker), storage_path=str(blocker / "file-not-folder" / "x"))
    (blocker / "file-not-folder").write_text("")
    with pytest.raises(ValueError, match=r"^storage.path: cannot write to .*ckpt: .*make the folder writable"):
        st.check_writable(target)
    st.check_writable(st.StorageTarget(uri=str(blocker), storage_path=str(blocker)))  # writable: no error
    assert sorted(p.name for p in blocker.iterdir()) == ["file-not-folder"]         # the probe is removed

    # Was: the folder's mkdir raised a raw NotADirectoryError traceback before any check
    monkeypatch.setenv("FMX_STORAGE_PATH", str(blocker / "file-not-folder" / "ray"))
    _no_ray(monkeypatch)
    with pytest.raises(ValueError, match=r"^FMX_STORAGE_PATH: cannot create the folder .*file-not-folder/ray "
                                         r"\(Not a directory\); choose a writable folder"):
        run_sweep(_sweep("envstore", tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}), root=tmp_path,
                  progress=False)
    with pytest.raises(ValueError, match=r"^storage.path: cannot create the folder"):
        st.resolve_storage("file-not-folder/ray", root=blocker)


def test_two_runs_of_one_sweep_started_in_the_same_second_get_their_own_ids():
    # Was: <name>-<UTC time to the second>: two `fmx sweep run` of one file started together shared the Tune
    # folder and (found by the fmx.sweep_id tag) one MLflow parent run.
    import re

    from fmx.runner import new_sweep_id

    ids = {new_sweep_id("smoke") for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"smoke-\d{8}-\d{6}-\d{6}", i) for i in ids), ids


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_asha_stops_a_trial_whose_metric_is_not_finite(bad):
    # Was: Tune's ASHA compares `metric < cutoff`, False for NaN, so a diverged trial ran to max_t; a NaN
    # recorded first also left the rung's cutoff NaN, so the next bad-but-finite trial went on too.
    import pickle

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from fmx.search import scheduler

    sched = scheduler(_sweep("asha", early_terminate={"type": "asha", "grace_period": 1, "reduction_factor": 2}),
                      max_epochs=8)
    assert isinstance(sched, ASHAScheduler)
    sched.set_search_properties("val/loss", "min")
    diverged, good, worse = (Trial("__fake", stub=True, trial_id=i) for i in ("diverged", "good", "worse"))
    for t in (diverged, good, worse):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, diverged, {"training_iteration": 1, "val/loss": bad}) == TrialScheduler.STOP
    sched.on_trial_complete(None, diverged, {"training_iteration": 1, "val/loss": bad})
    assert sched.on_trial_result(None, good, {"training_iteration": 1, "val/loss": 2.0}) == TrialScheduler.CONTINUE
    # the rung's cutoff is still a number: a worse trial is cut as without the diverged one
    assert sched.on_trial_result(None, worse, {"training_iteration": 1, "val/loss": 3.0}) == TrialScheduler.STOP
    assert pickle.loads(pickle.dumps(sched))._metric == "val/loss"  # Tune saves it with the experiment state


def test_acceptance_on_an_unreadable_checkpoint_records_the_reason_instead_of_failing_the_trial(tmp_path):
    # Was: an empty model.ckpt (EOFError) or a checkpoint without one (FileNotFoundError) escaped run_acceptance,
    # so a trial that had finished training failed in its acceptance step.
    from ray.train import Checkpoint

    from fmx.acceptance import run_acceptance
    from fmx.config import compose

    cfg = compose(["model=tiny", "data=synthetic"])
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    empty.mkdir()
    missing.mkdir()
    (empty / "model.ckpt").write_bytes(b"")
    for folder, error in ((empty, "EOFError"), (missing, "FileNotFoundError")):
        report = run_acceptance(["ablation", "training"], cfg=cfg, checkpoint=Checkpoint.from_directory(str(folder)),
                                metrics={"val/latent_beta": 1.1})
        assert report.results["ablation"]["reason"].startswith(error), report.results
        assert report.results["training"]["pass"] is True
        assert "acceptance/ablation_pass" not in report.metrics()


def test_a_finished_trial_is_not_failed_because_mlflow_was_away_when_it_ended(tmp_path, monkeypatch):
    # Was: MlflowLifecycle.on_trial_complete raised when the tracking server did not answer, and Tune turned
    # that into a trial ERROR: a trial that had finished training counted as failed and resume re-ran it.
    from ray.tune.experiment import Trial

    from fmx import tracking
    from fixtures_servers import free_port

    from fmx.runner import MlflowLifecycle, make_plan

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(store)
    exp = tracking.ensure_experiment(c, "fmx-away")
    plan = make_plan(_sweep("away", tracking={"uri": f"http://127.0.0.1:{free_port()}"},
                            storage={"path": str(tmp_path / "ray")}), sweep_id="away-1", root=tmp_path,
                     experiment_id=exp)
    run_id, _ = tracking.get_or_create_run(c, exp, run_name="trial-t1",
                                           tags={tracking.TAG_SWEEP_ID: "away-1", tracking.TAG_TRIAL: "t1"})
    trial = Trial("__fake", stub=True, trial_id="t1")
    trial.run_metadata.last_result = {"fmx_complete": 1.0}
    lifecycle = MlflowLifecycle(plan)
    lifecycle.on_trial_complete(0, [trial], trial)  # the server is away: no exception reaches Tune
    assert list(lifecycle.pending) == ["t1"] and c.get_run(run_id).info.status == "RUNNING"
    lifecycle.plan.tracking_uri = store  # the server is back when the sweep ends
    lifecycle.finish_pending()
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and "fmx.stopped_early" not in run.data.tags and not lifecycle.pending


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_reruns_a_failed_trial_with_progress_and_ends_its_run(ray_cluster, tmp_path, capsys):
    # Was: Tuner.restore brings back the callbacks pickled with the first run, so on `fmx sweep resume` the
    # progress that run_sweep shows (its own SweepProgress) never heard of a trial: nothing was printed.
    import ray

    from fmx import tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    data = {"name": "rerun", "base": ["model=two_moons", "data=two_moons", "trainer.max_epochs=2",
                                      "fractals.enable=false"],
            "method": "random", "metric": {"name": "val/acc", "goal": "maximize"},
            "parameters": {"model.lr": {"distribution": "uniform", "min": 0.01, "max": 0.05}},
            "run_cap": 1, "max_failures": 0, "resources": {"workers": 1, "cpus_per_worker": 1},
            "storage": {"path": str(tmp_path / "ray")}, "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    sweep = parse_sweep(data)
    fault = {"epoch": 1, "marker": str(tmp_path / "killed")}  # the worker dies once, with no restart allowed
    try:
        first = run_sweep(sweep, address=ray_cluster.address, root=tmp_path, fault=fault, progress=True)
        assert (first.n_trials, first.n_errors) == (1, 1) and (tmp_path / "killed").exists()
        assert "FAILED" in capsys.readouterr().out
        again = run_sweep(sweep, address=ray_cluster.address, root=tmp_path, fault=fault, progress=True,
                          resume_id=first.sweep_id)
    finally:
        ray.shutdown()
    assert (again.n_trials, again.n_errors, again.sweep_id) == (1, 0, first.sweep_id)
    assert "finished: val/acc=" in capsys.readouterr().out
    c = tracking.client(again.tracking_uri)
    (kid,) = tracking.child_runs(c, again.experiment_id, again.parent_run_id)
    assert kid.info.status == "FINISHED" and c.get_run(again.parent_run_id).info.status == "FINISHED"


def test_acceptance_runs_on_the_best_finite_checkpoint_of_a_trial_that_diverged(tmp_path):
    # Was: Result.get_best_checkpoint keeps Ray's worst-first order and Python's min/max, for which NaN compares
    # False: with kept checkpoints [NaN (latest, diverged), 1.5] the NaN one was returned as the best.
    from ray.air.result import Result
    from ray.train import Checkpoint

    from fmx.runner import best_finite_checkpoint

    good, diverged, inf = (Checkpoint(str(tmp_path / n)) for n in ("good", "diverged", "inf"))
    nan = float("nan")
    kept = [(diverged, {"val/loss": nan}), (inf, {"val/loss": float("inf")}), (good, {"val/loss": 1.5})]
    result = Result(metrics={}, checkpoint=diverged, error=None, path=str(tmp_path), best_checkpoints=kept)
    assert best_finite_checkpoint(result, "val/loss", "min").path == good.path
    kept_max = [(diverged, {"val/acc": nan}), (good, {"val/acc": 0.9}), (inf, {"val/acc": 0.5})]
    result = Result(metrics={}, checkpoint=diverged, error=None, path=str(tmp_path), best_checkpoints=kept_max)
    assert best_finite_checkpoint(result, "val/acc", "max").path == good.path
    all_nan = Result(metrics={}, checkpoint=diverged, error=None, path=str(tmp_path),
                     best_checkpoints=[(diverged, {"val/loss": nan})])
    assert best_finite_checkpoint(all_nan, "val/loss", "min") is None  # the trial falls back to its latest
