"""Rich progress for a running sweep: a Tune callback that shows trials done, running, failed and the best."""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any

from ray.tune import Callback


class SweepProgress(Callback):
    """A Tune callback driving a ``rich`` progress bar on the driver (plain lines when stdout is not a TTY)."""

    def __init__(self, *, total: int | None, metric: str, mode: str, enabled: bool = True):
        self.total, self.metric, self.mode, self.enabled = total, metric, mode, enabled
        self.done = self.failed = 0
        self.best: float | None = None
        self.best_trial: str | None = None
        self._progress = None
        self._task = None

    # rich's Progress is a context manager; the runner enters it around tuner.fit()
    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=sys.stdout)
            self._progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                                      transient=False, disable=not console.is_terminal)
            self._progress.__enter__()
            self._task = self._progress.add_task(self._describe(), total=self.total)
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def _describe(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4g} ({self.best_trial})"
        return f"failed {self.failed} | best {self.metric} {best}"

    def _update(self, line: str | None = None) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task, completed=self.done + self.failed, description=self._describe())
        if line and not self._progress.console.is_terminal:
            print(line, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
                self.best, self.best_trial = float(value), trial.trial_id
        self._update()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        last: dict[str, Any] = trial.last_result or {}
        value = last.get(self.metric)
        real = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
        shown = f"{value:.4g}" if real else value  # 4 digits, as the tables: not float noise
        self._update(f"fmx: trial {trial.trial_id} finished: {self.metric}={shown}")

    def on_trial_error(self, iteration, trials, trial, **info):
        from fmx.lifecycle import trial_error

        self.failed += 1
        why, _, path = trial_error(trial)
        line = f"fmx: trial {trial.trial_id} FAILED: {why}" + (f" (traceback: {path}; also the trial's MLflow run, "
                                                                 "artifact error/error.txt)" if path else "")
        self._update(line)
        if self._progress is not None and self._progress.console.is_terminal:  # above the bar: why it failed
            from rich.markup import escape

            self._progress.console.print(escape(line), soft_wrap=True)
