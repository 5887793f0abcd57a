"""Each epoch's checkpoint is stored from Ray's upload thread, not the training thread.

Reported synchronously, training waited for the copy into the storage path (an S3 upload on a cluster) and for
the Train controller to take the report. The end-to-end path (a real TorchTrainer storing the checkpoints a
crashed worker resumes from) is `tests/test_sweep_runner.py`.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

ray_train = pytest.importorskip("ray.train")

from fmx.train_worker import CKPT_NAME, ReportCheckpointCallback  # noqa: E402


def _trainer(rank: int):
    def save(path):
        Path(path).write_bytes(b"weights")

    return SimpleNamespace(callback_metrics={"val/loss": 0.5}, current_epoch=2, global_step=6, global_rank=rank,
                           loggers=[], save_checkpoint=save)


@pytest.fixture
def reports(monkeypatch):
    calls = []

    def report(metrics, checkpoint=None, **options):
        folder = Path(checkpoint.path) if checkpoint is not None else None
        calls.append({"metrics": metrics, "folder": folder, "options": options,
                      "file": folder is not None and (folder / CKPT_NAME).read_bytes() == b"weights"})

    monkeypatch.setattr(ray_train, "report", report)
    return calls


def test_rank_zero_hands_its_checkpoint_to_rays_upload_thread_which_deletes_it(reports):
    ReportCheckpointCallback().on_train_epoch_end(_trainer(0), None)
    call, = reports
    assert call["options"] == {"checkpoint_upload_mode": ray_train.CheckpointUploadMode.ASYNC,
                               "delete_local_checkpoint_after_upload": True}
    assert call["file"] and call["metrics"]["epoch"] == 2.0
    assert call["folder"].exists()  # still there for the upload thread: Ray removes it once stored
    call["folder"].joinpath(CKPT_NAME).unlink()
    call["folder"].rmdir()


def test_other_ranks_report_metrics_only_and_leave_no_folder(reports, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ReportCheckpointCallback().on_train_epoch_end(_trainer(1), None)
    call, = reports
    assert call["folder"] is None and call["options"] == {}
    assert list(tmp_path.iterdir()) == []


def test_a_failed_report_leaves_no_local_checkpoint(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def refuse(metrics, checkpoint=None, **options):
        raise RuntimeError("controller gone")

    monkeypatch.setattr(ray_train, "report", refuse)
    with pytest.raises(RuntimeError, match="controller gone"):
        ReportCheckpointCallback().on_train_epoch_end(_trainer(0), None)
    assert list(tmp_path.iterdir()) == []


def test_a_ray_without_background_uploads_reports_synchronously_and_cleans_up(reports, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delattr(ray_train, "CheckpointUploadMode")
    ReportCheckpointCallback().on_train_epoch_end(_trainer(0), None)
    call, = reports
    assert call["options"] == {} and call["file"]
    assert list(tmp_path.iterdir()) == []  # Ray copied it during report; the folder is ours to remove
