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

pytest_plugins = ["fixtures_servers"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


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
