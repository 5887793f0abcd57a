"""Contract fuzz of `fmx` and the sweep file: each input a fuzzer found, pinned.

The contract: a bad input ends with one clear error naming the field, the value and the fix, exit code 2; never a
traceback, never a sweep that validates and then fails at run time for a reason validate could see.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fmx.cli import app

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
runner = CliRunner()


def _validate(path: Path):
    """`fmx sweep validate PATH` in-process; an exception other than typer's exit fails the test."""
    res = runner.invoke(app, ["sweep", "validate", str(path)], catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"traceback instead of an error message: {res.exception!r}") from res.exception
    return res.exit_code, " ".join(res.output.split())


def _smoke_with(tmp_path: Path, fn, name: str = "fuzz.yaml") -> Path:
    data = copy.deepcopy(SMOKE)
    fn(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_infinite_gpus_per_worker_is_an_error_not_a_traceback(tmp_path):
    # int(inf) in the whole-number check raised OverflowError through the CLI
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["resources"].update(gpus_per_worker=float("inf"))))
    assert code == 2 and "resources.gpus_per_worker" in out and "finite" in out, out


@pytest.mark.parametrize("field,value", [("cpus_per_worker", float("inf")), ("cpus_per_worker", 1e-5),
                                         ("gpus_per_worker", 1e-5)])
def test_resources_ray_cannot_schedule_are_refused(tmp_path, field, value):
    # validated, then failed in the trial: int(inf) threads per worker; Ray refuses quantities below 0.0001
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["resources"].update({field: value})))
    assert code == 2 and f"resources.{field}" in out, out


def test_a_file_that_is_not_utf8_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, out = _validate(path)
    assert code == 2 and "latin1.yaml" in out and "UTF-8" in out, out


def test_a_folder_is_reported_as_a_folder_not_as_missing(tmp_path):
    folder = tmp_path / "sweep.yaml"
    folder.mkdir()
    code, out = _validate(folder)
    assert code == 2 and "is a folder" in out and "not found" not in out, out


BAD_TRACKING_URIS = ["bogus://x", "http://", "https://[::1", "sqlite://runs/x.db", "sqlite:///",
                     " sqlite:///runs/mlflow.db", "s3://bucket/mlflow"]


@pytest.mark.parametrize("uri", BAD_TRACKING_URIS)
def test_tracking_uris_mlflow_cannot_open_fail_validation(tmp_path, uri):
    # each validated, then failed after Ray had started (a traceback from MLflow or requests, or minutes of retries)
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["tracking"].update(uri=uri)))
    assert code == 2 and "tracking.uri" in out, out


@pytest.mark.parametrize("uri", BAD_TRACKING_URIS)
def test_compare_with_a_tracking_uri_mlflow_cannot_open_is_a_clean_error(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = runner.invoke(app, ["compare", "nosuch", "--tracking-uri", uri], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2 and "--tracking-uri" in res.output, res.output


def test_run_refuses_an_unusable_mlflow_tracking_uri_before_ray_starts(tmp_path, monkeypatch):
    import fmx.runner

    def reached(*args, **kwargs):
        raise AssertionError("run_sweep (and Ray) reached with an unusable MLFLOW_TRACKING_URI")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    monkeypatch.setattr(fmx.runner, "run_sweep", reached)
    res = runner.invoke(app, ["sweep", "run", str(REPO / "sweeps" / "smoke.yaml")], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2 and "MLFLOW_TRACKING_URI" in res.output, res.output


@pytest.mark.parametrize("override,key", [("trainer.precision=bogus", "trainer.precision"),
                                          ("trainer.limit_train_batches=2.5", "trainer.limit_train_batches"),
                                          ("trainer.val_check_interval=-1", "trainer.val_check_interval"),
                                          ("trainer.limit_val_batches=0", "trainer.limit_val_batches")])
def test_trainer_values_lightning_refuses_fail_validation(tmp_path, override, key):
    # validated, then every trial failed in pl.Trainer(...) (limit_val_batches=0: no val/loss ever reported)
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["base"].append(override)))
    assert code == 2 and key in out, out


def test_a_sampled_trainer_value_lightning_refuses_fails_validation(tmp_path):
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["parameters"].update(
        {"trainer.precision": {"distribution": "categorical", "values": ["32-true", "bf16-mix"]}})))
    assert code == 2 and "parameters.trainer.precision" in out and "bf16-mix" in out, out


@pytest.mark.parametrize("dist", ["grid", "categorical"])
def test_duplicate_values_are_refused(tmp_path, dist):
    # a grid ran the same trials twice; a categorical sampled the repeated value twice as often
    method = "grid" if dist == "grid" else "random"
    code, out = _validate(_smoke_with(tmp_path, lambda d: d.update(method=method, parameters={
        "fractals.priors.lambda_spec": {"distribution": dist, "values": [0.1, 0.2, 0.1]}})))
    assert code == 2 and "parameters.fractals.priors.lambda_spec.values" in out and "twice" in out, out


def test_nan_values_are_refused(tmp_path):
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["parameters"].update(
        {"fractals.priors.lambda_spec": {"value": float("nan")}})))
    assert code == 2 and "parameters.fractals.priors.lambda_spec" in out and "nan" in out.lower(), out


def test_a_whole_file_error_does_not_dump_the_file(tmp_path):
    # grid with tpe: the error's "got" was the whole parsed file, hundreds of characters
    code, out = _validate(_smoke_with(tmp_path, lambda d: d.update(method="tpe", parameters={
        "fractals.priors.lambda_spec": {"distribution": "grid", "values": [0.1, 0.2]}})))
    assert code == 2 and "need method: grid or random" in out and "description" not in out, out


@pytest.mark.parametrize("kind", ["asha", "median"])
def test_a_grace_period_no_trial_outlives_is_refused(tmp_path, kind):
    # grace_period >= max_epochs: early_terminate was silently a no-op (ASHA's max_t was raised above it)
    code, out = _validate(_smoke_with(tmp_path, lambda d: d.update(
        early_terminate={"type": kind, "grace_period": 2})))
    assert code == 2 and "early_terminate.grace_period" in out and "max_epochs" in out, out


@pytest.mark.parametrize("name", ["val/loss ", "val/ loss"])
def test_a_metric_name_with_spaces_is_refused(tmp_path, name):
    # validated; the run then stopped after its first trial: no trial reports "val/loss "
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["metric"].update(name=name)))
    assert code == 2 and "metric.name" in out and "spaces" in out, out


@pytest.mark.parametrize("key,words", [("fractals..priors", "keys under fractals: backbone"),
                                       ("optim.lr.x", "optim.lr holds a value"),
                                       ("optim.betas.5", "optim.betas is a list: indexes 0 to 1")])
def test_an_unknown_key_path_lists_what_exists_where_it_stops_matching(tmp_path, key, words):
    # "allowed: keys under fractals.:" listed the root's keys; under optim.lr it listed them too
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["parameters"].update({key: {"value": 0.5}})))
    assert code == 2 and f"parameters.{key}" in out and words in out, out


def test_an_empty_section_says_it_is_null(tmp_path):
    code, out = _validate(_smoke_with(tmp_path, lambda d: d.update(base=None)))
    assert code == 2 and "base: Input should be a valid list; got null" in out, out


@pytest.mark.parametrize("mutate,path,words", [
    (lambda d: d["base"].append("optim.lr=inf"), "base[7]", "optim.lr"),
    (lambda d: d["base"].append("data.fs=0"), "base[7]", "data.fs"),
    (lambda d: d["parameters"].update({"fractals.priors.lambda_spec": {"distribution": "uniform", "min": -5.0,
                                                                       "max": 5.0}}),
     "parameters.fractals.priors.lambda_spec", "lambda_spec"),
    (lambda d: d["base"].__setitem__(1, "data=files"), "base[1]", "data.root"),
])
def test_values_the_model_or_data_builder_refuses_fail_validation(tmp_path, mutate, path, words):
    # each validated, then every trial failed in models.registry after Ray had started
    code, out = _validate(_smoke_with(tmp_path, mutate))
    assert code == 2 and f"{path}:" in out and "would fail to build" in out and words in out, out


@pytest.mark.parametrize("port", ["99999", "-5", "0"])
def test_ui_refuses_a_port_outside_1_to_65535_before_starting_mlflow(port):
    # mlflow ui was started and died with uvicorn's OverflowError traceback, and `fmx ui` exited 0
    res = runner.invoke(app, ["ui", "--port", port], catch_exceptions=False)
    assert res.exit_code == 2 and "--port" in res.output, res.output


def test_fingerprint_fit_refuses_an_unusable_mlflow_uri_before_fitting(tmp_path):
    # the whole job ran first; MLflow refused the URI only when logging, at the end
    res = runner.invoke(app, ["fingerprint", "fit", str(tmp_path / "nodata"), "--out", str(tmp_path / "out"),
                              "--serial", "--mlflow", "bogus://x"], catch_exceptions=False)
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "--mlflow" in out and "bogus://x" in out, out


def test_a_builder_error_names_the_sampled_parameter_behind_it(tmp_path):
    # "model.ssm: n_taps: must be >= 1" was blamed on base[0] (model=tiny), not on the n_taps distribution
    code, out = _validate(_smoke_with(tmp_path, lambda d: (
        d["base"].append("fractals.backbone.fractional_kernels.enable=true"),
        d["parameters"].update({"fractals.backbone.fractional_kernels.n_taps": {"distribution": "int", "min": 0,
                                                                                "max": 9}}))))
    assert code == 2 and "parameters.fractals.backbone.fractional_kernels.n_taps:" in out and "n_taps" in out, out


def test_int_bounds_beyond_int64_are_refused(tmp_path):
    # Tune's randint (method random/grid) raised "high is out of bounds for int64" in the first trial
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["parameters"].update(
        {"trainer.max_epochs": {"distribution": "int", "min": 1, "max": 2**70}})))
    assert code == 2 and "parameters.trainer.max_epochs" in out and "2**63" in out, out


def test_validate_checks_a_wide_model_without_allocating_it(tmp_path):
    # the model is built on the meta device: a width that needs gigabytes validates in a moment, as it should
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["parameters"].update(
        {"model.d_model": {"distribution": "categorical", "values": [64, 16384]}})))
    assert code == 0, out


@pytest.mark.parametrize("cmd", [["sweep", "run", str(REPO / "sweeps" / "smoke.yaml")], ["sweep", "resume", "smoke"]])
@pytest.mark.parametrize("cpus", ["-1", "0"])
def test_num_cpus_below_one_is_a_usage_error_before_ray_starts(tmp_path, monkeypatch, cmd, cpus):
    # Ray was started with CPU -1 (or 0) and refused it (or every trial) afterwards, not naming --num-cpus
    import fmx.runner

    def reached(*args, **kwargs):
        raise AssertionError("run_sweep (and Ray) reached with --num-cpus < 1")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fmx.runner, "run_sweep", reached)
    res = runner.invoke(app, [*cmd, "--num-cpus", cpus], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2 and "--num-cpus" in res.output, res.output


def _store_with_a_sweep(tmp_path: Path) -> str:
    from fmx import tracking

    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "fmx-fuzz")
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "fz-1", tracking.TAG_KIND: "sweep"},
                                           run_name="fz-1", extra_tags={tracking.TAG_SWEEP: "fz"})
    tracking.log_params(c, parent, {"sweep.metric": "val/loss", "sweep.goal": "minimize"})
    rid, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "fz-1", tracking.TAG_TRIAL: "t0",
                                                      tracking.TAG_PARENT: parent}, run_name="t0")
    tracking.log_metrics(c, rid, {"val/loss": 0.5})
    tracking.end_run(c, rid)
    return uri


@pytest.mark.parametrize("sub", ["", "sub"])
def test_compare_out_that_cannot_be_a_folder_is_a_clean_error(tmp_path, monkeypatch, sub):
    # --out naming a file (or a folder under one) ended in FileExistsError / NotADirectoryError tracebacks
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = _store_with_a_sweep(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / sub if sub else blocker
    res = runner.invoke(app, ["compare", "fz", "--tracking-uri", uri, "--out", str(out)], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "--out" in text and str(out) in text, text


@pytest.mark.parametrize("cmd", ["status", "resume"])
@pytest.mark.parametrize("content,words", [("{}", "lacks sweep_id"), ("[]", "is not a sweep pointer"),
                                           ("not json", "is not valid JSON"),
                                           ('{"sweep_id": "x-1", "tracking_uri": "sqlite:///m.db", "experiment_id": '
                                            '"1", "parent_run_id": "p", "sweep": {"name": "x"}}', "metric")])
def test_a_damaged_sweep_pointer_is_a_clean_error_naming_it(tmp_path, cmd, content, words):
    # KeyError / TypeError / pydantic ValidationError tracebacks, or json's bare "Expecting value: line 1 column 1"
    (tmp_path / "x.latest.json").write_text(content)
    res = runner.invoke(app, ["sweep", cmd, "x", "--storage", str(tmp_path)], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "x.latest.json" in text and words in text, text


def test_a_key_path_a_sampled_model_lacks_fails_validation(tmp_path):
    # model.target, model.mode exist in model=two_moons (the base), not in model=tiny, which the sweep samples: every
    # tiny trial failed with KeyError('model.target') in trial_config
    data = yaml.safe_load((REPO / "sweeps" / "criticality_two_moons.yaml").read_text())
    data["parameters"]["model"] = {"distribution": "grid", "values": ["two_moons", "tiny"]}
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out = _validate(path)
    assert code == 2 and "unknown config key path when a trial samples model=tiny" in out, out


def test_a_sampled_model_the_data_cannot_feed_fails_validation(tmp_path):
    # model two_moons on data=synthetic: every two_moons trial failed in models.registry
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["parameters"].update(
        {"model": {"distribution": "categorical", "values": ["tiny", "two_moons"]}})))
    assert code == 2 and "parameters.model" in out and "two_moons" in out, out


@pytest.mark.parametrize("item,words", [("seed=5", "the sweep's own seed"),
                                        ("+nosuch.key=1", "adds the root section 'nosuch'")])
def test_base_entries_no_trial_sees_are_refused(tmp_path, item, words):
    # base seed=5 validated and every trial ran with the sweep's seed 0; +nosuch.key=1 was read by nothing
    code, out = _validate(_smoke_with(tmp_path, lambda d: d["base"].append(item)))
    assert code == 2 and "base[7]" in out and words in out, out
