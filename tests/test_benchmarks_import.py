"""Benchmark scripts run as `python benchmarks/X.py`, which puts benchmarks/ first on sys.path: no file
there may shadow a standard-library module (a benchmarks/platform.py broke `import torch`)."""
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_shadows_the_standard_library():
    shadowing = sorted(p.stem for p in BENCH.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert not shadowing, f"rename benchmarks/{shadowing[0]}.py: it shadows the standard library"
