"""Shared pytest fixtures. Server fixtures (Ray, MLflow, S3) live in tests/fixtures_servers.py.
registered here so every test module can use them."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# One auth mode for every Ray this session starts or joins: the first in-process ray.init of a local Ray sets
# RAY_AUTH_MODE=token in os.environ, after which drivers (token) and the session head (no token) disagreed and
# trial actors were cancelled. test_cluster_submit starts its own token-auth head with an explicit env.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# A shell without job control starts a background job (`make test &`) with Ctrl-C ignored, and Python then keeps
# SIGINT ignored: the tests that send themselves (or their child processes) Ctrl-C would see nothing happen.
# Give the session Python's own Ctrl-C handler, as an interactive run has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["fixtures_servers", "pytester"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


# `make test` spreads the suite over pytest-xdist workers (`--dist loadgroup`). Everything that starts Ray or a
# server runs in one group, in one worker, one test after another, as in a plain serial run: on CI's 2 cores two
# Ray workloads side by side slow each other (a first try without the group ran the DDP review's module fixture in
# both workers at once: 88 s and 78 s, 60 s alone), and a module's own Ray head started once per worker. The many
# CPU-only tests fill the other worker meanwhile (measured: 1168 s of the suite's 1483 s of test time is this
# group). pytest stays below 9.2, whose node ids make pytest-xdist 3.8 drop the group silently (pyproject.toml).
SERIAL_GROUP = "ray_and_servers"
SERVER_FIXTURES = {"ray_cluster", "mlflow_server", "mlflow_server_s3", "seaweed_s3", "moto_s3"}
# Modules whose unmarked tests start a Ray of their own too (a head in a module fixture, init_ray, a signal while
# Ray starts): all their tests join the group, so a module fixture's Ray starts once, in that worker.
RAY_MODULES = {"test_cluster10_review", "test_cluster_submit", "test_ddp_review", "test_env_targets",
               "test_fingerprint_job", "test_group_sigterm_review", "test_interrupt_review",
               "test_job_ray_start_review", "test_library_use_review", "test_ray_session_review",
               "test_runner_faults_review", "test_scale2_review", "test_secrets_review",
               "test_today8_platform_review", "test_walkthrough_review"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (item.get_closest_marker("slow") or SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                or getattr(getattr(item, "module", None), "__name__", "") in RAY_MODULES):
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recordings in ../shared/data; tests that need them skip with a reason without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tests use small tensors, and Ray/MLflow/S3 server processes share CI's 2 cores: intra-op
    # threads cost far more than they save here (measured 4-25x slower with 2 threads under load).
    # Setting OMP_NUM_THREADS would come too late: torch is imported before any fixture runs.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def file_mlflow_run(tmp_path, monkeypatch):
    """A run in a fresh local MLflow store (no server), with no tracking outage left from another test:
    ``uri``, ``c`` (client), ``run_id``, ``tmp``."""
    from types import SimpleNamespace

    from fmx import tracking, worker_logging

    monkeypatch.setattr(worker_logging, "_DOWN_AT", {})  # per process: no test sees another's outage
    uri = tracking.resolve_tracking_uri("mlflow", root=tmp_path)
    c = tracking.client(uri)
    run_id, _ = tracking.get_or_create_run(c, tracking.ensure_experiment(c, "runs"), tags={tracking.TAG_SWEEP_ID: "s"},
                                           run_name="s")
    return SimpleNamespace(uri=uri, c=c, run_id=run_id, tmp=tmp_path)
