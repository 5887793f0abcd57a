"""The fingerprint callback of a sweep's workers sends from a thread of its own: a validation does not wait for
MLflow, and :meth:`drain` (called before each checkpoint goes to Ray) sends everything measured so far."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fmx import fingerprint_log, tracking
from fmx.fingerprint_log import FINGERPRINT_TABLE, FingerprintArtifactCallback


@pytest.fixture
def run(file_mlflow_run):
    return file_mlflow_run


def _trainer(epoch, max_epochs=10):
    return SimpleNamespace(global_rank=0, sanity_checking=False, current_epoch=epoch, global_step=10 * epoch + 4,
                           max_epochs=max_epochs, ckpt_path=None)


@pytest.fixture
def callback(monkeypatch, run):
    def fingerprint(pl_module, batch, **kw):
        table = pd.DataFrame({"channel": ["ch0"], "measure": ["higuchi_fd"], "value": [1.0 + pl_module.epoch / 10],
                              "ok": [True]})
        return table, {"higuchi_fd_mean": float(table["value"][0])}

    monkeypatch.setattr(fingerprint_log, "latent_fingerprint", fingerprint)
    cb = FingerprintArtifactCallback(tracking_uri=run.uri, run_id=run.run_id, background=True)
    cb._batch, cb._drawn_at = torch.zeros(1), 1e12  # the plot was just drawn: none due (see the plot test)
    yield cb
    if cb._executor is not None:
        cb._executor.shutdown(wait=True)


@pytest.fixture
def gate(monkeypatch):
    """Holds every table log until ``gate.set()``; records the threads that logged."""
    event, threads = threading.Event(), []
    real = tracking.log_arrow_parquet

    def held(*a, **k):
        threads.append(threading.current_thread().name)
        assert event.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(tracking, "log_arrow_parquet", held)
    event.threads = threads
    return event


def _wait_for(condition, timeout_s=30.0):
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _evaluate(cb, epoch, **kw):
    cb.on_validation_epoch_end(_trainer(epoch, **kw), SimpleNamespace(epoch=epoch))


def _table(run):
    path = run.c.download_artifacts(run.run_id, FINGERPRINT_TABLE, str(run.tmp / f"dl{len(list(run.tmp.iterdir()))}"))
    return pd.read_parquet(path)


def _fingerprint_steps(run):
    return sorted(m.step for m in run.c.get_metric_history(run.run_id, "fingerprint/higuchi_fd_mean"))


def test_a_validation_returns_while_mlflow_is_slow_and_drain_sends_everything(callback, run, gate):
    _evaluate(callback, 0)  # returns although the table log is held
    _wait_for(lambda: gate.threads)
    _evaluate(callback, 1)  # the first send is still in flight: not queued behind it
    assert gate.threads == ["fmx-fingerprint_0"]  # one send so far, not in the training thread
    gate.set()
    assert callback.drain() is True
    assert _table(run)["epoch"].tolist() == [0, 1]
    assert _fingerprint_steps(run) == [4, 14]
    assert callback.drain() is True and len(gate.threads) == 2  # nothing left: no further request


def test_a_programming_error_of_a_background_send_is_raised_by_the_drain(callback, monkeypatch):
    monkeypatch.setattr(tracking, "log_metrics", lambda *a, **k: (_ for _ in ()).throw(TypeError("bad arg")))
    _evaluate(callback, 0)
    with pytest.raises(TypeError, match="bad arg"):
        callback.drain()


def test_an_outage_in_the_background_is_printed_and_the_next_send_carries_the_rows(callback, run, monkeypatch,
                                                                                   capsys):
    from mlflow.exceptions import MlflowException

    real = tracking.log_arrow_parquet
    monkeypatch.setattr(tracking, "log_arrow_parquet",
                        lambda *a, **k: (_ for _ in ()).throw(MlflowException("503 from the proxy")))
    _evaluate(callback, 0)
    assert callback.drain() is False  # still refused: retry_s has not passed
    assert "not logged" in capsys.readouterr().out
    monkeypatch.setattr(tracking, "log_arrow_parquet", real)
    callback.retry_s = 0.0
    _evaluate(callback, 1)
    assert callback.drain() is True and _table(run)["epoch"].tolist() == [0, 1]


def test_plots_are_drawn_in_the_training_thread_after_the_table_is_out(callback, run, monkeypatch):
    drawn = []
    monkeypatch.setattr(fingerprint_log, "_log_fingerprint_figure", lambda uri, run_id, tables: drawn.append(
        (threading.current_thread() is threading.main_thread(), sum(len(t) for t in tables),
         _table(run)["epoch"].tolist())))
    callback._drawn_at = None  # the first evaluation draws
    _evaluate(callback, 0)
    _evaluate(callback, 1)  # within the interval: sent in the background, no plot
    _evaluate(callback, 2, max_epochs=3)  # the last epoch draws, after a drain
    assert drawn == [(True, 1, [0]), (True, 3, [0, 1, 2])]


def test_the_end_of_the_fit_sends_what_is_left_and_stops_the_thread(callback, run, gate):
    _evaluate(callback, 0)
    _wait_for(lambda: gate.threads)
    thread, = [t for t in threading.enumerate() if t.name == gate.threads[0]]
    gate.set()
    callback.on_fit_end(_trainer(0), None)
    assert callback._executor is None and _table(run)["epoch"].tolist() == [0]
    assert not thread.is_alive()
