"""The training loop each Ray Train worker runs: Lightning with Ray's DDP strategy, resumable from checkpoints.

:func:`train_loop` is the ``train_loop_per_worker`` of the TorchTrainer a trial builds (see :mod:`fmx.runner`).
It builds the LightningModule and DataModule through :mod:`models.registry` from the composed config, resumes
from ``ray.train.get_checkpoint()`` when Ray restarts a crashed worker group, and reports metrics plus a
checkpoint to Ray after every validation (:class:`ReportCheckpointCallback`). Rank 0 alone logs to MLflow:
metrics per step and epoch (:class:`RankZeroMlflowLogger`), system metrics, and the latent fractal
fingerprint at each evaluation (:class:`FingerprintArtifactCallback`).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

try:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
    from pytorch_lightning.utilities import rank_zero_only
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only

from fmx import tracking
from fmx.storage import redact
from fmx.config import TRAINER_KEYS, trainer_options  # noqa: F401  TRAINER_KEYS re-exported

CKPT_NAME = "model.ckpt"

# Tracking URI -> time.monotonic() of this process's last failed call to it: the logger and the callbacks share it,
# so while MLflow is away no call waits out MLflow's own retries (minutes each with the default settings).
_DOWN_AT: dict[str, float] = {}


def _outage_errors() -> tuple[type[BaseException], ...]:
    """What a tracking outage raises: MLflow's errors and network errors (requests' errors are OSErrors)."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


def _tracking_down(uri: str, *, retry_s: float = 60.0) -> bool:
    """True while the server at ``uri`` failed less than ``retry_s`` ago, or does not answer one quick check."""
    failed = _DOWN_AT.get(uri)
    if failed is not None and time.monotonic() - failed < retry_s:
        return True
    try:
        tracking.check_server(uri, tries=1, timeout_s=5.0)
    except tracking.TrackingServerUnreachable:
        _DOWN_AT[uri] = time.monotonic()
        return True
    return False


class RankZeroMlflowLogger(Logger):
    """A Lightning logger writing metrics of an existing run from global rank 0 only.

    Unlike Lightning's ``MLFlowLogger`` it never ends the run (the platform owns the lifecycle) and never logs
    hyperparameters (the trial logs the flattened composed config once).

    A tracking outage does not stop training: metrics MLflow refuses are appended to ``spool_dir/<run_id>.
    unlogged_metrics.jsonl`` (one ``{"key", "value", "step", "timestamp"}`` per line; default folder: the system
    temp dir), with one warning naming the URI and the file. Every ``retry_s`` seconds a later call tries the
    server again and sends the kept metrics first, with their own steps and times; :meth:`finalize` tries once
    more and, if the server is still away, says where the metrics are kept. With ``keep_in`` (a
    :class:`fmx.storage.StorageTarget`, the trial's folder on S3, say) the file is also copied there at that point,
    merged with a copy an earlier worker left: a spool in a pod's temp dir is lost with the pod.
    """

    def __init__(self, *, tracking_uri: str, run_id: str, prefix: str = "", spool_dir: str | Path | None = None,
                 retry_s: float = 60.0, keep_in=None):
        super().__init__()
        self._keep_in = keep_in
        self._uri, self._run_id, self._prefix = tracking_uri, run_id, prefix
        self._client = None
        folder = Path(spool_dir) if spool_dir else Path(tempfile.gettempdir()) / "fmx_unlogged_metrics"
        self.spool_path = folder / f"{run_id}.unlogged_metrics.jsonl"
        self._retry_s, self._warned = float(retry_s), False

    @property
    def name(self) -> str:
        return "fmx-mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._client is None:
            self._client = tracking.client(self._uri)
        return self._client

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:  # noqa: D401 - the trial logs params itself
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(self._prefix + k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if tracking._number(v)]
        # _DOWN_AT, not a failure time of its own: a callback may have seen the server down, or another logger up
        if time.monotonic() - _DOWN_AT.get(self._uri, -1e18) < self._retry_s:
            self._keep(items)  # while the server is away, no step waits out MLflow's retries
            self._warn("did not answer a recent call")
        else:
            self._send(items)

    @rank_zero_only
    def finalize(self, status: str) -> None:  # the run stays open: the trial ends it after acceptance
        self.flush()

    def flush(self) -> bool:
        """Send the kept metrics now; True when none are left (a warning names the file otherwise)."""
        if not self.spool_path.exists() or self._send([]):
            return True
        where = str(self.spool_path)
        if self._keep_in is not None:
            where = self._copy_to_storage() or where
        print(f"fmx: WARNING: the MLflow server at {redact(self._uri)} is still unreachable; the metrics it did "
              f"not take are kept in {redact(where)} (JSON lines: key, value, step, timestamp), to log them to "
              f"run {self._run_id} when it is back", flush=True)
        return False

    def _copy_to_storage(self) -> str | None:
        """Copy the spool file into ``keep_in`` (after the lines of a copy already there); its path, or None."""
        from fmx import storage

        rel = self.spool_path.name
        try:
            before = (storage.read_bytes(self._keep_in, rel) or b"").decode("utf-8").splitlines(keepends=True)
            mine = self.spool_path.read_text(encoding="utf-8").splitlines(keepends=True)
            seen = set(before)  # a restarted worker on the same node re-copies the lines it copied before
            lines = before + [ln for ln in mine if ln not in seen and not seen.add(ln)]
            return storage.write_bytes(self._keep_in, rel, "".join(lines).encode("utf-8"))
        except (OSError, ValueError) as exc:  # the store is away too (read_bytes says so as a ValueError)
            print(f"fmx: WARNING: the unlogged metrics could not be copied to {redact(self._keep_in.join(rel))} "
                  f"({type(exc).__name__}: {redact(str(exc))[:200]})", flush=True)
            return None

    def _send(self, items: list) -> bool:
        """Log the kept metrics, then ``items``; on an MLflow failure the unsent ones are kept, False returned."""
        from mlflow.entities import Metric

        kept = []
        if self.spool_path.exists():
            with open(self.spool_path, encoding="utf-8") as f:
                kept = [Metric(d["key"], float(d["value"]), int(d["timestamp"]), int(d["step"]))
                        for d in map(json.loads, filter(str.strip, f))]
        todo, sent = kept + list(items), 0
        try:
            if kept:  # asks in seconds first: MLflow's own client retries a refused connection for minutes
                tracking.check_server(self._uri, tries=1, timeout_s=5.0)
            for sent in range(0, len(todo), 500):
                self.experiment.log_batch(self._run_id, metrics=todo[sent:sent + 500])
            sent = len(todo)
        except Exception as exc:  # noqa: BLE001 - a tracking outage must not kill hours of training
            from mlflow.exceptions import RestException

            if isinstance(exc, RestException) and 400 <= exc.get_http_status_code() < 500:
                raise  # the server answered and refused (a bad key, a deleted run): no outage to wait out
            _DOWN_AT[self._uri] = time.monotonic()
            self._warn(f"failed ({type(exc).__name__}: {redact(str(exc))[:300]})")
            if kept:  # what was sent before the failure is dropped from the file, the rest stays in order
                self._rewrite(todo[sent:])
            else:
                self._keep(todo[sent:])
            return False
        _DOWN_AT.pop(self._uri, None)
        if kept:
            self.spool_path.unlink(missing_ok=True)
        return True

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"fmx: WARNING: MLflow at {redact(self._uri)} {what}; training goes on and the metrics are kept "
                  f"in {self.spool_path} until the server answers again", flush=True)

    def _rewrite(self, metrics: list) -> None:
        tmp = self.spool_path.with_suffix(".tmp")
        tmp.write_text("".join(self._line(m) for m in metrics), encoding="utf-8")
        os.replace(tmp, self.spool_path)

    def _keep(self, metrics: list) -> None:
        if not metrics:
            return
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool_path, "a", encoding="utf-8") as f:
            f.write("".join(self._line(m) for m in metrics))

    @staticmethod
    def _line(m) -> str:
        return json.dumps({"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}) + "\n"


def _import(path: str) -> Callable:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_module_and_data(cfg: Mapping[str, Any], builders: Mapping[str, str] | None = None):
    """The LightningModule and DataModule of ``cfg`` via :mod:`models.registry` (or ``module:function`` paths).

    Without builder overrides the model config is first fitted to the data
    (:func:`models.registry.build_module_and_data`): e.g. ``data=files`` on EEG adds an ``eeg`` tokenizer.
    """
    builders = builders or {}
    from models import registry

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

    def on_train_epoch_end(self, trainer, pl_module):
        import ray.train

        metrics = scalar_metrics(trainer.callback_metrics)
        metrics.update(epoch=float(trainer.current_epoch), step=float(trainer.global_step), **self.extra)
        tmp = Path(tempfile.mkdtemp(prefix="fmx_ckpt_"))
        try:
            trainer.save_checkpoint(str(tmp / CKPT_NAME))  # collective: rank 0 writes
            checkpoint = None
            if trainer.global_rank == 0:
                from ray.train import Checkpoint

                checkpoint = Checkpoint.from_directory(str(tmp))
            ray.train.report(metrics, checkpoint=checkpoint)
        finally:
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


class FingerprintArtifactCallback(pl.Callback):
    """Rank 0, each validation: per-channel latent measures as metrics, a parquet table and a plot in MLflow.

    While the tracking server is away (a failure less than ``retry_s`` ago, or no answer to one quick check) the
    evaluation is not sent, so no validation waits out MLflow's retries: the next logged evaluation carries its
    table rows and its summary metrics (at their own step).
    """

    def __init__(self, *, tracking_uri: str, run_id: str, max_channels: int = 32, retry_s: float = 60.0):
        self.uri, self.run_id, self.max_channels = tracking_uri, run_id, max_channels
        self.retry_s = float(retry_s)
        self.tables: list = []  # one tidy table per evaluation; the artifact holds them all (epoch column)
        self._unlogged: list = []  # (summary, step) of evaluations whose metrics MLflow has not taken yet
        self._batch = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and trainer.global_rank == 0:
            self._batch = batch

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.global_rank != 0 or self._batch is None or trainer.sanity_checking:
            return
        try:
            table, summary = latent_fingerprint(pl_module, self._batch, max_channels=self.max_channels)
        except Exception as exc:  # noqa: BLE001 - a fingerprint failure must not kill training
            print(f"fmx: latent fingerprint skipped at epoch {trainer.current_epoch}: {exc}")
            return
        if table is None or table.empty:
            return
        from models.callbacks import _logged_step

        step = _logged_step(trainer)  # the step val/* of this validation are logged at
        table = table.assign(epoch=trainer.current_epoch, step=step)
        self.tables.append(table)
        self._unlogged.append((summary, step))
        reason = "unreachable" if _tracking_down(self.uri, retry_s=self.retry_s) else None
        if reason is None:
            try:
                _log_fingerprint(self.uri, self.run_id, self.tables, self._unlogged)
                return
            except _outage_errors() as exc:  # a tracking outage must not kill training; the next one logs all
                _DOWN_AT[self.uri] = time.monotonic()
                reason = f"failed: {type(exc).__name__}"
        print(f"fmx: latent fingerprint of epoch {trainer.current_epoch} not logged (MLflow at {redact(self.uri)} "
              f"{reason}); the next evaluation's table holds it")


class ModelFiguresCallback(pl.Callback):
    """Rank 0: log the figures of any LightningModule with a ``figures(batch) -> {name: Figure}`` method
    (the two-moons decision boundary, say) every ``every`` epochs and at the last one."""

    def __init__(self, *, tracking_uri: str, run_id: str, every: int = 10, retry_s: float = 60.0):
        self.uri, self.run_id, self.every, self.retry_s = tracking_uri, run_id, max(1, every), float(retry_s)
        self._batch = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and trainer.global_rank == 0:
            self._batch = batch

    def on_validation_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0)
        if trainer.global_rank != 0 or trainer.sanity_checking or not hasattr(pl_module, "figures"):
            return
        if not last and (epoch + 1) % self.every:
            return
        import matplotlib.pyplot as plt

        if _tracking_down(self.uri, retry_s=self.retry_s):  # no figure waits out MLflow's retries
            print(f"fmx: model figures of epoch {epoch} not drawn: MLflow at {redact(self.uri)} is unreachable")
            return
        try:
            figs = pl_module.figures(self._batch)
        except Exception as exc:  # noqa: BLE001 - a plot must not kill training
            print(f"fmx: model figures skipped at epoch {epoch}: {exc}")
            return
        c, skipped, reason = tracking.client(self.uri), [], ""
        for name, fig in figs.items():
            try:
                if not skipped:  # after one outage error the others would each wait out the retries too
                    tracking.log_figure(c, self.run_id, fig, f"figures/{name}_epoch{epoch:03d}.png")
                    continue
            except _outage_errors() as exc:  # a tracking outage must not kill training
                _DOWN_AT[self.uri], reason = time.monotonic(), type(exc).__name__
            finally:
                plt.close(fig)
            skipped.append(name)
        if skipped:
            print(f"fmx: figure(s) {', '.join(skipped)} of epoch {epoch} not logged: MLflow at {redact(self.uri)} "
                  f"failed ({reason})")


_MEASURE_NAMES = {"beta": "spectral_beta", "hfd": "higuchi_fd", "dfa": "dfa_alpha"}


@torch.no_grad()
def latent_fingerprint(pl_module, batch, *, max_channels: int = 32):
    """The fractal fingerprint of the SSM latents of one validation batch: ``(table, summary)``.

    ``table`` is tidy (``channel, measure, value, ok`` ...), ``summary`` holds ``{measure}_mean/_std`` and, with
    :func:`fractals.fingerprint.fingerprint`, the channel-network measures (``fc_density``, ``graph_fd``). Without
    that module the model's own per-channel measures (1/f beta, Higuchi FD, DFA alpha) are used.

    Shape:
        latents["ssm"]: (B, T, D) -> the first ``max_channels`` latent channels, batch items as recordings.
    """
    import pandas as pd

    was_training = pl_module.training
    pl_module.eval()
    try:
        out = pl_module(batch)
    finally:
        pl_module.train(was_training)
    latents = out.get("latents", {}) if isinstance(out, Mapping) else {}
    ssm = latents.get("ssm")
    if ssm is None:
        return None, {}
    fs = float(pl_module.latent_rate(batch)) if hasattr(pl_module, "latent_rate") else 1.0
    cfg_fractals = getattr(pl_module, "fractals_cfg", {}) or {}
    x = ssm.detach().float().transpose(1, 2)[:, :max_channels].cpu()  # (B, C, T)
    try:
        from fractals.fingerprint import fingerprint
        from models.callbacks import latent_band

        temporal = dict(cfg_fractals.get("metrics", {}).get("temporal", {}))
        band = latent_band(x.shape[-1], fs, tuple(temporal.get("psd_freq_band", (2.0, 80.0))))
        temporal["psd_freq_band"] = list(band)
        table, summary = fingerprint(x, fs, {"temporal": temporal})
        return table, summary
    except ImportError:
        pass
    except (ValueError, RuntimeError) as exc:  # e.g. latents too short for a configured window: use the fallback
        print(f"fmx: fractals.fingerprint failed on the latents ({exc}); using the model's latent measures")
    from models.callbacks import latent_measures

    measures = latent_measures(ssm, fs=fs, cfg_fractals=cfg_fractals, max_channels=max_channels)
    rows = [{"channel": f"ch{c}", "measure": _MEASURE_NAMES.get(k, k), "value": float(v[:, i].mean()), "ok": True}
            for k, v in measures.items()
            for i, c in enumerate(_measured_channels(ssm, k, v.shape[1], fs, cfg_fractals, max_channels))]
    table = pd.DataFrame(rows)
    summary = {}
    for m, g in table.groupby("measure") if rows else []:
        summary[f"{m}_mean"], summary[f"{m}_std"] = float(g["value"].mean()), float(g["value"].std())
    return table, summary


def _measured_channels(ssm: torch.Tensor, measure: str, n_columns: int, fs: float, cfg_fractals, max_channels: int):
    """The latent channel of each column of ``latent_measures(...)[measure]``: it drops constant channels, and
    channels a measure's estimator rejects alone (those are found by measuring each channel by itself)."""
    from models.callbacks import latent_measures

    x = ssm.detach().float().transpose(1, 2)  # the same live test as latent_measures
    live = torch.nonzero((x.amax(-1) - x.amin(-1)).amin(0) > 1e-8).flatten()[:max_channels].tolist()
    if n_columns == len(live):
        return live
    return [c for c in live if measure in latent_measures(ssm[:, :, c:c + 1], fs=fs, cfg_fractals=cfg_fractals,
                                                          max_channels=1)]


def _log_fingerprint(uri: str, run_id: str, tables: list, unlogged: list) -> None:
    """Log the summary metrics of each ``(summary, step)`` in ``unlogged``, removing it from the list once logged
    (a failure leaves the rest for the next evaluation, none twice), then the table of all evaluations."""
    import pandas as pd

    c = tracking.client(uri)
    while unlogged:
        summary, step = unlogged[0]
        metrics = {f"fingerprint/{k}": v for k, v in summary.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool) and k not in ("n_recordings",)}
        tracking.log_metrics(c, run_id, metrics, step=step)
        unlogged.pop(0)
    df = pd.concat(tables, ignore_index=True)
    tracking.log_dataframe_parquet(c, run_id, df, "fingerprint/latent_fingerprint.parquet")
    try:
        from fmx.compare import fingerprint_figure

        fig = fingerprint_figure(df)
        tracking.log_figure(c, run_id, fig, "fingerprint/latent_fingerprint.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - plots are a convenience; the parquet table is the record
        print(f"fmx: fingerprint plot skipped: {exc}")


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
        loggers.append(RankZeroMlflowLogger(tracking_uri=uri, run_id=run_id, spool_dir=spool_dir, keep_in=keep_in))
        if rank == 0:
            callbacks.append(FingerprintArtifactCallback(tracking_uri=uri, run_id=run_id))
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
