"""The shipped sweeps measure what they say: where a sweep samples or sets a fractal prior, the priors switch on
inside its trials (the default warmup of 1000 steps outlasted the 40-step trials of beta_star, lambda_grid and
ablations, so every trial trained the same model whatever beta* or lambda it drew)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from fmx.config import trial_config
from fmx.schema import load_sweep
from fmx.trial_build import _corners

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
PRIOR_WEIGHTS = ("lambda_spec", "lambda_mf", "lambda_graphfd")


def _optimizer_steps(cfg: dict, workers: int) -> int:
    """Steps one trial runs: each DDP worker gets its share of the windows, in batches of batch_size."""
    data, trainer = cfg["data"], cfg["trainer"]
    batch = data.get("batch_size") or trainer["batch_size"]
    per_epoch = math.ceil(math.ceil(data["n_train"] / workers) / batch)
    limit = trainer.get("limit_train_batches", 1.0)
    per_epoch = min(per_epoch, limit) if isinstance(limit, int) else math.floor(per_epoch * limit)
    return trainer["max_epochs"] * per_epoch // trainer.get("accumulate_grad_batches", 1)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_a_sweep_that_varies_a_prior_switches_the_priors_on_inside_its_trials(path):
    sweep = load_sweep(path, check_config=False)
    varied = [k for k in sweep.parameters if k.startswith("fractals.priors.")]
    if not varied:
        pytest.skip(f"{path.name} varies no fractal prior")
    for params in _corners(sweep):
        cfg = trial_config(sweep.base, params, seed=sweep.seed)
        if cfg["data"].get("name") != "synthetic" or not cfg["fractals"].get("enable", True):
            continue
        priors = cfg["fractals"]["priors"]
        if not any(float(priors[w]) > 0 for w in PRIOR_WEIGHTS):
            continue  # the no-prior corner of a grid
        steps = _optimizer_steps(cfg, sweep.resources.workers)
        assert priors["warmup_steps"] < steps // 2, (
            f"{path.name}: fractals.priors.warmup_steps={priors['warmup_steps']} leaves the priors off for most of "
            f"a {steps}-step trial at {params}")


def test_the_lambda_grid_graph_axis_has_a_target_to_pull_towards():
    sweep = load_sweep(REPO / "sweeps" / "lambda_grid.yaml", check_config=False)
    assert "fractals.priors.lambda_graphfd" in sweep.parameters
    cfg = trial_config(sweep.base, {}, seed=sweep.seed)
    assert cfg["fractals"]["priors"].get("graph_D_target") is not None
