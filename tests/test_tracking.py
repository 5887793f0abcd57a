"""MLflow tracking against a real `mlflow server`: idempotent parent/child runs, rank-0 logger, redaction,
comparison table and plots on the parent run."""
from __future__ import annotations

import pytest

from fmx import compare, tracking


def test_resolve_tracking_uri_makes_local_stores_absolute(tmp_path):
    uri = tracking.resolve_tracking_uri("sqlite:///runs/mlflow.db", root=tmp_path)
    assert uri == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}" and (tmp_path / "runs").is_dir()
    assert tracking.resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    # artifacts of a local sqlite store live beside it, not in ./mlruns of the current directory
    assert tracking.default_artifact_location(uri, "fmx-x") == (tmp_path / "runs" / "mlartifacts" / "fmx-x").as_uri()
    assert tracking.default_artifact_location("http://127.0.0.1:5000", "fmx-x") is None


def test_a_plain_tracking_path_is_a_sqlite_store_in_that_folder(tmp_path, monkeypatch):
    # MLflow 3 refuses file stores (./mlruns) without MLFLOW_ALLOW_FILE_STORE: a folder gets the default's kind of
    # store, sqlite, with its artifacts beside it, as sqlite:///runs/mlflow.db has
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = tracking.resolve_tracking_uri("runs/mlruns", root=tmp_path)
    folder = (tmp_path / "runs" / "mlruns").resolve()
    assert uri == f"sqlite:///{folder / 'mlflow.db'}" and folder.is_dir()
    assert tracking.default_artifact_location(uri, "e") == (folder / "mlartifacts" / "e").as_uri()
    assert tracking.resolve_tracking_uri(str(folder)) == uri  # absolute folders too
    # a path naming a database file is that database, not a folder called store.db
    assert tracking.resolve_tracking_uri("runs/store.db", root=tmp_path) == \
        f"sqlite:///{(tmp_path / 'runs' / 'store.db').resolve()}"
    assert not (tmp_path / "runs" / "store.db").exists()


def test_a_file_store_is_refused_with_the_field_the_value_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "mlruns"
    with pytest.raises(ValueError, match=r"tracking\.uri.*file:.*MLFLOW_ALLOW_FILE_STORE") as exc:
        tracking.resolve_tracking_uri(store.as_uri(), field="tracking.uri")
    assert "sqlite" in str(exc.value)
    # a folder that already holds a file store is not shadowed by a new, empty sqlite store inside it
    (store / "0").mkdir(parents=True)
    (store / "0" / "meta.yaml").write_text("name: Default\n")
    with pytest.raises(ValueError, match=r"--tracking-uri.*file store.*migrate-filestore"):
        tracking.resolve_tracking_uri(str(store), field="--tracking-uri")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user's opt-in keeps the file store
    assert tracking.resolve_tracking_uri(str(store)) == store.resolve().as_uri()
    assert tracking.resolve_tracking_uri(store.as_uri()) == store.as_uri()


def test_a_sweep_with_a_plain_tracking_path_gets_a_working_store(tmp_path, monkeypatch):
    from fmx.runner import resolve_targets
    from fmx.schema import parse_sweep

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = parse_sweep({"name": "s", "metric": {"name": "val/loss", "goal": "minimize"},
                         "tracking": {"uri": "runs/mlruns"}})
    t = resolve_targets(sweep, root=tmp_path)
    assert t.tracking_source == "sweep file" and t.tracking_uri.startswith("sqlite:///")
    bad = parse_sweep({"name": "s", "metric": {"name": "val/loss", "goal": "minimize"},
                       "tracking": {"uri": "file:///tmp/mlruns"}})
    with pytest.raises(ValueError, match=r"tracking\.uri.*'file:///tmp/mlruns'"):
        resolve_targets(bad, root=tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")
    with pytest.raises(ValueError, match=r"MLFLOW_TRACKING_URI.*'file:///tmp/mlruns'"):
        resolve_targets(parse_sweep({"name": "s", "metric": {"name": "val/loss", "goal": "minimize"}}),
                        root=tmp_path)


@pytest.mark.slow
def test_mlflow_accepts_the_store_made_from_a_plain_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    c = tracking.client(tracking.resolve_tracking_uri("runs/mlruns", root=tmp_path))
    exp = tracking.ensure_experiment(c, "fmx-plain-path")
    rid, created = tracking.get_or_create_run(c, exp, tags={"k": "v"}, run_name="r")
    assert created and c.get_run(rid).info.status == "RUNNING"


def test_git_commit_is_a_sha():
    sha = tracking.git_commit()
    assert sha == "unknown" or len(sha.split("-")[0]) == 40


@pytest.mark.slow
def test_parent_and_child_runs_are_idempotent_and_nested(mlflow_server):
    c = tracking.client(mlflow_server.tracking_uri)
    exp = tracking.ensure_experiment(c, "fmx-test-lifecycle")
    assert tracking.ensure_experiment(c, "fmx-test-lifecycle") == exp
    parent, created = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "s-1", tracking.TAG_KIND:
                                                               "sweep", tracking.TAG_SWEEP: "s"}, run_name="s-1")
    assert created
    kids = []
    for trial in ("t0", "t1"):
        rid, created = tracking.get_or_create_run(
            c, exp, tags={tracking.TAG_SWEEP_ID: "s-1", tracking.TAG_TRIAL: trial, tracking.TAG_PARENT: parent,
                          tracking.TAG_KIND: "trial"}, run_name=trial)
        assert created
        kids.append(rid)
    tracking.end_run(c, kids[0], "FAILED")
    # a restarted trial reopens its own run instead of opening a new one
    again, created = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "s-1", tracking.TAG_TRIAL: "t0",
                                                              tracking.TAG_PARENT: parent}, run_name="t0")
    assert again == kids[0] and not created and c.get_run(again).info.status == "RUNNING"
    assert sorted(r.info.run_id for r in tracking.child_runs(c, exp, parent)) == sorted(kids)
    parent_again, created = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "s-1",
                                                                     tracking.TAG_KIND: "sweep"}, run_name="s-1")
    assert parent_again == parent and not created


@pytest.mark.slow
def test_rank_zero_logger_logs_steps_and_never_ends_the_run(mlflow_server):
    c = tracking.client(mlflow_server.tracking_uri)
    exp = tracking.ensure_experiment(c, "fmx-test-logger")
    rid, _ = tracking.get_or_create_run(c, exp, tags={"k": "logger"}, run_name="logger")
    from fmx.train_worker import RankZeroMlflowLogger

    logger = RankZeroMlflowLogger(tracking_uri=mlflow_server.tracking_uri, run_id=rid)
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "skip": float("nan")}, step=step)
    logger.log_hyperparams({"ignored": 1})
    logger.finalize("success")
    hist = c.get_metric_history(rid, "train/loss")
    assert [(m.step, round(m.value, 3)) for m in hist] == [(0, 1.0), (1, 0.5), (2, 0.333)]
    run = c.get_run(rid)
    # NaN is kept as NaN (dropping it would leave the last finite value standing, see the NaN test below)
    assert run.data.metrics["skip"] != run.data.metrics["skip"]
    assert run.data.params == {} and run.info.status == "RUNNING"


@pytest.mark.slow
def test_params_are_flat_redacted_and_not_overwritten(mlflow_server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit-value-123")
    c = tracking.client(mlflow_server.tracking_uri)
    exp = tracking.ensure_experiment(c, "fmx-test-params")
    rid, _ = tracking.get_or_create_run(c, exp, tags={"k": "params"}, run_name="params")
    tracking.log_params(c, rid, {"optim.lr": 0.1, "optim.betas": [0.9, 0.95], "note": "s3 sekrit-value-123"})
    tracking.log_params(c, rid, {"optim.lr": 0.2})  # a resumed trial must not fail on immutable params
    params = c.get_run(rid).data.params
    assert params == {"optim.lr": "0.1", "optim.betas": "[0.9, 0.95]", "note": "s3 ***"}


@pytest.mark.slow
def test_sweep_summary_table_and_plots_on_the_parent(mlflow_server, tmp_path):
    c = tracking.client(mlflow_server.tracking_uri)
    exp = tracking.ensure_experiment(c, "fmx-test-summary")
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "sum-1", tracking.TAG_KIND: "sweep",
                                                         tracking.TAG_SWEEP: "sum"}, run_name="sum-1")
    # t0 is the no-prior baseline; graph FD spreads less across the trials with the graph prior on
    trials = [(0.5, 0.0, 0.0, 0.9, 0.6, 1.0), (1.0, 0.05, 0.01, 0.7, 1.1, 1.50), (1.5, 0.05, 0.01, 0.8, 1.4, 1.52),
              (1.0, 0.0, 0.0, 0.95, 0.9, 2.0)]
    for i, (beta, lam, lam_g, loss, latent, gfd) in enumerate(trials):
        rid, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "sum-1", tracking.TAG_TRIAL: f"t{i}",
                                                          tracking.TAG_PARENT: parent}, run_name=f"t{i}")
        tracking.log_params(c, rid, {f"sweep.{compare.BETA_KEY}": beta, "fractals.priors.lambda_spec": lam,
                                     "fractals.priors.lambda_graphfd": lam_g})
        tracking.log_metrics(c, rid, {"val/loss": loss, "val/latent_beta": latent, "fingerprint/graph_fd": gfd})
        tracking.end_run(c, rid)
    df = compare.log_sweep_summary(c, exp, parent, metric="val/loss", mode="min")
    assert list(df["trial_id"]) == ["t1", "t2", "t0", "t3"]
    run = c.get_run(parent)
    m = run.data.metrics
    assert m["acceptance/training_baseline_loss"] == pytest.approx(0.9)
    assert m["acceptance/training_best_prior_ratio"] == pytest.approx(0.9 / 0.7)
    assert m["acceptance/training_baseline_pass"] == 1.0
    assert m["acceptance/stability_pass"] == 1.0  # var(1.50, 1.52) < var(1.0, 2.0)
    assert run.data.metrics["best/val/loss"] == pytest.approx(0.7) and run.data.tags["fmx.best_trial"] == "t1"
    names = {a.path for a in c.list_artifacts(parent, "comparison")}
    assert {"comparison/trials.parquet", "comparison/trials.csv", "comparison/best_trials.png",
            "comparison/parallel_coordinates.png", "comparison/beta_star.png"} <= names
    assert compare.find_parent(c, "sum").info.run_id == parent
    assert compare.find_parent(c, "sum-1").info.run_id == parent
    assert "t1  val/loss=0.7" in compare.summary_lines(df, "val/loss")[0]


def test_parallel_coordinates_skips_text_parameters():
    import pandas as pd

    from fmx.compare import parallel_coordinates_figure

    df = pd.DataFrame({"sweep.model.mode": pd.array(["fixed", "adaptive", "fixed"], dtype="string"),
                       "sweep.model.target": [0.5, 1.0, 1.5], "val/acc": [0.8, 0.9, 0.85]})
    fig = parallel_coordinates_figure(df, "val/acc")
    assert fig is not None and len(fig.axes[0].lines) == 3


@pytest.fixture(scope="module")
def local_store(mlflow_server):
    """The session's MLflow server (its store costs seconds to create, so it is shared) and one experiment."""
    c = tracking.client(mlflow_server.tracking_uri)
    return c, tracking.ensure_experiment(c, "fmx-test-local")


@pytest.mark.slow
def test_long_params_are_marked_and_kept_whole_as_an_artifact(local_store, tmp_path):
    import json

    c, exp = local_store
    rid, _ = tracking.get_or_create_run(c, exp, tags={"k": "long-params"}, run_name="long-params")
    channels = [f"EEG{i:03d}-REF" for i in range(600)]  # a montage list whose JSON is over MLflow's limit
    tracking.log_params(c, rid, {"data.channels": channels, "note": "x" * 7000, "optim.lr": 0.1})
    params = c.get_run(rid).data.params
    assert params["optim.lr"] == "0.1"
    for key in ("data.channels", "note"):
        assert len(params[key]) <= tracking.MAX_PARAM_LEN and "truncated" in params[key]
    full = json.loads(open(c.download_artifacts(rid, "params/truncated.json", str(tmp_path))).read())
    assert json.loads(full["data.channels"]) == channels and full["note"] == "x" * 7000


@pytest.mark.slow
def test_a_nan_metric_replaces_the_last_finite_value(local_store):
    # a trial whose loss diverged must not keep (and be ranked by) its last finite loss
    c, exp = local_store
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "nan-1", tracking.TAG_KIND: "sweep"},
                                           run_name="nan-1")
    for trial, losses in (("diverged", [0.3, float("nan")]), ("steady", [0.6, 0.5])):
        rid, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "nan-1", tracking.TAG_TRIAL: trial,
                                                          tracking.TAG_PARENT: parent}, run_name=trial)
        for step, loss in enumerate(losses):
            tracking.log_metrics(c, rid, {"val/loss": loss, "note": "text is not a metric"}, step=step)
    df = compare.ranked(compare.trials_frame(c, exp, parent), "val/loss", "min")
    assert list(df["trial_id"]) == ["steady", "diverged"]
    assert df["val/loss"].iloc[0] == 0.5 and df["val/loss"].isna().iloc[1] and "note" not in df


def test_parallel_coordinates_draws_categorical_parameters_as_axes():
    # a sweep over option names only (model group, attention mode) still gets its plot, one axis per choice
    import matplotlib.pyplot as plt
    import pandas as pd

    from fmx.compare import parallel_coordinates_figure

    df = pd.DataFrame({"sweep.model": ["perceiver", "mamba", "perceiver", None],
                       "sweep.model.mode": pd.array(["fixed", "adaptive", "fixed", "fixed"], dtype="string"),
                       "val/loss": [0.8, 0.9, 0.7, 0.75]})
    fig = parallel_coordinates_figure(df, "val/loss")
    assert fig is not None
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["model", "mode", "val/loss"]
    assert len(ax.lines) == 4
    rows = sorted(tuple(line.get_ydata()[:2]) for line in ax.lines[:3])  # mamba/adaptive -> 0, perceiver/fixed -> 1
    assert rows == [(0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]
    assert {"mamba", "perceiver", "adaptive", "fixed"} <= {t.get_text().strip() for t in ax.texts}
    plt.close(fig)


@pytest.mark.slow
def test_trials_frame_keeps_a_mixed_number_and_text_choice_as_text(local_store, tmp_path):
    # precision in [16, "bf16-mixed"]: one column of one type, so the table writes to parquet (log_sweep_summary)
    c, exp = local_store
    parent, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "mixed-1",
                                                         tracking.TAG_KIND: "sweep"}, run_name="mixed-1")
    for i, (precision, lr) in enumerate(((16, 0.01), ("bf16-mixed", 0.1))):
        rid, _ = tracking.get_or_create_run(c, exp, tags={tracking.TAG_SWEEP_ID: "mixed-1", tracking.TAG_TRIAL: f"t{i}",
                                                          tracking.TAG_PARENT: parent}, run_name=f"t{i}")
        tracking.log_params(c, rid, {"sweep.trainer.precision": precision, "sweep.optim.lr": lr})
        tracking.log_metrics(c, rid, {"val/loss": 1.0 - i / 10})
    df = compare.ranked(compare.trials_frame(c, exp, parent), "val/loss", "min")
    assert list(df["sweep.trainer.precision"]) == ["bf16-mixed", "16"]
    assert list(df["sweep.optim.lr"]) == [0.1, 0.01]
    df.to_parquet(tmp_path / "trials.parquet", index=False)
    df = compare.log_sweep_summary(c, exp, parent, metric="val/loss", mode="min")
    assert "comparison/trials.parquet" in {a.path for a in c.list_artifacts(parent, "comparison")}


def test_metrics_an_mlflow_server_clamped_from_inf_read_back_as_inf():
    import math
    import sys

    from fmx.compare import _unclamped

    assert _unclamped(sys.float_info.max) == math.inf and _unclamped(-sys.float_info.max) == -math.inf
    assert _unclamped(1.5) == 1.5 and math.isnan(_unclamped(float("nan")))
