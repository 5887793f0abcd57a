"""The ``fmx`` command: one entry point, one sub-command module per concern.

``fmx sweep ...``        sweeps: validate, run, resume, status, submit (fmx.commands.sweep)
``fmx compare/ui``       MLflow comparisons and UI (fmx.commands.tracking)
``fmx fingerprint ...``  per-subject fingerprint jobs (fmx.commands.fingerprint)
``fmx job ...``          cluster jobs: status, logs, stop (fmx.commands.job)
``fmx infer CKPT``       generate bytes from a byte-model checkpoint (fmx.commands.infer)
"""
from __future__ import annotations

import typer

from fmx.commands import fingerprint, infer, job, sweep, tracking

app = typer.Typer(help="NeuroFMx platform: sweeps, tracking, fingerprints, cluster jobs.", no_args_is_help=True)
app.add_typer(sweep.app, name="sweep")
app.add_typer(fingerprint.app, name="fingerprint")
app.add_typer(job.app, name="job")
tracking.register(app)
infer.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
