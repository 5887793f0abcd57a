"""Review of the platform changes of 2026-11-30 (helper 81): regressions a user would hit."""
from __future__ import annotations

import pytest

from fmx.schema import parse_sweep

GRID_WITH_CATEGORICAL = {
    "name": "old_grid", "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
    "base": ["model=tiny", "data=synthetic"],
    "parameters": {"fractals.priors.lambda_spec": {"distribution": "grid", "values": [0.0, 0.05]},
                   "seed": {"distribution": "categorical", "values": [0, 1]}},
}


class _PlanReached(Exception):
    """Raised by the patched make_plan: the sweep got past its search-space checks."""


def test_resume_of_a_recorded_grid_sweep_with_a_categorical_is_not_refused(monkeypatch):
    # check_search_space refuses a categorical under method grid since today, and says a sweep recorded by an
    # older version still reads back for resume: `fmx sweep resume` of such a sweep must not be refused
    from fmx import runner

    def reached(*args, **kwargs):
        raise _PlanReached

    monkeypatch.setattr(runner, "make_plan", reached)
    sweep = parse_sweep(GRID_WITH_CATEGORICAL)
    with pytest.raises(_PlanReached):
        runner.run_sweep(sweep, resume_id="old_grid-20261129-120000-000000", progress=False)
    # a new run of it is still refused, naming the parameter
    with pytest.raises(ValueError, match="parameters.seed"):
        runner.run_sweep(sweep, progress=False)


def test_acceptance_metrics_keep_numpy_and_torch_scalars():
    """np.float32 is no Python float: a benchmark result held as one was dropped from the logged metrics."""
    import numpy as np
    import torch

    from fmx.acceptance import AcceptanceReport

    report = AcceptanceReport(results={"speed": {"ms": np.float32(1.5), "n": np.int64(3), "ok": np.bool_(True),
                                                 "t": torch.tensor(2.0), "note": "text"}})
    assert report.metrics() == {"acceptance/speed_ms": 1.5, "acceptance/speed_n": 3.0, "acceptance/speed_ok": 1.0,
                                "acceptance/speed_t": 2.0}


def test_check_server_reads_an_upper_case_scheme():
    import socket

    from fmx.tracking import TrackingServerUnreachable, check_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackingServerUnreachable):
        check_server(f"HTTP://127.0.0.1:{port}", tries=1, timeout_s=1.0)


def test_address_local_starts_a_local_ray_with_its_cpus_even_inside_a_job(monkeypatch):
    """`--address local` (Ray's own word for "start one here") took the connect path: --num-cpus was dropped, and
    the Ray shared the driver's process group."""
    import ray

    from fmx.ray_setup import init_ray

    calls = []
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # a job's cluster: "local" still means a new Ray here
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    assert init_ray("local", num_cpus=2) is True
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2


def test_address_local_inside_a_ray_job_still_refuses_a_missing_data_folder(tmp_path, monkeypatch):
    """`--address local` starts a Ray here even with RAY_ADDRESS set, so a data folder missing here fails every
    trial: the local-data check skipped it whenever RAY_ADDRESS was set."""
    from typer.testing import CliRunner

    from fmx.commands.sweep import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    path = tmp_path / "u.yaml"
    path.write_text("name: user\nbase: [model=tiny, data=files, data.root=../no-such-recordings, "
                    "trainer.max_epochs=1]\nmetric: {name: val/loss, goal: minimize}\nmethod: random\n"
                    "parameters:\n  data.window: {distribution: categorical, values: [256, 512]}\n")
    result = CliRunner().invoke(app, ["run", str(path), "--address", "local"], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "data.root" in result.output and "does not exist" in result.output
