"""What a sweep's Train worker spends per epoch besides training (``benchmarks/orchestration.py overhead`` and
``logging``; docs/benchmarks.md, Platform).

Metrics go to MLflow from a sender thread (``RankZeroMlflowLogger(background=True)``), so no training step waits on
the tracking store: sent as it came, a log call of 12 metrics held training 10 ms (sqlite) to 21 ms (an MLflow
server on the same machine), 0.15 ms with the sender. What must hold: nothing is lost or reordered, a checkpoint is
reported only after the metrics of its steps are out, an outage still ends in the spool file, and an error MLflow
answers with still reaches the training thread.

The latent fingerprint plot is redrawn at most every ``figure_every_s`` seconds and at the end of the fit: drawing
it at every evaluation took 17 % of the Train worker's time with the tiny preset's 1.5 s epochs (py-spy), the
largest part of the platform's per-epoch cost. The table and the summary metrics still go out at every evaluation.
"""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fixtures_servers import free_port
from fmx import fingerprint_log, tracking, worker_logging
from fmx.fingerprint_log import FingerprintArtifactCallback
from fmx.worker_logging import RankZeroMlflowLogger
from test_outage2_review import _file_run


@pytest.fixture(autouse=True)
def _no_outage_left(monkeypatch):
    monkeypatch.setattr(worker_logging, "_DOWN_AT", {}, raising=False)


@pytest.fixture
def run(tmp_path):
    return _file_run(tmp_path)


# ------------------------------------------------------------------ metrics from a sender thread
def _counting(logger, monkeypatch, gate: threading.Event | None = None) -> list:
    """Count the logger's log_batch requests (optionally holding each until ``gate`` is set)."""
    calls = []
    real = logger.experiment.log_batch

    def log_batch(run_id, metrics=(), **kw):
        if gate is not None:
            assert gate.wait(30)
        calls.append([(m.key, m.step) for m in metrics])
        return real(run_id, metrics=metrics, **kw)

    monkeypatch.setattr(logger.experiment, "log_batch", log_batch)
    return calls


def test_log_calls_return_while_mlflow_is_busy_and_drain_sends_them_in_order(run, tmp_path, monkeypatch):
    uri, c, run_id = run
    logger = RankZeroMlflowLogger(tracking_uri=uri, run_id=run_id, spool_dir=tmp_path, background=True,
                                  send_every_s=0.05)
    gate = threading.Event()
    calls = _counting(logger, monkeypatch, gate)
    t0 = time.monotonic()
    for step in range(20):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
        time.sleep(0.01)  # the sender takes some, then hangs in MLflow: the training thread goes on
    assert time.monotonic() - t0 < 5 and calls == []
    gate.set()
    logger.drain()
    history = sorted(c.get_metric_history(run_id, "train/loss"), key=lambda m: m.timestamp)
    assert [m.step for m in history] == list(range(20))
    assert [m.value for m in history] == pytest.approx([1.0 / (s + 1) for s in range(20)])
    assert sum(len(x) for x in calls) == 40 and len(calls) < 20  # coalesced into fewer requests
    logger.finalize("success")
    assert logger._sender is None and not logger.spool_path.exists()


def test_one_request_per_send_interval(run, tmp_path, monkeypatch):
    uri, _, run_id = run
    logger = RankZeroMlflowLogger(tracking_uri=uri, run_id=run_id, spool_dir=tmp_path, background=True,
                                  send_every_s=3600)
    calls = _counting(logger, monkeypatch)
    for step in range(50):
        logger.log_metrics({"train/loss": 0.5}, step=step)
    time.sleep(0.3)
    assert calls == []  # within the interval: still held
    logger.drain()  # a checkpoint: sent now, in one request
    assert len(calls) == 1 and [s for _, s in calls[0]] == list(range(50))
    logger.log_metrics({"train/loss": 0.25}, step=50)  # a sender after drain: finalize sends it
    logger.finalize("success")
    assert len(calls) == 2 and calls[1] == [("train/loss", 50)]


def test_an_outage_in_the_background_keeps_the_metrics_in_the_spool_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = f"http://127.0.0.1:{free_port()}"
    logger = RankZeroMlflowLogger(tracking_uri=down, run_id="r1", spool_dir=tmp_path, background=True,
                                  send_every_s=0.05)
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.log_metrics({"train/loss": 1.25, "lr": 0.1}, step=2)
    logger.drain()
    lines = [json.loads(x) for x in logger.spool_path.read_text().splitlines()]
    assert sorted((d["key"], d["step"]) for d in lines) == [("lr", 2), ("train/loss", 1), ("train/loss", 2)]
    logger.finalize("failed")
    out = capsys.readouterr().out
    assert out.count("WARNING: MLflow at") == 1 and "still unreachable" in out and str(logger.spool_path) in out


def test_an_error_mlflow_answers_with_reaches_the_training_thread(run, tmp_path, monkeypatch):
    from mlflow.exceptions import RestException

    uri, _, run_id = run
    logger = RankZeroMlflowLogger(tracking_uri=uri, run_id=run_id, spool_dir=tmp_path, background=True,
                                  send_every_s=0.01)

    def refuse(*a, **k):
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "run r1 is deleted"})

    monkeypatch.setattr(logger.experiment, "log_batch", refuse)
    logger.log_metrics({"train/loss": 1.0}, step=1)
    with pytest.raises(RestException, match="deleted"):
        logger.drain()
    logger.log_metrics({"train/loss": 1.0}, step=2)
    with pytest.raises(RestException, match="deleted"):
        logger.finalize("failed")


def test_the_checkpoint_is_reported_after_the_metrics_of_its_steps_are_out(tmp_path, monkeypatch):
    import ray.train

    from fmx.train_worker import ReportCheckpointCallback

    order = []

    class Logger:
        def drain(self):
            order.append("drain")

    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None, **options: order.append("report"))
    trainer = SimpleNamespace(callback_metrics={"val/loss": 0.5}, current_epoch=0, global_step=3, global_rank=1,
                              loggers=[Logger()], save_checkpoint=lambda path: None)
    ReportCheckpointCallback().on_train_epoch_end(trainer, None)
    assert order == ["drain", "report"]


# ------------------------------------------------------------------ the fingerprint plot's cadence
@pytest.fixture
def drawn(monkeypatch):
    """The epochs each drawn plot showed, in order."""
    import fmx.compare

    plots: list[list[int]] = []
    real = fmx.compare.fingerprint_figure

    def spy(df):
        plots.append(sorted(df["epoch"].unique().tolist()))
        return real(df)

    monkeypatch.setattr(fmx.compare, "fingerprint_figure", spy)
    table = pd.DataFrame([{"channel": "ch0", "measure": "higuchi_fd", "value": 1.5, "ok": True}])
    monkeypatch.setattr(fingerprint_log, "latent_fingerprint", lambda *a, **k: (table, {"higuchi_fd_mean": 1.5}))
    return plots


def _callback(uri, run_id, **kw):
    cb = FingerprintArtifactCallback(tracking_uri=uri, run_id=run_id, **kw)
    cb._batch = torch.zeros(1)
    return cb


def _trainer(epoch, max_epochs=10):
    return SimpleNamespace(global_rank=0, sanity_checking=False, current_epoch=epoch, global_step=5 * (epoch + 1),
                           max_epochs=max_epochs)


def test_plot_drawn_first_then_not_within_the_interval_then_at_the_end_of_the_fit(run, drawn):
    uri, c, run_id = run
    cb = _callback(uri, run_id, figure_every_s=3600)
    for epoch in range(4):
        cb.on_validation_epoch_end(_trainer(epoch), None)
    assert drawn == [[0]]  # the first evaluation only: the next three came within the hour
    # every evaluation's summary metrics and table rows are logged all the same
    assert [m.step for m in c.get_metric_history(run_id, "fingerprint/higuchi_fd_mean")] == [5, 10, 15, 20]
    cb.on_fit_end(_trainer(3), None)  # a stop before max_epochs (max_steps, an early stop): the plot catches up
    assert drawn == [[0], [0, 1, 2, 3]]
    cb.on_fit_end(_trainer(3), None)  # nothing new since: not drawn again
    assert len(drawn) == 2
    assert "fingerprint/latent_fingerprint.png" in {f.path for f in c.list_artifacts(run_id, "fingerprint")}


def test_the_last_epoch_draws_the_plot_and_the_end_of_the_fit_does_not_draw_it_twice(run, drawn):
    uri, _, run_id = run
    cb = _callback(uri, run_id, figure_every_s=3600)
    for epoch in range(3):
        cb.on_validation_epoch_end(_trainer(epoch, max_epochs=3), None)
    cb.on_fit_end(_trainer(2, max_epochs=3), None)
    assert drawn == [[0], [0, 1, 2]]


def test_interval_zero_draws_every_evaluation_and_the_interval_passing_draws_again(run, drawn, monkeypatch):
    uri, _, run_id = run
    cb = _callback(uri, run_id, figure_every_s=0)
    for epoch in range(3):
        cb.on_validation_epoch_end(_trainer(epoch), None)
    assert drawn == [[0], [0, 1], [0, 1, 2]]
    drawn.clear()
    clock = [1000.0]
    monkeypatch.setattr(worker_logging.time, "monotonic", lambda: clock[0])
    cb = _callback(uri, run_id, figure_every_s=60)
    cb.on_validation_epoch_end(_trainer(0), None)
    clock[0] += 59
    cb.on_validation_epoch_end(_trainer(1), None)
    clock[0] += 2  # 61 s after the first plot
    cb.on_validation_epoch_end(_trainer(2), None)
    assert drawn == [[0], [0, 1, 2]]


def test_a_plot_an_outage_kept_back_is_drawn_later(run, drawn, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    uri, _, run_id = run
    cb = _callback(uri, run_id, figure_every_s=3600, retry_s=0)
    real = tracking.log_figure
    monkeypatch.setattr(tracking, "log_figure", lambda *a, **k: (_ for _ in ()).throw(MlflowException("503")))
    cb.on_validation_epoch_end(_trainer(0), None)
    assert "latent fingerprint plot of epoch 0 not logged" in capsys.readouterr().out
    monkeypatch.setattr(tracking, "log_figure", real)
    cb.on_validation_epoch_end(_trainer(1), None)  # no plot yet on record: this evaluation draws it
    assert drawn[-1] == [0, 1] and not cb._plot_behind


@pytest.mark.parametrize("bad", [-1, float("nan"), "soon", True])
def test_a_bad_interval_names_the_config_field(bad):
    with pytest.raises(ValueError, match=r"fractals\.log\.fingerprint_figure_every_s: needs a number of seconds"):
        FingerprintArtifactCallback(tracking_uri="file:///x", run_id="r", figure_every_s=bad)


def test_the_shipped_config_sets_the_interval_the_worker_reads():
    from fmx.config import compose

    assert compose([])["fractals"]["log"]["fingerprint_figure_every_s"] == 60
