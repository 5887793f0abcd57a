"""Run the Triton R/S kernel in Triton's CPU interpreter against the torch path.

``tests/test_metrics_temporal.py`` starts this script in a subprocess with ``TRITON_INTERPRET=1``
(the interpreter is chosen when the kernel is defined). For each case it prints the largest
difference between ``fractals._rs_triton.log_rs`` and ``fractals.temporal._log_rs``, and for an
all-constant window both error messages. One JSON line.
"""
from __future__ import annotations

import json
import os

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from fractals import _rs_triton  # noqa: E402
from fractals.temporal import _log_rs, default_windows  # noqa: E402


def series(rows: int, n: int, dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g, dtype=torch.float64)
    x = x + 0.05 * x.cumsum(-1)  # some long memory, so R/S differs between windows
    x[min(1, rows - 1), 100:164] = 2.5  # a flat stretch: segments inside it are skipped by both paths
    return x.to(dtype)


def error_of(fn) -> str:
    try:
        fn()
    except ValueError as exc:
        return str(exc)
    return ""


def main() -> None:
    assert _rs_triton.triton is not None, "triton is not importable"
    cases = {
        "T 8192, 8 octave windows, float32": (series(3, 8192, torch.float32, 0), default_windows(8192), True),
        "T 3001 (remainders), float64": (series(2, 3001, torch.float64, 1), default_windows(3001), True),
        "T 1000, windows not powers of two, biased sd": (series(2, 1000, torch.float32, 2), [10, 24, 50, 100, 250], False),
    }
    out = {}
    for name, (x, windows, unbiased) in cases.items():
        got = _rs_triton.log_rs(x, windows, unbiased)
        want = _log_rs(x, windows, unbiased)
        out[name] = {"max_diff": float((got.double() - want.double()).abs().max()),
                     "spread": float(want.double().std()), "dtype_kept": got.dtype == x.dtype,
                     "shape": list(got.shape)}
    # Steps every 16 samples: each 16-sample segment is constant, longer ones are not.
    steps = torch.randn(2, 32, generator=torch.Generator().manual_seed(3)).repeat_interleave(16, -1)
    windows = [16, 32, 64, 128]
    out["errors"] = {"triton": error_of(lambda: _rs_triton.log_rs(steps, windows, True)),
                     "torch": error_of(lambda: _log_rs(steps, windows, True))}
    out["available"] = {"cpu": _rs_triton.available(torch.device("cpu"), [16, 32]),
                        "too_long": _rs_triton.available(torch.device("cuda"), [16, _rs_triton.MAX_WINDOW + 1])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
