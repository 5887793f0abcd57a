"""Small decisions a trial makes around its Ray Train fit: the process-group backend of its workers, the kept
checkpoint the acceptance benchmarks judge, the step their metrics are logged at, the masked exception a
failed trial leaves with, and how often Ray Train's controller takes its workers' reports."""
from __future__ import annotations

import math
import os
import traceback

# Ray Train V2's controller takes one report per worker each time it polls them, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's default 2 s), and a worker's report queue holds one: a worker reporting
# more often than that blocks in ray.train.report until the next poll. Epochs shorter than 2 s were stretched to
# 2 s (measured: the tiny preset's 1.36 s epochs ran at 1.95 s, +44 %, over a 14-epoch trial; +20 % at 0.25 s).
# A poll is one small actor call per worker, so 4 a second cost nothing next to an epoch. Reports now leave from
# Ray's upload thread (fmx.train_worker._background_upload), but the poll still sets how fast they flow: a worker
# runs at most about three reports ahead of it (fmx.train_worker._UploadGate).
REPORT_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
REPORT_POLL_S = 0.25


def report_poll_interval(environ=os.environ) -> float:
    """The seconds between the Train controller's polls of its workers: ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` when
    set (a positive number), else :data:`REPORT_POLL_S`.

    Raises
    ------
    ValueError
        When the variable is set to anything but a positive number; the message names it, the value and the fix.
    """
    raw = environ.get(REPORT_POLL_ENV)
    if raw is None or not raw.strip():
        return REPORT_POLL_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{REPORT_POLL_ENV}: needs a positive number of seconds (how often Ray Train's controller "
                         f"takes the workers' reports; fmx uses {REPORT_POLL_S} when it is unset), got {raw!r}; "
                         f"unset it or set e.g. {REPORT_POLL_ENV}={REPORT_POLL_S}")
    return value


def set_report_poll_interval(environ=os.environ) -> float:
    """Put :func:`report_poll_interval` into ``environ`` (this trial's process) before a TorchTrainer fit: Ray
    passes the variable from there to the controller it starts. Returns the interval."""
    value = report_poll_interval(environ)
    environ[REPORT_POLL_ENV] = repr(value)
    return value


class MaskedTrialError(RuntimeError):
    """A trial's failure, raised in place of its exception when that carried secret values: its message is the
    original traceback (chained exceptions and the workers' errors included) with those values masked."""


def masked_trial_error(exc: BaseException) -> MaskedTrialError | None:
    """``exc`` as a :class:`MaskedTrialError` with secret values masked (:func:`fmx.storage.redact`), or None
    when it carries none.

    Ray Tune writes the exception that leaves a trial, traceback and message, to ``error.txt`` and ``error.pkl``
    in the trial's folder of the checkpoint store (S3 included) and logs it on the driver; a worker's error that
    quoted an environment value (an S3 key, an MLflow password) was kept there in plain text.
    """
    from fmx import storage as st

    text = "".join(traceback.format_exception(exc)).rstrip()
    masked = st.redact(text)
    if masked == text:
        return None
    summary = st.redact("".join(traceback.format_exception_only(exc)).strip().splitlines()[0])
    return MaskedTrialError(f"{summary} (secret values masked)\n{masked}")


def last_logged_step(client, run_id: str, metric: str, *, default: int) -> int:
    """The newest step ``metric`` was logged at in run ``run_id`` (``default`` when it was never logged)."""
    try:
        history = client.get_metric_history(run_id, metric)
    except Exception:  # noqa: BLE001 - a tracking hiccup must not lose the acceptance results
        return default
    return max((int(m.step) for m in history), default=default)


def process_group_backend(workers: int, gpus_per_worker: float) -> str | None:
    """``"gloo"`` when DDP ranks may share a GPU (several workers with a fraction of one each: Ray packs them onto
    one device, and NCCL refuses two ranks there, "Duplicate GPU detected"; ray-project/ray#48012); else None,
    Ray's default (NCCL with GPUs, gloo without). Gloo all-reduces CUDA tensors through the host: slower, and fine
    for the small models such trials pack."""
    return "gloo" if workers > 1 and 0 < gpus_per_worker < 1 else None


def best_finite_checkpoint(result, metric: str, mode: str):
    """The kept checkpoint with the best finite ``metric`` (None when none has one).

    Ray's ``Result.get_best_checkpoint`` takes Python's ``min``/``max`` over a list that holds NaN-scored
    checkpoints first, and a NaN compares False: a trial that diverged after a good epoch got its NaN
    checkpoint as the "best" one, and the acceptance benchmarks ran on it.
    """
    scored = [(ckpt, m.get(metric)) for ckpt, m in (result.best_checkpoints or [])]
    finite = [(ckpt, float(v)) for ckpt, v in scored
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not finite:
        return None
    return (min if mode == "min" else max)(finite, key=lambda cv: cv[1])[0]

