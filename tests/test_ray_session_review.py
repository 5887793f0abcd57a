"""The Ray session a sweep runs on: a caller's own ``ray.init`` too small for one trial, a signal while fmx starts
its local Ray, and the error files Ray writes for a failed trial (they must not keep secret values)."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

SECRET = "sEcReT-value-0123456789abcdef"
PASSWORD = "pAsSwOrD-9876543210"
FMX = str(Path(sys.executable).with_name("fmx"))
FAST_BASE = ["model=two_moons", "data=two_moons", "trainer.max_epochs=1", "fractals.enable=false",
             "data.n_train=128", "data.n_val=64"]


def _data(name: str, tmp_path: Path, **over) -> dict:
    d = {"name": name, "base": list(FAST_BASE), "method": "random",
         "metric": {"name": "val/loss", "goal": "minimize"},
         "parameters": {"model.lr": {"distribution": "uniform", "min": 0.01, "max": 0.05}},
         "run_cap": 1, "max_failures": 0, "resources": {"workers": 1, "cpus_per_worker": 1},
         "storage": {"path": str(tmp_path / "ray")}, "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    d.update(over)
    return d


# --------------------------------------------------------------------------------------------- fast
def test_a_trial_larger_than_the_callers_own_ray_names_the_keys_the_need_and_the_fix():
    from fmx.ray_setup import check_trial_fits
    from fmx.schema import Resources

    with pytest.raises(ValueError) as exc:
        check_trial_fits(Resources(workers=2, cpus_per_worker=1), {"CPU": 1.0}, ray_kind="caller")
    msg = str(exc.value)
    assert "CPU 2.01" in msg and "resources.workers=2" in msg and "resources.cpus_per_worker=1" in msg
    assert "the Ray your ray.init started has CPU 1" in msg, msg
    assert "ray.init(num_cpus=3)" in msg and "let fmx start Ray" in msg and "--num-cpus" not in msg


def _joined_cluster(monkeypatch, cpus: float, *, nodes: list[float], maximum: dict | None):
    """Stand in for a Ray cluster joined by address (not started by this process): its totals, nodes and the
    maximum its autoscaler publishes."""
    import ray

    from fmx import ray_setup

    class Joined:
        def is_head(self):
            return False

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray._private.worker, "_global_node", Joined())
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": cpus})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": c}} for c in nodes])
    monkeypatch.setattr(ray_setup, "_autoscaler_maximum", lambda: maximum)


def test_a_joined_cluster_too_small_now_warns_and_refuses_only_beyond_its_autoscalers_maximum(monkeypatch,
                                                                                              caplog):
    from fmx.ray_setup import check_session_fits
    from fmx.schema import Resources

    big = Resources(workers=4, cpus_per_worker=2)
    _joined_cluster(monkeypatch, 2.0, nodes=[2.0], maximum=None)  # an autoscaler may add nodes: wait for them
    with caplog.at_level(logging.WARNING, logger="fmx.runner"):
        check_session_fits(big, started_here=False)
    assert "CPU 8.01" in caplog.text and "autoscaler may add nodes" in caplog.text
    _joined_cluster(monkeypatch, 2.0, nodes=[2.0], maximum={"CPU": 64.0})
    check_session_fits(big, started_here=False)  # fits once the cluster has grown
    _joined_cluster(monkeypatch, 2.0, nodes=[2.0], maximum={"CPU": 6.0})
    with pytest.raises(ValueError, match=r"CPU 8.01 .* the Ray cluster at its autoscaler's maximum has CPU 6"):
        check_session_fits(big, started_here=False)
    caplog.clear()
    _joined_cluster(monkeypatch, 16.0, nodes=[1.0] * 16, maximum=None)  # enough CPUs, but no node holds a worker
    with caplog.at_level(logging.WARNING, logger="fmx.runner"):
        check_session_fits(big, started_here=False)
    assert "largest node of the Ray cluster has CPU 1" in caplog.text


def test_a_trial_exception_carrying_secrets_leaves_it_masked_with_the_workers_traceback(monkeypatch):
    # Was: Tune wrote the trial's exception as raised (error.txt, error.pkl in the trial's folder of the
    # checkpoint store, and its driver log): a worker error quoting AWS_SECRET_ACCESS_KEY kept the key there.
    from fmx import runner
    from fmx.trial_support import MaskedTrialError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)

    def failing(config, plan):
        try:
            raise OSError(f"s3 refused key {SECRET}")
        except OSError as inner:
            raise ValueError(f"builder refused: password {PASSWORD}\nsecond line") from inner

    monkeypatch.setattr("fmx.trial._run_trial", failing)  # trial_fn calls it there
    with pytest.raises(MaskedTrialError) as exc:
        runner.trial_fn({}, None)
    text = str(exc.value)
    assert SECRET not in text and PASSWORD not in text, text
    assert text.startswith("ValueError: builder refused: password *** (secret values masked)")
    assert "OSError: s3 refused key ***" in text and "second line" in text and "in failing" in text
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert SECRET not in str(pickle.loads(pickle.dumps(exc.value)))  # error.pkl on the driver

    plain = RuntimeError("nothing secret here")

    def failing_plainly(config, plan):
        raise plain

    monkeypatch.setattr("fmx.trial._run_trial", failing_plainly)  # trial_fn calls it there
    with pytest.raises(RuntimeError) as exc:
        runner.trial_fn({}, None)
    assert exc.value is plain  # kept as raised: its type and traceback


def test_a_signal_while_ray_starts_stops_what_it_had_started_by_pid(monkeypatch, tmp_path):
    # Was: SIGTERM while ray.init started the local Ray raised SystemExit(15) from Ray's own handler: the driver
    # exited 15 with no word and the raylet's agents kept running. The stand-in "Ray" here is a process that starts
    # a child of its own a moment later, as the raylet starts its agents.
    import psutil
    import ray

    from fmx import ray_setup

    kid_pid = tmp_path / "kid.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        time.sleep(0.5)
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "fake-ray-agent"])
        open({str(kid_pid)!r}, "w").write(str(kid.pid))
        time.sleep(60)
    """)
    spawned = []

    def init_interrupted_by_sigterm(**kwargs):
        spawned.append(subprocess.Popen([sys.executable, "-c", script, "fake-raylet"]))
        time.sleep(0.2)
        raise SystemExit(signal.SIGTERM)  # what ray.init's SIGTERM handler does

    monkeypatch.setattr(ray, "init", init_interrupted_by_sigterm)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM arrived while fmx was starting a local Ray: the 1 Ray "
                                                "process it had started is stopped; no MLflow run"):
        ray_setup.init_ray(None, num_cpus=1)
    (raylet,) = spawned
    assert raylet.wait(timeout=10) is not None
    if kid_pid.exists():  # a slow machine: it started its agent before it was frozen; that one is stopped too
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(int(kid_pid.read_text())).wait(timeout=10)

    def init_fails(**kwargs):
        raise ConnectionError("no Ray at that address")

    monkeypatch.setattr(ray, "init", init_fails)
    with pytest.raises(ConnectionError, match="no Ray at that address"):  # other errors pass through unchanged
        ray_setup.init_ray("127.0.0.1:1", num_cpus=None)


def test_a_process_of_this_session_that_escaped_the_driver_is_killed_and_another_sessions_is_not(monkeypatch,
                                                                                                  tmp_path):
    # Was (CI, 2a0ea43): the raylet, resumed to act on its SIGTERM, started its agents first; their raylet gone,
    # they were no longer the driver's descendants and kept running. Such a stray carries this driver's session
    # folder (session_<date>_<driver pid>) in its command line; one of another driver's session is left alone.
    import psutil
    import ray

    from fmx import ray_setup

    pids = tmp_path / "pids"
    pids.mkdir()

    def orphan(session: str, name: str) -> str:  # a grandchild whose parent exits at once: re-parented away
        return (f"import subprocess, sys; k = subprocess.Popen([sys.executable, '-c', 'import time; "
                f"time.sleep(60)', '--session-dir=/tmp/ray/{session}/logs'], start_new_session=True); "
                f"open({str(pids / name)!r}, 'w').write(str(k.pid))")

    ours, theirs = f"session_2026-11-30_11-00-00_1_{os.getpid()}", f"session_2026-11-30_11-00-00_1_{os.getpid()}1"

    def init_interrupted_by_sigterm(**kwargs):
        for session, name in ((ours, "ours"), (theirs, "theirs")):
            subprocess.run([sys.executable, "-c", orphan(session, name)], check=True)
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(ray, "init", init_interrupted_by_sigterm)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(KeyboardInterrupt, match="the 1 Ray process it had started is stopped"):
        ray_setup.init_ray(None, num_cpus=1)
    other = psutil.Process(int((pids / "theirs").read_text()))
    try:
        assert other.is_running() and other.status() != psutil.STATUS_ZOMBIE
        with contextlib.suppress(psutil.NoSuchProcess):  # gone already, or killed and not yet reaped by init
            assert psutil.Process(int((pids / "ours").read_text())).wait(timeout=5) is None
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            other.kill()


# --------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_callers_ray_init_too_small_is_refused_at_once_and_a_failed_trial_leaves_no_secret_in_rays_files(
        tmp_path, monkeypatch):
    # Was (1): after the caller's own ray.init(num_cpus=2), a sweep whose trial needs 2 workers + the trial's own
    # CPU waited for ever (only a Ray fmx started itself was checked). Was (2): Ray wrote the failed trial's
    # exception, secret values included, to error.txt and error.pkl in the trial's folder of the store.
    import ray

    from fmx import tracking
    from fmx.runner import run_sweep
    from fmx.schema import parse_sweep

    assert not ray.is_initialized()
    (tmp_path / "leaky_builder_mod.py").write_text(
        "import os\n"
        "def module(cfg):\n"
        "    raise ValueError('builder refused key=' + os.environ['AWS_SECRET_ACCESS_KEY'] + ' password='\n"
        "                     + os.environ['MLFLOW_TRACKING_PASSWORD'] + '\\nsecond line of detail')\n")
    for key in ("RAY_ADDRESS", "FMX_STORAGE_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the workers of the caller's Ray import the builder from here
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.monotonic()
        too_big = parse_sweep(_data("toobig", tmp_path, resources={"workers": 2, "cpus_per_worker": 1}))
        with pytest.raises(ValueError, match=r"CPU 2.01 \(resources.workers=2 x resources.cpus_per_worker=1 .* "
                                             r"the Ray your ray.init started has CPU 2.*ray.init\(num_cpus=3\)"):
            run_sweep(too_big, root=tmp_path, progress=False)
        assert time.monotonic() - start < 30 and ray.is_initialized()  # the caller's Ray stays up
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray" / "toobig.latest.json").exists()

        out = run_sweep(parse_sweep(_data("leaky", tmp_path)), root=tmp_path, progress=False,
                        builders={"module": "leaky_builder_mod:module"})
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert (out.n_trials, out.n_errors) == (1, 1)
    (trial_dir,) = [p.parent for p in (tmp_path / "ray" / out.sweep_id).glob("*/error.txt")]
    text = (trial_dir / "error.txt").read_text()
    assert "ValueError: builder refused key=*** password=***" in text and "leaky_builder_mod.py" in text, text
    written = b"".join(p.read_bytes() for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert SECRET.encode() not in written and PASSWORD.encode() not in written
    c = tracking.client(out.tracking_uri)
    (kid,) = tracking.child_runs(c, out.experiment_id, out.parent_run_id)
    assert c.get_run(kid.info.run_id).data.tags["fmx.error"].startswith("ValueError: builder refused key=***")


def _ray_processes_of(driver_pid: int, seen: set[int]) -> list:
    """Live processes seen under the driver, or run for its Ray session (session_..._<driver pid>)."""
    import psutil

    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if ("ray" in cmd and p.pid in seen or f"_{driver_pid}/" in cmd and "session_" in cmd) and \
                    p.status() != psutil.STATUS_ZOMBIE:
                left.append((p.pid, cmd[:200]))
        except psutil.Error:
            pass
    return left


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_sigterm_while_fmx_starts_its_local_ray_leaves_no_ray_process_and_says_so(tmp_path):
    import psutil

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_data("term", tmp_path)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "FMX_STORAGE_PATH", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen([FMX, "sweep", "run", str(tmp_path / "s.yaml"), "--num-cpus", "2"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    sent = False
    try:
        deadline = time.monotonic() + 150
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
                names = {k.name() for k in kids}
            except psutil.Error:
                continue
            seen |= {k.pid for k in kids}
            if "raylet" in names:  # ray.init is starting the node: its agents come next
                proc.send_signal(signal.SIGTERM)
                sent = True
                break
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent, out[-3000:]
    assert proc.returncode != 0 and "SIGTERM arrived while fmx was starting a local Ray" in out, out[-3000:]
    assert "it had started are stopped" in out or "it had started is stopped" in out and "run the sweep again" in out
    time.sleep(2)
    assert _ray_processes_of(proc.pid, seen) == []
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray" / "term.latest.json").exists()


def test_on_the_callers_own_ray_tune_still_gets_no_keys_in_its_trials_runtime_env(monkeypatch, caplog):
    # Was: init_ray returned at once when the caller had already called ray.init, before it stopped Tune copying
    # AWS_SECRET_ACCESS_KEY into every trial's runtime_env (shown in plain text by runtime_env_agent.log and the
    # dashboard): only a Ray fmx started or joined itself was protected.
    import ray
    from ray.tune.execution import class_cache

    from fmx.ray_setup import init_ray

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE)
                        | {"AWS_SECRET_ACCESS_KEY"})  # as a fresh process has it; restored after
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    assert init_ray(None, num_cpus=None) is False

    class Trainable:
        pass

    env_vars = class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    assert SECRET not in env_vars.values()
    # Was: an address (or num_cpus) given while the caller's Ray is up was dropped without a word: the trials ran
    # on the notebook's local Ray instead of the cluster named.
    with caplog.at_level(logging.WARNING, logger="fmx.runner"):
        assert init_ray("ray://cluster:10001", num_cpus=None) is False
    assert "address='ray://cluster:10001'" in caplog.text and "ray.shutdown() first" in caplog.text


def test_a_failed_trial_that_finishes_on_resume_loses_its_old_error(tmp_path):
    # Was: `fmx sweep resume` re-runs failed trials; one that then finished kept the fmx.error tag of its earlier
    # failure, so `fmx compare`'s table (trials_frame's error column) showed an error for a FINISHED trial.
    from ray.tune.experiment import Trial

    from fmx import tracking
    from fmx.compare import trials_frame
    from fmx.lifecycle import MlflowLifecycle
    from fmx.runner import make_plan
    from fmx.schema import parse_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "fmx-rerun")
    parent, _ = tracking.get_or_create_run(c, exp, run_name="p", tags={tracking.TAG_SWEEP_ID: "rerun-1",
                                                                        tracking.TAG_KIND: "sweep"})
    plan = make_plan(parse_sweep(_data("rerun", tmp_path)), sweep_id="rerun-1", root=tmp_path, experiment_id=exp)
    run_id, _ = tracking.get_or_create_run(c, exp, run_name="trial-t1", tags={
        tracking.TAG_SWEEP_ID: "rerun-1", tracking.TAG_TRIAL: "t1", tracking.TAG_PARENT: parent})
    c.set_tag(run_id, "fmx.error", "OSError: the first attempt lost its disk")
    tracking.end_run(c, run_id, "FAILED")
    tracking.get_or_create_run(c, exp, run_name="trial-t1", tags={  # the resumed trial reopens its run
        tracking.TAG_SWEEP_ID: "rerun-1", tracking.TAG_TRIAL: "t1", tracking.TAG_PARENT: parent})
    trial = Trial("__fake", stub=True, trial_id="t1")
    trial.run_metadata.last_result = {"fmx_complete": 1.0}
    MlflowLifecycle(plan).on_trial_complete(0, [trial], trial)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and "fmx.error" not in run.data.tags
    assert list(trials_frame(c, exp, parent)["error"]) == [""]


def test_sigterm_while_the_parent_run_is_being_recorded_ends_it_killed(tmp_path, monkeypatch):
    # Was: SIGTERM (raised as KeyboardInterrupt outside tuner.fit) after the sweep's parent run was created but
    # before Tune started (its params, the sweep file, the pointer: HTTP calls to a tracking server) left the
    # parent run RUNNING for ever.
    from fmx import runner, tracking
    from fmx.schema import parse_sweep

    def sigterm_now(*a, **k):
        raise KeyboardInterrupt  # what SigtermAsInterrupt raises

    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: False)
    monkeypatch.setattr(tracking, "log_text", sigterm_now)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(parse_sweep(_data("evicted", tmp_path)), sweep_text="name: evicted\n", root=tmp_path,
                         progress=False)
    c = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]
    assert [r.info.status for r in runs] == ["KILLED"]


def test_without_an_address_fmx_starts_its_own_ray_even_where_ray_start_ran(tmp_path, monkeypatch):
    # Was: where `ray start` had run (its address kept in <RAY_TMPDIR>/ray/ray_current_cluster), the local start
    # joined that cluster instead, and `fmx sweep run --num-cpus 2` failed with Ray's "When connecting to an
    # existing cluster, num_cpus and num_gpus must not be provided" (docs: "default: start a local Ray").
    import ray
    from ray._private import services

    from fmx.ray_setup import init_ray

    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert services.canonicalize_bootstrap_address(None, None) is not None  # plain ray.init() would join it
    joins = []
    monkeypatch.setattr(ray, "init", lambda **kw: joins.append(services.canonicalize_bootstrap_address(
        kw.get("address"), kw.get("_temp_dir"))))  # Ray's own decision: None = start a new local Ray
    assert init_ray(None, num_cpus=2) is True and joins == [None]


def test_after_a_sweep_tune_propagates_the_callers_aws_keys_again(tmp_path, monkeypatch):
    # Was: init_ray removed the AWS keys from Ray Tune's ENV_VARS_TO_PROPAGATE for the rest of the process: a
    # notebook's own Tune run after a sweep no longer passed its keys to its trials (their S3 access failed).
    from ray.tune.execution import class_cache

    from fmx import ray_setup, runner
    from fmx.schema import parse_sweep

    keys = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | keys)
    during = []

    def init_then_fail(*a, **k):
        ray_setup._keep_keys_out_of_tune_runtime_env()  # what init_ray does first
        during.append(set(class_cache.ENV_VARS_TO_PROPAGATE))
        raise RuntimeError("ray could not start")

    monkeypatch.setattr(runner, "init_ray", init_then_fail)
    with pytest.raises(RuntimeError, match="could not start"):
        runner.run_sweep(parse_sweep(_data("keys", tmp_path)), root=tmp_path, progress=False)
    assert not keys & during[0]  # kept out while the sweep runs
    assert keys <= set(class_cache.ENV_VARS_TO_PROPAGATE)
