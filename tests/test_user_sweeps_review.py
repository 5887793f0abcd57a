"""Sweep files a researcher writes from the docs (not the shipped ones): what they write is read as they meant it,
refused with a message that says what to write instead, and carried into the trial's config."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmx.config import trial_config
from fmx.schema import SweepFileError, load_sweep

runner = CliRunner()

HEAD = """\
name: user
base: [model=tiny, data=synthetic, trainer.max_epochs=1, fractals.priors.warmup_steps=2]
metric: {name: val/loss, goal: minimize}
"""


def _sweep(tmp_path: Path, body: str, name: str = "user.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 as the string '1e-3'; every YAML 1.2 reader, JSON and Python read a number
    path = _sweep(tmp_path, """\
method: random
parameters:
  optim.weight_decay: {distribution: categorical, values: [0.0, 1e-2, 1E-1]}
  optim.lr: {value: 1e-3}
  fractals.priors.lambda_spec: {distribution: log_uniform, min: 1e-3, max: 2e-1}
""")
    sweep = load_sweep(path)
    assert sweep.parameters["optim.weight_decay"].values == [0.0, 0.01, 0.1]
    assert sweep.parameters["optim.lr"].value == 0.001
    cfg = trial_config(sweep.base, {"optim.lr": sweep.parameters["optim.lr"].value})
    assert cfg["optim"]["lr"] == pytest.approx(1e-3) and isinstance(cfg["optim"]["lr"], float)


def test_a_quoted_number_on_a_numeric_key_says_to_unquote_it(tmp_path):
    path = _sweep(tmp_path, """\
method: random
parameters:
  optim.lr: {value: "1e-3"}
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    assert err.value.path == "parameters.optim.lr"
    assert "quote" in str(err.value) and "(1e-3)" in str(err.value)


def test_validate_table_shows_boolean_values(tmp_path):
    # rich read the JSON list [true, false] as a markup tag and printed "values": } with the list gone
    from fmx.commands.sweep import app

    path = _sweep(tmp_path, """\
method: grid
parameters:
  fractals.enable: {distribution: grid, values: [true, false]}
run_cap: 1
""")
    result = runner.invoke(app, ["validate", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "[true, false]" in result.output


def test_a_plus_key_parameter_says_to_add_the_key_in_base(tmp_path):
    # docs/attention.md: the presets leave model.perceiver.attention out, "a sweep or override adds it with +"
    path = _sweep(tmp_path, """\
method: grid
parameters:
  +model.perceiver.attention: {distribution: grid, values: [hilbert, cantor]}
run_cap: 1
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    msg = str(err.value)
    assert err.value.path == "parameters.+model.perceiver.attention"
    assert "+model.perceiver.attention=" in msg and "base" in msg and "no '+model'" not in msg


def test_int_step_whose_max_is_off_the_grid_builds_the_values_trials_draw(tmp_path):
    # min 16, max 50, step 16 draws 16, 32, 48; the check built d_model=50 (not a multiple of the SSM head width)
    # and refused the sweep for a value no trial takes
    from fmx.search import search_space

    path = _sweep(tmp_path, """\
method: random
parameters:
  model.d_model: {distribution: int, min: 16, max: 50, step: 16}
run_cap: 2
""")
    sweep = load_sweep(path, check_build=True)
    assert sweep.parameters["model.d_model"].top == 48
    assert search_space(sweep)["params"]["model.d_model"].categories == [16, 32, 48]


@pytest.mark.parametrize("limit", ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"])
def test_sampling_the_priors_when_no_trial_outlives_their_warmup_is_refused(tmp_path, limit):
    # 2 epochs of 2 (or of the synthetic set's 8) batches under the default warmup_steps 1000: beta* changes nothing,
    # every trial trained alike (the model's warning stays in the Ray worker's log)
    path = tmp_path / "u.yaml"
    path.write_text(f"""\
name: user
base: [model=tiny, data=synthetic, trainer.max_epochs=2, {limit}]
metric: {{name: val/loss, goal: minimize}}
method: random
parameters:
  fractals.priors.spectral_beta_target: {{distribution: uniform, min: 0.5, max: 1.5}}
run_cap: 2
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    assert err.value.path == "parameters.fractals.priors.spectral_beta_target"
    assert "fractals.priors.warmup_steps=1000" in str(err.value)
    path.write_text(path.read_text().replace("trainer.max_epochs=2,", "trainer.max_epochs=2, fractals.priors.warmup_steps=2,"))
    load_sweep(path)


def test_sampling_the_priors_with_fractals_switched_off_is_refused(tmp_path):
    path = tmp_path / "u.yaml"
    path.write_text(HEAD.replace("trainer.max_epochs=1,", "trainer.max_epochs=1, fractals.enable=false,") + """\
method: random
parameters:
  fractals.priors.lambda_spec: {distribution: log_uniform, min: 1e-3, max: 1e-1}
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    assert err.value.path == "parameters.fractals.priors.lambda_spec" and "fractals.enable=false" in str(err.value)


def test_an_auto_true_false_switch_takes_booleans(tmp_path):
    # fractals.priors.compile takes 'auto', true or false (fractals.priors.FractalPriors); the config's 'auto' made
    # the check refuse true/false as "value does not fit the config's str"
    path = _sweep(tmp_path, """\
method: grid
parameters:
  fractals.priors.compile: {distribution: grid, values: [auto, false, true]}
run_cap: 1
""")
    sweep = load_sweep(path, check_build=True)
    assert trial_config(sweep.base, {"fractals.priors.compile": False})["fractals"]["priors"]["compile"] is False
    bad = _sweep(tmp_path, """\
method: grid
parameters:
  model.ssm.kernels: {distribution: grid, values: [auto, false]}
run_cap: 1
""", name="bad.yaml")
    with pytest.raises(SweepFileError, match="kernels"):  # the builder still refuses a switch that is no switch
        load_sweep(bad, check_build=True)


def test_method_grid_with_a_categorical_parameter_is_refused(tmp_path):
    # W&B's grid tries every listed value; here the categorical was drawn at random once per grid point, so with a
    # grid of 2 and a categorical of 3 values one value was never tried and the researcher could not tell
    path = _sweep(tmp_path, """\
method: grid
parameters:
  fractals.priors.lambda_spec: {distribution: grid, values: [0.0, 0.05]}
  model.perceiver.n_heads: {distribution: categorical, values: [1, 2, 4]}
run_cap: 1
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path, check_config=False)
    assert err.value.path == "parameters.model.perceiver.n_heads" and "distribution: grid" in str(err.value)


def test_sampling_criticality_with_it_switched_off_is_refused(tmp_path):
    # criticality.enable is false by default: a sweep over its weight trained every trial alike
    path = _sweep(tmp_path, """\
method: random
parameters:
  criticality.weight: {distribution: log_uniform, min: 1e-3, max: 1e-1}
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    assert err.value.path == "parameters.criticality.weight" and "criticality.enable=false" in str(err.value)
    path.write_text(path.read_text().replace("trainer.max_epochs=1,", "trainer.max_epochs=1, criticality.enable=true,"))
    load_sweep(path)


def test_uniform_over_an_integer_key_left_null_is_refused_at_validate(tmp_path):
    # optim.total_steps is null in the config and takes integers: the edges 10.0 and 1000.0 built, and every trial,
    # drawing 123.45, failed with "needs an integer"
    path = _sweep(tmp_path, """\
method: random
parameters:
  optim.total_steps: {distribution: log_uniform, min: 10, max: 1000}
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path, check_build=True)
    assert err.value.path == "parameters.optim.total_steps" and "allowed: distribution: int" in str(err.value)


def test_a_quoted_data_folder_with_parentheses_or_commas_reaches_the_trials(tmp_path):
    # absolute_data_paths stripped the quotes the user put around data.root, so Hydra refused "(" and split at ","
    # and `fmx sweep validate` died with a traceback
    from fmx.config import absolute_data_paths

    path = tmp_path / "u.yaml"
    path.write_text("""\
name: user
base: [model=tiny, data=files, "data.root='eeg (2024), run 1'", trainer.max_epochs=1]
metric: {name: val/loss, goal: minimize}
method: random
parameters:
  data.window: {distribution: categorical, values: [256, 512]}
""")
    sweep = load_sweep(path, check_build=True)  # the folder is not here: left to the trials, but it composes
    cfg = trial_config(absolute_data_paths(sweep.base, tmp_path), {})
    assert cfg["data"]["root"] == str(tmp_path / "eeg (2024), run 1")


def test_a_group_option_a_base_override_does_not_fit_is_not_called_unknown(tmp_path):
    # data.n_train exists for data=synthetic only: the error said "unknown option of config group; got 'files';
    # allowed: bytes, files, ..." (files listed as allowed)
    path = tmp_path / "u.yaml"
    path.write_text("""\
name: user
base: [model=tiny, data.n_train=32]
metric: {name: val/loss, goal: minimize}
method: grid
parameters:
  data: {distribution: grid, values: [synthetic, files]}
run_cap: 1
""")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    msg = str(err.value)
    assert err.value.path == "parameters.data" and "unknown option" not in msg and "n_train" in msg, msg


def test_a_colon_in_a_base_entry_says_to_write_key_equals_value(tmp_path):
    # `- trainer.max_epochs: 2` is a YAML mapping: the error was pydantic's "Input should be a valid string"
    path = tmp_path / "u.yaml"
    path.write_text("name: user\nbase:\n  - model=tiny\n  - trainer.max_epochs: 2\n"
                    "metric: {name: val/loss, goal: minimize}\nmethod: random\n")
    with pytest.raises(SweepFileError) as err:
        load_sweep(path, check_config=False)
    assert err.value.path == "base[1]" and "key=value" in str(err.value) and "valid string" not in str(err.value)


def test_status_given_the_sweep_file_or_a_run_id_names_the_sweep_to_pass(tmp_path, monkeypatch):
    # `fmx sweep status sweeps/x.yaml` (as for validate/run) and the id `run` printed said only "no sweep named ..."
    from fmx.commands.sweep import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FMX_STORAGE_PATH", raising=False)
    (tmp_path / "runs" / "ray").mkdir(parents=True)
    path = _sweep(tmp_path, "method: random\n")
    result = runner.invoke(app, ["status", path.name], terminal_width=300)
    assert result.exit_code == 2 and "try user" in result.output, result.output
    result = runner.invoke(app, ["status", "user-20261130-084214-166388"], terminal_width=300)
    assert result.exit_code == 2 and "try user" in result.output, result.output


def test_run_on_a_local_ray_refuses_a_data_folder_that_is_not_here(tmp_path, monkeypatch):
    # validate leaves a missing data.root to a cluster's nodes; a local Ray's trials then each failed on it, a
    # minute apiece, after Ray had started
    from fmx.commands.sweep import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = tmp_path / "u.yaml"
    path.write_text("""\
name: user
base: [model=tiny, data=files, data.root=../no-such-recordings, trainer.max_epochs=1]
metric: {name: val/loss, goal: minimize}
method: random
parameters:
  data.window: {distribution: categorical, values: [256, 512]}
""")
    result = runner.invoke(app, ["run", str(path)], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "base[2]: data.root" in result.output and "does not exist" in result.output
    assert not (tmp_path / "runs").exists()  # stopped before any checkpoint folder or MLflow store was made


def test_a_sampled_relative_data_folder_is_made_absolute_for_the_workers(tmp_path):
    # base data.root was made absolute for the Ray workers (another working directory), a sampled one was not:
    # every trial of a sweep over datasets failed with "data.root: 'rec/a' is not a folder"
    from fmx.schema import parse_sweep
    from fmx.search import search_space

    sweep = parse_sweep({"name": "ds", "base": ["model=tiny", "data=files", "data.root=rec/a"], "method": "grid",
                         "metric": {"name": "val/loss", "goal": "minimize"}, "run_cap": 1,
                         "parameters": {"data.root": {"distribution": "grid", "values": ["rec/a", "/abs/b", "s3://x/y"]},
                                        "data.window": {"value": 256}}})
    space = search_space(sweep, root=tmp_path)["params"]
    assert space["data.root"]["grid_search"] == [str(tmp_path / "rec" / "a"), "/abs/b", "s3://x/y"]
    assert space["data.window"] == 256
    assert sweep.parameters["data.root"].values[0] == "rec/a"  # the sweep itself (pointer, sweep file) unchanged
