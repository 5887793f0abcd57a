"""Rank 0's MLflow logging in a training worker that survives a tracking outage: metrics and model figures.

The latent fingerprint's callback is in :mod:`fmx.fingerprint_log`; it shares this module's outage state."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping

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

    With ``background=True`` (what a sweep's workers use) the metrics go to MLflow from a sender thread, in one
    request per ``send_every_s`` seconds, so no training step waits on the tracking store: sent as it came, a
    Lightning log call of 12 metrics held the training thread 10 ms with a sqlite store and 21 ms with an MLflow
    server on the same machine (a remote one adds its round trip), 0.15 ms with the sender thread
    (docs/benchmarks.md, Platform). Metrics keep the time and step of their log call. :meth:`drain` waits until everything logged so far is sent (or kept in the spool
    file): the sweep's workers call it before each checkpoint goes to Ray, so a crash after a checkpoint loses no
    metric of a step before it. An error MLflow answers with (a deleted run, say) is raised by the next
    ``log_metrics``, :meth:`drain` or :meth:`finalize`.
    """

    def __init__(self, *, tracking_uri: str, run_id: str, prefix: str = "", spool_dir: str | Path | None = None,
                 retry_s: float = 60.0, keep_in=None, background: bool = False, send_every_s: float = 2.0):
        super().__init__()
        self._keep_in = keep_in
        self._uri, self._run_id, self._prefix = tracking_uri, run_id, prefix
        self._client = None
        folder = Path(spool_dir) if spool_dir else Path(tempfile.gettempdir()) / "fmx_unlogged_metrics"
        self.spool_path = folder / f"{run_id}.unlogged_metrics.jsonl"
        self._retry_s, self._warned = float(retry_s), False
        self._background, self._send_every_s = bool(background), float(send_every_s)
        # guards the queue, the sender's state and its error; the spool file and MLflow calls need no lock: the
        # sender alone makes them while it runs, the training thread only after it stopped (flush)
        self._cv = threading.Condition()
        self._queue: list = []
        self._in_flight = 0  # metrics the sender has taken from the queue and not yet sent or kept
        self._closing, self._sender, self._error = False, None, None
        self._drain_waiters = 0  # drain() calls waiting: the sender sends at once instead of after send_every_s

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

        self._raise_sender_error()
        now = int(time.time() * 1000)
        items = [Metric(self._prefix + k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if tracking._number(v)]
        if self._background:
            with self._cv:
                self._queue.extend(items)
                if self._sender is None:
                    self._closing = False
                    self._sender = threading.Thread(target=self._send_loop, name="fmx-mlflow-sender", daemon=True)
                    self._sender.start()
                self._cv.notify_all()
            return
        self._deliver(items)

    def _deliver(self, items: list) -> None:
        # _DOWN_AT, not a failure time of its own: a callback may have seen the server down, or another logger up
        if time.monotonic() - _DOWN_AT.get(self._uri, -1e18) < self._retry_s:
            self._keep(items)  # while the server is away, no step waits out MLflow's retries
            self._warn("did not answer a recent call")
        else:
            self._send(items)

    def _send_loop(self) -> None:
        """The sender thread: every ``send_every_s`` (at once when draining or closing), send what is queued."""
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._closing)
                if not self._queue:  # closing, nothing left
                    self._sender = None
                    self._cv.notify_all()
                    return
                self._cv.wait_for(lambda: self._closing or self._drain_waiters > 0, timeout=self._send_every_s)
                items, self._queue = self._queue, []
                self._in_flight = len(items)
            try:
                self._deliver(items)
            except BaseException as exc:  # noqa: BLE001 - raised again in the training thread, not lost
                with self._cv:
                    self._error = self._error or exc
            finally:
                with self._cv:
                    self._in_flight = 0
                    self._cv.notify_all()

    def drain(self) -> None:
        """Wait until every metric logged so far is sent to MLflow or kept in the spool file."""
        if not self._background:
            return
        with self._cv:
            self._drain_waiters += 1
            self._cv.notify_all()
            try:
                self._cv.wait_for(lambda: self._sender is None or (not self._queue and not self._in_flight))
            finally:
                self._drain_waiters -= 1
        self._raise_sender_error()

    def _stop_sender(self) -> None:
        with self._cv:
            sender, self._closing = self._sender, True
            self._cv.notify_all()
        if sender is not None:
            sender.join()

    def _raise_sender_error(self) -> None:
        with self._cv:
            error, self._error = self._error, None
        if error is not None:
            raise error

    @rank_zero_only
    def finalize(self, status: str) -> None:  # the run stays open: the trial ends it after acceptance
        self.flush()

    def flush(self) -> bool:
        """Send what the sender thread holds, then the kept metrics; True when none are left (a warning names the
        file otherwise)."""
        self._stop_sender()
        self._raise_sender_error()
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

