"""Ctrl-C and SIGTERM during a fingerprint job: stop cleanly, keep every finished part, say how to continue.

SIGTERM (``kill``, a Kubernetes eviction) is turned into :class:`JobTerminated`, a KeyboardInterrupt, so it
unwinds the job as Ctrl-C does: the progress bar stops, Ray shuts down, the parts already written stay. One line
then says how many recordings are saved and the command that continues; Ctrl-C propagates (exit 130), SIGTERM
becomes ``SystemExit(143)``. A write that fails (a full disk) gets the same kind of line, as a ValueError.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from typing import Callable

from fmx.fingerprint import storage

__all__ = ["JobTerminated", "stop_cleanly", "rearm_sigterm", "saved_counter", "write_failed_message"]


class JobTerminated(KeyboardInterrupt):
    """SIGTERM during a job: unwinds it as Ctrl-C does (Ray shut down, finished parts kept)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


_TERM_ARMED = []  # non-empty while a job's SIGTERM handler is in place (see rearm_sigterm)


def _on_term(signum, frame):
    raise JobTerminated(signum)


def _replaceable(handler) -> bool:
    """SIGTERM's default, a handler set outside Python (None), or the one ``ray.init`` sets (``sys.exit(15)``
    mid-task: exit status 15, no word of what was saved). An application's own handler is kept."""
    return handler in (signal.SIG_DFL, None) or getattr(handler, "__module__", "").startswith("ray.")


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Inside, SIGTERM raises :class:`JobTerminated` in the main thread.

    Without it SIGTERM kills the process at once (serial) or, in Ray mode, trips Ray's fatal-signal handler
    (a stack dump on the console) and its ``sys.exit(15)``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not _replaceable(previous):
        yield
        return
    signal.signal(signal.SIGTERM, _on_term)
    _TERM_ARMED.append(True)
    try:
        yield
    finally:
        _TERM_ARMED.pop()
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)


def rearm_sigterm() -> None:
    """Put :func:`_terminate_as_interrupt`'s handler back after ``ray.init``, which replaces it."""
    if _TERM_ARMED and threading.current_thread() is threading.main_thread() \
            and _replaceable(signal.getsignal(signal.SIGTERM)):
        signal.signal(signal.SIGTERM, _on_term)


@contextlib.contextmanager
def stop_cleanly(*, out: str, total: int, saved: Callable[[], int], progress: bool):
    """Ctrl-C or SIGTERM inside: one line saying what is saved and how to continue, no traceback.

    Ctrl-C propagates as KeyboardInterrupt (the CLI exits 130); SIGTERM becomes ``SystemExit(143)``, the status a
    shell reports for a terminated job. Ray is shut down and every finished recording's part is kept on the way.
    """
    with _terminate_as_interrupt():
        try:
            yield
        except KeyboardInterrupt as exc:
            if progress:
                print(_interrupted_message(exc, out=out, saved=saved(), total=total), file=sys.stderr, flush=True)
            if isinstance(exc, JobTerminated):
                raise SystemExit(128 + exc.signum) from None
            raise


def saved_counter(parts_dir: str, keys: set) -> Callable[[], int]:
    """A function counting the recordings of this job whose part is on disk (for the interrupt message)."""
    def count() -> int:
        try:
            names = storage.list_files(parts_dir) if storage.exists(parts_dir) else []
        except (OSError, ValueError):
            return 0
        return len(keys & {os.path.basename(n)[:-len(".parquet")] for n in names if n.endswith(".parquet")})

    return count


def _again_command() -> str:
    """The command line to run again (``fmx fingerprint fit ...`` as typed), else a description of it."""
    if sys.argv and os.path.basename(sys.argv[0]) == "fmx":
        return shlex.join(["fmx", *sys.argv[1:]])
    return "the same fmx fingerprint fit command"


def _interrupted_message(exc: BaseException, *, out: str, saved: int, total: int) -> str:
    how = "SIGTERM" if isinstance(exc, JobTerminated) else "Ctrl-C"
    return (f"interrupted ({how}): {saved} of {total} recordings are saved in {storage.join(out, 'parts')}; "
            f"continue with: {_again_command()} (finished recordings are skipped)")


def write_failed_message(exc: OSError, *, out: str, saved: int, total: int) -> str:
    reason = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return (f"out: cannot write to {out} ({reason}); {saved} of {total} recordings are saved in "
            f"{storage.join(out, 'parts')}: free space (or fix OUT) and run {_again_command()} again "
            "(finished recordings are skipped)")
