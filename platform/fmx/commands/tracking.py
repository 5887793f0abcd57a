"""`fmx compare NAME` (trial table and plots from MLflow) and `fmx ui` (the MLflow UI on the local store)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
DEFAULT_TRACKING = "sqlite:///runs/mlflow.db"


def compare(name: str = typer.Argument(..., help="sweep name or sweep id"),
            tracking_uri: str = typer.Option(DEFAULT_TRACKING, help="MLflow tracking URI of the sweep (default: "
                                                                    "$MLFLOW_TRACKING_URI, else runs/mlflow.db)"),
            out: Optional[Path] = typer.Option(None, help="folder for the table and plots (default runs/compare/NAME)"),
            top: int = typer.Option(20, min=0, help="rows shown")) -> None:
    """Compare a sweep's trials: a ranked table, CSV + parquet, and plots (best trials, parallel coordinates,
    beta* against the metric and latent beta)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmx import compare as cmp
    from fmx import tracking
    from fmx.commands.sweep import _table

    from fmx.schema import TRACKING_ENV, choose_target

    tracking_uri, source = choose_target(tracking_uri, default=DEFAULT_TRACKING, env_var=TRACKING_ENV)  # as `sweep run`
    field = TRACKING_ENV if source == TRACKING_ENV else "--tracking-uri"
    missing = _missing_local_store(tracking_uri)
    if missing is not None:  # resolving would create the folder and an empty store: a typo leaves litter
        _error(f"no sweep {name!r} in {tracking_uri}: no MLflow store at {missing} (nothing was tracked there); run "
               f"the sweep first, or pass {field} of the sweep's tracking.uri")
    uri = _resolve(tracking_uri, field)
    check_reachable(uri, field)
    c = tracking.client(uri)
    try:
        parent = cmp.find_parent(c, name)
        if parent is None:
            from fmx.commands.sweep import _name_hint

            hint = _name_hint(name) if name.endswith((".yaml", ".yml")) else ""  # a run's id is found above
            _error(f"no sweep {name!r} in {uri}; {hint}pass --tracking-uri of the sweep's tracking.uri")
        params = parent.data.params
        metric = params.get("sweep.metric", "val/loss")
        mode = "min" if params.get("sweep.goal", "minimize") == "minimize" else "max"
        df = cmp.ranked(cmp.trials_frame(c, parent.info.experiment_id, parent.info.run_id), metric, mode)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException):
            raise
        _error(f"cannot read the MLflow store {uri}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if df.empty:
        console.print(f"sweep {name}: no trials yet")
        raise typer.Exit(0)
    out = out or Path("runs") / "compare" / name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --out names a file, or a folder under one
        _error(f"--out {out}: cannot make the folder for the table and plots ({exc.strerror or exc}); give a folder "
               "path")
    across = cmp.sweep_acceptance(df)  # adds the per-trial baseline ratio column, as on the parent run
    # Each file replaced whole (temp file, then os.replace): a write cut short keeps the previous comparison.
    _write_atomic(out / "trials.csv", lambda p: df.to_csv(p, index=False))
    _write_atomic(out / "trials.parquet", lambda p: df.to_parquet(p, index=False))
    written = []
    for fname, make in (("best_trials", cmp.best_trials_figure), ("parallel_coordinates",
                                                                  cmp.parallel_coordinates_figure),
                        ("beta_star", cmp.beta_star_figure)):
        fig = make(df, metric)
        if fig is not None:
            _write_atomic(out / f"{fname}.png", lambda p: fig.savefig(p, dpi=110, format="png"))
            plt.close(fig)
            written.append(f"{fname}.png")
        else:  # a plot an earlier comparison drew here no longer matches this table
            (out / f"{fname}.png").unlink(missing_ok=True)
    console.print(_table(df, metric, title=f"{parent.data.tags.get(tracking.TAG_SWEEP_ID)}: trials by {metric}",
                         n=top))
    if across:
        console.print("across trials: " + ", ".join(f"{k.removeprefix('acceptance/')}={v:.4g}"
                                                    for k, v in across.items()))
    console.print(f"table and plots in {out}: trials.csv, trials.parquet, {', '.join(written) or 'no plots'}")


def _write_atomic(path: Path, write) -> None:
    """``write(temp)`` next to ``path``, then ``os.replace``: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # created by the writer: the usual permissions
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        _error(f"--out {path.parent}: cannot write {path.name} ({exc.strerror or exc}); the previous "
               f"{path.name} there is kept")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ui(tracking_uri: str = typer.Option(DEFAULT_TRACKING, help="backend store of the MLflow UI"),
       host: str = typer.Option("127.0.0.1", help="bind address (keep 127.0.0.1 on shared machines)"),
       port: int = typer.Option(5000, min=1, max=65535, help="port")) -> None:
    """Serve the MLflow UI on the local store (Ctrl-C stops it)."""
    missing = _missing_local_store(tracking_uri)
    if missing is not None:  # the server creates an empty store there: say why the UI will list no runs
        from rich.markup import escape

        console.print(f"[yellow]warning:[/yellow] no MLflow store at {escape(str(missing))} (nothing was tracked "
                      "there yet): the UI starts on a new empty store; pass the sweep's tracking.uri to see its runs",
                      soft_wrap=True, highlight=False)
    uri = _resolve(tracking_uri, "--tracking-uri")
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
           "--port", str(port)]
    console.print(f"MLflow UI on http://{host}:{port} (store {uri})")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION=os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                            "false"))
    proc = subprocess.Popen(cmd, env=env)
    stopped = []

    def stop(signum, frame):  # kill/hang-up reach only this process: without this the server outlives it
        stopped.append(signum)
        proc.terminate()

    # Put back afterwards: called in-process (a notebook, a test runner) the handler outlived the command and a
    # later SIGTERM went to this finished server instead of the process's own handler.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None))
                if sig is not None}
    for sig in previous:
        signal.signal(sig, stop)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server too (same process group): let it finish
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
        raise typer.Exit(0) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    raise typer.Exit(0 if stopped else code)


def _error(message: str) -> None:
    from rich.markup import escape

    from fmx.storage import redact

    console.print(f"[red]error:[/red] {escape(redact(message))}", soft_wrap=True)
    raise typer.Exit(2)


def _resolve(tracking_uri: str, field: str) -> str:
    """The absolute store URI, or a clean error naming ``field`` (a file store MLflow 3 refuses, a password)."""
    from fmx import tracking
    from fmx.schema import mask_uri_password, uri_has_password
    from fmx.targets import TRACKING_URI_FORMS, tracking_uri_problem

    if uri_has_password(tracking_uri):  # MLflow's errors would print it
        _error(f"{field}={mask_uri_password(tracking_uri)!r} carries user:password@; drop them from the URI and set "
               "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead")
    problem = tracking_uri_problem(tracking_uri)
    if problem:  # MLflow's client would raise a traceback (or retry an unopenable sqlite path for minutes)
        _error(f"{field}={tracking_uri!r}: the tracking URI {problem}; use {TRACKING_URI_FORMS}")
    try:
        return tracking.resolve_tracking_uri(tracking_uri, field=field)
    except ValueError as exc:
        _error(str(exc))


def _missing_local_store(uri: str) -> Path | None:
    """The sqlite file a local tracking URI names when it does not exist yet (None: it exists, or not local).

    The same mapping as :func:`fmx.tracking.resolve_tracking_uri`, without creating anything; an existing folder is
    left to that function (it may hold a store, or a file store it explains)."""
    if uri.startswith("sqlite:///"):
        p = Path(uri[len("sqlite:///"):].partition("?")[0])  # ?timeout=30 and friends are SQLAlchemy options
        p = p if p.is_absolute() else Path.cwd() / p
        return None if p.exists() else p
    if "://" in uri or uri.startswith(("file:", "databricks")):
        return None
    p = Path(uri).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    if p.suffix in (".db", ".sqlite", ".sqlite3"):
        return None if p.exists() else p
    return None if p.exists() else p / "mlflow.db"


def check_reachable(uri: str, field: str, fail=None, label: str | None = None) -> None:
    """Fail in seconds when nothing answers at an http(s) tracking URI (:func:`fmx.tracking.check_server`): MLflow's
    client retries a refused connection with backoff for about four minutes before it gives up."""
    from fmx.schema import mask_uri_password
    from fmx.tracking import TrackingServerUnreachable, check_server

    try:
        check_server(uri)  # three tries about a second apart ride out a server pod that is restarting
    except TrackingServerUnreachable as exc:
        shown = label or f"{field}={mask_uri_password(uri)!r}"
        (fail or _error)(f"{shown}: no MLflow server answers there ({exc.reason}: {exc.detail}); start the server, "
                         f"or fix {field} to the URI of a running one")


def register(app: typer.Typer) -> None:
    """Add the top-level tracking commands to the main app."""
    app.command("compare")(compare)
    app.command("ui")(ui)
