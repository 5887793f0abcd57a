"""Each epoch's checkpoint is stored, and the metrics before it drained to MLflow, from Ray's upload thread.

Reported synchronously, training waited for the drain, the copy into the storage path (an S3 upload on a cluster)
and the Train controller's next poll. The end-to-end path (a real TorchTrainer storing the checkpoints a crashed
worker resumes from, ASHA stopping a trial) is `tests/test_sweep_runner.py`.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ray_train = pytest.importorskip("ray.train")

from fmx import train_worker  # noqa: E402
from fmx.train_worker import CKPT_NAME, ReportCheckpointCallback  # noqa: E402


def _trainer(rank: int, *, loggers=(), callbacks=()):
    def save(path):
        Path(path).write_bytes(b"weights")

    return SimpleNamespace(callback_metrics={"val/loss": 0.5}, current_epoch=2, global_step=6, global_rank=rank,
                           loggers=list(loggers), callbacks=list(callbacks), save_checkpoint=save)


class _Drained:
    def __init__(self, name, order):
        self.name, self.order = name, order

    def drain(self):
        self.order.append(f"drain {self.name}")


@pytest.fixture
def ray_side(monkeypatch):
    """Ray's report (the parameters it has) and storage context; records what reached them, in order."""
    side = SimpleNamespace(order=[], reports=[])

    class Storage:
        def persist_current_checkpoint(self, checkpoint, name):
            side.order.append(f"store {name}")
            return "stored"

    def report(metrics, checkpoint=None, checkpoint_upload_mode=None, delete_local_checkpoint_after_upload=None,
               checkpoint_upload_fn=None):
        side.order.append("report")
        side.reports.append(SimpleNamespace(metrics=metrics, checkpoint=checkpoint, mode=checkpoint_upload_mode,
                                            delete=delete_local_checkpoint_after_upload, upload=checkpoint_upload_fn))

    monkeypatch.setattr(ray_train, "get_context", lambda: SimpleNamespace(get_storage=lambda: Storage()))
    monkeypatch.setattr(ray_train, "report", report)
    return side


def test_rank_zero_drains_and_stores_in_rays_thread_and_ray_deletes_the_folder(ray_side):
    order = ray_side.order
    trainer = _trainer(0, loggers=[_Drained("logger", order)], callbacks=[_Drained("fingerprint", order), object()])
    ReportCheckpointCallback().on_train_epoch_end(trainer, None)
    assert order == ["report"]  # the training thread went on without waiting for MLflow or the copy
    r, = ray_side.reports
    assert r.mode == ray_train.CheckpointUploadMode.ASYNC and r.delete is True and r.metrics["epoch"] == 2.0
    folder = Path(r.checkpoint.path)
    assert (folder / CKPT_NAME).read_bytes() == b"weights"  # left for the upload thread
    assert r.upload(r.checkpoint, "checkpoint_0002") == "stored"  # what Ray's upload thread does
    assert order == ["report", "drain logger", "drain fingerprint", "store checkpoint_0002"]
    shutil.rmtree(folder)


def test_the_next_checkpoint_waits_for_the_previous_store_so_tune_is_never_far_behind(ray_side, tmp_path):
    callback = ReportCheckpointCallback()
    callback.on_train_epoch_end(_trainer(0), None)
    second = threading.Thread(target=callback.on_train_epoch_end, args=(_trainer(0), None))
    second.start()
    time.sleep(0.3)
    assert len(ray_side.reports) == 1 and second.is_alive()  # held: the first is not stored yet
    first = ray_side.reports[0]
    first.upload(first.checkpoint, "checkpoint_0000")
    second.join(10)
    assert len(ray_side.reports) == 2 and not second.is_alive()
    for r in ray_side.reports:
        shutil.rmtree(r.checkpoint.path)


def test_a_report_ray_refuses_releases_the_gate_and_leaves_no_folder(ray_side, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def refuse(metrics, checkpoint=None, checkpoint_upload_mode=None, delete_local_checkpoint_after_upload=None,
               checkpoint_upload_fn=None):
        raise RuntimeError("controller gone")

    callback = ReportCheckpointCallback()
    monkeypatch.setattr(ray_train, "report", refuse)
    with pytest.raises(RuntimeError, match="controller gone"):
        callback.on_train_epoch_end(_trainer(0), None)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(callback._uploads, "wait_s", 0.5)
    callback._uploads.acquire()  # free at once: no "still being stored" wait for a report Ray never took


def test_other_ranks_report_metrics_only_from_rays_thread_and_leave_no_folder(ray_side, tmp_path, monkeypatch):
    import tempfile

    # Reported synchronously, a rank waited in report for the controller's next poll, and rank 0 for it at the
    # next all-reduce.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ReportCheckpointCallback().on_train_epoch_end(_trainer(1, loggers=[_Drained("logger", ray_side.order)]), None)
    r, = ray_side.reports
    assert r.checkpoint is None and r.upload is None and r.mode == ray_train.CheckpointUploadMode.ASYNC
    assert ray_side.order == ["drain logger", "report"]  # rank_zero_only loggers: a no-op here
    assert list(tmp_path.iterdir()) == []


def test_without_rays_storage_context_rank_zero_drains_then_reports_synchronously(ray_side, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def no_context():
        raise RuntimeError("not in a Train worker")

    monkeypatch.setattr(ray_train, "get_context", no_context)
    ReportCheckpointCallback().on_train_epoch_end(_trainer(0, loggers=[_Drained("logger", ray_side.order)]), None)
    r, = ray_side.reports
    assert ray_side.order == ["drain logger", "report"] and r.mode is None and r.upload is None
    assert list(tmp_path.iterdir()) == []  # Ray copied it during report; the folder is ours to remove


def test_a_ray_without_background_uploads_reports_synchronously_and_cleans_up(ray_side, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delattr(ray_train, "CheckpointUploadMode")
    ReportCheckpointCallback().on_train_epoch_end(_trainer(0), None)
    r, = ray_side.reports
    assert r.mode is None and r.upload is None and r.checkpoint is not None
    assert list(tmp_path.iterdir()) == []


def test_a_store_still_running_after_the_wait_is_reported_and_training_goes_on(monkeypatch, capsys):
    gate = train_worker._UploadGate()
    monkeypatch.setattr(gate, "wait_s", 0.2)
    gate.acquire()
    gate.acquire()  # the first never released
    assert "still being stored after" in capsys.readouterr().out
