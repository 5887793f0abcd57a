"""Rank 0's latent fingerprint in MLflow at each evaluation: summary metrics, a parquet table of every evaluation,
and its plot; sent from a thread of its own in sweeps, drained before each checkpoint goes to Ray."""
from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl

from fmx import tracking
from fmx import worker_logging as _wl  # its _DOWN_AT: the outage state the logger and the callbacks share
from fmx.latents import latent_fingerprint
from fmx.storage import redact

__all__ = ["FINGERPRINT_TABLE", "FingerprintArtifactCallback"]

FINGERPRINT_TABLE = "fingerprint/latent_fingerprint.parquet"


class FingerprintArtifactCallback(pl.Callback):
    """Rank 0, each validation: per-channel latent measures as metrics and a parquet table in MLflow, plus a plot.

    While the tracking server is away (a failure less than ``retry_s`` ago, or no answer to one quick check) the
    evaluation is not sent, so no validation waits out MLflow's retries: the next logged evaluation carries its
    table rows and its summary metrics (at their own step).

    The plot (every evaluation so far, drawn from the table) is redrawn at the first evaluation, then at most once
    every ``figure_every_s`` seconds, and at the end of the fit: drawing and saving it at every evaluation took
    17 % of the Train worker's time (py-spy) with the tiny preset's 1.5 s epochs, the largest part of the
    platform's per-epoch cost. Epochs of a minute or more redraw it every evaluation. A trial stopped early by its
    scheduler keeps the last plot drawn (at most ``figure_every_s`` behind); its table holds every evaluation.
    ``figure_every_s=0`` draws every evaluation.

    With ``background=True`` (what a sweep's workers use) the fingerprint is still measured in the training thread
    but sent from a thread of its own: the validation does not wait for MLflow (15-40 ms a table with a sqlite
    store). A send still in flight at the next evaluation is not queued behind: its successor sends both.
    :meth:`drain` sends everything measured so far (the sweep's workers call it before each checkpoint goes to
    Ray; a programming error of a send is raised there). Plots are drawn in the training thread (matplotlib is
    not thread-safe), after a drain.
    """

    def __init__(self, *, tracking_uri: str, run_id: str, max_channels: int = 32, retry_s: float = 60.0,
                 figure_every_s: float = 60.0, background: bool = False):
        from models._config_options import _is_real

        if not _is_real(figure_every_s, 0.0):
            raise ValueError(f"fractals.log.fingerprint_figure_every_s: needs a number of seconds >= 0 (0 redraws "
                             f"the plot at every evaluation), got {figure_every_s!r}")
        self.uri, self.run_id, self.max_channels = tracking_uri, run_id, max_channels
        self.retry_s, self.figure_every_s = float(retry_s), float(figure_every_s)
        self.background = bool(background)
        self.tables: list = []  # one tidy table per evaluation; the artifact holds them all (epoch column)
        # The same tables as Arrow, each converted once: rebuilding the artifact from pandas converted every row
        # of every evaluation again each time (28 ms at the 20th evaluation; the largest per-epoch platform cost).
        self._arrow: list = []
        self._sent = 0  # tables in the last logged artifact
        self._resumed_at: int | None = None  # first epoch of a fit restored from a checkpoint, until read back
        self._unlogged: list = []  # (summary, step) of evaluations whose metrics MLflow has not taken yet
        self._batch = None
        self._epoch = 0  # of the last evaluation measured
        self._drawn_at: float | None = None  # time.monotonic() of the last plot logged
        self._plot_behind = False  # evaluations logged since that plot
        # _lock guards the lists and the send in flight; _send_lock makes sends (sender thread, a drain in Ray's
        # upload thread, the training thread) one at a time
        self._lock, self._send_lock = threading.Lock(), threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._sending: Future | None = None

    def on_train_start(self, trainer, pl_module):
        # A fit restored from a checkpoint (Ray restarting a crashed worker) starts with no tables, and its first
        # log would replace the run's artifact, rows of the epochs before the crash included: read them back first.
        if trainer.global_rank == 0 and getattr(trainer, "ckpt_path", None) and not self.tables:
            self._resumed_at = int(trainer.current_epoch)

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
        arrow = _to_arrow(table)
        with self._lock:
            self.tables.append(table)
            self._arrow.append(arrow)
            self._unlogged.append((summary, step))
            self._epoch = trainer.current_epoch
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
        draw = last or self._drawn_at is None or time.monotonic() - self._drawn_at >= self.figure_every_s
        if self.background and not draw:
            self._send_in_background()
        elif self.drain() and draw:
            self._draw(f"of epoch {trainer.current_epoch}")

    def on_fit_end(self, trainer, pl_module):
        """Send what is left, then the plot of every evaluation unless the last one drew it (max_steps or a stop
        before max_epochs)."""
        if trainer.global_rank != 0:
            return
        logged = self.drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if logged and self._plot_behind and not _wl._tracking_down(self.uri, retry_s=self.retry_s):
            self._draw("at the end of the fit")

    def drain(self) -> bool:
        """Send every evaluation measured so far (after a send in flight); True when MLflow has them all."""
        with self._lock:
            sending, self._sending = self._sending, None
        if sending is not None:
            sending.result()  # a programming error of the send is raised here, not lost
        return self._send()

    def _send_in_background(self) -> None:
        with self._lock:
            sending = self._sending
            if sending is not None and not sending.done():
                return  # it sends what it took; the next send or a drain sends this evaluation
            self._sending = None
        if sending is not None:
            sending.result()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmx-fingerprint")
        with self._lock:
            self._sending = self._executor.submit(self._send)

    def _send(self) -> bool:
        """Log the unlogged summaries and the table of every evaluation; False (and a printed line) on an outage."""
        with self._send_lock:
            with self._lock:
                if not self._unlogged and self._sent == len(self._arrow):
                    return True  # nothing new (a model without SSM latents never has any): no request, no read-back
                epoch = self._epoch
            reason = "unreachable" if _wl._tracking_down(self.uri, retry_s=self.retry_s) else None
            if reason is None:
                try:
                    if self._resumed_at is not None:
                        self._read_back_earlier_rows()
                    with self._lock:
                        arrow = list(self._arrow)
                    _log_fingerprint(self.uri, self.run_id, arrow, self._unlogged)
                    self._sent = len(arrow)
                except _wl._outage_errors() as exc:  # a tracking outage must not kill training; the next one logs all
                    _wl._DOWN_AT[self.uri] = time.monotonic()
                    reason = f"failed: {type(exc).__name__}"
            if reason is not None:
                print(f"fmx: latent fingerprint of epoch {epoch} not logged (MLflow at {redact(self.uri)} "
                      f"{reason}); the next evaluation's table holds it")
                return False
            self._plot_behind = True
            return True

    def _read_back_earlier_rows(self) -> None:
        """Put the logged rows of the epochs before ``_resumed_at`` ahead of this fit's tables (none if the run has
        no table yet); the re-run epochs' old rows are dropped. An outage error is raised: the next log retries."""
        import pandas as pd

        c = tracking.client(self.uri)
        folder = FINGERPRINT_TABLE.rsplit("/", 1)[0]
        if any(a.path == FINGERPRINT_TABLE for a in c.list_artifacts(self.run_id, folder)):
            with tempfile.TemporaryDirectory(prefix="fmx_fingerprint_") as tmp:
                old = pd.read_parquet(c.download_artifacts(self.run_id, FINGERPRINT_TABLE, tmp))
            old = old[old["epoch"] < self._resumed_at].reset_index(drop=True)
            if len(old):
                with self._lock:
                    self.tables.insert(0, old)
                    self._arrow.insert(0, _to_arrow(old))
        self._resumed_at = None

    def _draw(self, when: str) -> None:
        with self._lock:
            tables = list(self.tables)
        try:
            _log_fingerprint_figure(self.uri, self.run_id, tables)
        except _wl._outage_errors() as exc:  # the table is logged; the plot is a convenience, redrawn next time
            _wl._DOWN_AT[self.uri] = time.monotonic()
            print(f"fmx: latent fingerprint plot {when} not logged (MLflow at {redact(self.uri)} failed: "
                  f"{type(exc).__name__}); the table holds every evaluation")
            return
        self._drawn_at, self._plot_behind = time.monotonic(), False


def _to_arrow(df):
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)


def _log_fingerprint(uri: str, run_id: str, tables: list, unlogged: list) -> None:
    """Log the summary metrics of each ``(summary, step)`` in ``unlogged``, removing it from the list once logged
    (a failure leaves the rest for the next evaluation, none twice), then the table of all evaluations
    (``tables``: Arrow tables or DataFrames; columns one evaluation lacks are null there)."""
    import pyarrow as pa

    c = tracking.client(uri)
    while unlogged:
        summary, step = unlogged[0]
        metrics = {f"fingerprint/{k}": v for k, v in summary.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool) and k not in ("n_recordings",)}
        tracking.log_metrics(c, run_id, metrics, step=step)
        unlogged.pop(0)
    if not tables:
        return
    table = pa.concat_tables([t if isinstance(t, pa.Table) else _to_arrow(t) for t in tables],
                             promote_options="permissive")  # int and float columns of one name meet as float
    tracking.log_arrow_parquet(c, run_id, table, FINGERPRINT_TABLE)


def _log_fingerprint_figure(uri: str, run_id: str, tables: list) -> None:
    """Log the plot of every evaluation in ``tables``; a plotting error is printed (the table is the record), an
    outage error raised."""
    import pandas as pd

    try:
        from fmx.compare import fingerprint_figure

        fig = fingerprint_figure(pd.concat(tables, ignore_index=True))
        tracking.log_figure(tracking.client(uri), run_id, fig, "fingerprint/latent_fingerprint.png")
    except _wl._outage_errors():
        raise
    except Exception as exc:  # noqa: BLE001 - plots are a convenience; the parquet table is the record
        print(f"fmx: fingerprint plot skipped: {exc}")
