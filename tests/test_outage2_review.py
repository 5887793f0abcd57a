"""A tracking outage, part two: the fingerprint and figure callbacks must not stall a validation while MLflow is
away (nor hide real bugs), unlogged metrics must survive a pod on S3 storage, and the fallback fingerprint table
must name the latent channels it measured."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from fixtures_servers import free_port
from fmx import storage, tracking
from fmx import train_worker as tw
from fmx import fingerprint_log, worker_logging
from fmx.train_worker import FingerprintArtifactCallback, ModelFiguresCallback, RankZeroMlflowLogger


@pytest.fixture
def fail_fast(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


@pytest.fixture(autouse=True)
def _no_outage_left(monkeypatch):
    monkeypatch.setattr(worker_logging, "_DOWN_AT", {}, raising=False)  # per process: no test sees another's outage


def _trainer(epoch=0, step=5):
    return SimpleNamespace(global_rank=0, sanity_checking=False, current_epoch=epoch, global_step=step, max_epochs=3)


def _file_run(tmp_path):
    uri = tracking.resolve_tracking_uri("mlflow", root=tmp_path)
    c = tracking.client(uri)
    run_id, _ = tracking.get_or_create_run(c, tracking.ensure_experiment(c, "o2"), tags={tracking.TAG_SWEEP_ID: "s"},
                                           run_name="s")
    return uri, c, run_id


def _fingerprint_callback(monkeypatch, uri, run_id="r1", **kw):
    table = pd.DataFrame([{"channel": "ch0", "measure": "higuchi_fd", "value": 1.5, "ok": True}])
    monkeypatch.setattr(fingerprint_log, "latent_fingerprint", lambda *a, **k: (table, {"higuchi_fd_mean": 1.5}))
    cb = FingerprintArtifactCallback(tracking_uri=uri, run_id=run_id, **kw)
    cb._batch = torch.zeros(1)
    return cb


# ------------------------------------------------------------------ item 1: callbacks while the server is away
def test_fingerprint_callback_skips_in_seconds_while_the_server_is_away_and_the_next_one_logs_it(
        tmp_path, monkeypatch, capsys):
    # Was: every evaluation waited out MLflow's own retries (minutes with the default settings) before giving up
    down = f"http://127.0.0.1:{free_port()}"
    cb = _fingerprint_callback(monkeypatch, down)
    t0 = time.monotonic()
    cb.on_validation_epoch_end(_trainer(0, 5), None)
    cb.on_validation_epoch_end(_trainer(1, 9), None)
    assert time.monotonic() - t0 < 10
    out = capsys.readouterr().out
    assert out.count("not logged") == 2 and "epoch 0" in out and "epoch 1" in out and "next evaluation" in out
    uri, c, run_id = _file_run(tmp_path)  # the server is back (same callback, a reachable store)
    cb.uri, cb.run_id = uri, run_id
    cb.on_validation_epoch_end(_trainer(2, 14), None)
    hist = c.get_metric_history(run_id, "fingerprint/higuchi_fd_mean")
    assert sorted(m.step for m in hist) == [5, 9, 14]  # the skipped evaluations' metrics, at their own steps
    art = c.download_artifacts(run_id, "fingerprint/latent_fingerprint.parquet", str(tmp_path / "dl"))
    assert sorted(pd.read_parquet(art)["epoch"]) == [0, 1, 2]


def test_fingerprint_callback_asks_no_server_while_the_logger_saw_it_fail(tmp_path, monkeypatch, fail_fast, capsys):
    down = f"http://127.0.0.1:{free_port()}"
    logger = RankZeroMlflowLogger(tracking_uri=down, run_id="r1", spool_dir=tmp_path)
    logger.log_metrics({"train/loss": 1.0}, step=1)  # fails: the outage is now known to the process
    cb = _fingerprint_callback(monkeypatch, down)

    def no_call(*a, **k):
        raise AssertionError("no request while the outage is known")

    monkeypatch.setattr(tracking, "check_server", no_call)
    monkeypatch.setattr(tracking, "client", no_call)
    cb.on_validation_epoch_end(_trainer(), None)
    assert "not logged" in capsys.readouterr().out and len(cb._unlogged) == 1


def test_the_logger_keeps_metrics_without_a_request_once_a_callback_found_the_server_away(tmp_path, monkeypatch,
                                                                                           capsys):
    down = f"http://127.0.0.1:{free_port()}"
    _fingerprint_callback(monkeypatch, down).on_validation_epoch_end(_trainer(), None)
    logger = RankZeroMlflowLogger(tracking_uri=down, run_id="r1", spool_dir=tmp_path)
    monkeypatch.setattr(tracking, "client", lambda *a, **k: pytest.fail("no MLflow call while the outage is known"))
    logger.log_metrics({"train/loss": 2.0}, step=3)
    assert [json.loads(x)["step"] for x in logger.spool_path.read_text().splitlines()] == [3]
    out = capsys.readouterr().out
    assert out.count("WARNING") == 1 and str(logger.spool_path) in out


def test_a_failed_fingerprint_log_is_retried_only_after_retry_s_and_no_metric_is_logged_twice(tmp_path, monkeypatch,
                                                                                            capsys):
    from mlflow.exceptions import MlflowException

    uri, c, run_id = _file_run(tmp_path)
    cb = _fingerprint_callback(monkeypatch, uri, run_id=run_id, retry_s=3600)
    real = tracking.log_arrow_parquet
    monkeypatch.setattr(tracking, "log_arrow_parquet",
                        lambda *a, **k: (_ for _ in ()).throw(MlflowException("503 from the proxy")))
    cb.on_validation_epoch_end(_trainer(0, 5), None)  # metrics logged, then the table failed
    assert "not logged" in capsys.readouterr().out and cb._unlogged == []
    cb.on_validation_epoch_end(_trainer(1, 9), None)  # within retry_s: skipped without a call
    assert len(cb._unlogged) == 1
    monkeypatch.setattr(tracking, "log_arrow_parquet", real)
    cb.retry_s = 0.0
    cb.on_validation_epoch_end(_trainer(2, 14), None)
    assert [m.step for m in c.get_metric_history(run_id, "fingerprint/higuchi_fd_mean")] == [5, 9, 14]


def test_a_programming_error_while_logging_the_fingerprint_is_raised_not_reported_as_an_outage(tmp_path, monkeypatch):
    # Was: `except Exception` printed "not logged to MLflow (TypeError)" and the bug went unseen
    uri, _, run_id = _file_run(tmp_path)
    cb = _fingerprint_callback(monkeypatch, uri, run_id=run_id)
    monkeypatch.setattr(tracking, "log_metrics", lambda *a, **k: (_ for _ in ()).throw(TypeError("bad arg")))
    with pytest.raises(TypeError, match="bad arg"):
        cb.on_validation_epoch_end(_trainer(), None)


class _Figures:
    def __init__(self):
        self.calls = 0

    def figures(self, batch):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.calls += 1
        return {"a": plt.figure(), "b": plt.figure()}


def test_model_figures_are_not_drawn_while_the_server_is_away(monkeypatch, capsys):
    import matplotlib.pyplot as plt

    model = _Figures()
    cb = ModelFiguresCallback(tracking_uri=f"http://127.0.0.1:{free_port()}", run_id="r1", every=1)
    t0 = time.monotonic()
    cb.on_validation_epoch_end(_trainer(), model)
    assert time.monotonic() - t0 < 10 and model.calls == 0
    assert "not drawn" in capsys.readouterr().out and not plt.get_fignums()


def test_after_one_figure_fails_the_others_are_not_sent_and_all_are_named_once(tmp_path, monkeypatch, capsys):
    import matplotlib.pyplot as plt
    from mlflow.exceptions import MlflowException

    uri, _, run_id = _file_run(tmp_path)
    sent = []

    def failing(c, run, fig, name):
        sent.append(name)
        raise MlflowException("connection reset")

    monkeypatch.setattr(tracking, "log_figure", failing)
    ModelFiguresCallback(tracking_uri=uri, run_id=run_id, every=1).on_validation_epoch_end(_trainer(), _Figures())
    out = capsys.readouterr().out
    assert len(sent) == 1 and out.count("not logged") == 1 and "a, b" in out and "MlflowException" in out
    assert not plt.get_fignums() and uri in worker_logging._DOWN_AT


def test_a_programming_error_while_logging_a_figure_is_raised(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    uri, _, run_id = _file_run(tmp_path)
    monkeypatch.setattr(tracking, "log_figure", lambda *a, **k: (_ for _ in ()).throw(TypeError("bad fig")))
    with pytest.raises(TypeError, match="bad fig"):
        ModelFiguresCallback(tracking_uri=uri, run_id=run_id, every=1).on_validation_epoch_end(_trainer(), _Figures())
    plt.close("all")  # the bug ends the fit: the figures after the failing one are left to the process


# -------------------------------------------------------- item 2: unlogged metrics copied to the trial's storage
def test_unflushed_metrics_are_copied_to_the_trial_folder_and_merged_across_workers(tmp_path, fail_fast, capsys):
    down = f"http://127.0.0.1:{free_port()}"
    target = storage.StorageTarget(uri=str(tmp_path / "trial"), storage_path=str(tmp_path / "trial"))
    first = RankZeroMlflowLogger(tracking_uri=down, run_id="r1", spool_dir=tmp_path / "pod1", keep_in=target)
    first.log_metrics({"train/loss": 1.0}, step=1)
    first.finalize("failed")
    copy = tmp_path / "trial" / "r1.unlogged_metrics.jsonl"
    assert copy.read_text() == first.spool_path.read_text() and str(copy) in capsys.readouterr().out
    second = RankZeroMlflowLogger(tracking_uri=down, run_id="r1", spool_dir=tmp_path / "pod2", keep_in=target,
                                  retry_s=0.0)  # a new pod: its own temp dir
    second.log_metrics({"train/loss": 0.5}, step=2)
    second.finalize("success")
    first.finalize("success")  # copied again: no line twice
    assert [json.loads(x)["step"] for x in copy.read_text().splitlines()] == [1, 2]


@pytest.mark.slow
def test_unflushed_metrics_reach_the_trials_s3_folder(moto_s3, tmp_path, monkeypatch, fail_fast, capsys):
    import ray.train

    for k, v in moto_s3.env().items():
        monkeypatch.setenv(k, v)
    bucket = moto_s3.make_bucket()
    fs = storage.s3_filesystem(endpoint_url=moto_s3.endpoint_url)
    ctx = SimpleNamespace(storage_filesystem=fs, experiment_fs_path=f"{bucket}/ray/sweep1/trials/t1")
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_storage=lambda: ctx))
    keep_in = tw._trial_storage()
    assert keep_in.is_s3 and keep_in.filesystem is fs
    logger = RankZeroMlflowLogger(tracking_uri=f"http://127.0.0.1:{free_port()}", run_id="r9",
                                  spool_dir=tmp_path, keep_in=keep_in)
    logger.log_metrics({"val/loss": 0.25}, step=4)
    logger.finalize("success")
    body = moto_s3.client().get_object(Bucket=bucket, Key="ray/sweep1/trials/t1/r9.unlogged_metrics.jsonl")["Body"]
    assert json.loads(body.read())["value"] == 0.25
    assert f"{bucket}/ray/sweep1/trials/t1/r9.unlogged_metrics.jsonl" in capsys.readouterr().out


def test_outside_a_ray_train_worker_the_trial_storage_is_unknown_not_an_error(capsys):
    assert tw._trial_storage() is None and "temp dir" in capsys.readouterr().out


# ------------------------------------------------------ item 3: the fallback table names the real latent channels
class _Latents(torch.nn.Module):
    fractals_cfg: dict = {}

    def forward(self, batch):
        return {"latents": {"ssm": batch}}

    def latent_rate(self, batch):
        return 100.0


def test_fallback_fingerprint_names_the_latent_channels_it_measured(monkeypatch):
    # Was: columns were named ch0, ch1, ... by position after latent_measures dropped the dead channel 0 (and DFA
    # dropped the step-like channel 2), so "ch0" held channel 1's values and DFA's "ch1"/"ch2" were channels 1/3
    import fractals.fingerprint
    from models.callbacks import latent_measures

    def broken(*a, **k):
        raise ValueError("forced fallback")

    monkeypatch.setattr(fractals.fingerprint, "fingerprint", broken)
    torch.manual_seed(0)
    x = torch.randn(2, 256, 4).cumsum(1)
    x[:, :, 0] = 1.0  # a dead channel
    x[:, :, 2] = 0.0
    x[:, 128:, 2] = 1.0  # a step: DFA rejects this channel alone
    table, _ = tw.latent_fingerprint(_Latents(), x, max_channels=32)
    by = {m: list(g["channel"]) for m, g in table.groupby("measure")}
    assert by["higuchi_fd"] == ["ch1", "ch2", "ch3"] and by["dfa_alpha"] == ["ch1", "ch3"]
    alone = latent_measures(x[:, :, 3:4], fs=100.0, cfg_fractals={}, max_channels=1)
    row = table[(table.channel == "ch3") & (table.measure == "dfa_alpha")]
    assert float(row["value"].iloc[0]) == pytest.approx(float(alone["dfa"].mean()), rel=1e-5)
