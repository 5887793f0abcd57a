"""Run the fused Mamba-2 path through ``mamba_ssm``'s Triton kernels in Triton's CPU interpreter.

``tests/test_backbone.py`` starts this script in a subprocess with ``TRITON_INTERPRET=1`` (the
interpreter is chosen when the kernels are defined, and the patches below must not leak into other
tests). It prints one JSON line: per case, the largest differences between the fused and the
portable path in the output, the final SSM state and every gradient, next to their magnitudes.

The interpreter runs GPU kernels on CPU tensors, but ``mamba_ssm`` also calls CUDA-only host APIs
around them. Each patch says which, and none touches the arithmetic:

- ``torch.cuda.device(x.device.index)`` wraps every launch; with a CPU tensor the index is None,
  which torch refuses. On CPU there is no device to switch to.
- ``torch.cuda.get_device_properties(...).multi_processor_count`` sizes one backward grid.
- ``triton.autotune`` times each config on a GPU driver, which the interpreter has none of: only the
  first config is kept (any config computes the same result).
- Loops ``for k in range(0, tl.minimum(...), BLOCK)``: compiled Triton lowers ``range`` itself; the
  interpreter hands Python's ``range`` a one-element array. The kernels' modules get a ``range`` that
  reads such a bound as an int.
"""
from __future__ import annotations

import builtins
import contextlib
import json
import os
import sys
import types

import numpy as np
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import triton  # noqa: E402

torch.cuda.device = lambda *args, **kwargs: contextlib.nullcontext()
torch.cuda.get_device_properties = lambda *args, **kwargs: types.SimpleNamespace(multi_processor_count=4)
_autotune = triton.autotune
triton.autotune = lambda configs, *args, **kwargs: _autotune(configs[:1], *args, **kwargs)

from models.backbones import mamba2  # noqa: E402


def _as_int(value) -> int:
    handle = getattr(value, "handle", None)
    return int(np.asarray(handle.data).reshape(-1)[0]) if handle is not None else int(value)


def _range(*args):
    return builtins.range(*(_as_int(a) for a in args))


def run_case(*, ngroups: int, seqlen: int, chunk: int, seed: int) -> dict:
    torch.manual_seed(seed)
    block = mamba2.Mamba2(d_model=32, d_state=16, headdim=16, ngroups=ngroups, chunk_size=chunk)
    u = torch.randn(2, seqlen, 32, requires_grad=True)
    results = {}
    for path, fused in (("fused", True), ("portable", False)):
        block._use_fused = lambda x, fused=fused: fused  # the fused path otherwise needs CUDA tensors
        block.zero_grad()
        u.grad = None
        y, state = block(u, return_state=True)
        (y.square().mean() + state.square().mean()).backward()
        grads = {"u": u.grad.clone(), **{name: p.grad.clone() for name, p in block.named_parameters()}}
        results[path] = {"y": y.detach(), "state": state.detach(), **{f"grad/{k}": v for k, v in grads.items()}}
    return {key: {"max_diff": float((results["fused"][key] - ref).abs().max()),
                  "max_abs": float(ref.abs().max())}
            for key, ref in results["portable"].items()}


def main() -> None:
    loaded = mamba2._load_fused()
    if "scan" not in loaded:
        print(json.dumps({"error": mamba2._FUSED_ERROR}))
        sys.exit(3)
    for name, module in list(sys.modules.items()):
        if name.startswith("mamba_ssm.ops.triton"):
            module.range = _range
    mamba2.FUSED_CHUNK_SIZE = 16  # several chunks in a short sequence: the state passing runs too
    cases = {
        "1 group, 40 steps": run_case(ngroups=1, seqlen=40, chunk=16, seed=0),
        "2 groups, 37 steps": run_case(ngroups=2, seqlen=37, chunk=16, seed=1),
    }
    print(json.dumps({"source": loaded["source"], "cases": cases}))


if __name__ == "__main__":
    main()
