"""The latent fingerprint's parquet table: every evaluation's rows, written from Arrow tables converted once, and
kept whole when Ray restarts a crashed worker from a checkpoint (its first log used to replace the table with the
rows of the epochs after the crash)."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fmx import fingerprint_log, tracking
from fmx.fingerprint_log import FINGERPRINT_TABLE, FingerprintArtifactCallback


@pytest.fixture
def run(file_mlflow_run):
    return file_mlflow_run


def _trainer(epoch, *, ckpt_path=None):
    return SimpleNamespace(global_rank=0, sanity_checking=False, current_epoch=epoch, global_step=10 * epoch + 4,
                           max_epochs=10, ckpt_path=ckpt_path)


def _callback(monkeypatch, run, tables):
    """A callback whose fingerprint of epoch ``e`` is ``tables(e)``; no plot (the table is the subject here)."""
    def fingerprint(pl_module, batch, **kw):
        table = tables(pl_module.epoch)
        return table, {"higuchi_fd_mean": float(table["value"].mean())}

    monkeypatch.setattr(fingerprint_log, "latent_fingerprint", fingerprint)
    cb = FingerprintArtifactCallback(tracking_uri=run.uri, run_id=run.run_id, figure_every_s=1e9)
    cb._batch, cb._drawn_at = torch.zeros(1), 0.0
    return cb


def _evaluate(cb, epoch, **kw):
    trainer = _trainer(epoch, **kw)
    cb.on_validation_epoch_end(trainer, SimpleNamespace(epoch=epoch))


def _logged(run):
    path = run.c.download_artifacts(run.run_id, FINGERPRINT_TABLE, str(run.tmp / f"dl{len(list(run.tmp.iterdir()))}"))
    return pd.read_parquet(path)


def _real_table(epoch):
    from fractals.fingerprint import fingerprint

    g = torch.Generator().manual_seed(epoch)
    table, _ = fingerprint(torch.randn(2, 4, 512, generator=g), 200.0)
    return table


def test_the_table_holds_every_evaluation_as_the_pandas_concatenation_would(monkeypatch, run):
    cb = _callback(monkeypatch, run, _real_table)
    for epoch in range(3):
        _evaluate(cb, epoch)
    logged = _logged(run)
    expected = pd.concat([_real_table(e).assign(epoch=e, step=10 * e + 4) for e in range(3)], ignore_index=True)
    assert list(logged.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(logged, expected, check_dtype=False)
    assert logged["ok"].dtype == bool and logged["value"].dtype.kind == "f"


def test_an_evaluation_missing_a_column_or_with_whole_numbers_still_joins_the_table(monkeypatch, run):
    def table(epoch):  # the first evaluation has no r2 column and an integer value; the second has both
        if epoch == 0:
            return pd.DataFrame({"channel": ["ch0"], "measure": ["katz_fd"], "value": [2], "ok": [True]})
        return pd.DataFrame({"channel": ["ch0"], "measure": ["spectral_beta"], "value": [1.25], "ok": [True],
                             "r2": [0.9]})

    cb = _callback(monkeypatch, run, table)
    _evaluate(cb, 0)
    _evaluate(cb, 1)
    logged = _logged(run)
    assert logged["value"].tolist() == [2.0, 1.25] and logged["epoch"].tolist() == [0, 1]
    assert pd.isna(logged["r2"][0]) and logged["r2"][1] == 0.9


def _one_row(epoch):
    return pd.DataFrame({"channel": ["ch0"], "measure": ["higuchi_fd"], "value": [1.0 + epoch / 10], "ok": [True]})


def test_a_restored_fit_keeps_the_rows_of_the_epochs_before_the_crash(monkeypatch, run):
    first = _callback(monkeypatch, run, _one_row)
    for epoch in range(3):  # epochs 0-2 logged; the worker dies in epoch 3 after the checkpoint of epoch 1
        _evaluate(first, epoch)
    restarted = _callback(monkeypatch, run, _one_row)
    restarted.on_train_start(_trainer(2, ckpt_path="/tmp/model.ckpt"), None)
    _evaluate(restarted, 2)  # epoch 2 runs again: its row is the new one, once
    _evaluate(restarted, 3)
    logged = _logged(run)
    assert logged["epoch"].tolist() == [0, 1, 2, 3]
    assert logged["value"].tolist() == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert [t["epoch"].tolist() for t in restarted.tables] == [[0, 1], [2], [3]]  # the plot shows them too


def test_a_restored_fit_of_a_run_without_a_table_starts_one(monkeypatch, run):
    cb = _callback(monkeypatch, run, _one_row)
    cb.on_train_start(_trainer(4, ckpt_path="/tmp/model.ckpt"), None)
    _evaluate(cb, 4)
    assert _logged(run)["epoch"].tolist() == [4]


def test_a_fresh_fit_reads_nothing_back(monkeypatch, run):
    _evaluate(_callback(monkeypatch, run, _one_row), 0)
    cb = _callback(monkeypatch, run, _one_row)  # same run, no checkpoint: nothing to continue
    cb.on_train_start(_trainer(0), None)
    _evaluate(cb, 1)
    assert _logged(run)["epoch"].tolist() == [1]


def test_an_outage_while_reading_back_is_retried_at_the_next_evaluation(monkeypatch, run, capsys):
    from mlflow.exceptions import MlflowException

    first = _callback(monkeypatch, run, _one_row)
    _evaluate(first, 0)
    restarted = _callback(monkeypatch, run, _one_row)
    restarted.on_train_start(_trainer(1, ckpt_path="/tmp/model.ckpt"), None)
    real = tracking.client

    class Down:
        def __getattr__(self, name):
            raise MlflowException("503 from the proxy")

    monkeypatch.setattr(tracking, "client", lambda uri: Down())
    _evaluate(restarted, 1)
    assert "not logged" in capsys.readouterr().out
    monkeypatch.setattr(tracking, "client", real)
    restarted.retry_s = 0.0
    _evaluate(restarted, 2)
    assert _logged(run)["epoch"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("background", [False, True])
def test_a_restored_fit_of_a_model_without_a_fingerprint_ends_quietly(monkeypatch, run, background):
    # Was: the end of such a fit (two-moons, no SSM latents) tried to log an empty table after a resume and
    # failed the trial with pyarrow's "Must pass at least one table".
    monkeypatch.setattr(fingerprint_log, "latent_fingerprint", lambda *a, **k: (None, {}))
    cb = FingerprintArtifactCallback(tracking_uri=run.uri, run_id=run.run_id, background=background)
    cb._batch = torch.zeros(1)
    cb.on_train_start(_trainer(1, ckpt_path="/tmp/model.ckpt"), None)
    cb.on_validation_epoch_end(_trainer(1), SimpleNamespace(epoch=1))
    cb.on_fit_end(_trainer(1), None)
    assert cb.drain() is True
    assert not run.c.list_artifacts(run.run_id, "fingerprint")
