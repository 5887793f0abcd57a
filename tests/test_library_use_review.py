"""`fmx` used as a library from a notebook or a script: the process keeps living after each call.

A call must leave the caller's process as it found it: signal handlers (a later Ctrl-C must still interrupt),
``os.environ``, the working directory, the matplotlib backend, Hydra's global state, and no Ray of its own
running. The first slow test runs a real sweep on a local Ray that ``run_sweep`` starts itself, tracked in a real
``mlflow server`` chosen with ``mlflow.set_tracking_uri``, from a relative results folder after ``os.chdir``, then
resumes the finished sweep on a Ray the user started with their own ``ray.init``; the second interrupts a sweep
with Ctrl-C from inside the process, as a notebook's "interrupt kernel" does.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

FAST_BASE = ["model=two_moons", "data=two_moons", "trainer.max_epochs=1", "fractals.enable=false",
             "data.n_train=128", "data.n_val=64"]


def _data(name: str, **over) -> dict:
    d = {"name": name, "base": list(FAST_BASE), "method": "random",
         "metric": {"name": "val/loss", "goal": "minimize"},
         "parameters": {"model.lr": {"distribution": "uniform", "min": 0.01, "max": 0.05}},
         "run_cap": 1, "resources": {"workers": 1, "cpus_per_worker": 1}}
    d.update(over)
    return d


def _handlers() -> dict:
    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    return {s: signal.getsignal(s) for s in sigs}


def _store(tmp_path: Path):
    """A sqlite store with a sweep parent run and two trial runs (values, metrics) under it."""
    from fmx import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "lib", artifact_location=(tmp_path / "art").as_uri())
    parent, _ = tracking.get_or_create_run(c, exp, run_name="p", tags={tracking.TAG_SWEEP_ID: "lib-1",
                                                                        tracking.TAG_KIND: "sweep"})
    for tid, beta, loss in (("t0", 0.8, 0.5), ("t1", 1.2, 0.7)):
        rid, _ = tracking.get_or_create_run(c, exp, run_name=tid, tags={
            tracking.TAG_SWEEP_ID: "lib-1", tracking.TAG_TRIAL: tid, tracking.TAG_PARENT: parent})
        tracking.log_params(c, rid, {"sweep.fractals.priors.spectral_beta_target": beta})
        tracking.log_metrics(c, rid, {"val/loss": loss, "val/latent_beta": beta + 0.1})
        tracking.end_run(c, rid, "FINISHED")
    return c, exp, parent


# --------------------------------------------------------------------------------------------- fast
def test_a_sweep_stopped_before_ray_starts_leaves_os_environ_as_it_was(tmp_path, monkeypatch):
    # Was: run_sweep set TUNE_DISABLE_STRICT_METRIC_CHECKING=1 (acceptance metrics) and RAY_AIR_NEW_OUTPUT=0 in
    # os.environ for good; a later sweep in the same notebook with a mistyped metric would then run every trial
    # (Tune's strict metric check off) and return no best instead of stopping at the first report.
    from fmx import runner
    from fmx.schema import parse_sweep

    def ray_fails(*a, **k):
        raise RuntimeError("ray could not start")

    monkeypatch.setattr(runner, "init_ray", ray_fails)
    before = dict(os.environ)
    sweep = parse_sweep(_data("envleak", metric={"name": "acceptance/numerics_pass", "goal": "maximize"},
                              acceptance=["numerics"], storage={"path": str(tmp_path / "ray")},
                              tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"}))
    with pytest.raises(RuntimeError, match="could not start"):
        runner.run_sweep(sweep, root=tmp_path, progress=False)
    assert dict(os.environ) == before


def test_the_sweep_summary_keeps_the_callers_matplotlib_backend_and_figures(tmp_path):
    # Was: log_sweep_summary (called at the end of every run_sweep) and fingerprint_figure switched the process
    # to Agg: a notebook's inline backend was replaced, so its later plots no longer showed.
    import matplotlib
    import matplotlib.pyplot as plt
    import pandas as pd

    from fmx import compare

    c, exp, parent = _store(tmp_path)
    original = matplotlib.get_backend()
    plt.switch_backend("svg")
    mine = plt.figure()
    try:
        df = compare.log_sweep_summary(c, exp, parent, metric="val/loss", mode="min")
        fig = compare.fingerprint_figure(pd.DataFrame({"epoch": [0, 1], "channel": [0, 0], "measure": ["dfa"] * 2,
                                                       "value": [0.5, 0.6]}))
        backend, open_figures = matplotlib.get_backend(), plt.get_fignums()
    finally:
        plt.close(mine)
        plt.switch_backend(original)
    assert backend == "svg" and mine.number in open_figures
    assert list(df["trial_id"]) == ["t0", "t1"] and fig.axes
    arts = {a.path for a in c.list_artifacts(parent, "comparison")}
    assert {"comparison/best_trials.png", "comparison/parallel_coordinates.png", "comparison/beta_star.png"} <= arts


def test_a_sweep_tune_aborts_raises_with_no_trial_run_left_running(tmp_path, monkeypatch):
    # Was: when Tune aborted the sweep (a metric the trials never report, `val/los`; checked on a real local Ray:
    # TuneError after about 40 s), run_sweep raised with the trial's MLflow run left RUNNING for ever; only the CLI
    # marked such runs FAILED. Tune is stood in for here by a Tuner whose trial opens its run and then aborts.
    from ray import tune
    from ray.tune.error import TuneError

    from fmx import runner, tracking
    from fmx.schema import parse_sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"

    class AbortingTuner:
        def __init__(self, *a, **k):
            pass

        def fit(self):
            c = tracking.client(uri)
            (parent,) = [r for e in c.search_experiments() for r in c.search_runs(
                [e.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'sweep'")]
            c.create_run(parent.info.experiment_id, tags={tracking.TAG_PARENT: parent.info.run_id,
                                                          tracking.TAG_KIND: "trial", tracking.TAG_TRIAL: "t0"})
            raise TuneError("Trial returned a result which did not include the specified metric(s) `val/los`")

    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: False)
    monkeypatch.setattr(tune, "Tuner", AbortingTuner)
    monkeypatch.setattr(tune, "with_parameters", lambda fn, **kw: fn)
    monkeypatch.setattr(tune, "with_resources", lambda fn, resources: fn)
    sweep = parse_sweep(_data("aborted", metric={"name": "val/los", "goal": "minimize"},
                              storage={"path": str(tmp_path / "ray")}, tracking={"uri": uri}))
    env, handlers = dict(os.environ), _handlers()
    with pytest.raises(TuneError):
        runner.run_sweep(sweep, root=tmp_path, progress=False)
    assert dict(os.environ) == env and _handlers() == handlers  # the notebook's next run starts from a clean slate
    c = tracking.client(uri)
    runs = {r.data.tags[tracking.TAG_KIND]: r.info.status for e in c.search_experiments()
            for r in c.search_runs([e.experiment_id])}
    assert runs == {"sweep": "FAILED", "trial": "FAILED"}


def test_validating_a_sweep_keeps_the_hydra_the_notebook_initialised(tmp_path):
    # Was: fmx.config.compose (every load_sweep, run_sweep and trial) cleared Hydra's global state, so a notebook
    # that had called hydra.initialize_config_dir(...) for its own configs got "GlobalHydra is not initialized"
    # from its next hydra.compose.
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmx.schema import load_sweep

    conf = tmp_path / "my conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("lr: 0.1\n")
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(conf), version_base=None)  # a notebook's one-off set-up, no `with`
    try:
        sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml")
        assert compose(config_name="mine", overrides=["lr=0.2"])["lr"] == 0.2
    finally:
        GlobalHydra.instance().clear()
    assert sweep.name == "smoke"


def test_resuming_from_another_folder_is_refused_instead_of_starting_the_sweep_over(tmp_path, monkeypatch):
    # Was: run_sweep(sweep, resume_id=...) where nothing of that sweep is found (the default, relative
    # runs/ray and runs/mlflow.db resolved against another folder: a restarted notebook kernel's cwd) silently
    # started every trial again, in a new store, under the old sweep id.
    from fmx import runner
    from fmx.schema import parse_sweep

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a sweep with nothing to resume")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    monkeypatch.delenv("FMX_STORAGE_PATH", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = tmp_path / "restarted kernel"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError, match=r"resume_id 'lib-20260101-000000-000000': nothing to resume.*"
                                         r"restarted kernel/runs/ray/lib-20260101-000000-000000"):
        runner.run_sweep(parse_sweep(_data("lib")), resume_id="lib-20260101-000000-000000", progress=False)


# --------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_notebook_runs_a_sweep_then_resumes_it_and_its_process_is_left_as_it_was(mlflow_server, tmp_path,
                                                                                   monkeypatch):
    # Was: after run_sweep returned, SIGINT (and SIGUSR1) still called Tune's stop handler of the finished sweep,
    # so Ctrl-C (a notebook's "interrupt kernel") no longer interrupted anything; the local Ray run_sweep had
    # started kept running (a second call ignored its num_cpus and the trial-size check, or went to the first
    # call's --address), and ray.init's variables (PYTHONBREAKPOINT -> Ray's debugger, RAY_AUTH_MODE=token) and
    # RAY_AIR_NEW_OUTPUT stayed in os.environ.
    import mlflow
    import psutil
    import ray

    from fmx import compare, tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("FMX_STORAGE_PATH", raising=False)
    monkeypatch.chdir(tmp_path)  # the default storage runs/ray is relative: it goes under the notebook's folder
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)  # sets MLFLOW_TRACKING_URI; monkeypatch restores it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    sweep = parse_sweep(_data("notebook"))
    handlers, env, kids = _handlers(), dict(os.environ), {p.pid for p in psutil.Process().children(recursive=True)}

    out = run_sweep(sweep, progress=False, num_cpus=2)

    assert (out.n_trials, out.n_errors, out.tracking_uri) == (1, 0, mlflow_server.tracking_uri)
    assert Path(out.storage_uri) == tmp_path / "runs" / "ray" and os.getcwd() == str(tmp_path)
    assert _handlers() == handlers
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C interrupts the notebook's next cell again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert not ray.is_initialized()
    left = [p.name() for p in psutil.Process().children(recursive=True) if p.pid not in kids and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
    assert dict(os.environ) == env

    # The user starts their own Ray and resumes the finished sweep: nothing re-runs, their Ray stays up.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        handlers, env = _handlers(), dict(os.environ)
        again = run_sweep(sweep, progress=False, resume_id=out.sweep_id)
        assert ray.is_initialized() and _handlers() == handlers and dict(os.environ) == env
    finally:
        ray.shutdown()
    assert (again.sweep_id, again.n_trials, again.n_errors) == (out.sweep_id, 1, 0)
    assert again.best["metrics"]["val/loss"] == out.best["metrics"]["val/loss"]
    c = tracking.client(again.tracking_uri)
    df = compare.ranked(compare.trials_frame(c, again.experiment_id, again.parent_run_id), "val/loss", "min")
    assert list(df["status"]) == ["FINISHED"] and df["val/loss"].iloc[0] == pytest.approx(
        out.best["metrics"]["val/loss"])
    assert c.get_run(again.parent_run_id).info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_during_a_library_sweep_returns_it_interrupted_with_its_runs_killed(tmp_path, monkeypatch):
    # Was: only the CLI noticed the trial Ctrl-C cut short (Tune marks it TERMINATED): run_sweep itself returned
    # interrupted=False, ended the parent run FINISHED and left the trial's run RUNNING for ever.
    import threading

    import ray

    from fmx import tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    base = [b for b in FAST_BASE if not b.startswith("trainer.max_epochs")] + ["trainer.max_epochs=300"]
    sweep = parse_sweep(_data("ctrlc", base=base, early_terminate={"type": "none"},
                              storage={"path": str(tmp_path / "ray")}, tracking={"uri": uri}))
    handlers = _handlers()
    sent = threading.Event()

    def interrupt_after_the_first_epoch():  # the user presses Ctrl-C (the notebook's "interrupt kernel")
        c = tracking.client(uri)
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and not sent.is_set():
            time.sleep(0.5)
            try:
                runs = [r for e in c.search_experiments() for r in c.search_runs(
                    [e.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'trial'")]
            except Exception:  # noqa: BLE001 - the store is being created
                continue
            if any("val/loss" in r.data.metrics for r in runs):
                sent.set()
                os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_the_first_epoch, daemon=True).start()
    out = run_sweep(sweep, progress=False, num_cpus=2)
    assert sent.is_set()
    assert out.interrupted and out.n_errors == 0
    c = tracking.client(uri)
    assert [r.info.status for r in tracking.child_runs(c, out.experiment_id, out.parent_run_id)] == ["KILLED"]
    assert c.get_run(out.parent_run_id).info.status == "KILLED"
    assert _handlers() == handlers and not ray.is_initialized()


def test_fingerprint_comparison_figures_keep_the_callers_matplotlib_backend(tmp_path):
    # Was: fmx.fingerprint.plots switched the process to Agg (matplotlib.use) on its first figure.
    import matplotlib
    import matplotlib.pyplot as plt
    import pandas as pd

    from fmx.fingerprint import plots

    original = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        stats = pd.DataFrame({"measure": ["higuchi_fd"] * 3, "channel": ["Fz", "Cz", "Pz"],
                              "cohens_d": [0.5, -0.2, 0.1], "q_fdr": [0.01, 0.5, 0.3]})
        fig = plots.plot_channel_effects(stats, "higuchi_fd")
        plots.save(fig, tmp_path / "effects.png")
        backend = matplotlib.get_backend()
    finally:
        plt.switch_backend(original)
    assert backend == "svg" and (tmp_path / "effects.png").stat().st_size > 0
