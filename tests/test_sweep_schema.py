"""Sweep files: the shipped ones validate; each kind of malformed file gives the promised error
(file, key path, bad value, what is allowed); key paths are checked against the composed Hydra config."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from fmx.config import compose, trial_config
from fmx.schema import SweepFileError, json_schema, load_sweep, parse_sweep

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
SMOKE = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())


def _write(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _mutated(fn):
    d = copy.deepcopy(SMOKE)
    fn(d)
    return d


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweeps_validate_against_the_config(path):
    sweep = load_sweep(path)
    assert sweep.parameters, "a sweep without parameters searches nothing"


def test_smoke_sweep_is_cpu_and_small():
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml")
    assert sweep.resources.gpus_per_worker == 0 and sweep.run_cap <= 3
    assert compose(sweep.base)["trainer"]["max_epochs"] <= 3


# (kind, mutation, key path named in the error, words the message must contain)
MALFORMED = [
    ("missing_metric", lambda d: d.pop("metric"), "metric", "required key is missing"),
    ("unknown_top_key", lambda d: d.update(paramaters={}), "paramaters", "unknown key"),
    ("bad_method", lambda d: d.update(method="bayes"), "method", "'tpe', 'cmaes', 'random' or 'grid'"),
    ("bad_goal", lambda d: d["metric"].update(goal="max"), "metric.goal", "'minimize' or 'maximize'"),
    ("unknown_distribution", lambda d: d["parameters"].update(
        {"optim.lr": {"distribution": "normal", "min": 0, "max": 1}}), "parameters.optim.lr.distribution",
     "uniform, log_uniform, int, categorical, grid"),
    ("uniform_min_ge_max", lambda d: d["parameters"].update(
        {"optim.lr": {"distribution": "uniform", "min": 2, "max": 1}}), "parameters.optim.lr", "min must be < max"),
    ("log_uniform_nonpositive", lambda d: d["parameters"].update(
        {"optim.lr": {"distribution": "log_uniform", "min": 0, "max": 1}}), "parameters.optim.lr", "min > 0"),
    ("empty_categorical", lambda d: d["parameters"].update(
        {"seed": {"distribution": "categorical", "values": []}}), "parameters.seed.values", "at least 1 item"),
    ("int_with_float_bounds", lambda d: d["parameters"].update(
        {"trainer.max_epochs": {"distribution": "int", "min": 1.5, "max": 3}}), "parameters.trainer.max_epochs.min",
     "valid integer"),
    ("grid_with_tpe", lambda d: d.update(method="tpe", parameters={
        "optim.lr": {"distribution": "grid", "values": [0.1, 0.2]}}), "", "need method: grid or random"),
    ("bad_early_terminate", lambda d: d["early_terminate"].update(type="hyperband"), "early_terminate.type",
     "'asha', 'median' or 'none'"),
    ("fractional_gpus_above_one", lambda d: d["resources"].update(gpus_per_worker=1.5),
     "resources.gpus_per_worker", "whole number"),
    ("zero_workers", lambda d: d["resources"].update(workers=0), "resources.workers", "greater than or equal to 1"),
    ("unknown_benchmark", lambda d: d.update(acceptance=["speed", "vibes"]), "acceptance[1]", "'numerics'"),
    ("gcs_storage", lambda d: d["storage"].update(path="gs://bucket/x"), "storage.path", "s3://"),
    ("s3_without_bucket", lambda d: d["storage"].update(path="s3:///ray"), "storage.path", "needs a bucket"),
    ("inline_credentials", lambda d: d["storage"].update(aws_secret_access_key="s3cr3tvalue"),
     "storage.aws_secret_access_key", "credentials never go in a sweep file"),
    ("bad_name", lambda d: d.update(name="my sweep!"), "name", "should match pattern"),
    ("zero_run_cap", lambda d: d.update(run_cap=0), "run_cap", "greater than or equal to 1"),
    ("bare_override", lambda d: d.update(base=["trainer"]), "base", "Hydra override key=value"),
    ("acceptance_metric_with_asha", lambda d: d.update(metric={"name": "acceptance/training_beta_gap",
                                                               "goal": "minimize"},
                                                       early_terminate={"type": "asha"}), "", "per-epoch metric"),
    ("acceptance_metric_not_run", lambda d: d.update(metric={"name": "acceptance/ablation_drop_pct",
                                                             "goal": "maximize"}), "", "needs 'ablation' in acceptance"),
    ("bare_parameter_value", lambda d: d["parameters"].update({"seed": 3}), "parameters.seed", "distribution:"),
    ("parameter_without_distribution", lambda d: d["parameters"].update({"optim.lr": {"min": 0, "max": 1}}),
     "parameters.optim.lr", "allowed: {distribution: uniform|log_uniform"),
    ("constant_list", lambda d: d["parameters"].update({"optim.betas": {"value": [0.9, 0.99]}}),
     "parameters.optim.betas.value", "a number, a string or a boolean"),
    ("constant_extra_key", lambda d: d["parameters"].update({"optim.lr": {"value": 0.1, "max": 3}}),
     "parameters.optim.lr.max", "allowed: value"),
    ("uniform_with_step", lambda d: d["parameters"].update(
        {"optim.lr": {"distribution": "uniform", "min": 0, "max": 1, "step": 0.1}}), "parameters.optim.lr.step",
     "unknown key; got 'step'; allowed: distribution, min, max"),
    ("categorical_null", lambda d: d["parameters"].update({"seed": {"distribution": "categorical",
                                                                    "values": [1, None]}}),
     "parameters.seed.values[1]", "a number, a string or a boolean"),
    # a password in any URI of the file would reach the pointer file, the MLflow experiment and logs
    ("artifact_location_password", lambda d: d["tracking"].update(artifact_location="s3://AKIA:s3cr3tvalue@b/x"),
     "tracking.artifact_location", "credentials never go"),
    ("endpoint_password", lambda d: d["storage"].update(endpoint_url="http://AKIA:s3cr3tvalue@127.0.0.1:9000"),
     "storage.endpoint_url", "credentials never go"),
    # Optuna has nothing to search: validate said valid, then the run crashed in Tune's first suggestion
    ("tpe_without_parameters", lambda d: d.update(method="tpe", parameters={}), "parameters",
     "method tpe needs at least one parameter with a distribution"),
    ("cmaes_with_constants_only", lambda d: d.update(method="cmaes", parameters={"optim.lr": {"value": 0.1}}),
     "parameters", "method cmaes needs at least one parameter with a distribution"),
    # YAML's yes/true is not a count: run_cap: yes ran one trial
    ("boolean_run_cap", lambda d: d.update(run_cap=True), "run_cap", "valid integer"),
    ("boolean_workers", lambda d: d["resources"].update(workers=True), "resources.workers", "valid integer"),
    ("boolean_int_bound", lambda d: d["parameters"].update(
        {"trainer.max_epochs": {"distribution": "int", "min": False, "max": 3}}), "parameters.trainer.max_epochs.min",
     "valid integer"),
]


@pytest.mark.parametrize("kind,mutate,key_path,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_sweep_file_names_file_path_value_and_allowed(tmp_path, kind, mutate, key_path, words):
    path = _write(tmp_path, _mutated(mutate))
    with pytest.raises(SweepFileError) as info:
        load_sweep(path)
    err = info.value
    assert str(path) in str(err)
    assert err.path == key_path, str(err)
    assert words in str(err), str(err)
    assert "s3cr3tvalue" not in str(err)


CONFIG_ERRORS = [
    ("unknown_config_path", {"fractals.priors.lambda_spectral": {"distribution": "uniform", "min": 0, "max": 1}},
     "parameters.fractals.priors.lambda_spectral", "lambda_spec"),
    ("unknown_section", {"fractal.priors.lambda_spec": {"distribution": "uniform", "min": 0, "max": 1}},
     "parameters.fractal.priors.lambda_spec", "fractals"),
    ("numeric_on_string", {"fractals.probes.causal_scale_ablation.mode":
                           {"distribution": "uniform", "min": 0, "max": 1}},
     "parameters.fractals.probes.causal_scale_ablation.mode", "holds a str"),
    ("string_on_number", {"fractals.priors.lambda_spec": {"distribution": "categorical", "values": ["high"]}},
     "parameters.fractals.priors.lambda_spec", "does not fit the config's float"),
    ("float_on_int", {"trainer.max_epochs": {"distribution": "categorical", "values": [2, 2.5]}},
     "parameters.trainer.max_epochs", "does not fit the config's int"),
    ("uniform_on_int", {"trainer.max_epochs": {"distribution": "uniform", "min": 1, "max": 4}},
     "parameters.trainer.max_epochs", "distribution: int"),
    ("log_uniform_on_int", {"trainer.max_epochs": {"distribution": "log_uniform", "min": 1, "max": 4}},
     "parameters.trainer.max_epochs", "samples fractions"),
    ("numeric_on_section", {"fractals.priors": {"distribution": "uniform", "min": 0, "max": 1}},
     "parameters.fractals.priors", "config section"),
    ("unknown_group_option", {"model": {"distribution": "categorical", "values": ["tiny", "gigantic"]}},
     "parameters.model", "tiny"),
]


@pytest.mark.parametrize("kind,params,key_path,words", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_key_paths_are_checked_against_the_composed_config(tmp_path, kind, params, key_path, words):
    path = _write(tmp_path, _mutated(lambda d: d["parameters"].update(params)))
    with pytest.raises(SweepFileError) as info:
        load_sweep(path)
    assert info.value.path == key_path, str(info.value)
    assert words in str(info.value), str(info.value)
    assert str(path) in str(info.value)


def test_ints_may_stand_for_floats_in_categorical_values(tmp_path):
    path = _write(tmp_path, _mutated(lambda d: d["parameters"].update(
        {"fractals.priors.lambda_mf": {"distribution": "grid", "values": [0, 0.02]}})))  # smoke: method random
    assert load_sweep(path).parameters["fractals.priors.lambda_mf"].values == [0, 0.02]


def test_base_override_with_unknown_key_is_an_error(tmp_path):
    path = _write(tmp_path, _mutated(lambda d: d["base"].append("trainer.max_epoch=3")))
    with pytest.raises(SweepFileError) as info:
        load_sweep(path)
    assert info.value.path == f"base[{len(SMOKE['base'])}]"
    assert "trainer.max_epoch=3" in str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = _write(tmp_path, "name: x\nmetric: {name: val/loss, goal: minimize\nparameters: {}\n")
    with pytest.raises(SweepFileError, match=r"not valid YAML at line \d+"):
        load_sweep(path)


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    # YAML loaders keep the last of two equal keys: a second `parameters:` block would drop the first unnoticed
    text = yaml.safe_dump(SMOKE, sort_keys=False) + "parameters:\n  optim.lr: {value: 0.1}\n"
    with pytest.raises(SweepFileError, match=r"line \d+.*'parameters' is given twice \(first at line \d+\)"):
        load_sweep(_write(tmp_path, text))
    nested = "name: x\nmetric: {name: val/loss, goal: minimize, goal: maximize}\n"
    with pytest.raises(SweepFileError, match="'goal' is given twice"):
        load_sweep(_write(tmp_path, nested, "nested.yaml"))
    # a YAML merge key may be overridden on purpose
    merged = ("name: x\nmethod: random\nmetric: {name: val/loss, goal: minimize}\nparameters:\n"
              "  optim.lr: &lr {distribution: uniform, min: 0.1, max: 0.2}\n"
              "  optim.weight_decay: {<<: *lr, max: 0.3}\n")
    sweep = load_sweep(_write(tmp_path, merged, "merged.yaml"), check_config=False)
    assert (sweep.parameters["optim.weight_decay"].min, sweep.parameters["optim.weight_decay"].max) == (0.1, 0.3)


def test_top_level_list_is_rejected(tmp_path):
    with pytest.raises(SweepFileError, match="must be a YAML mapping"):
        load_sweep(_write(tmp_path, "- a\n- b\n"))


def test_missing_file(tmp_path):
    with pytest.raises(SweepFileError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")


def test_trial_config_applies_sampled_values_and_group_choices():
    cfg = trial_config(["trainer.max_epochs=3"], {"fractals.priors.spectral_beta_target": 1.3,
                                                 "fractals.probes.causal_scale_ablation.mode": "low_beta_only"},
                       seed=7)
    assert cfg["trainer"]["max_epochs"] == 3
    assert cfg["fractals"]["priors"]["spectral_beta_target"] == 1.3
    assert cfg["fractals"]["probes"]["causal_scale_ablation"]["mode"] == "low_beta_only"
    assert cfg["seed"] == 7 and cfg["model"]["family"] == "neurofmx"


def test_a_sampled_seed_wins_over_the_sweep_seed():
    # A grid over seeds (sweeps/criticality_two_moons.yaml) once trained every trial with the sweep's seed.
    assert trial_config([], {"seed": 2}, seed=0)["seed"] == 2
    assert trial_config([], {}, seed=5)["seed"] == 5


def test_exported_json_schema_is_current():
    exported = json.loads((REPO / "docs" / "sweep_schema.json").read_text())
    assert exported == json.loads(json.dumps(json_schema(), sort_keys=True))
    assert set(exported["properties"]) >= {"name", "method", "metric", "parameters", "early_terminate", "run_cap",
                                           "max_concurrent", "resources", "acceptance", "storage", "tracking"}


def test_parse_accepts_constant_and_grid_with_random():
    sweep = parse_sweep(_mutated(lambda d: d["parameters"].update(
        {"seed": {"value": 3}, "optim.lr": {"distribution": "grid", "values": [0.1, 0.2]}})))
    assert sweep.parameters["seed"].value == 3
    assert sweep.parameters["optim.lr"].values == [0.1, 0.2]


def test_search_space_algorithms_and_schedulers_follow_the_file():
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
    from ray.tune.search import ConcurrencyLimiter

    from fmx.search import scheduler, search_algorithm, search_space

    beta = load_sweep(REPO / "sweeps" / "beta_star.yaml")
    space = search_space(beta)["params"]
    assert isinstance(space["fractals.priors.spectral_beta_target"], tune.search.sample.Float)
    assert space["fractals.priors.lambda_spec"] == 0.05  # a constant stays a plain value
    algo = search_algorithm(beta)
    assert isinstance(algo, ConcurrencyLimiter) and algo.max_concurrent == beta.max_concurrent
    assert type(algo.searcher._sampler).__name__ == "TPESampler"
    assert isinstance(scheduler(beta, max_epochs=10), FIFOScheduler)  # early_terminate: none (every trial to the end)

    alpha = load_sweep(REPO / "sweeps" / "fractional_alpha.yaml")
    assert type(search_algorithm(alpha).searcher._sampler).__name__ == "CmaEsSampler"
    taps = search_space(alpha)["params"]["fractals.backbone.fractional_kernels.n_taps"]
    assert isinstance(taps, tune.search.sample.Integer)
    asha = scheduler(alpha, max_epochs=10)
    assert isinstance(asha, ASHAScheduler) and asha._max_t == 11 and asha._reduction_factor == 3

    grid = load_sweep(REPO / "sweeps" / "lambda_grid.yaml")
    assert type(search_algorithm(grid)).__name__ == "BasicVariantGenerator"
    assert search_space(grid)["params"]["fractals.priors.lambda_spec"] == {"grid_search": [0.0, 0.01, 0.05, 0.2]}
    median = grid.model_copy(update={"early_terminate": grid.early_terminate.model_copy(
        update={"type": "median", "grace_period": 3})})
    assert isinstance(scheduler(median, max_epochs=10), MedianStoppingRule)
    assert isinstance(scheduler(load_sweep(REPO / "sweeps" / "smoke.yaml"), max_epochs=2), FIFOScheduler)


def test_config_paths_containing_token_are_not_taken_for_credentials(tmp_path):
    # model.tokenizers.* and model.popt.n_summary_tokens are model settings, not secrets
    path = _write(tmp_path, _mutated(lambda d: (
        d["base"].append("model.tokenizers.lfp.layout=time_mix"),
        d["parameters"].update({"model.popt.n_summary_tokens": {"distribution": "int", "min": 2, "max": 8}}))))
    sweep = load_sweep(path)
    assert "model.popt.n_summary_tokens" in sweep.parameters
    with pytest.raises(SweepFileError, match="credentials never go"):
        parse_sweep(_mutated(lambda d: d["tracking"].update(api_token="x")))


@pytest.mark.parametrize("method", ["random", "grid"])
def test_int_step_draws_min_plus_multiples_of_step_with_tune_sampling(method):
    # Optuna draws 9, 17, ..., 65 for {min: 9, max: 65, step: 8}; Tune's own sampler must draw the same values,
    # not the multiples of 8 (16, 24, ..., 64) that tune.qrandint gives.
    data = _mutated(lambda d: d.update(method=method, parameters={
        "fractals.backbone.fractional_kernels.n_taps": {"distribution": "int", "min": 9, "max": 65, "step": 8},
        "seed": {"distribution": "grid", "values": [0]}}))
    from fmx.runner import search_space

    domain = search_space(parse_sweep(data))["params"]["fractals.backbone.fractional_kernels.n_taps"]
    drawn = {int(v) for v in domain.sample(size=400, random_state=0)}
    assert drawn == set(range(9, 66, 8)), sorted(drawn)


def test_random_sweeps_draw_the_same_values_from_the_same_seed():
    # docs/sweeps.md: `seed` is "one seed for data, init and sampling"; Tune's default generator (what Tune uses
    # when search_algorithm returns None) draws from numpy's global state instead.
    from ray.tune.experiment import Experiment
    from ray.tune.search import BasicVariantGenerator

    from fmx.runner import search_algorithm, search_space

    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml", check_config=False)

    def trainable(config):
        return None

    def first_three(s):
        alg = search_algorithm(s) or BasicVariantGenerator(max_concurrent=s.max_concurrent)
        alg.add_configurations([Experiment("seeded", run=trainable, config=search_space(s), num_samples=3)])
        drawn = []
        for _ in range(3):
            trial = alg.next_trial()
            drawn.append(trial.config["params"])
            alg.on_trial_complete(trial.trial_id)  # frees its slot under max_concurrent
        return drawn

    assert first_three(sweep) == first_three(sweep)
    assert first_three(sweep) != first_three(sweep.model_copy(update={"seed": 1}))


def test_asha_horizon_covers_the_longest_sampled_max_epochs():
    # ASHA's max_t came from the base config's max_epochs alone: a sweep over trainer.max_epochs up to
    # 12 on a base of 2 had its longer trials cut at epoch 3.
    from fmx.runner import _longest_epochs

    def with_epochs(spec):
        return parse_sweep(_mutated(lambda d: d["parameters"].update({"trainer.max_epochs": spec})))

    base = compose(SMOKE["base"])
    base_epochs = int(base["trainer"]["max_epochs"])
    assert _longest_epochs(parse_sweep(SMOKE), base) == base_epochs
    assert _longest_epochs(with_epochs({"distribution": "int", "min": 1, "max": 12}), base) == max(12, base_epochs)
    assert _longest_epochs(with_epochs({"distribution": "categorical", "values": [3, 9]}), base) == max(9, base_epochs)
    assert _longest_epochs(with_epochs({"value": 7}), base) == max(7, base_epochs)


def test_schema_module_help_prints_usage_instead_of_writing_a_file_named_help(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "fmx.schema", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and "usage: python -m fmx.schema" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_grid_sweep_whose_passes_would_repeat_each_other_is_refused(tmp_path):
    """run_cap 3 on a grid of 2 points with nothing drawn ran 6 trials, 3 identical pairs (same seed)."""
    from fmx.runner import planned_trials
    from fmx.schema import SweepFileError, check_search_space

    d = {"name": "g", "method": "grid", "metric": {"name": "val/loss", "goal": "minimize"}, "run_cap": 3,
         "base": ["model=tiny", "data=synthetic"],
         "parameters": {"fractals.priors.lambda_spec": {"distribution": "grid", "values": [0.0, 0.05]},
                        "trainer.max_epochs": {"value": 2}}}
    sweep = parse_sweep(d)
    assert planned_trials(sweep) == 6
    with pytest.raises(SweepFileError, match=r"run_cap.*2 grid points.*repeats it") as err:
        check_search_space(sweep, file="g.yaml")
    assert "seed: {distribution: grid" in str(err.value) and "g.yaml" in str(err.value)
    check_search_space(sweep, resumed=True)  # a sweep recorded before this check continues as it began
    # replicates by a seed grid, or something drawn per point, are real repeats: allowed
    seeded = parse_sweep({**d, "run_cap": 1, "parameters": {**d["parameters"],
                                                            "seed": {"distribution": "grid", "values": [0, 1, 2]}}})
    check_search_space(seeded)
    assert planned_trials(seeded) == 6
    drawn = parse_sweep({**d, "parameters": {**d["parameters"], "optim.lr": {"distribution": "log_uniform",
                                                                             "min": 1e-4, "max": 1e-2}}})
    check_search_space(drawn)
