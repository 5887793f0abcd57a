"""Uncertainty-weighted multi-task loss (Kendall, Gal & Cipolla, 2018) with learnable log-variances."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["UncertaintyWeightedLoss"]


class UncertaintyWeightedLoss(nn.Module):
    """``total = sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i`` with learned ``s_i = log sigma_i^2``.

    Each task's weight ``exp(-s_i)`` falls as its loss stays large (high homoscedastic
    uncertainty) and the ``+ s_i`` term stops all weights collapsing to zero; at the optimum
    ``exp(s_i) = L_i``. Only the tasks present in a call are summed, so batches missing a
    modality skip its head.

    Parameters
    ----------
    task_names : sequence of str
        Every loss name the model can produce.
    init_log_var : float
        Initial ``s_i`` (0 = weight 1).

    Shape:
        losses: mapping name -> scalar tensor -> scalar total
    """

    def __init__(self, *, task_names: Sequence[str], init_log_var: float = 0.0) -> None:
        super().__init__()
        names = list(task_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"task_names: needs distinct names, got {names!r}")
        self.log_vars = nn.ParameterDict({n: nn.Parameter(torch.tensor(float(init_log_var))) for n in names})

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        unknown = sorted(set(losses) - set(self.log_vars))
        if unknown:
            raise ValueError(f"losses: unknown task(s) {unknown}; configured: {sorted(self.log_vars)}")
        if not losses:
            raise ValueError("losses: empty; at least one head must produce a loss")
        total = 0.0
        for name, value in losses.items():
            s = self.log_vars[name]
            total = total + 0.5 * torch.exp(-s) * value + 0.5 * s
        return total

    def weights(self) -> dict[str, float]:
        """Current task weights ``exp(-s_i)`` (for logging)."""
        return {n: float(torch.exp(-p.detach())) for n, p in self.log_vars.items()}
