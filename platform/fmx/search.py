"""How a sweep searches: Tune domains for its parameters, the search algorithm and the trial scheduler.

Split from :mod:`fmx.runner`, which builds the ``Tuner`` from these three.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from fmx.schema import Categorical, Constant, Grid, IntRange, LogUniform, Sweep, Uniform

__all__ = ["search_space", "search_algorithm", "scheduler"]


def _absolute_data_path(key: str, value: Any, root: Path) -> Any:
    """A relative ``data.root``/``data.path`` value made absolute against ``root``, as the base's are
    (:func:`fmx.config.absolute_data_paths`): trials run in Ray workers with another working directory."""
    from fmx.config import DATA_PATH_KEYS

    if key not in DATA_PATH_KEYS or not isinstance(value, str) or not value or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def search_space(sweep: Sweep, *, root: str | Path | None = None) -> dict[str, Any]:
    """Tune domains for the sweep's parameters (under ``params``; constants are plain values). Sampled data
    folders are made absolute against ``root`` (default: the working directory, where the sweep is submitted)."""
    from ray import tune

    root = Path(root or os.getcwd())
    sweep = sweep.model_copy(update={"parameters": {
        key: spec.model_copy(update={"values": [_absolute_data_path(key, v, root) for v in spec.values]})
        if isinstance(spec, (Categorical, Grid)) else
        spec.model_copy(update={"value": _absolute_data_path(key, spec.value, root)}) if isinstance(spec, Constant)
        else spec for key, spec in sweep.parameters.items()}})
    space: dict[str, Any] = {}
    for key, spec in sweep.parameters.items():
        if isinstance(spec, LogUniform):
            space[key] = tune.loguniform(spec.min, spec.max)
        elif isinstance(spec, Uniform):
            space[key] = tune.uniform(spec.min, spec.max)
        elif isinstance(spec, IntRange):
            if spec.step == 1:
                space[key] = tune.randint(spec.min, spec.max + 1)
            elif sweep.method in ("tpe", "cmaes"):
                # OptunaSearch turns qrandint into IntDistribution(min, max, step): min, min + step, ...
                space[key] = tune.qrandint(spec.min, spec.max, spec.step)
            else:
                # Tune's own qrandint draws multiples of step (16, 24, ... for min 9, step 8), not min + k * step
                space[key] = tune.choice(list(range(spec.min, spec.max + 1, spec.step)))
        elif isinstance(spec, Categorical):
            space[key] = tune.choice(list(spec.values))
        elif isinstance(spec, Grid):
            space[key] = tune.grid_search(list(spec.values))
        elif isinstance(spec, Constant):
            space[key] = spec.value
    return {"params": space}


def search_algorithm(sweep: Sweep):
    """Optuna (TPE or CMA-ES) behind a concurrency limiter, or Tune's variant generator for random/grid; all seeded
    by ``sweep.seed``."""
    if sweep.method in ("random", "grid"):
        from ray.tune.search import BasicVariantGenerator

        # Tune's default generator (search_alg=None) draws from numpy's global state: not reproducible
        return BasicVariantGenerator(max_concurrent=sweep.max_concurrent, random_state=sweep.seed)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if sweep.method == "tpe":
        sampler = optuna.samplers.TPESampler(seed=sweep.seed)
    else:
        # Optuna learns the search space from finished trials, so the trials asked before the first one finished
        # (the first max_concurrent) are drawn at random; from then on CMA-ES draws every trial. That fallback is
        # the only one possible here (the space is fixed and the schema refuses categoricals with cmaes): its
        # per-parameter warning is noise.
        sampler = optuna.samplers.CmaEsSampler(seed=sweep.seed, warn_independent_sampling=False)
    return ConcurrencyLimiter(OptunaSearch(sampler=sampler, metric=sweep.metric.name, mode=sweep.metric.mode),
                              max_concurrent=sweep.max_concurrent)


def _asha_base():
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler


class NonFiniteStoppingASHA(_asha_base()):
    """ASHA that also stops a trial whose metric is NaN or infinite.

    Tune's ASHA compares ``metric < cutoff``, which is False for NaN, so a diverged trial would otherwise run
    to ``max_t``; and an infinite value recorded in a rung made its cutoff NaN, so no later trial was stopped there.
    """

    def on_trial_result(self, tune_controller, trial, result):
        from ray.tune.schedulers import TrialScheduler

        value = result.get(self._metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            self._num_stopped += 1
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        value = result.get(self._metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            # not recorded: an infinite value in a rung makes its percentile cutoff NaN, which stops no one
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


def scheduler(sweep: Sweep, max_epochs: int):
    """ASHA or the median stopping rule over epochs (Tune iterations), or FIFO."""
    from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule

    et = sweep.early_terminate
    if et.type == "asha":
        return NonFiniteStoppingASHA(time_attr="training_iteration", max_t=max(max_epochs + 1, et.grace_period + 1),
                                     grace_period=et.grace_period, reduction_factor=et.reduction_factor)
    if et.type == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=et.grace_period,
                                  min_samples_required=2)
    return FIFOScheduler()
