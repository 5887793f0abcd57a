"""Review of the platform changes of 2026-11-30 (helper 81): regressions a user would hit."""
from __future__ import annotations

import pytest

from fmx.schema import parse_sweep

GRID_WITH_CATEGORICAL = {
    "name": "old_grid", "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"},
    "base": ["model=tiny", "data=synthetic"],
    "parameters": {"fractals.priors.lambda_spec": {"distribution": "grid", "values": [0.0, 0.05]},
                   "seed": {"distribution": "categorical", "values": [0, 1]}},
}


class _PlanReached(Exception):
    """Raised by the patched make_plan: the sweep got past its search-space checks."""


def test_resume_of_a_recorded_grid_sweep_with_a_categorical_is_not_refused(monkeypatch):
    # check_search_space refuses a categorical under method grid since today, and says a sweep recorded by an
    # older version still reads back for resume: `fmx sweep resume` of such a sweep must not be refused
    from fmx import runner

    def reached(*args, **kwargs):
        raise _PlanReached

    monkeypatch.setattr(runner, "make_plan", reached)
    sweep = parse_sweep(GRID_WITH_CATEGORICAL)
    with pytest.raises(_PlanReached):
        runner.run_sweep(sweep, resume_id="old_grid-20261129-120000-000000", progress=False)
    # a new run of it is still refused, naming the parameter
    with pytest.raises(ValueError, match="parameters.seed"):
        runner.run_sweep(sweep, progress=False)
