"""The driver-side MLflow lifecycle of a sweep's trials (a Tune callback), SIGTERM handling of the driver, and
the caller's process put back as it was when a sweep returns (:class:`CallerProcessKept`).

Ray's helpers leave each trial's nested MLflow run RUNNING; :class:`MlflowLifecycle` ends it with the trial
(FINISHED, or FAILED on error; tagged ``fmx.stopped_early`` when the scheduler stopped it). Kept apart from
:mod:`fmx.runner` so that the runner reads in one sitting.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import threading
from typing import TYPE_CHECKING, Any

from fmx import storage as st
from fmx import tracking

if TYPE_CHECKING:
    from fmx.runner import SweepPlan

logger = logging.getLogger("fmx.runner")  # the runner's logger: one place to turn sweep messages up or down

__all__ = ["CallerProcessKept", "MlflowLifecycle", "SigtermAsInterrupt", "SigtermInterrupt", "trial_error"]

# "ValueError: ...", "ray.exceptions.ActorDiedError: ...": the lines of a traceback that name an exception
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\w*: ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def trial_error(trial) -> tuple[str, str, str | None]:
    """Why a trial failed, read from the error file Tune writes on the driver: ``(line, text, path)``.

    ``line`` is the innermost exception's type and the first line of its message (the worker's error, not Ray's
    wrappers around it), ``text`` the latest failure's full traceback, ``path`` the error file in the trial's folder
    of the checkpoint store (``None`` when Tune wrote none). Both strings are redacted (secret values, credentials
    in URIs).
    """
    path = getattr(trial, "error_file", None)
    text = ""
    if path:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            path = None
    _, header, latest = text.rpartition("Failure # ")  # the file gains one such block per failure of the trial
    text = st.redact(_ANSI.sub("", header + latest))
    lines = [x.strip() for x in text.splitlines()]
    named = [i for i, x in enumerate(lines) if _EXCEPTION_LINE.match(x)]
    line = lines[named[-1]] if named else next((x for x in reversed(lines) if x), "no error recorded by Tune")
    if named and line.endswith(":"):  # "WorkerGroupError: Training failed due to worker errors:" + what happened
        line += " " + next((x for x in lines[named[-1] + 1:] if x and not x.startswith(("[", "File "))), "")
    return (line if len(line) <= 300 else line[:297] + "..."), text, _stored_error_file(trial, path)


def _stored_error_file(trial, staged: str | None) -> str | None:
    """Where the error file lives after the sweep: the trial's folder in the checkpoint store (Tune copies it
    there), not the driver's staging copy under Ray's session folder (gone with the session)."""
    storage = getattr(trial, "storage", None)
    name = getattr(getattr(trial, "run_metadata", None), "error_filename", None)
    if staged is None or storage is None or not name:
        return staged
    scheme = getattr(storage.storage_filesystem, "type_name", "local")
    where = f"{storage.trial_fs_path}/{name}"
    return where if scheme == "local" else f"{scheme}://{where}"


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


class MlflowLifecycle(_tune_callback_base()):
    """Driver-side Tune callback: ends each trial's child run with the trial (Ray's helpers leave them RUNNING)."""

    def __init__(self, plan: SweepPlan):
        self.plan = plan
        self.pending: dict[str, tuple[Any, str]] = {}  # trial id -> (trial, status) whose run could not be ended

    def _end(self, trial, status: str) -> None:
        # An exception here would make Tune mark a trial that finished training as ERROR (counted as failed,
        # re-run by resume) because the tracking server was away: keep it for finish_pending instead.
        try:
            self._end_now(trial, status)
            self.pending.pop(trial.trial_id, None)
        except Exception as exc:  # noqa: BLE001 - MlflowException, connection errors: tracking is bookkeeping
            self.pending[trial.trial_id] = (trial, status)
            logger.warning("trial %s: could not mark its MLflow run %s (%s); retried when the sweep ends",
                           trial.trial_id, status, st.redact(str(exc)).splitlines()[0] if str(exc) else type(exc))

    def finish_pending(self) -> None:
        """End the runs whose end failed during the sweep (the server was away); raises if it still is."""
        for trial, status in list(self.pending.values()):
            self._end_now(trial, status)
            self.pending.pop(trial.trial_id, None)

    def _end_now(self, trial, status: str) -> None:
        c = tracking.client(self.plan.tracking_uri)
        run = tracking.find_run(c, self.plan.experiment_id,
                                {tracking.TAG_SWEEP_ID: self.plan.sweep_id, tracking.TAG_TRIAL: trial.trial_id})
        if run is None:
            return
        last = trial.last_result or {}
        if status == "FINISHED" and not last.get("fmx_complete"):
            c.set_tag(run.info.run_id, "fmx.stopped_early", "true")  # the scheduler stopped it
        if status == "FINISHED" and "fmx.error" in run.data.tags:  # a failed trial resume ran again, to the end
            c.delete_tag(run.info.run_id, "fmx.error")
        if status == "FAILED":  # why, where `fmx compare`, `fmx sweep status` and the UI can show it
            line, text, _ = trial_error(trial)
            c.set_tag(run.info.run_id, "fmx.error", line)
            try:  # an artifact store that refuses the upload must not keep the run RUNNING nor stop the sweep
                if text:
                    tracking.log_text(c, run.info.run_id, text, "error/error.txt")
            except Exception as exc:  # noqa: BLE001 - boto/pyarrow/MLflow errors alike; the tag says why already
                logger.warning("trial %s: could not store its traceback in MLflow (%s)", trial.trial_id,
                               st.redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__)
        tracking.end_run(c, run.info.run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")


class SigtermInterrupt(KeyboardInterrupt):
    """The KeyboardInterrupt a SIGTERM raises in a sweep's driver: the CLI exits 143 (128 + SIGTERM) for it, as
    schedulers read the signal from the status, and 130 for a Ctrl-C."""


class SigtermAsInterrupt:
    """SIGTERM (``kill``, a Kubernetes eviction) stops a sweep as Ctrl-C does.

    While Tune runs, SIGTERM calls Tune's own stop handler: Tune saves its state one last time and returns, the
    runs become KILLED, and ``fmx sweep resume`` continues. Without this, ``ray.init``'s handlers print a stack
    dump and abort the driver (exit -6) before Tune saves (a trial that had finished is run again on resume), and
    the parent run ends FAILED. Outside ``tuner.fit`` SIGTERM raises :class:`SigtermInterrupt`. A handler the
    application installed itself is kept.
    """

    def __init__(self):
        self.received = False
        self.fitting = False
        self._previous = None
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGTERM)
        # SIG_DFL, a handler set outside Python (None), or ray.init's sys.exit(15): replaced; an app's own: kept
        if previous in (signal.SIG_DFL, None) or getattr(previous, "__module__", "").startswith("ray."):
            self._previous, self._installed = previous, True
            signal.signal(signal.SIGTERM, self._on_term)
        return self

    def _on_term(self, signum, frame):
        self.received = True
        tune_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if self.fitting and callable(tune_stop) and getattr(tune_stop, "__module__", "").startswith("ray.tune"):
            tune_stop(signum, frame)  # Tune listens on SIGINT and SIGUSR1 with this handler
            return
        raise SigtermInterrupt

    def arm(self) -> None:
        """Put the handler back after ``ray.init``, which sets its own."""
        if self._installed and getattr(signal.getsignal(signal.SIGTERM), "__module__", "").startswith("ray."):
            signal.signal(signal.SIGTERM, self._on_term)

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if callable(self._previous) else signal.SIG_DFL)
        return False


class CallerProcessKept:
    """Puts the caller's process back as it was when a sweep returns or raises (a notebook keeps living).

    A Ray the sweep started or connected to is shut down (one the caller had initialised stays up): left up, the
    next sweep reused it whatever its ``address`` or ``num_cpus``, skipping the trial-size check. Tune leaves its
    SIGINT/SIGUSR1 stop handler of the finished run installed (a later Ctrl-C did nothing), and ``ray.init`` and the
    runner set variables in ``os.environ`` (PYTHONBREAKPOINT to Ray's debugger, RAY_AUTH_MODE=token,
    TUNE_DISABLE_STRICT_METRIC_CHECKING): both are restored, as is the set of variables Tune copies into its
    trials (the sweep keeps the AWS keys out of it).
    """

    def __enter__(self):
        import ray

        self._ray_was_up = ray.is_initialized()
        self._environ = dict(os.environ)
        self._tune_env = _tune_propagated_env()
        self._handlers = {}
        if threading.current_thread() is threading.main_thread():  # elsewhere handlers cannot be set
            sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
            # None: a handler installed outside Python, which Python cannot put back
            self._handlers = {s: h for s in sigs if (h := signal.getsignal(s)) is not None}
        return self

    def __exit__(self, *exc):
        import ray

        if not self._ray_was_up and ray.is_initialized():
            try:
                ray.shutdown()
            except Exception as err:  # noqa: BLE001 - the sweep's own outcome or error is what matters
                logger.warning("could not shut down the Ray this sweep started: %s", err)
        for key in set(os.environ) - set(self._environ):
            del os.environ[key]
        for key, value in self._environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        if self._tune_env is not None:  # fmx.ray_setup keeps the AWS keys out of it for the sweep only
            from ray.tune.execution import class_cache

            class_cache.ENV_VARS_TO_PROPAGATE = self._tune_env
        return False


def _tune_propagated_env():
    """The variables Ray Tune copies from the driver into each trial's runtime_env (None: another Ray layout)."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return None
    return getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
