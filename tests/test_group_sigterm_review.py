"""SIGTERM sent to the whole process group of ``fmx sweep run`` (``timeout 600 fmx ...``, a shell job or a pod
killed by group), and the exit status of every SIGTERM path of ``fmx sweep run`` (143; Ctrl-C 130)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FMX = str(Path(sys.executable).with_name("fmx"))


def _sweep_file(name: str, tmp_path: Path) -> Path:
    """One 4-epoch trial of the tiny model, sqlite tracking, checkpoints under ``tmp_path/ray``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(
        {"name": name, "method": "random", "run_cap": 1,
         "base": ["model=tiny", "data=synthetic", "trainer.max_epochs=4", "trainer.limit_train_batches=2",
                  "trainer.limit_val_batches=1", "fractals.priors.warmup_steps=2"],
         "metric": {"name": "val/loss", "goal": "minimize"},
         "parameters": {"fractals.priors.lambda_spec": {"distribution": "log_uniform", "min": 0.01, "max": 0.1}},
         "resources": {"workers": 1, "cpus_per_worker": 1},
         "storage": {"path": str(tmp_path / "ray")}, "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
    return path


def _statuses(c, name: str) -> dict:
    from fmx import tracking

    return {r.data.tags.get(tracking.TAG_KIND): r.info.status
            for r in c.search_runs([c.get_experiment_by_name(f"fmx-{name}").experiment_id])}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_timeout_killing_the_process_group_of_a_local_ray_sweep_ends_it_as_sigterm_to_the_driver_does(tmp_path):
    # Was: `timeout` (coreutils) forwards its SIGTERM to the whole process group, which held the GCS and the
    # raylet fmx had started: the driver hung about 60 s on "Failed to connect to GCS", printed no resume command,
    # and left the trial's run RUNNING. Now the local Ray runs in its own session: only the driver gets it.
    from fmx import tracking

    name, db = "grp", tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "FMX_STORAGE_PATH", "MLFLOW_TRACKING_URI")}
    log = tmp_path / "fmx.log"
    with open(log, "wb") as fh:  # `timeout` makes itself the group leader, as it does under a shell
        proc = subprocess.Popen(["timeout", "600", FMX, "sweep", "run", str(_sweep_file(name, tmp_path)),
                                 "--num-cpus", "2"], cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    ours: set[int] = set()
    try:
        c, trial = tracking.client(f"sqlite:///{db}"), []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and not trial:
            exp = c.get_experiment_by_name(f"fmx-{name}") if db.exists() else None
            trial = c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'") if exp else []
            time.sleep(0.5)
        assert trial and proc.poll() is None, log.read_text()[-3000:]
        ours = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # timeout forwards it to its child and to the whole group
        rc = proc.wait(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    print(f"exit {rc} {took:.1f} s after the group SIGTERM")
    assert rc == 143, text[-3000:]
    assert took < 30, (took, text[-3000:])
    assert "Failed to connect to GCS" not in text and "Traceback" not in text, text[-3000:]
    assert f"fmx sweep resume {name} --storage {tmp_path / 'ray'}" in text, text[-3000:]
    assert _statuses(c, name) == {"sweep": "KILLED", "trial": "KILLED"}
    assert list((tmp_path / "ray").glob(f"{name}-*/experiment_state-*.json"))
    deadline = time.monotonic() + 20  # the local Ray shares the driver's fate: nothing of it stays behind
    while time.monotonic() < deadline and [p for p in ours if psutil.pid_exists(p)
                                           and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]:
        time.sleep(0.5)
    left = [p for p in ours if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, [psutil.Process(p).cmdline()[:3] for p in left]


def _cli_run(tmp_path: Path, monkeypatch, name: str):
    """``fmx sweep run`` in this process (typer's runner) on a sweep file under ``tmp_path``."""
    from typer.testing import CliRunner

    from fmx.commands import sweep as sweep_cmd

    for key in ("RAY_ADDRESS", "FMX_STORAGE_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(sweep_cmd.app, ["run", str(_sweep_file(name, tmp_path))])


def _signal_self(sig: int):
    def stand_in(*args, **kwargs):
        os.kill(os.getpid(), sig)
        time.sleep(2)  # the handler runs here, in the main thread
        raise AssertionError(f"signal {sig} was not acted on")

    return stand_in


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_fmx_starts_its_local_ray_exits_143_for_sigterm_and_130_for_ctrl_c(sig, code, tmp_path,
                                                                                          monkeypatch):
    # Was: _ray_init turned every interrupt into a KeyboardInterrupt, which typer ends with 130, SIGTERM included
    # (a scheduler read it as a terminal's Ctrl-C).
    import ray

    monkeypatch.setattr(ray, "init", _signal_self(sig))  # the signal lands before ray.init set its own handler
    result = _cli_run(tmp_path, monkeypatch, "starting")
    assert result.exit_code == code, result.output
    assert not (tmp_path / "mlflow.db").exists()  # no run was recorded


def test_sigterm_as_ray_init_handles_it_exits_143(tmp_path, monkeypatch):
    import ray

    def init_interrupted_by_sigterm(**kwargs):
        raise SystemExit(signal.SIGTERM)  # what ray.init's own SIGTERM handler does

    monkeypatch.setattr(ray, "init", init_interrupted_by_sigterm)
    result = _cli_run(tmp_path, monkeypatch, "rayhandler")
    assert result.exit_code == 143, result.output


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_before_tune_starts_exits_143_or_130_and_ends_the_parent_run_killed(sig, code, tmp_path,
                                                                                    monkeypatch):
    # Was: exit 130 for SIGTERM too. The signal lands while the sweep pointer is written (Ray up, Tune not yet).
    from fmx import runner, storage, tracking

    monkeypatch.setattr(runner, "init_ray", lambda address, num_cpus=None: False)  # no Ray needed to get here
    write, signal_self = storage.write_bytes, _signal_self(sig)

    def write_pointer_interrupted(target, name, data, **kwargs):
        if name != storage.pointer_name("early"):  # the store's write check
            return write(target, name, data, **kwargs)
        signal_self()

    monkeypatch.setattr(storage, "write_bytes", write_pointer_interrupted)
    result = _cli_run(tmp_path, monkeypatch, "early")
    assert result.exit_code == code, result.output
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert _statuses(c, "early") == {"sweep": "KILLED"}
