"""The `fmx` command: sweep validate/status/resume/submit, compare and ui, through typer's runner (no servers)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fmx.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_validate_prints_the_parameters_of_a_good_file():
    res = _invoke("sweep", "validate", str(REPO / "sweeps" / "beta_star.yaml"))
    assert res.exit_code == 0, res.output
    assert "fractals.priors.spectral_beta_target" in res.output and "method=tpe" in res.output


def test_validate_reports_file_path_value_and_allowed_with_exit_2(tmp_path):
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["parameters"]["fractals.priors.lamda_spec"] = {"distribution": "uniform", "min": 0.0, "max": 0.1}
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = _invoke("sweep", "validate", str(bad))
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "typo.yaml" in out and "parameters.fractals.priors.lamda_spec" in out
    assert "unknown config key path" in out and "lambda_spec" in out


def test_errors_show_bracketed_values_as_written(tmp_path):
    # the console read "[dfa,higuchi]" in the user's own value as markup and dropped it ("got '...nosuch='")
    data = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    data["base"].append("fractals.priors.nosuch=[dfa,higuchi]")
    bad = tmp_path / "brackets.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = _invoke("sweep", "validate", str(bad))
    assert res.exit_code == 2 and "got 'fractals.priors.nosuch=[dfa,higuchi]'" in res.output, res.output
    res = _invoke("sweep", "status", "nosuch", "--storage", str(tmp_path / "[/]"))
    assert res.exit_code == 2 and "[/]" in res.output, res.output


def test_status_and_resume_of_an_unknown_sweep_explain_where_they_looked(tmp_path):
    for cmd in ("status", "resume"):
        res = _invoke("sweep", cmd, "nosuch", "--storage", str(tmp_path))
        assert res.exit_code == 2
        assert "no sweep named 'nosuch'" in " ".join(res.output.split())
        # a mistyped --storage is reported, not created as an empty folder
        res = _invoke("sweep", cmd, "nosuch", "--storage", str(tmp_path / "typo" / "ray"))
        assert res.exit_code == 2 and "no sweep named 'nosuch'" in " ".join(res.output.split())
        assert not (tmp_path / "typo").exists()


def test_status_reads_the_pointer_and_mlflow(tmp_path, monkeypatch):
    """A sweep recorded in a local sqlite store: status lists its trials by metric; in a pod the
    defaults yield to FMX_STORAGE_PATH and MLFLOW_TRACKING_URI, as for `fmx sweep run`."""
    from fmx import tracking
    from fmx.schema import load_sweep

    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "fmx-cli")
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_KIND: "sweep"},
                                           run_name="smoke-1", extra_tags={tracking.TAG_SWEEP: "smoke"})
    tracking.log_params(c, parent, {"sweep.metric": "val/loss", "sweep.goal": "minimize"})
    for i, loss in enumerate((0.5, 0.3)):
        rid, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "smoke-1", tracking.TAG_TRIAL: f"t{i}",
                                                          tracking.TAG_PARENT: parent}, run_name=f"t{i}")
        tracking.log_metrics(c, rid, {"val/loss": loss})
        tracking.end_run(c, rid)
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml", check_config=False)
    (tmp_path / "smoke.latest.json").write_text(json.dumps({
        "sweep_id": "smoke-1", "tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent,
        "sweep": sweep.model_dump(mode="json"), "storage_uri": str(tmp_path)}))
    res = _invoke("sweep", "status", "smoke", "--storage", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "smoke-1" in res.output and "FINISHED=2" in res.output
    assert res.output.index("t1") < res.output.index("t0")  # best first

    out = tmp_path / "cmp"
    res = _invoke("compare", "smoke", "--tracking-uri", uri, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert (out / "trials.csv").read_text().splitlines()[1].startswith("t1")
    assert (out / "best_trials.png").stat().st_size > 1000

    monkeypatch.setenv("FMX_STORAGE_PATH", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = _invoke("sweep", "status", "smoke")
    assert res.exit_code == 0 and "FINISHED=2" in res.output, res.output
    res = _invoke("compare", "smoke", "--out", str(tmp_path / "cmp_env"))
    assert res.exit_code == 0 and (tmp_path / "cmp_env" / "trials.csv").exists(), res.output


def test_compare_unknown_sweep(tmp_path):
    res = _invoke("compare", "nosuch", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert res.exit_code == 2 and "no sweep 'nosuch'" in " ".join(res.output.split())


@pytest.mark.parametrize("cmd", [("compare", "smoke"), ("ui",)])
def test_a_file_store_tracking_uri_is_a_clean_error_naming_the_option(tmp_path, monkeypatch, cmd):
    # MLflow 3 refuses file stores: a traceback from deep inside MLflow would not say which option to change
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    res = _invoke(*cmd, "--tracking-uri", (tmp_path / "mlruns").as_uri())
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "--tracking-uri" in out and "MLFLOW_ALLOW_FILE_STORE" in out, res.output


def test_compare_with_a_password_in_the_uri_or_no_server_is_a_clean_error(tmp_path, monkeypatch):
    # the password came back in MLflow's traceback; an unreachable server gave a traceback too
    import socket

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = runner.invoke(app, ["compare", "smoke", "--tracking-uri", f"http://u:hunter2s3cr3t@127.0.0.1:{port}"])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "hunter2s3cr3t" not in res.output and "MLFLOW_TRACKING_PASSWORD" in res.output
    res = runner.invoke(app, ["compare", "smoke", "--tracking-uri", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert f"127.0.0.1:{port}" in " ".join(res.output.split())


def test_status_when_the_sweeps_mlflow_server_is_down_is_a_clean_error(tmp_path, monkeypatch):
    import socket

    from fmx.schema import load_sweep

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml", check_config=False)
    (tmp_path / "smoke.latest.json").write_text(json.dumps({
        "sweep_id": "smoke-1", "tracking_uri": f"http://127.0.0.1:{port}", "experiment_id": "1", "parent_run_id": "p",
        "sweep": sweep.model_dump(mode="json"), "storage_uri": str(tmp_path)}))
    res = runner.invoke(app, ["sweep", "status", "smoke", "--storage", str(tmp_path)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert f"cannot read the MLflow store http://127.0.0.1:{port}" in " ".join(res.output.split())


def test_submit_without_address_names_the_options(monkeypatch):
    monkeypatch.delenv("FMX_RAY_ADDRESS", raising=False)
    res = _invoke("sweep", "submit", str(REPO / "sweeps" / "smoke.yaml"))
    assert res.exit_code == 2
    assert "address" in res.output


def test_ui_command_for_local_and_remote_stores():
    from fmx.commands.sweep import ui_command

    assert ui_command("sqlite:////x/runs/mlflow.db") == "fmx ui --tracking-uri sqlite:////x/runs/mlflow.db"
    assert ui_command("http://127.0.0.1:5000") == "open http://127.0.0.1:5000"


@pytest.mark.parametrize("group", ["sweep", "compare", "ui"])
def test_help_lists_commands(group):
    res = _invoke(group, "--help")
    assert res.exit_code == 0 and "Usage" in res.output


def test_failed_acceptance_shows_its_numbers():
    import pandas as pd

    from fmx.commands.sweep import _acceptance_text

    best = pd.Series({"acceptance/training_pass": 0.0, "acceptance/training_latent_beta": 3.336,
                      "acceptance/training_beta_target": 0.6262, "acceptance/numerics_pass": 1.0,
                      "acceptance/numerics_dfa_max_err": 0.01, "val/loss": 2.9})
    assert _acceptance_text(best, "acceptance/numerics_pass", 1.0) == "numerics=pass"
    assert _acceptance_text(best, "acceptance/training_pass", 0.0) == \
        "training=FAIL (latent_beta=3.34, beta_target=0.626; passes at beta_gap <= 0.2)"
    bare = pd.Series({"acceptance/stability_pass": 0.0})  # no numbers, no criterion: the verdict alone
    assert _acceptance_text(bare, "acceptance/stability_pass", 0.0) == "stability=FAIL"
    assert _acceptance_text(pd.Series({"acceptance/speed_pass": 0.0}), "acceptance/speed_pass", 0.0) == \
        "speed=FAIL (passes at ms < 300 on CUDA)"


def test_resume_continues_in_the_store_the_pointer_names(tmp_path, monkeypatch):
    """A sweep stored where FMX_STORAGE_PATH / MLFLOW_TRACKING_URI pointed (a pod), resumed later with --storage
    and without those variables, must resume there: not start over in ./runs/ray with a fresh local MLflow."""
    from fmx import runner, tracking
    from fmx.schema import load_sweep

    for var in ("FMX_STORAGE_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "mlflow.db").touch()  # the store a real sweep's pointer names exists (a missing one is refused)
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml", check_config=False)  # storage/tracking left at defaults
    (store / "smoke.latest.json").write_text(json.dumps({
        "sweep_id": "smoke-1", "tracking_uri": uri, "experiment_id": "1", "parent_run_id": "p",
        "sweep": sweep.model_dump(mode="json"), "storage_uri": str(store.resolve()),
        "storage_source": "FMX_STORAGE_PATH", "tracking_source": "MLFLOW_TRACKING_URI"}))
    seen = {}

    def run_sweep(sweep, **kwargs):  # records what the command would run, without starting Ray
        seen.update(kwargs, sweep=sweep)
        raise ValueError("recorded")

    monkeypatch.setattr(runner, "run_sweep", run_sweep)
    res = _invoke("sweep", "resume", "smoke", "--storage", str(store))
    assert res.exit_code == 2 and "recorded" in res.output, res.output
    assert seen["resume_id"] == "smoke-1"
    targets = runner.resolve_targets(seen["sweep"], root=elsewhere, env={})
    assert targets.storage.uri == str(store.resolve())
    assert targets.tracking_uri == uri
    assert not (elsewhere / "runs").exists()


def test_submit_to_an_address_where_no_dashboard_answers_is_a_clean_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runner.invoke(app, ["sweep", "submit", str(REPO / "sweeps" / "smoke.yaml"),
                              "--address", f"http://127.0.0.1:{port}"])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "no Ray dashboard answered" in " ".join(res.output.split())
