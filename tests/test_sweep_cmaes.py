"""Method ``cmaes`` end to end: Optuna's CMA-ES through Ray Tune's OptunaSearch on real local Ray + MLflow sqlite.

The fast two-moons MLP (one short epoch per trial, two trials at a time, three trials) keeps the Ray part to
about a minute on 2 cores. The sweep leaves storage and tracking at their defaults and runs as in a cluster pod: FMX_STORAGE_PATH
and MLFLOW_TRACKING_URI say where checkpoints and runs go. The shipped ``sweeps/fractional_alpha.yaml`` search
space is checked against the CMA-ES sampler without Ray.
"""
from __future__ import annotations

import glob
import logging
import math
import pickle
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BOUNDS = {"model.lr": (1e-3, 0.1), "model.target": (0.5, 1.5), "model.width": (16, 64)}


@pytest.fixture
def ray_disconnect():
    """The sweep's driver connects to the shared head; disconnect afterwards (the head keeps running)."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _cma_trials_of(trials) -> list:
    """The Optuna trials whose values CMA-ES drew (the sampler tags them with their generation)."""
    return [t for t in trials if any(k.startswith("cma:generation") for k in t.system_attrs)]


def test_fractional_alpha_space_is_sampled_by_cmaes():
    """The shipped CMA-ES sweep: every parameter reaches Optuna, the CMA-ES sampler draws them inside bounds."""
    from fmx.runner import search_algorithm, search_space
    from fmx.schema import load_sweep

    sweep = load_sweep(REPO / "sweeps" / "fractional_alpha.yaml", check_config=False)
    alg = search_algorithm(sweep)
    assert alg.set_search_properties(sweep.metric.name, sweep.metric.mode, search_space(sweep))
    for i in range(5):
        params = alg.suggest(f"t{i}")["params"]
        assert set(params) == set(sweep.parameters)
        for key, spec in sweep.parameters.items():
            assert spec.min <= params[key] <= spec.max, (key, params[key])
        taps = params["fractals.backbone.fractional_kernels.n_taps"]
        assert isinstance(taps, int) and (taps - 9) % 8 == 0, taps
        alg.on_trial_complete(f"t{i}", {sweep.metric.name: float(i), "training_iteration": 1})
    study = alg.searcher._ot_study  # noqa: SLF001 - the Optuna study is OptunaSearch's private state
    assert type(study.sampler).__name__ == "CmaEsSampler"
    # the first trial, asked before any finished, is random (Optuna learns the space from finished trials)
    assert [bool(_cma_trials_of([t])) for t in study.trials] == [False, True, True, True, True]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cmaes_sweep_runs_trials_with_sampled_values_and_logs_them(ray_cluster, tmp_path, ray_disconnect,
                                                                    monkeypatch, caplog):
    from fmx import tracking
    from fmx.runner import STORAGE_ENV, TRACKING_ENV, run_sweep
    from fmx.schema import parse_sweep

    storage, store = tmp_path / "ray", f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv(STORAGE_ENV, str(storage))
    monkeypatch.setenv(TRACKING_ENV, store)
    project = tmp_path / "project"  # where the local defaults would go
    caplog.set_level(logging.INFO, logger="fmx.runner")

    data = {"name": "cma", "method": "cmaes",
            "base": ["model=two_moons", "data=two_moons", "trainer.max_epochs=1", "fractals.enable=false",
                     "data.n_train=256", "data.n_val=128"],
            "metric": {"name": "val/loss", "goal": "minimize"},
            "parameters": {"model.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 0.1},
                           "model.target": {"distribution": "uniform", "min": 0.5, "max": 1.5},
                           "model.width": {"distribution": "int", "min": 16, "max": 64, "step": 16}},
            "run_cap": 3, "max_concurrent": 2, "resources": {"workers": 1, "cpus_per_worker": 1},
            "storage": {"path": "runs/ray"}}
    out = run_sweep(parse_sweep(data), sweep_text=yaml.safe_dump(data), address=ray_cluster.address, root=project,
                    progress=False)
    assert (out.n_trials, out.n_errors) == (3, 0)
    assert (out.storage_uri, out.tracking_uri) == (str(storage), store)
    assert not (project / "runs").exists()
    assert f"checkpoints: {storage} (from {STORAGE_ENV}); tracking: {store} (from {TRACKING_ENV})" in caplog.text

    # Every trial has a FINISHED MLflow child run with its sampled values inside their bounds and a val/loss.
    c = tracking.client(out.tracking_uri)
    parent = c.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.method"] == "cmaes"
    assert (parent.data.tags["fmx.storage_source"], parent.data.tags["fmx.tracking_source"]) == (STORAGE_ENV,
                                                                                               TRACKING_ENV)
    kids = [c.get_run(k.info.run_id) for k in tracking.child_runs(c, out.experiment_id, out.parent_run_id)]
    assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    logged = []
    for kid in kids:
        values = {key: float(kid.data.params[f"sweep.{key}"]) for key in BOUNDS}
        for key, (lo, hi) in BOUNDS.items():
            assert lo <= values[key] <= hi, (key, values[key])
        assert values["model.width"] % 16 == 0
        assert float(kid.data.params["model.lr"]) == values["model.lr"]  # the sampled value reached the config
        assert math.isfinite(kid.data.metrics["val/loss"])
        logged.append(values)
    assert len({v["model.lr"] for v in logged}) == 3  # three different draws

    # The searcher Tune saved is CMA-ES. The first two trials were asked together before any finished, so they
    # are random; CMA-ES drew the one after them.
    assert glob.glob(str(storage / out.sweep_id / "trials" / "*" / "checkpoint_*"))  # the trials' checkpoints
    states = glob.glob(str(storage / out.sweep_id / "searcher-state-*.pkl"))
    assert states, sorted(p.name for p in (storage / out.sweep_id).iterdir())
    with open(max(states), "rb") as fh:
        study = pickle.load(fh)["_ot_study"]
    assert type(study.sampler).__name__ == "CmaEsSampler"
    cma = _cma_trials_of(study.trials)
    assert len(study.trials) == 3 and len(cma) == 1, [t.system_attrs.keys() for t in study.trials]
    drawn = sorted(t.params["params/model.lr"] for t in cma)
    assert all(any(math.isclose(d, v["model.lr"], rel_tol=1e-9) for v in logged) for d in drawn), (drawn, logged)
