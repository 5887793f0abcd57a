"""Run a script of this folder under Triton's CPU interpreter, in a subprocess, and read its JSON line.

``TRITON_INTERPRET=1`` must be set before a kernel is defined, and the scripts patch module state, so
each runs in its own process. Tests skip without triton (``make setup`` installs it).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def run_interpreted(script: str, timeout: float = 300) -> dict:
    """Run ``tests/<script>`` with ``TRITON_INTERPRET=1``; return the JSON of its last output line."""
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "platform"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / script)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
