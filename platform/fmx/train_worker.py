"""The training loop each Ray Train worker runs: Lightning with Ray's DDP strategy, resumable from checkpoints.

:func:`train_loop` is the ``train_loop_per_worker`` of the TorchTrainer a trial builds (see :mod:`fmx.trial`).
It builds the LightningModule and DataModule through :mod:`models.registry` from the composed config, resumes
from ``ray.train.get_checkpoint()`` when Ray restarts a crashed worker group, and reports metrics plus a
checkpoint to Ray after every validation (:class:`ReportCheckpointCallback`). Rank 0 alone logs to MLflow:
metrics per step and epoch (:class:`RankZeroMlflowLogger`), system metrics, and the latent fractal
fingerprint at each evaluation (:class:`FingerprintArtifactCallback`).
Those loggers live in :mod:`fmx.worker_logging` and :mod:`fmx.fingerprint_log`, the fingerprint itself in
:mod:`fmx.latents`.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl

from fmx import tracking
from fmx.storage import redact
from fmx.config import TRAINER_KEYS, trainer_options
# Split off into their own modules; importable from here as before.
from fmx.latents import _MEASURE_NAMES, _measured_channels, latent_fingerprint
from fmx.fingerprint_log import FingerprintArtifactCallback, _log_fingerprint
from fmx.worker_logging import _DOWN_AT, ModelFiguresCallback, RankZeroMlflowLogger, _outage_errors, _tracking_down

__all__ = [
    "CKPT_NAME", "build_module_and_data", "scalar_metrics", "ReportCheckpointCallback", "RankSeedCallback",
    "train_loop", "trainer_options", "TRAINER_KEYS", "redact",
    # re-exported from fmx.worker_logging and fmx.latents
    "RankZeroMlflowLogger", "FingerprintArtifactCallback", "ModelFiguresCallback", "latent_fingerprint",
    "_DOWN_AT", "_outage_errors", "_tracking_down", "_log_fingerprint", "_MEASURE_NAMES", "_measured_channels",
]

CKPT_NAME = "model.ckpt"


def _import(path: str) -> Callable:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_module_and_data(cfg: Mapping[str, Any], builders: Mapping[str, str] | None = None):
    """The LightningModule and DataModule of ``cfg`` via :mod:`models.registry` (or ``module:function`` paths).

    Without builder overrides the model config is first fitted to the data
    (:func:`models.registry.build_module_and_data`): e.g. ``data=files`` on EEG adds an ``eeg`` tokenizer.
    An ``s3://`` ``model.init_from`` is fetched to this node's cache first and the builders get a copy of ``cfg``
    naming the local file (:func:`fmx.init_from.localize_init_from`).
    """
    builders = builders or {}
    from models import registry

    from fmx.init_from import localize_init_from

    cfg = localize_init_from(cfg)

    if not builders:
        return registry.build_module_and_data(cfg)
    make_module = _import(builders["module"]) if "module" in builders else registry.build_lightning_module
    make_data = _import(builders["data"]) if "data" in builders else registry.build_datamodule
    return make_module(cfg), make_data(cfg)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class ReportCheckpointCallback(pl.Callback):
    """After each validation-bearing train epoch: save a Lightning checkpoint and ``ray.train.report`` it.

    Every rank calls ``report`` (Ray collects them together); rank 0 alone attaches the checkpoint directory.
    Ray's CheckpointConfig then keeps the best ``keep_best`` by the sweep metric plus the latest one.
    """

    def __init__(self, *, extra: Mapping[str, float] | None = None, fail_at_epoch: int | None = None,
                 fail_marker: str | None = None):
        self.extra = dict(extra or {})
        self.fail_at_epoch, self.fail_marker = fail_at_epoch, fail_marker
        self._uploads = _UploadGate()

    def on_train_epoch_end(self, trainer, pl_module):
        import ray.train

        metrics = scalar_metrics(trainer.callback_metrics)
        metrics.update(epoch=float(trainer.current_epoch), step=float(trainer.global_step), **self.extra)
        # What the loggers and callbacks (the fingerprint) hold reaches MLflow before Ray has the checkpoint: a crash
        # after it re-runs no step that could log it again.
        holders = (*trainer.loggers, *getattr(trainer, "callbacks", ()))
        drains = [d for d in (getattr(x, "drain", None) for x in holders) if callable(d)]
        tmp = Path(tempfile.mkdtemp(prefix="fmx_ckpt_"))
        handed_to_ray = False
        try:
            trainer.save_checkpoint(str(tmp / CKPT_NAME))  # collective: rank 0 writes
            checkpoint = None
            if trainer.global_rank == 0:
                from ray.train import Checkpoint

                checkpoint = Checkpoint.from_directory(str(tmp))
            # every rank: a report waits for the controller's poll in Ray's thread; rank 0's drains run there too
            upload = _background_upload(drains, self._uploads if checkpoint is not None else None)
            if checkpoint is None or "checkpoint_upload_fn" not in upload:
                for drain in drains:
                    drain()
            try:
                ray.train.report(metrics, checkpoint=checkpoint, **upload)
            except BaseException:
                if "checkpoint_upload_fn" in upload:
                    self._uploads.release()  # Ray never took it: the next checkpoint must not wait for it
                raise
            handed_to_ray = "checkpoint_upload_fn" in upload  # Ray deletes the folder once it is stored
        finally:
            if not handed_to_ray:
                shutil.rmtree(tmp, ignore_errors=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Fault injection (tests): rank 0 dies hard in the middle of epoch `fail_at_epoch` (second batch), as an
        # OOM kill or a lost node would; the marker file makes it happen once. The pause lets Ray's controller
        # register the checkpoint reported at the end of the previous epoch first.
        if self.fail_at_epoch is None or not self.fail_marker or trainer.global_rank != 0:
            return
        if trainer.current_epoch == self.fail_at_epoch and batch_idx == 1 and not os.path.exists(self.fail_marker):
            Path(self.fail_marker).write_text(str(os.getpid()))
            time.sleep(3.0)
            os._exit(1)


class _UploadGate:
    """At most one of a worker's checkpoints is being drained and stored while training goes on.

    Ray's upload thread also hands each report to the controller, one per poll: without a bound, epochs shorter
    than the poll queued reports without end (Tune saw them later and later, and the fit's end waited for all).
    Reporting epoch k waits until the store of epoch k-1 is done, so Tune is at most about three reports behind
    (a scheduler's stop comes that many epochs late only when epochs are shorter than the poll).
    """

    wait_s = 600.0  # a report Ray dropped (its barrier reset: a worker died, the group restarts) never releases

    def __init__(self):
        self._cv, self._busy = threading.Condition(), False

    def acquire(self) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: not self._busy, timeout=self.wait_s):
                print(f"fmx: the previous checkpoint is still being stored after {self.wait_s:.0f} s; training goes on")
            self._busy = True

    def release(self) -> None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()


def _background_upload(drains=(), gate: _UploadGate | None = None) -> dict:
    """``ray.train.report`` options that store the checkpoint from Ray's upload thread; none on a Ray without it.

    Reported synchronously, each epoch's training waited for the copy into the storage path (an S3 upload on a
    cluster) and for the Train controller to take the report (one per poll): with several workers a rank held
    there held the others at the next gradient all-reduce. In the background the training thread only writes the
    local file; Ray reports the checkpoint once it is stored, in order, deletes the local copy, raises an upload
    failure in the training thread, and waits for uploads in flight when training ends.

    With a checkpoint (rank 0) the ``drains`` (what must reach MLflow before Ray has the checkpoint) run in that
    thread too, ahead of the copy (``checkpoint_upload_fn``), after ``gate`` let the previous store finish: the
    training thread goes on while the last metrics are sent. Where Ray does not offer that, rank 0 reports
    synchronously (no options) and the caller drains first. Without a checkpoint (the other ranks, whose
    loggers are silent) only the report is in the background.
    """
    import inspect

    import ray.train

    mode = getattr(ray.train, "CheckpointUploadMode", None)
    if mode is None:
        return {}
    options = {"checkpoint_upload_mode": mode.ASYNC, "delete_local_checkpoint_after_upload": True}
    if gate is None:
        return options
    if "checkpoint_upload_fn" not in inspect.signature(ray.train.report).parameters:
        return {}
    try:
        store = ray.train.get_context().get_storage().persist_current_checkpoint  # Ray's own copy (DeveloperAPI)
    except (AttributeError, NotImplementedError, RuntimeError):
        return {}

    def drain_then_store(checkpoint, checkpoint_dir_name):
        try:
            for drain in drains:
                drain()
            return store(checkpoint, checkpoint_dir_name)
        finally:
            gate.release()

    gate.acquire()
    return {**options, "checkpoint_upload_fn": drain_then_store}


def _trial_storage():
    """The trial's folder in Ray's run storage (S3, say) as a :class:`fmx.storage.StorageTarget`; None if unknown."""
    import ray.train

    from fmx.storage import StorageTarget

    try:
        ctx = ray.train.get_context().get_storage()  # a DeveloperAPI: may change between Ray versions
        fs, path = ctx.storage_filesystem, ctx.experiment_fs_path
    except (AttributeError, NotImplementedError, RuntimeError) as exc:
        print(f"fmx: the trial's storage folder is unknown ({type(exc).__name__}); metrics a tracking outage "
              "keeps stay in this worker's temp dir")
        return None
    scheme = getattr(fs, "type_name", "")
    uri = f"{scheme}://{path}" if scheme and scheme != "local" else path
    return StorageTarget(uri=uri, storage_path=path, filesystem=None if scheme == "local" else fs)


def _restore_path(tmp_root: Path) -> str | None:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        src = Path(d) / CKPT_NAME
        if not src.exists():
            return None
        dst = tmp_root / CKPT_NAME
        shutil.copy2(src, dst)
    return str(dst)


class RankSeedCallback(pl.Callback):
    """Give each DDP rank its own random stream for training, once the model is built from the shared seed.

    Every rank seeds with the trial's seed, so the initial weights agree (DDP also broadcasts rank 0's), and
    Lightning's DDP setup re-seeds every rank with it again. Left at that, every rank drew the same dropout,
    drop-path and masked-reconstruction masks at every step, on different samples: N workers explored no more
    masks than one. The stream is drawn from (seed, rank, global_step) at train start, after Lightning's re-seed,
    so a resumed fit does not replay the masks of the first steps either. One worker keeps the plain seed.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_start(self, trainer, pl_module):
        if trainer.world_size <= 1:
            return
        import random

        import numpy as np

        state = np.random.SeedSequence([self.seed, int(trainer.global_rank), int(trainer.global_step)])
        torch_seed, np_seed = (int(v) for v in state.generate_state(2))
        torch.manual_seed(torch_seed)
        np.random.seed(np_seed)
        random.seed(np_seed)


def train_loop(config: Mapping[str, Any]) -> None:
    """``train_loop_per_worker``: ``config`` = {cfg, tracking_uri, run_id, builders, fault}."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from fmx import storage

    storage.export_credentials(storage.load_credentials())  # mounted secret -> this process only
    cfg = config["cfg"]
    pl.seed_everything(int(cfg.get("seed", 0)), workers=True, verbose=False)
    torch.set_num_threads(max(1, int(config.get("threads_per_worker", 1))))
    module, datamodule = build_module_and_data(cfg, config.get("builders"))
    rank = ray.train.get_context().get_world_rank()
    uri, run_id = config.get("tracking_uri"), config.get("run_id")
    loggers, callbacks, monitor = [], [], None
    fault = config.get("fault") or {}
    callbacks.append(ReportCheckpointCallback(fail_at_epoch=fault.get("epoch"), fail_marker=fault.get("marker")))
    callbacks.append(RankSeedCallback(int(cfg.get("seed", 0))))
    if uri and run_id:
        spool_dir = config.get("metrics_spool_dir")
        keep_in = None if spool_dir or rank != 0 else _trial_storage()  # S3: the pod's temp dir dies with it
        loggers.append(RankZeroMlflowLogger(tracking_uri=uri, run_id=run_id, spool_dir=spool_dir, keep_in=keep_in,
                                            background=True))  # no training step waits on MLflow
        if rank == 0:
            log_cfg = (cfg.get("fractals") or {}).get("log") or {}
            callbacks.append(FingerprintArtifactCallback(  # sent from its own thread, drained before each checkpoint
                tracking_uri=uri, run_id=run_id, figure_every_s=log_cfg.get("fingerprint_figure_every_s", 60.0),
                background=True))
            callbacks.append(ModelFiguresCallback(tracking_uri=uri, run_id=run_id))
            monitor = tracking.start_system_metrics(run_id, tracking_uri=uri)
    tr = cfg.get("trainer", {})
    use_gpu = bool(config.get("use_gpu"))
    if use_gpu and not torch.cuda.is_available():  # training on CPU while a GPU sits reserved, without a word
        raise ValueError("resources.gpus_per_worker: > 0 reserves a GPU for this worker, but its torch sees no CUDA "
                         f"device (torch {torch.__version__}, CUDA build {torch.version.cuda}); install a CUDA build of "
                         "torch on the GPU nodes, or set resources.gpus_per_worker: 0 to train on CPUs")
    trainer = pl.Trainer(
        accelerator="gpu" if use_gpu else "cpu", devices="auto",
        strategy=RayDDPStrategy(find_unused_parameters=bool(tr.get("find_unused_parameters", True))),
        plugins=[RayLightningEnvironment()], callbacks=callbacks, logger=loggers or False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, gradient_clip_val=None, **trainer_options(tr))
    trainer = prepare_trainer(trainer)
    with tempfile.TemporaryDirectory(prefix="fmx_restore_") as tmp:
        ckpt_path = _restore_path(Path(tmp))
        if ckpt_path and rank == 0 and uri and run_id:
            try:
                tracking.client(uri).set_tag(run_id, "fmx.resumed_from_checkpoint", "true")
            except Exception as exc:  # noqa: BLE001 - a tag is no reason to lose the restart
                print(f"fmx: tag fmx.resumed_from_checkpoint not set ({type(exc).__name__})")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        finally:
            if monitor is not None:
                monitor.finish()
