"""Run a test module as real gloo DDP ranks: one subprocess per rank on 127.0.0.1, as ``torchrun`` would start them.

Lightning's DDP strategy reads MASTER_ADDR/PORT, WORLD_SIZE, NODE_RANK, LOCAL_RANK and RANK from the environment,
so each subprocess joins the same process group without a launcher.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pytest

from fixtures_servers import free_port

REPO = Path(__file__).resolve().parents[1]


def run_ranks(script: str | Path, args: Sequence[str], *, timeout_s: float, hang: str, world: int = 2,
              rank_env: Callable[[int], Mapping[str, str]] | None = None) -> list[str]:
    """Run ``python script *args`` as ranks 0..world-1 and return their output, in rank order.

    Fails the test with ``hang`` when a rank outlives ``timeout_s`` (the usual sign of mismatched collectives), and
    with the ranks' last output when one exits non-zero. ``rank_env(rank)`` adds variables per rank.
    """
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), NODE_RANK="0",
                   LOCAL_RANK=str(rank), RANK=str(rank), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "tests"), str(REPO),
                                                            os.environ.get("PYTHONPATH")])),
                   **(rank_env(rank) if rank_env else {}))
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout_s)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(hang)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return logs
