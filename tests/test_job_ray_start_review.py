"""A fingerprint job interrupted while it starts its local Ray (``fmx.ray_setup.init_ray``, shared with sweeps)."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


@pytest.fixture()
def cohort(tmp_path):
    """One tiny RR-interval cohort (.npz): the job reaches Ray at once."""
    rng = np.random.default_rng(0)
    path = tmp_path / "rr.npz"
    np.savez(path, **{"sub-01_rest": 0.8 + 0.05 * rng.standard_normal(600)})
    return path


@pytest.mark.parametrize("interrupt", ["ray_handler", "job_handler"])
def test_sigterm_while_the_job_starts_ray_stops_its_processes_and_exits_143(cohort, tmp_path, monkeypatch, caplog,
                                                                           capsys, interrupt):
    # Was: the job called ray.init itself, without the sweep's guard: a SIGTERM there (Ray's handler: sys.exit(15))
    # ended it with status 15 and no word, the raylet's agents left running; before Ray's handler was in place
    # the job's own JobTerminated unwound ray.init just as silently about those processes.
    import psutil
    import ray

    from fmx.fingerprint.interrupt import JobTerminated
    from fmx.fingerprint.job import run_fingerprint_job

    spawned = []

    def init_interrupted(**kwargs):
        spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "fake-raylet"]))
        time.sleep(0.2)
        if interrupt == "ray_handler":
            raise SystemExit(signal.SIGTERM)
        raise JobTerminated(signal.SIGTERM)

    monkeypatch.setattr(ray, "init", init_interrupted)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with caplog.at_level(logging.WARNING, logger="fmx.runner"), pytest.raises(SystemExit) as stop:
        run_fingerprint_job(str(cohort), str(tmp_path / "out"), executor="ray", num_cpus=1, log_mlflow=False,
                            progress=True)
    assert stop.value.code == 143
    (raylet,) = spawned
    assert raylet.wait(timeout=10) is not None
    assert not psutil.pid_exists(raylet.pid) or psutil.Process(raylet.pid).status() == psutil.STATUS_ZOMBIE
    assert ("SIGTERM arrived while fmx was starting a local Ray: the 1 Ray process it had started is stopped; "
            "no recording was fitted on it; run the job again") in caplog.text
    assert "interrupted (SIGTERM): 0 of 1 recordings are saved" in capsys.readouterr().err
