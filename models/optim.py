"""AdamW parameter groups, optimiser-setting checks and the warmup-cosine LR schedule of NeuroFMx training."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

__all__ = ["param_groups", "warmup_cosine"]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices only; none on norms, biases, embeddings' 1-D params
    and anything marked ``_no_weight_decay`` (Mamba's ``A_log``, ``D``, ``dt_bias``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or getattr(p, "_no_weight_decay", False) or "norm" in name.lower()
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_optim(optim: Mapping[str, Any]) -> None:
    """Refuse optimiser settings that would fail at the first step or train silently wrong, naming the field."""

    def check(name: str, ok, need: str, *, integer: bool = False, optional: bool = False) -> None:
        if name not in optim or (optional and optim[name] is None):
            return
        value = optim[name]
        try:
            number = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number) or (integer and number != int(number)) or not ok(number):
            raise ValueError(f"optim.{name}: needs {need}, got {value!r}")

    check("lr", lambda v: v > 0, "a number > 0, e.g. 3e-4")
    check("weight_decay", lambda v: v >= 0, "a number >= 0 (0 = no decay)")
    check("grad_clip", lambda v: v >= 0, "a number >= 0 or null (0 or null = no clipping)", optional=True)
    check("warmup_steps", lambda v: v >= 0, "an integer >= 0", integer=True)
    check("total_steps", lambda v: v >= 1, "an integer >= 1 or null (null = the trainer's step count)",
          integer=True, optional=True)
    betas = optim.get("betas", (0.9, 0.95))
    try:
        ok = len(betas) == 2 and all(not isinstance(b, bool) and 0.0 <= float(b) < 1.0 for b in betas)
    except (TypeError, ValueError):
        ok = False
    if isinstance(betas, str) or not ok:
        raise ValueError(f"optim.betas: needs two numbers in [0, 1), e.g. [0.9, 0.95], got {betas!r}")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, schedule: str = "cosine",
                  min_ratio: float = 0.1) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine to ``min_ratio`` (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
