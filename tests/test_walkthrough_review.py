"""A new user's first hour, following README.md and docs/ literally: what they type and what they get back
(fast: no Ray; MLflow only as a sqlite file or a port nobody listens on)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fmx.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _smoke_with_base(tmp_path: Path, *extra: str) -> Path:
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["base"] = list(data["base"]) + list(extra)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _free_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------ base overrides of the wrong type
@pytest.mark.parametrize("override, key", [
    ("fractals.enable=no", "fractals.enable"),          # the string 'no' is truthy: priors silently ON
    ("trainer.max_epochs=two", "trainer.max_epochs"),  # validate said "valid", run failed later
    ("fractals.priors.lambda_spec=high", "fractals.priors.lambda_spec"),
])
def test_validate_refuses_a_base_override_of_the_wrong_type(tmp_path, override, key):
    from fmx.schema import SweepFileError, load_sweep

    with pytest.raises(SweepFileError) as err:
        load_sweep(_smoke_with_base(tmp_path, override))
    msg = str(err.value)
    assert "base[" in msg and key in msg and repr(override) in msg, msg
    assert "allowed:" in msg


def test_validate_keeps_base_overrides_hydra_and_lightning_accept(tmp_path):
    from fmx.config import get_path
    from fmx.schema import load_sweep

    extra = ("fractals.enable=false", "trainer.precision=16", "trainer.limit_train_batches=8",
             "fractals.priors.lambda_mf=1", "optim.lr=1e-3")
    path = _smoke_with_base(tmp_path, *extra)
    data = yaml.safe_load(path.read_text())  # smoke samples the priors, which fractals.enable=false switches off
    data["parameters"] = {"optim.lr": {"distribution": "log_uniform", "min": 1e-4, "max": 1e-2}}
    path.write_text(yaml.safe_dump(data))
    sweep = load_sweep(path)
    assert sweep.base[-len(extra):] == list(extra)
    from fmx.config import compose

    cfg = compose(sweep.base)
    assert get_path(cfg, "fractals.enable") is False and get_path(cfg, "trainer.precision") == 16


# ------------------------------------------------------------------------ an MLflow server that is not there
def test_compare_against_a_server_that_is_not_running_fails_in_seconds(monkeypatch):
    # MLflow's own retries (7, backoff 2) made the user wait ~4 minutes for this error
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # the old path: ~15 s, still fails the bound
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = _free_port()
    start = time.monotonic()
    res = runner.invoke(app, ["compare", "smoke", "--tracking-uri", f"http://127.0.0.1:{port}"])
    elapsed = time.monotonic() - start
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert f"--tracking-uri='http://127.0.0.1:{port}'" in out and "start the server" in out, out
    assert elapsed < 10, elapsed


def test_sweep_run_with_an_unreachable_tracking_uri_stops_before_ray_starts(tmp_path, monkeypatch):
    import fmx.runner

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started although the sweep's MLflow server is not there")

    monkeypatch.setattr(fmx.runner, "init_ray", no_ray)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("FMX_STORAGE_PATH", str(tmp_path / "ray"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    port = _free_port()
    data["tracking"] = {"uri": f"http://127.0.0.1:{port}"}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["sweep", "run", str(path)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert f"tracking.uri='http://127.0.0.1:{port}'" in out and "start the server" in out, out


def test_status_with_its_server_gone_names_the_pointer_and_the_fix(tmp_path, monkeypatch):
    import json

    from fmx.schema import load_sweep

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    port = _free_port()
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml", check_config=False)
    (tmp_path / "smoke.latest.json").write_text(json.dumps({
        "sweep_id": "smoke-1", "tracking_uri": f"http://127.0.0.1:{port}", "experiment_id": "1",
        "parent_run_id": "p", "sweep": sweep.model_dump(mode="json"), "storage_uri": str(tmp_path)}))
    start = time.monotonic()
    res = runner.invoke(app, ["sweep", "status", "smoke", "--storage", str(tmp_path)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "smoke.latest.json" in out and "start the server" in out, out
    assert time.monotonic() - start < 10


# ------------------------------------------------------------------------ fmx infer on what MLflow records
def test_infer_on_the_checkpoint_folder_mlflow_records_names_the_file_inside(tmp_path):
    # the trial's tag fmx.checkpoint is the Ray checkpoint folder; the .ckpt is model.ckpt inside it
    folder = tmp_path / "checkpoint_2026-11-30_00-17-33.537625"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(b"")
    res = runner.invoke(app, ["infer", str(folder), "--prompt", "hi"])
    out = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and "model.ckpt" in out, out


# ------------------------------------------------------------------------ fmx ui stopped with kill
@pytest.mark.slow
def test_ui_stopped_with_sigterm_takes_its_mlflow_server_down(tmp_path):
    # the server was orphaned (kept the port) when fmx ui got SIGTERM or a hang-up instead of Ctrl-C
    import signal
    import subprocess
    import sys
    import urllib.request

    port = _free_port()
    fmx = Path(sys.executable).with_name("fmx")
    children: list[int] = []
    proc = subprocess.Popen([str(fmx), "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the MLflow UI did not start"
                time.sleep(0.5)
        from fmx.commands.tracking import check_reachable

        check_reachable(f"http://127.0.0.1:{port}", "--tracking-uri")  # a live server passes the probe
        children += _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    break  # nobody listens any more
            assert time.monotonic() < deadline, f"the MLflow server still listens on {port} after fmx ui ended"
            time.sleep(0.5)
    finally:
        for pid in [proc.pid, *children, *_children(proc.pid)]:  # on failure: this test's processes, by id
            try:
                os.kill(pid, signal.SIGTERM)  # mlflow ui stops its uvicorn workers on TERM
            except OSError:
                pass
        proc.wait(timeout=10)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


# ------------------------------------------------------------------------ a metric the trials never report
def test_validate_refuses_a_wandb_style_metric_name(tmp_path):
    # `val_loss` (W&B habit) passed validation; the sweep then died after a whole epoch with a Tune traceback
    from fmx.schema import SweepFileError, load_sweep

    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["metric"]["name"] = "val_loss"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    msg = str(err.value)
    assert "metric.name" in msg and "'val_loss'" in msg and "val/loss" in msg, msg


_TUNE_METRIC_ERROR = '''Traceback (most recent call last):
  File "/x/ray/tune/execution/tune_controller.py", line 1686, in _validate_result_metrics
    raise ValueError(
ValueError: Trial returned a result which did not include the specified metric(s) `val/los` that \
`tune.TuneConfig()` expects. Make sure your calls to `tune.report()` include the metric, or set the \
TUNE_DISABLE_STRICT_METRIC_CHECKING environment variable to 1. Result: {'train/loss': 3.5, 'lr': 4.8e-05, \
'val/loss': 2.9, 'val/latent_beta': 3.7, 'epoch': 0.0, 'checkpoint_path': '/tmp/x', 'checkpoint_dir_name': None, \
'done': False, 'config/params/fractals.priors.lambda_spec': 0.02}
'''


def test_sweep_run_that_tune_aborts_is_one_line_and_no_trial_stays_running(tmp_path, monkeypatch):
    import json

    from ray.tune.error import TuneError

    import fmx.runner
    from fmx import tracking

    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["metric"]["name"] = "val/los"
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))

    def aborted_sweep(sweep, **kwargs):  # what run_sweep leaves behind when Tune aborts: parent FAILED
        c = tracking.client(uri)
        exp = tracking.ensure_experiment(c, "fmx-smoke")
        parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1",
                                                             tracking.TAG_KIND: "sweep"}, run_name="smoke-1")
        child, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_TRIAL: "t0",
                                                            tracking.TAG_PARENT: parent}, run_name="t0")
        (tmp_path / "ray").mkdir(exist_ok=True)
        (tmp_path / "ray" / "smoke.latest.json").write_text(json.dumps({
            "sweep_id": "smoke-1", "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
            "sweep": sweep.model_dump(mode="json"), "storage_uri": str(tmp_path / "ray")}))
        tracking.end_run(c, parent, "FAILED")
        raise TuneError(_TUNE_METRIC_ERROR)

    monkeypatch.setattr(fmx.runner, "run_sweep", aborted_sweep)
    monkeypatch.setenv("FMX_STORAGE_PATH", str(tmp_path / "ray"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = runner.invoke(app, ["sweep", "run", str(path)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "Traceback" not in out and "metric.name" in out and "'val/los'" in out, out
    assert "val/loss" in out and "val/latent_beta" in out and "config/params" not in out, out
    c = tracking.client(uri)
    statuses = {r.info.run_name: r.info.status for r in c.search_runs([c.get_experiment_by_name("fmx-smoke")
                                                                        .experiment_id])}
    assert statuses == {"smoke-1": "FAILED", "t0": "FAILED"}, statuses


# ------------------------------------------------------------------------ a sweep whose trials all failed
def test_run_summary_names_no_best_trial_when_every_trial_failed(tmp_path, capsys):
    from fmx import tracking
    from fmx.commands import sweep as sweep_cmd
    from fmx.runner import SweepOutcome

    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "fmx-smoke")
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_KIND: "sweep"},
                                           run_name="smoke-1")
    child, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_TRIAL: "t0",
                                                        tracking.TAG_PARENT: parent}, run_name="t0")
    tracking.end_run(c, child, "FAILED")
    outcome = SweepOutcome(sweep_id="smoke-1", parent_run_id=parent, tracking_uri=uri, experiment_id=exp,
                           storage_uri=str(tmp_path), n_trials=1, n_errors=1, best=None)
    sweep_cmd._print_outcome(outcome, "val/loss")
    out = capsys.readouterr().out
    assert "1 failed" in out and "FAILED" in out
    assert "best trial" not in out and "= None" not in out, out


# ------------------------------------------------------------------------ compare on a store that is not there
def test_compare_on_a_mistyped_local_store_creates_nothing(tmp_path, monkeypatch):
    # a typo in --tracking-uri (or `fmx compare` before any sweep) made a new folder and an empty mlflow.db
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for uri, made in ((f"sqlite:///{tmp_path / 'rnus' / 'mlflow.db'}", tmp_path / "rnus"),
                      ("rnus2", tmp_path / "rnus2"), (None, tmp_path / "runs")):
        args = ["compare", "smoke"] + (["--tracking-uri", uri] if uri else [])
        res = runner.invoke(app, args)
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and "no sweep 'smoke'" in out and "no MLflow store" in out, out
        assert not made.exists(), f"{made} was created"


# ------------------------------------------------------------------------ Ctrl-C while a trial trains
def test_ctrl_c_during_a_trial_is_reported_as_interrupted_with_the_resume_command(tmp_path, monkeypatch):
    # Measured with a real Ctrl-C on `fmx sweep run sweeps/smoke.yaml` during trial 2: Tune's cleanup marks the cut
    # trial TERMINATED, so the sweep said "2 trials, 0 failed", exited 0, ended the parent FINISHED and left the
    # trial's run RUNNING, without the resume hint.
    import fmx.runner
    from fmx import tracking
    from fmx.runner import SweepOutcome

    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")

    def cut_short(sweep, **kwargs):
        c = tracking.client(uri)
        exp = tracking.ensure_experiment(c, "fmx-smoke")
        parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1",
                                                             tracking.TAG_KIND: "sweep"}, run_name="smoke-1")
        for name, status in (("t0", "FINISHED"), ("t1", None)):
            run, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_TRIAL: name,
                                                              tracking.TAG_PARENT: parent}, run_name=name)
            tracking.log_metrics(c, run, {"val/loss": 1.0})
            if status:
                tracking.end_run(c, run, status)
        tracking.end_run(c, parent, "FINISHED")
        return SweepOutcome(sweep_id="smoke-1", parent_run_id=parent, tracking_uri=uri, experiment_id=exp,
                            storage_uri=str(tmp_path), n_trials=2, n_errors=0, best=None, interrupted=False)

    monkeypatch.setattr(fmx.runner, "run_sweep", cut_short)
    monkeypatch.setenv("FMX_STORAGE_PATH", str(tmp_path / "ray"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = runner.invoke(app, ["sweep", "run", str(REPO / "sweeps" / "smoke.yaml")])
    out = " ".join(res.output.split())
    assert res.exit_code == 130, (res.output, res.exception)
    assert "interrupted" in out and "fmx sweep resume smoke" in out, out
    c = tracking.client(uri)
    statuses = {r.info.run_name: r.info.status
                for r in c.search_runs([c.get_experiment_by_name("fmx-smoke").experiment_id])}
    assert statuses == {"smoke-1": "KILLED", "t0": "FINISHED", "t1": "KILLED"}, statuses


# ------------------------------------------------------------------------ seeds numpy, Optuna and Tune refuse
@pytest.mark.parametrize("where, seed", [("seed", -1), ("seed", 2**32), ("parameters.seed", -1)])
def test_validate_refuses_a_seed_outside_what_the_samplers_take(tmp_path, where, seed):
    # seed: -1 validated, then the sweep stopped in Tune's variant generator with "expected non-negative integer"
    # (no field named), or a trial's data generator failed on it
    from fmx.schema import SweepFileError, load_sweep

    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    if where == "seed":
        data["seed"] = seed
    else:
        data["parameters"]["seed"] = {"distribution": "categorical", "values": [0, seed]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    msg = str(err.value)
    assert where in msg and str(seed) in msg and "4294967295" in msg, msg


def test_compare_refuses_a_negative_row_count(tmp_path, monkeypatch):
    # --top -1 printed all trials but the last one (DataFrame.head(-1)), silently
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["compare", "smoke", "--top", "-1"])
    out = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and "--top" in out, out


def test_a_base_key_the_presets_leave_out_points_at_hydras_plus(tmp_path):
    # docs/attention.md: the presets leave `attention` out, so it is added with `+model.perceiver.attention=...`
    from fmx.schema import SweepFileError, load_sweep

    with pytest.raises(SweepFileError) as err:
        load_sweep(_smoke_with_base(tmp_path, "model.perceiver.attention=hilbert"))
    msg = str(err.value)
    assert "base[" in msg and "+model.perceiver.attention=hilbert" in msg, msg
    load_sweep(_smoke_with_base(tmp_path, "+model.perceiver.attention=hilbert"))  # the documented form validates
    with pytest.raises(SweepFileError) as err:  # a typo gets its sibling, not a `+` that would add an unread key
        load_sweep(_smoke_with_base(tmp_path, "fractals.priors.lamda_spec=0.1"))
    msg = str(err.value)
    assert "did you mean fractals.priors.lambda_spec?" in msg and "+fractals" not in msg, msg


def test_an_existing_store_with_sqlalchemy_options_is_not_reported_missing(tmp_path):
    from fmx.commands.tracking import _missing_local_store

    db = tmp_path / "dir with space" / "mlflow ü.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    assert _missing_local_store(f"sqlite:///{db}?timeout=30") is None
    assert _missing_local_store(str(db.parent / "other.db")) == db.parent / "other.db"
    assert _missing_local_store("http://127.0.0.1:5000") is None


# ------------------------------------------------------------------------ how many trials a sweep plans
def test_status_counts_the_trials_a_grid_inside_a_random_sweep_adds(tmp_path):
    # method random with a grid parameter runs run_cap passes over the grid: status said "4 of 2 trials started"
    import json

    from fmx import tracking
    from fmx.schema import parse_sweep

    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["parameters"]["fractals.priors.lambda_mf"] = {"distribution": "grid", "values": [0.0, 0.02]}
    sweep = parse_sweep(data)
    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "fmx-smoke")
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_KIND: "sweep"},
                                           run_name="smoke-1")
    for i in range(4):
        run, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_TRIAL: f"t{i}",
                                                          tracking.TAG_PARENT: parent}, run_name=f"t{i}")
        tracking.end_run(c, run)
    (tmp_path / "smoke.latest.json").write_text(json.dumps({
        "sweep_id": "smoke-1", "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
        "sweep": sweep.model_dump(mode="json"), "storage_uri": str(tmp_path)}))
    res = runner.invoke(app, ["sweep", "status", "smoke", "--storage", str(tmp_path)])
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "4 of 4 trials started" in out, out


# ------------------------------------------------------------------------ --address where no Ray listens
@pytest.mark.parametrize("form", ["{host}:{port}", "ray://{host}:{port}"])
def test_sweep_run_with_an_address_where_no_ray_listens_stops_at_once(tmp_path, monkeypatch, form):
    # Ray's driver retried the dead GCS address for ever (measured: still waiting after 10 min, a warning a minute)
    import fmx.runner

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init was reached with an address where nothing listens")

    monkeypatch.setattr(fmx.runner, "init_ray", no_ray)
    monkeypatch.setenv("FMX_STORAGE_PATH", str(tmp_path / "ray"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    address = form.format(host="127.0.0.1", port=_free_port())
    res = runner.invoke(app, ["sweep", "run", str(REPO / "sweeps" / "smoke.yaml"), "--address", address])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert f"--address {address}" in out and "no Ray cluster answers" in out, out


def test_progress_total_counts_grid_passes_for_every_method(tmp_path):
    from fmx.runner import planned_trials
    from fmx.schema import load_sweep

    for method, cap, want in (("random", 2, 6), ("grid", 1, 3)):
        f = tmp_path / f"{method}.yaml"
        f.write_text(f"name: g\nbase: [model=tiny, data=synthetic, fractals.priors.warmup_steps=4]\n"
                     f"method: {method}\nrun_cap: {cap}\n"
                     "metric: {name: val/loss, goal: minimize}\n"
                     "parameters:\n  fractals.priors.lambda_spec: {distribution: grid, values: [0.0, 0.1, 0.2]}\n")
        assert planned_trials(load_sweep(f)) == want
