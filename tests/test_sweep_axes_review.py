"""Lead review of what sweeps do with their inputs: an axis the trial never reads is refused at validate (the
two-moons MLP and the byte LM train with their own optimiser at model.lr and no fractal priors, and a data group
with its own batch size overrides trainer.batch_size), diverged trials never rank best, a dead --address is refused
before any folder is made."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fmx.schema import SweepFileError, load_sweep

REPO = Path(__file__).resolve().parents[1]
MOONS = yaml.safe_load((REPO / "sweeps" / "criticality_two_moons.yaml").read_text())


def _moons_sweep(tmp_path: Path, parameters: dict, base_extra=()) -> Path:
    data = dict(MOONS, parameters={"model.target": {"distribution": "grid", "values": [0.5, 1.0]}, **parameters})
    data["base"] = [*MOONS["base"], *base_extra]
    path = tmp_path / "moons.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("key,spec,words", [
    ("optim.grad_clip", {"distribution": "uniform", "min": 0.5, "max": 2.0}, "does not read optim"),
    ("optim.lr", {"distribution": "log_uniform", "min": 1e-4, "max": 1e-2}, "model.lr"),
    ("fractals.priors.lambda_spec", {"distribution": "grid", "values": [0.0, 0.1]}, "does not read fractals"),
    ("trainer.batch_size", {"distribution": "grid", "values": [32, 64]}, "data.batch_size=128"),
])
def test_a_two_moons_axis_the_trial_never_reads_is_refused(tmp_path, key, spec, words):
    with pytest.raises(SweepFileError) as err:
        load_sweep(_moons_sweep(tmp_path, {key: spec}), check_build=True)
    msg = str(err.value)
    assert f"parameters.{key}" in msg and "every trial would train alike" in msg and words in msg, msg


def test_read_axes_of_the_same_family_still_validate(tmp_path):
    sweep = load_sweep(_moons_sweep(tmp_path, {"model.lr": {"distribution": "log_uniform", "min": 1e-3, "max": 0.1},
                                               "data.batch_size": {"distribution": "grid",
                                                                   "values": [64, 128]}}), check_build=True)
    assert set(sweep.parameters) == {"model.target", "model.lr", "data.batch_size"}


def test_byte_model_refuses_prior_and_schedule_axes_but_reads_weight_decay():
    from fmx.trial_build import ignored_key_paths

    cfg = {"model": {"family": "fractal_byte", "lr": 3e-3}, "data": {"name": "bytes", "batch_size": 16}}
    ignored = ignored_key_paths(cfg)
    assert {"fractals", "optim.grad_clip", "optim.schedule", "optim.lr", "trainer.batch_size"} <= set(ignored)
    assert "optim.weight_decay" not in ignored and "model" not in ignored
    neurofmx = ignored_key_paths({"model": {"family": "neurofmx"}, "data": {"name": "synthetic", "batch_size": None}})
    assert neurofmx == ()


def test_a_sweep_can_sample_accumulate_grad_batches(tmp_path):
    # conf/trainer/default.yaml lacked the key: the parameter's path was unknown (and `+` cannot be sampled)
    path = tmp_path / "acc.yaml"
    path.write_text("name: acc\nbase: [model=tiny, data=synthetic]\nmethod: grid\nmetric: {name: val/loss, goal: minimize}\n"
                    "parameters:\n  trainer.accumulate_grad_batches: {distribution: grid, values: [1, 2]}\nrun_cap: 1\n")
    sweep = load_sweep(path, check_build=True)
    assert sweep.parameters["trainer.accumulate_grad_batches"].values == [1, 2]


def test_status_table_keeps_same_named_parameters_apart():
    import pandas as pd

    from fmx.commands.sweep import _table

    df = pd.DataFrame({"trial_id": ["a"], "status": ["TERMINATED"], "sweep.model.encoder.dropout": [0.1],
                       "sweep.model.decoder.dropout": [0.2], "sweep.optim.lr": [1e-3], "val/loss": [1.5]})
    headers = [col.header for col in _table(df, "val/loss", title="t").columns]
    assert headers == ["trial_id", "status", "encoder.dropout", "decoder.dropout", "lr", "val/loss"]


def test_diverged_trials_rank_last_and_are_never_the_best(tmp_path):
    import math

    import mlflow
    import pandas as pd

    from fmx import tracking
    from fmx.compare import log_sweep_summary, ranked

    df = pd.DataFrame({"trial_id": list("abcde"), "val/loss": [-math.inf, 2.0, math.nan, 1.0, math.inf]})
    assert list(ranked(df, "val/loss", "min")["trial_id"]) == ["d", "b", "a", "c", "e"]  # -inf ranked first
    assert list(ranked(df, "val/loss", "max")["trial_id"]) == ["b", "d", "a", "c", "e"]

    # every trial diverged: no best/<metric> = inf and no diverged trial tagged as the best
    c = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = c.create_experiment("x", artifact_location=str(tmp_path / "art"))
    parent = c.create_run(exp).info.run_id
    for i, value in enumerate((math.inf, math.nan)):
        child = c.create_run(exp, tags={tracking.TAG_PARENT: parent, tracking.TAG_TRIAL: f"t{i}"}).info.run_id
        c.log_metric(child, "val/loss", value)
    out = log_sweep_summary(c, exp, parent, metric="val/loss", mode="min")
    assert len(out) == 2
    run = c.get_run(parent)
    assert "best/val/loss" not in run.data.metrics and "fmx.best_trial" not in run.data.tags


def test_a_dead_ray_address_is_refused_before_any_folder_is_made(tmp_path, monkeypatch):
    import shutil
    import socket

    from typer.testing import CliRunner

    from fmx.cli import app

    sweep = tmp_path / "smoke.yaml"
    shutil.copy(REPO / "sweeps" / "smoke.yaml", sweep)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FMX_STORAGE_PATH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    res = CliRunner().invoke(app, ["sweep", "run", str(sweep), "--address", f"127.0.0.1:{port}"])
    assert res.exit_code == 2 and "--address" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke.yaml"]  # runs/ray was made before the refusal


@pytest.mark.parametrize("key", ["fractals.metrics.window_size", "fractals.probes.attention_fd_coupling"])
def test_fractals_keys_nothing_reads_are_not_in_the_config(tmp_path, key):
    # both sat in conf/fractals/default.yaml, so a sweep over them validated and every trial trained alike
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: [model=tiny, data=synthetic]\nmethod: grid\nmetric: {name: val/loss, goal: minimize}\n"
                    f"parameters:\n  {key}: {{distribution: grid, values: [1, 2]}}\nrun_cap: 1\n")
    with pytest.raises(SweepFileError, match=rf"parameters\.{key}: unknown config key path"):
        load_sweep(path)


@pytest.mark.parametrize("workers,gpus,backend", [(2, 0.5, "gloo"), (4, 0.25, "gloo"), (1, 0.5, None), (2, 1, None),
                                                   (2, 0, None), (1, 0, None)])
def test_workers_sharing_a_gpu_all_reduce_over_gloo(workers, gpus, backend):
    # beta_star (2 workers x 0.5 GPU) would have packed both DDP ranks on one GPU under NCCL: "Duplicate GPU detected"
    from fmx.runner import process_group_backend

    assert process_group_backend(workers, gpus) == backend


@pytest.mark.parametrize("entry,words", [
    ("optim.lr=0.01", "does not read optim"),
    ("optim.grad_clip=0.5", "does not read optim"),
    ("fractals.priors.lambda_spec=0.3", "does not read fractals"),
    ("trainer.batch_size=64", "data.batch_size=128"),
])
def test_a_two_moons_base_override_nothing_reads_is_refused(tmp_path, entry, words):
    with pytest.raises(SweepFileError) as err:
        load_sweep(_moons_sweep(tmp_path, {}, base_extra=[entry]))
    msg = str(err.value)
    assert f"base[{len(MOONS['base'])}]" in msg and f"no trial reads {entry.split('=')[0]}" in msg and words in msg, msg


def test_base_overrides_that_change_nothing_still_validate(tmp_path):
    # fractals.enable=false (in the shipped sweep) states that the priors are off; restating a default changes nothing;
    # model.lr and optim.lr with model.lr=null are read
    sweep = load_sweep(_moons_sweep(tmp_path, {}, base_extra=["trainer.batch_size=8", "model.lr=0.05"]))
    assert "fractals.enable=false" in sweep.base
    load_sweep(_moons_sweep(tmp_path, {}, base_extra=["model.lr=null", "optim.lr=0.02"]))
