"""Shared pytest fixtures. Server fixtures (Ray, MLflow, S3) live in tests/fixtures_servers.py.
registered here so every test module can use them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["fixtures_servers"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recordings in ../shared/data; tests that need them skip with a reason without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # CI has 2 cores; oversubscribed BLAS threads make CPU tests slow and noisy.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
