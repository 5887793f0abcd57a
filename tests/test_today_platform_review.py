"""Review of the platform code written in session 6 (trial_build, targets, storage, lifecycle, fingerprint)."""
from __future__ import annotations

import pytest

from fmx.schema import SweepFileError, load_sweep
from fmx.trial_build import _corners

MIXED = """name: mix
base: [trainer.max_epochs=1]
method: grid
metric: {name: val/loss, goal: minimize}
parameters:
  model: {distribution: grid, values: [tiny, two_moons]}
  data: {distribution: grid, values: [synthetic, two_moons]}
early_terminate: {type: none}
run_cap: 1
max_concurrent: 1
resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}
seed: 0
"""


def test_corners_of_two_small_grids_hold_every_combination(tmp_path):
    # the corners paired value i of every list: (tiny, two_moons) and (two_moons, synthetic) were never built,
    # though the grid runs them (and both fail: data made for another model family)
    path = tmp_path / "mix.yaml"
    path.write_text(MIXED)
    sweep = load_sweep(path, check_config=False)
    pairs = {(c["model"], c["data"]) for c in _corners(sweep)}
    assert pairs == {("tiny", "synthetic"), ("tiny", "two_moons"), ("two_moons", "synthetic"),
                     ("two_moons", "two_moons")}


def test_a_grid_of_models_and_data_that_do_not_fit_is_refused(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text(MIXED)
    with pytest.raises(SweepFileError, match="data"):
        load_sweep(path, check_build=True)


def test_corners_put_each_numeric_edge_with_each_categorical_value(tmp_path):
    path = tmp_path / "num.yaml"
    path.write_text(MIXED.replace("  model: {distribution: grid, values: [tiny, two_moons]}\n",
                                  "  optim.lr: {distribution: uniform, min: 0.001, max: 0.1}\n"))
    sweep = load_sweep(path, check_config=False)
    combos = {(c["optim.lr"], c["data"]) for c in _corners(sweep)}
    assert combos == {(0.001, "synthetic"), (0.1, "synthetic"), (0.001, "two_moons"), (0.1, "two_moons")}


@pytest.mark.parametrize("uri", ["s3://AKIAABCDEFGHIJKLMNOP:12/ab+cdEF@bucket/ray",
                                 "s3://AKIAABCDEFGHIJKLMNOP:/abcdEF@bucket/ray"])
def test_an_s3_secret_starting_with_digits_then_slash_is_found(uri):
    # digits then '/' after the colon were taken for a port (http://host:5000/a@b); an S3 bucket has no port
    from fmx.targets import mask_credentials, uri_has_password

    assert uri_has_password(uri)
    assert mask_credentials(uri) == "s3://***@bucket/ray"
    assert mask_credentials(f"failed: {uri} (denied)") == "failed: s3://***@bucket/ray (denied)"


@pytest.mark.parametrize("uri", ["runs/exp@2:1", "sqlite:////abs/path", "http://host:5000", "http://host:5000/a@b",
                                 "s3://bucket/exp@2:1/x", "s3://bucket/a:b/c@d", "postgresql://user@host:5432/db"])
def test_legitimate_uris_are_not_taken_for_credentials(uri):
    from fmx.targets import mask_credentials, uri_has_password

    assert not uri_has_password(uri)
    assert mask_credentials(uri) == uri


def test_optim_lr_is_read_when_the_model_sets_no_lr_of_its_own():
    # two_moons reads optim.lr when model.lr is null, fractal_byte when model has no lr key (~model.lr): refusing
    # the axis then refused a sweep whose trials do differ
    from fmx.trial_build import ignored_key_paths

    moons = {"model": {"family": "two_moons", "lr": None}, "data": {"name": "two_moons", "batch_size": 128}}
    assert "optim" not in ignored_key_paths(moons) and "optim.lr" not in ignored_key_paths(moons)
    assert "optim.weight_decay" in ignored_key_paths(moons)
    byte = {"model": {"family": "fractal_byte"}, "data": {"name": "bytes", "batch_size": 16}}
    assert "optim.lr" not in ignored_key_paths(byte)
    # with their own lr, optim.lr is still refused
    assert "optim" in ignored_key_paths({"model": {"family": "two_moons", "lr": 0.01}, "data": {}})
    assert "optim.lr" in ignored_key_paths({"model": {"family": "fractal_byte", "lr": None}, "data": {}})


def test_a_data_family_mismatch_blames_the_data_entry(tmp_path):
    # the message names data.name first; "model.family" later in it won the tie and blamed parameters.model
    path = tmp_path / "mix.yaml"
    path.write_text(MIXED)
    with pytest.raises(SweepFileError) as err:
        load_sweep(path, check_build=True)
    assert "parameters.data:" in str(err.value) and "parameters.model:" not in str(err.value)


def test_blame_prefers_the_key_the_message_names():
    from types import SimpleNamespace

    from fmx.trial_build import _blame

    sweep = SimpleNamespace(base=["model=tiny"])
    assert _blame(sweep, {"model": "tiny", "data": "two_moons"},
                  "data.name: 'two_moons' makes batches for model.family 'two_moons', not 'neurofmx'")[0] \
        == "parameters.data"
    assert _blame(sweep, {"model": "small", "model.ssm.n_taps": 0}, "model.ssm: n_taps: must be >= 1")[0] \
        == "parameters.model.ssm.n_taps"
    assert _blame(sweep, {"data": "synthetic", "data.fs": 0}, "data.fs: must be > 0")[0] == "parameters.data.fs"


def test_a_bad_value_late_in_a_long_list_is_found(tmp_path):
    # the corners held only the first 6 values of a list: the 8th, a negative spectral target, validated
    values = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, -1.0, 1.3, 1.4]
    path = tmp_path / "long.yaml"
    path.write_text(MIXED.replace("base: [trainer.max_epochs=1]", "base: [model=two_moons, data=two_moons]")
                    .replace("  model: {distribution: grid, values: [tiny, two_moons]}\n",
                             f"  model.target: {{distribution: grid, values: {values}}}\n")
                    .replace("  data: {distribution: grid, values: [synthetic, two_moons]}\n",
                             "  model.weight: {distribution: uniform, min: 1.0, max: 5.0}\n"
                             "  seed: {distribution: grid, values: [0, 1]}\n"))
    sweep = load_sweep(path, check_config=False)
    assert {c["model.target"] for c in _corners(sweep)} == set(values)
    with pytest.raises(SweepFileError, match="model.target"):
        load_sweep(path, check_build=True)
