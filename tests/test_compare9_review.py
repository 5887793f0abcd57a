"""Review round 9: `fmx compare` / `fmx sweep status` on a real sqlite MLflow store (no server, no Ray)."""
from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("mlflow")
from fmx.cli import app  # noqa: E402


def _store(tmp_path, rows, *, name="smoke"):
    """A sweep's parent run and one child run per ``(trial_id, beta, lambda_spec, loss or None, status)``."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment(name)
    parent = c.create_run(exp, tags={"fmx.sweep": name, "fmx.sweep_id": f"{name}-1", "fmx.kind": "sweep"})
    c.log_param(parent.info.run_id, "sweep.metric", "val/loss")
    c.log_param(parent.info.run_id, "sweep.goal", "minimize")
    for tid, beta, lam, loss, status in rows:
        r = c.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id, "fmx.trial_id": tid,
                                    "fmx.kind": "trial"})
        c.log_param(r.info.run_id, "sweep.fractals.priors.spectral_beta_target", beta)
        c.log_param(r.info.run_id, "fractals.priors.lambda_spec", lam)
        if loss is not None:
            c.log_metric(r.info.run_id, "val/loss", loss)
        c.set_terminated(r.info.run_id, status)
    return uri


def _compare(uri, out, name="smoke"):
    res = CliRunner().invoke(app, ["compare", name, "--tracking-uri", uri, "--out", str(out)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res


def test_compare_table_has_the_baseline_ratio_column_docs_promise(tmp_path):
    # docs/sweeps.md: "the per-trial ratio is a column of the comparison table" (and fmx compare computes the
    # across-trial verdicts); `fmx compare` wrote a table without it.
    uri = _store(tmp_path, [("base", 1.0, 0.0, 0.5, "FINISHED"), ("prior", 1.2, 0.1, 0.4, "FINISHED")])
    out = tmp_path / "out dir"
    _compare(uri, out)
    df = pd.read_csv(out / "trials.csv")
    ratio = dict(zip(df["trial_id"], df["acceptance/training_baseline_ratio"]))
    assert ratio == pytest.approx({"base": 1.0, "prior": 0.5 / 0.4})
    assert pd.read_parquet(out / "trials.parquet")["acceptance/training_baseline_ratio"].notna().all()


def test_compare_again_into_the_same_folder_leaves_no_stale_plot(tmp_path):
    # A plot the second comparison cannot draw (no trial logged the metric yet) stayed from the first one, so the
    # folder showed a best-trials bar chart the table no longer supports.
    (tmp_path / "a").mkdir()
    first = _store(tmp_path / "a", [("t0", 1.0, 0.1, 0.5, "FINISHED")])
    out = tmp_path / "out"
    _compare(first, out)
    assert (out / "best_trials.png").exists()
    (tmp_path / "b").mkdir()
    second = _store(tmp_path / "b", [("t0", 1.0, 0.1, None, "FAILED")])
    res = _compare(second, out)
    assert not (out / "best_trials.png").exists(), res.output
    assert not (out / "parallel_coordinates.png").exists()
    assert (out / "beta_star.png").exists()  # still drawable: beta* is known
    assert sorted(p.name for p in out.iterdir()) == ["beta_star.png", "trials.csv", "trials.parquet"]


def test_compare_keeps_the_previous_table_when_writing_the_new_one_fails(tmp_path, monkeypatch):
    # The table was written in place: a write cut short (disk full, Ctrl-C) left a truncated trials.parquet.
    uri = _store(tmp_path, [("t0", 1.0, 0.1, 0.5, "FINISHED")])
    out = tmp_path / "out"
    _compare(uri, out)
    before = (out / "trials.parquet").read_bytes()

    def cut_short(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PAR1")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", cut_short)
    res = CliRunner().invoke(app, ["compare", "smoke", "--tracking-uri", uri, "--out", str(out)])
    assert res.exit_code != 0
    assert (out / "trials.parquet").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files left behind


def test_compare_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    uri = _store(tmp_path, [("t0", 1.0, 0.1, 0.5, "FINISHED")])
    out = tmp_path / "out"
    _compare(uri, out)
    for name in ("trials.csv", "trials.parquet", "best_trials.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_status_of_a_sweep_whose_store_was_moved_names_it_and_leaves_no_empty_store(tmp_path):
    # The pointer records the store's absolute path; after `mv runs elsewhere` status created an empty mlflow.db
    # (and its folders) at the old path, then said "Run with id=... not found".
    import json

    import yaml

    from pathlib import Path

    sweep = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "smoke.yaml").read_text())
    gone = tmp_path / "old place" / "runs" / "mlflow.db"
    storage = tmp_path / "ray"
    storage.mkdir()
    (storage / "smoke.latest.json").write_text(json.dumps({
        "sweep_id": "smoke-1", "tracking_uri": f"sqlite:///{gone}", "experiment_id": "1",
        "parent_run_id": "0" * 32, "storage_uri": str(storage), "sweep": sweep}))
    res = CliRunner().invoke(app, ["sweep", "status", "smoke", "--storage", str(storage)], env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    assert str(gone) in res.output and "moved" in res.output and "--tracking-uri" in res.output
    assert not (tmp_path / "old place").exists()
    # resume too: it would have resumed the trials into a new empty store at the old path
    res = CliRunner().invoke(app, ["sweep", "resume", "smoke", "--storage", str(storage)], env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    assert str(gone) in res.output and "move it back there, then resume" in res.output
    assert not (tmp_path / "old place").exists()


def test_a_diverged_baseline_does_not_make_every_prior_trial_pass():
    # baseline loss inf (the lambda = 0 trial diverged): inf / 0.5 = inf > 0.99 logged training_baseline_pass = 1.
    from fmx.compare import sweep_acceptance

    df = pd.DataFrame({"trial_id": ["base", "prior"], "cfg.fractals.priors.lambda_spec": [0.0, 0.1],
                       "val/loss": [float("inf"), 0.5]})
    out = sweep_acceptance(df)
    assert out.get("acceptance/training_baseline_pass") != 1.0
    assert "acceptance/training_baseline_loss" not in out  # no finite baseline to compare with


def test_the_baseline_ratio_skips_a_diverged_baseline_among_finite_ones():
    from fmx.compare import sweep_acceptance

    df = pd.DataFrame({"trial_id": ["b1", "b2", "prior"], "cfg.fractals.priors.lambda_spec": [0.0, 0.0, 0.1],
                       "val/loss": [float("-inf"), 0.5, 0.505]})
    out = sweep_acceptance(df)
    assert out["acceptance/training_baseline_loss"] == 0.5
    assert out["acceptance/training_best_prior_ratio"] == pytest.approx(0.5 / 0.505)
    assert out["acceptance/training_baseline_pass"] == 1.0


def test_ui_on_a_store_that_does_not_exist_says_it_starts_an_empty_one(tmp_path, monkeypatch):
    # A typo in --tracking-uri (or a moved store) started the UI on a freshly created empty mlflow.db without a
    # word: the researcher saw no runs and no reason.
    import subprocess

    class Server:
        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: Server())
    typo = tmp_path / "tpyo dir" / "mlflow.db"
    res = CliRunner().invoke(app, ["ui", "--tracking-uri", f"sqlite:///{typo}"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"no MLflow store at {typo}" in res.output
    (tmp_path / "real").mkdir()
    uri = _store(tmp_path / "real", [("t0", 1.0, 0.1, 0.5, "FINISHED")])
    res = CliRunner().invoke(app, ["ui", "--tracking-uri", uri], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "no MLflow store" not in res.output, res.output


def test_status_given_the_pointer_file_names_the_sweep_to_pass(tmp_path):
    # docs/sweeps.md names <storage>/<name>.latest.json as what status reads; passing that file looked for
    # "fails.latest.json.latest.json" and gave no hint.
    storage = tmp_path / "my runs" / "ray"
    storage.mkdir(parents=True)
    (storage / "fails.latest.json").write_text("{}")
    res = CliRunner().invoke(app, ["sweep", "status", str(storage / "fails.latest.json"), "--storage", str(storage)],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 2, res.output
    assert f"try fails --storage '{storage}'" in " ".join(res.output.split())


def test_compare_of_a_name_with_a_quote_says_no_such_sweep_not_an_unreadable_store(tmp_path):
    uri = _store(tmp_path, [("t0", 1.0, 0.1, 0.5, "FINISHED")])
    res = CliRunner().invoke(app, ["compare", "smoke's", "--tracking-uri", uri, "--out", str(tmp_path / "o")],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 2
    assert "no sweep \"smoke's\"" in res.output and "cannot read" not in res.output, res.output


def test_sweep_acceptance_with_a_text_prior_weight_does_not_crash():
    # One run logged lambda_spec as "None": the column stays text and `df[lam] > 0` raised TypeError, which now
    # would stop `fmx compare` as well as the sweep's summary.
    from fmx.compare import sweep_acceptance

    df = pd.DataFrame({"trial_id": ["base", "prior", "odd"], "cfg.fractals.priors.lambda_spec": [0.0, 0.1, "None"],
                       "cfg.fractals.priors.lambda_graphfd": ["None", 0.0, 0.01], "val/loss": [0.5, 0.5, 0.4],
                       "fingerprint/graph_fd": [1.0, 1.1, 1.2]})
    out = sweep_acceptance(df)
    assert out["acceptance/training_baseline_loss"] == 0.5 and out["acceptance/training_baseline_pass"] == 1.0


def test_a_table_cut_to_top_rows_says_how_many_trials_there_are(tmp_path):
    uri = _store(tmp_path, [(f"t{i}", 1.0, 0.1, 0.5 + i, "FINISHED") for i in range(3)])
    res = CliRunner().invoke(app, ["compare", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "o"),
                                   "--top", "2"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "t2" not in res.output.split("table and plots")[0]
    assert "the first 2 of 3 trials" in res.output
    assert len(pd.read_csv(tmp_path / "o" / "trials.csv")) == 3


def test_beta_star_figure_names_the_metric_and_says_when_no_latent_beta_was_logged():
    # Was: the title said "loss" whatever the metric (accuracy too), and the right panel was left blank.
    import matplotlib

    matplotlib.use("Agg")
    from fmx.compare import BETA_KEY, beta_star_figure

    df = pd.DataFrame({f"sweep.{BETA_KEY}": [0.8, 1.2], "val/accuracy": [0.7, 0.8]})
    fig = beta_star_figure(df, "val/accuracy")
    assert "val/accuracy" in fig._suptitle.get_text()
    assert any("no latent beta logged" in t.get_text() for t in fig.axes[1].texts)
