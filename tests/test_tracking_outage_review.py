"""A tracking outage in the middle of a sweep: training and acceptance results must survive it, and the sweep file
checks must refuse URIs that lost a slash before anything runs."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fixtures_servers import BIN, _spawn, _wait_http, free_port, start_mlflow_server, stop_group
from fmx import tracking
from fmx.train_worker import RankZeroMlflowLogger


@pytest.fixture
def fail_fast(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


# ------------------------------------------------------------------------------ item 1: metrics during an outage
def test_an_unreachable_server_does_not_kill_training_and_the_metrics_are_kept(tmp_path, fail_fast, capsys):
    # Was: the first log_metrics after MLflow's retry window raised, and the trial (hours of training) died
    uri = f"http://127.0.0.1:{free_port()}"
    logger = RankZeroMlflowLogger(tracking_uri=uri, run_id="r1", spool_dir=tmp_path)
    t0 = time.monotonic()
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.log_metrics({"train/loss": 1.25, "lr": 0.1}, step=2)
    out = capsys.readouterr().out
    assert out.count("WARNING") == 1 and uri in out and str(logger.spool_path) in out
    lines = [json.loads(x) for x in logger.spool_path.read_text().splitlines()]
    assert [(d["key"], d["value"], d["step"]) for d in lines] == [("train/loss", 1.5, 1), ("train/loss", 1.25, 2),
                                                                   ("lr", 0.1, 2)]
    logger.finalize("success")
    out = capsys.readouterr().out
    assert "still unreachable" in out and str(logger.spool_path) in out and "r1" in out
    assert time.monotonic() - t0 < 15
    assert logger.spool_path.exists()


def test_metrics_go_to_mlflow_as_before_when_it_answers(tmp_path):
    uri = tracking.resolve_tracking_uri("mlflow", root=tmp_path)
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "ok")
    run_id, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "s"}, run_name="s")
    logger = RankZeroMlflowLogger(tracking_uri=uri, run_id=run_id, spool_dir=tmp_path / "spool")
    logger.log_metrics({"val/loss": 0.5}, step=3)
    logger.finalize("success")
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "val/loss")] == [(3, 0.5)]
    assert not logger.spool_path.exists()


def _restart_on_same_port(server, tmp: Path):
    port = server.tracking_uri.rsplit(":", 1)[1]
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", port, "--workers", "1",
           "--backend-store-uri", server.backend_uri, "--artifacts-destination", server.artifacts_destination]
    log = tmp / "mlflow_server_again.log"
    proc = _spawn(cmd, log=log, env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), cwd=tmp)
    try:
        _wait_http(f"{server.tracking_uri}/health", timeout_s=90, proc=proc, log=log)
    except BaseException:
        stop_group(proc)
        raise
    return proc


@pytest.mark.slow
def test_metrics_kept_while_the_server_was_killed_reach_it_when_it_is_back(tmp_path, fail_fast, capsys):
    server = start_mlflow_server(tmp_path / "ml")
    proc = None
    try:
        c = tracking.client(server.tracking_uri)
        exp = tracking.ensure_experiment(c, "outage")
        run_id, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "s"}, run_name="s")
        logger = RankZeroMlflowLogger(tracking_uri=server.tracking_uri, run_id=run_id, spool_dir=tmp_path,
                                      retry_s=0.0)
        logger.log_metrics({"train/loss": 3.0}, step=1)
        server.stop()  # our own server, by its process group
        logger.log_metrics({"train/loss": 2.0}, step=2)  # no exception: training goes on
        logger.log_metrics({"train/loss": 1.0}, step=3)
        assert len(logger.spool_path.read_text().splitlines()) == 2
        assert capsys.readouterr().out.count("WARNING") == 1
        proc = _restart_on_same_port(server, tmp_path / "ml")
        logger.log_metrics({"train/loss": 0.5}, step=4)
        logger.finalize("success")
        history = tracking.client(server.tracking_uri).get_metric_history(run_id, "train/loss")
        assert sorted((m.step, m.value) for m in history) == [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5)]
        assert not logger.spool_path.exists()
    finally:
        server.stop()
        if proc is not None:
            stop_group(proc)


# ------------------------------------------------------------------- item 2: the acceptance report outlives MLflow
def _report():
    from fmx.acceptance import AcceptanceReport

    return AcceptanceReport(results={"numerics": {"pass": True, "beta_err": 0.125}})


def test_an_acceptance_report_is_saved_before_it_is_logged_and_survives_an_outage(tmp_path, fail_fast, capsys):
    # Was: computed, then lost when log_metrics/log_json raised (resume ran the benchmarks again)
    from fmx import runner
    from fmx import storage as st

    target = st.resolve_storage(str(tmp_path / "ray"))
    c = tracking.client(f"http://127.0.0.1:{free_port()}")
    rel = f"sw/trials/t1/{runner.ACCEPTANCE_FILE}"
    saved = runner.record_acceptance(c, "r1", _report(), target=target, rel=rel, metric="val/loss", default_step=7)
    assert json.loads(Path(saved).read_text()) == _report().to_dict()
    assert json.loads(st.read_bytes(target, rel))["benchmarks"]["numerics"]["beta_err"] == 0.125
    out = capsys.readouterr().out
    assert "not logged to MLflow" in out and saved in out


def test_an_acceptance_report_is_logged_at_the_last_validation_step(tmp_path):
    from fmx import runner
    from fmx import storage as st

    uri = tracking.resolve_tracking_uri("mlflow", root=tmp_path)
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "acc")
    run_id, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "s"}, run_name="s")
    tracking.log_metrics(c, run_id, {"val/loss": 1.0}, step=4)
    runner.record_acceptance(c, run_id, _report(), target=st.resolve_storage(str(tmp_path / "ray")),
                             rel="s/trials/t/acceptance.json", metric="val/loss", default_step=9)
    history = c.get_metric_history(run_id, "acceptance/numerics_beta_err")
    assert [(m.step, m.value) for m in history] == [(4, 0.125)]
    assert "acceptance/acceptance.json" in [a.path for a in c.list_artifacts(run_id, "acceptance")]


# ----------------------------------------------------------------------- item 3: one pass over a grid by default
def _smoke(**changes):
    import yaml

    d = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml").read_text())
    d.pop("run_cap", None)
    d.update(changes)
    return d


GRID = {"optim.lr": {"distribution": "grid", "values": [0.1, 0.2, 0.3]}}


def test_a_grid_sweep_without_run_cap_makes_one_pass_not_eight_identical_ones():
    # Was: run_cap defaulted to 8 for grid too: 8 passes over the grid, every trial with the same seed
    from fmx.runner import planned_trials
    from fmx.schema import parse_sweep

    sweep = parse_sweep(_smoke(method="grid", parameters=GRID))
    assert sweep.run_cap == 1 and planned_trials(sweep) == 3
    assert planned_trials(parse_sweep(_smoke(method="grid", parameters=GRID, run_cap=2))) == 6  # asked for: kept
    assert parse_sweep(_smoke(method="random", parameters=GRID)).run_cap == 8  # random: samples, as before


# ------------------------------------------------------------ item 4: URIs with a lost slash refused at validate
@pytest.mark.parametrize(("key", "value", "words"), [
    ("storage.path", "s3:/bucket/ray", r"S3 URI missing a slash: write s3://bucket/prefix"),
    ("storage.path", "S3:/bucket", r"S3 URI missing a slash"),
    ("tracking.uri", str(Path("http://127.0.0.1:5000")), r"// missing.*http\(s\)://HOST:PORT"),
    ("tracking.uri", "mlflow.svc:5000", r"// missing"),
    ("tracking.uri", "sqlite:/runs/mlflow.db", r"// missing.*sqlite:///path.db"),
])
def test_a_uri_missing_a_slash_is_refused_by_validate_naming_the_key(key, value, words):
    # Was: accepted by `fmx sweep validate`; refused only by `fmx sweep run`, after the checks had said OK
    from fmx.schema import SweepFileError, parse_sweep

    section, field = key.split(".")
    with pytest.raises(SweepFileError, match=words) as err:
        parse_sweep(_smoke(**{section: {field: value}}))
    assert key in str(err.value)


@pytest.mark.parametrize(("key", "value"), [("storage.path", "runs/s3_ckpt"), ("storage.path", "s3://b/ray"),
                                            ("tracking.uri", "runs/mlruns"), ("tracking.uri", "http://h:5000"),
                                            ("tracking.uri", "sqlite:///runs/mlflow.db")])
def test_well_formed_targets_still_validate(key, value):
    from fmx.schema import parse_sweep

    section, field = key.split(".")
    sweep = parse_sweep(_smoke(**{section: {field: value}}))
    assert getattr(getattr(sweep, section), field) == value


def test_a_saved_acceptance_report_keeps_numpy_and_torch_numbers_as_numbers(tmp_path):
    import numpy as np
    import torch

    from fmx import runner
    from fmx import storage as st
    from fmx.acceptance import AcceptanceReport

    report = AcceptanceReport(results={"speed": {"ms": np.float32(2.5), "steps": torch.tensor(3), "pass": True}})
    c = tracking.client(tracking.resolve_tracking_uri("mlflow", root=tmp_path))
    saved = runner.record_acceptance(c, "missing-run", report, target=st.resolve_storage(str(tmp_path / "ray")),
                                     rel="s/t/acceptance.json", metric="val/loss", default_step=0)
    back = AcceptanceReport(results=json.loads(Path(saved).read_text())["benchmarks"])
    assert back.metrics() == {"acceptance/speed_ms": 2.5, "acceptance/speed_steps": 3.0, "acceptance/speed_pass": 1.0}
