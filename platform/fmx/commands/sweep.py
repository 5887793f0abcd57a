"""`fmx sweep`: validate, run, resume, status and submit sweep files (sweeps/*.yaml, docs/sweeps.md)."""
from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Sweeps on Ray Tune + Ray Train, tracked in MLflow.", no_args_is_help=True)
# Wide tables when piped (make demo, CI logs); the terminal's width otherwise.
console = Console(width=None if sys.stdout.isatty() else 160)
DEFAULT_STORAGE = "runs/ray"  # fmx.schema.DEFAULT_STORAGE_PATH; FMX_STORAGE_PATH wins over it (cluster pods)


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    from fmx.storage import redact

    # escaped: a value such as key=[a,b] would otherwise be read as console markup and vanish
    console.print(f"[red]error:[/red] {escape(redact(message))}", soft_wrap=True)
    raise typer.Exit(code)


def _load(file: Path, check_config: bool = True, check_build: bool = False):
    from fmx.schema import load_sweep

    try:
        return load_sweep(file, check_config=check_config, check_build=check_build)
    except ValueError as exc:  # a SweepFileError, or the environment's (a wrong FMX_CONF_DIR)
        _fail(str(exc))


@app.command()
def validate(file: Path = typer.Argument(..., help="sweep YAML file")) -> None:
    """Check a sweep file: schema, value ranges, every key path against the composed Hydra config, and the model
    and data a trial builds at the edges of the search space."""
    from rich.markup import escape

    sweep = _load(file, check_build=True)
    table = Table(title=escape(f"{file}: valid"), show_header=True)
    table.add_column("parameter")
    table.add_column("distribution")
    for key, spec in sweep.parameters.items():  # escaped: rich read [true, false] as a markup tag and dropped it
        table.add_row(escape(key), escape(json.dumps(spec.model_dump())))
    console.print(table)
    console.print(f"method={sweep.method} metric={sweep.metric.name} ({sweep.metric.goal}) run_cap={sweep.run_cap} "
                  f"workers={sweep.resources.workers} early_terminate={sweep.early_terminate.type}")


def _print_outcome(outcome, metric: str) -> None:
    from fmx import compare, tracking

    c = tracking.client(outcome.tracking_uri)
    df = compare.ranked(compare.trials_frame(c, outcome.experiment_id, outcome.parent_run_id), metric,
                        "min" if outcome.best is None else _mode_of(outcome))
    console.print(f"sweep [bold]{outcome.sweep_id}[/bold]: {outcome.n_trials} trials, {outcome.n_errors} failed; "
                  f"checkpoints in {outcome.storage_uri}")
    if not df.empty:
        console.print(_table(df, metric, title="trials (best first)"))
    if metric in df and df[metric].notna().any():  # ranked: NaN last; no trial reported it -> no best trial
        best = df.iloc[0]
        value = best.get(metric)  # 4 digits, as the table above: not float noise
        # a trial that failed after reporting can rank first: say so, its value is not a finished trial's
        ended = "" if best.get("status") in (None, "FINISHED") else \
            f" (its trial ended {best['status']}: the value is its last report before that)"
        console.print(f"[bold]best trial[/bold] {best['trial_id']}: {metric} = "
                      f"{f'{value:.4g}' if isinstance(value, float) else value}{ended}")
        fp = {k.split("/", 1)[1]: best[k] for k in df.columns
              if k.startswith("fingerprint/") and k.endswith(("_mean", "fc_density", "graph_fd")) and best[k] == best[k]}
        if fp:
            console.print("[bold]its latent fingerprint[/bold] (last evaluation, mean over latent channels): "
                          + ", ".join(f"{k.removesuffix('_mean')}={v:.3f}" for k, v in fp.items()))
        acc = {k: best[k] for k in df.columns if k.startswith("acceptance/") and k.endswith("_pass")}
        if acc:
            console.print("acceptance: " + ", ".join(_acceptance_text(best, k, v) for k, v in acc.items() if v == v))
    if outcome.n_errors:
        _print_failures(c, outcome.experiment_id, outcome.parent_run_id)
    console.print(f"open the MLflow UI: [bold]{ui_command(outcome.tracking_uri)}[/bold]")


def _acceptance_text(best, pass_key: str, passed) -> str:
    """``training=FAIL (latent_beta=3.34, beta_target=0.63, beta_gap=2.7; passes at beta_gap <= 0.2)``: a failure
    shows its numbers and what a pass needs."""
    from fmx.acceptance import PASS_CRITERIA

    bench = pass_key.split("/")[1][: -len("_pass")]
    if passed:
        return f"{bench}=pass"
    prefix = f"acceptance/{bench}_"
    numbers = [f"{k[len(prefix):]}={best[k]:.3g}" for k in best.index
               if k.startswith(prefix) and k != pass_key and isinstance(best[k], (int, float)) and best[k] == best[k]]
    criterion = PASS_CRITERIA.get(bench)
    detail = ", ".join(numbers) + (f"; passes at {criterion}" if criterion else "")
    return f"{bench}=FAIL" + (f" ({detail.removeprefix('; ')})" if detail else "")


def _mode_of(outcome) -> str:
    return outcome.best.get("mode", "min") if outcome.best else "min"


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    prog = sys.argv[0] if Path(sys.argv[0]).name == "fmx" else "fmx"  # `.venv/bin/fmx` when run as that
    return f"{prog} ui --tracking-uri {shlex.quote(tracking_uri)}"


def _table(df, metric: str, *, title: str, n: int = 20) -> Table:
    cols = ["trial_id", "status"] + [c for c in df.columns if c.startswith("sweep.")] + \
        [c for c in (metric, "val/latent_beta", "fingerprint/spectral_beta_mean") if c in df.columns and c != "status"]
    cols = list(dict.fromkeys(cols))
    from fmx.compare import _short_names

    table = Table(title=title)
    params = [c for c in cols if c.startswith("sweep.")]
    # the shortest unique suffix: model.encoder.dropout and model.decoder.dropout both read "dropout" before
    short = dict(zip(params, _short_names([c.removeprefix("sweep.") for c in params])))
    for c in cols:
        table.add_column(short.get(c, c))
    for _, row in df.head(n).iterrows():
        table.add_row(*[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    if len(df) > n:  # the rest were cut without a word: a 30-trial sweep read as 20 trials
        table.caption = f"the first {n} of {len(df)} trials; the rest are in `fmx compare`'s trials.csv"
    return table


@app.command()
def run(file: Path = typer.Argument(..., help="sweep YAML file"),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)"),
        num_cpus: Optional[int] = typer.Option(None, min=1, help="CPUs of the local Ray (default: all)")) -> None:
    """Run a sweep: trials on Ray Tune over Ray Train, tracked in MLflow, checkpoints on disk or S3."""
    from fmx.commands.tracking import check_reachable
    from fmx.runner import resolve_targets, run_sweep
    from fmx.schema import SOURCE_FILE

    sweep = _load(file, check_build=True)  # a value the model builder refuses fails here, not in every trial
    _check_env_tracking_uri(sweep)
    _check_ray_address(address)  # before resolve_targets creates the local checkpoint folder
    _check_local_data(sweep, file, address)
    try:
        targets = resolve_targets(sweep)
    except ValueError as exc:  # e.g. an unusable FMX_STORAGE_PATH or MLFLOW_TRACKING_URI
        _fail(str(exc))
    # before Ray starts: an absent server would otherwise surface minutes later, after MLflow's retries
    check_reachable(targets.tracking_uri, "tracking.uri" if targets.tracking_source == SOURCE_FILE
                    else targets.tracking_source, fail=_fail)
    try:
        outcome = run_sweep(sweep, sweep_text=file.read_text(), address=address, num_cpus=num_cpus)
    except ValueError as exc:  # e.g. an unusable FMX_STORAGE_PATH or MLFLOW_TRACKING_URI
        _fail(str(exc))
    except KeyboardInterrupt as exc:  # before Tune ran (while Ray started, say), or a second Ctrl-C
        _exit_interrupted(exc)
    except Exception as exc:
        _fail_aborted(exc, sweep)
    outcome = _cut_short(outcome)
    _print_outcome(outcome, sweep.metric.name)
    _exit_for(outcome, sweep)


def _check_env_tracking_uri(sweep) -> None:
    """Refuse an ``MLFLOW_TRACKING_URI`` MLflow cannot open, when it takes the place of the file's default: MLflow
    would raise only after Ray had started (the file's own tracking.uri is checked by the schema)."""
    from fmx.schema import TRACKING_ENV, choose_target
    from fmx.targets import DEFAULT_TRACKING_URI, TRACKING_URI_FORMS, mask_uri_password, tracking_uri_problem

    uri, source = choose_target(sweep.tracking.uri, default=DEFAULT_TRACKING_URI, env_var=TRACKING_ENV)
    problem = tracking_uri_problem(uri) if source == TRACKING_ENV else None
    if problem:
        _fail(f"{TRACKING_ENV}={mask_uri_password(uri)!r}: the tracking URI {problem}; use {TRACKING_URI_FORMS}, or "
              "unset it to use the local default")


def _check_local_data(sweep, file: Path, address: Optional[str]) -> None:
    """Refuse a ``data.root``/``data.path``/``model.init_from`` that is not on this machine when the trials run on a
    local Ray: every trial would fail on it, a minute each, after Ray had started (validate leaves it to a cluster's
    nodes). An ``s3://`` ``model.init_from`` is looked up (one HEAD) at the endpoint the trials fetch it from: the
    sweep's ``storage.endpoint_url``, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, with this process's keys,
    which a local Ray's workers share."""
    import os

    from fmx.config import DATA_PATH_KEYS, absolute_data_paths, compose

    if address != "local" and (address or os.environ.get("RAY_ADDRESS")):  # "local": a new Ray here (init_ray)
        return
    try:
        cfg = compose(absolute_data_paths(sweep.base, Path.cwd()))
    except ValueError:  # validated already; nothing to add
        return
    for key in DATA_PATH_KEYS:
        section, name = key.split(".", 1)
        value = (cfg.get(section) or {}).get(name)
        where = next((f"base[{i}]" for i, item in reversed(list(enumerate(sweep.base)))
                      if str(item).partition("=")[0].lstrip("+~") == key), "base")
        if key == "model.init_from" and isinstance(value, str) and value.startswith("s3://"):
            from fmx.init_from import check_object

            try:
                check_object(value, endpoint_url=sweep.storage.endpoint_url, region=sweep.storage.region)
            except ValueError as exc:  # missing object, wrong keys or endpoint: the trials would fail the same
                _fail(f"{file}: {where}: {exc}")
        elif isinstance(value, str) and "://" not in value and not Path(value).exists():
            _fail(f"{file}: {where}: {key}: {value} does not exist on this machine, and the trials of a local Ray "
                  f"read it here; fix the path (a relative one is taken from the folder fmx runs in, {Path.cwd()}), "
                  "or pass --address of a cluster whose nodes have it")


def _check_ray_address(address: Optional[str]) -> None:
    """Refuse an explicit ``--address HOST:PORT`` (or ``ray://HOST:PORT``) where nothing listens: Ray's driver
    would retry it for ever, printing a warning a minute. ``auto``, ``local`` and other forms are Ray's to read."""
    import socket

    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        _fail(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one (ray start "
              "--head) or pass its head's address: HOST:6379, or ray://HOST:10001 for Ray Client; leave --address "
              "out to start a local Ray")


def _fail_aborted(exc: Exception, sweep) -> None:
    """A sweep Tune aborted (a TuneError wrapping the formatted traceback): one line with the cause and the fix,
    and the trials it left RUNNING in MLflow marked FAILED. Other exceptions propagate unchanged."""
    from ray.tune.error import TuneError

    if not isinstance(exc, TuneError):
        raise exc
    _end_running_trials(sweep)
    lines = str(exc).strip().splitlines()
    start = max((i for i, line in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception): ", line)), default=None)
    cause = " ".join(x.strip() for x in lines[start:]) if start is not None else (lines[-1] if lines else repr(exc))
    if "did not include the specified metric" in cause:
        reported = sorted({k for k in re.findall(r"'([^']+)': ", cause.partition("Result: ")[2])
                           if "/" in k and not k.startswith("config/")})
        _fail(f"metric.name: the trials never report {sweep.metric.name!r}; they report: {', '.join(reported)}; "
              "set metric.name in the sweep file to one of them")
    _fail(f"the sweep stopped: {cause}")


def _end_running_trials(sweep) -> None:
    """Mark FAILED the trial runs an aborted sweep left RUNNING (best effort; only when the pointer's parent run
    has ended, so a concurrent sweep of the same name keeps its trials)."""
    from fmx import tracking
    from fmx.schema import STORAGE_ENV, choose_target
    from fmx.storage import read_pointer, resolve_storage

    try:
        storage, _ = choose_target(sweep.storage.path, default=DEFAULT_STORAGE, env_var=STORAGE_ENV)
        pointer = read_pointer(sweep.name, resolve_storage(storage, endpoint_url=sweep.storage.endpoint_url))
        c = tracking.client(pointer["tracking_uri"])
        if c.get_run(pointer["parent_run_id"]).info.status == "RUNNING":
            return
        for run in tracking.child_runs(c, pointer["experiment_id"], pointer["parent_run_id"]):
            if run.info.status == "RUNNING":
                tracking.end_run(c, run.info.run_id, "FAILED")
    except Exception:  # noqa: BLE001 - the error message is what matters; MLflow may be the problem
        pass


def _cut_short(outcome):
    """The outcome, marked interrupted when a trial's run is still RUNNING after Tune returned.

    Tune's cleanup after Ctrl-C marks a trial that was training TERMINATED, so the runner's status check misses
    it; the driver's lifecycle callback ends every trial that completed or failed, so a RUNNING child run is one
    the interrupt cut short. Its run and the parent become KILLED, as for any interrupted sweep."""
    import dataclasses

    from fmx import tracking

    if outcome.interrupted:
        return outcome
    c = tracking.client(outcome.tracking_uri)
    cut = [r for r in tracking.child_runs(c, outcome.experiment_id, outcome.parent_run_id)
           if r.info.status == "RUNNING"]
    if not cut:
        return outcome
    for run in cut:
        tracking.end_run(c, run.info.run_id, "KILLED")
    tracking.end_run(c, outcome.parent_run_id, "KILLED")
    return dataclasses.replace(outcome, interrupted=True)


def _exit_interrupted(exc: KeyboardInterrupt) -> None:
    """Exit 143 (128 + SIGTERM) when a SIGTERM raised ``exc``, 130 for Ctrl-C (typer's 130 for every
    KeyboardInterrupt told a scheduler the job was interrupted from a terminal)."""
    from fmx.lifecycle import SigtermInterrupt

    raise typer.Exit(143 if isinstance(exc, SigtermInterrupt) else 130)


def _exit_for(outcome, sweep) -> None:
    if outcome.interrupted:
        console.print(f"[yellow]interrupted[/yellow]: continue with [bold]fmx sweep resume {sweep.name} "
                      f"--storage {shlex.quote(outcome.storage_uri)}[/bold]")
        # 143 = 128 + SIGTERM: schedulers (Kubernetes, systemd) read the signal from the status; Ctrl-C is 130
        raise typer.Exit(143 if getattr(outcome, "stopped_by", None) == "SIGTERM" else 130)
    if outcome.n_errors:
        raise typer.Exit(1)


def _pointer(name: str, storage: str, endpoint_url: Optional[str]) -> dict:
    from fmx.schema import STORAGE_ENV, choose_target
    from fmx.storage import read_pointer, resolve_storage

    # Same rule as `fmx sweep run`: the default yields to FMX_STORAGE_PATH, so status/resume in a pod
    # find sweeps the pod stored in the bucket.
    storage, _ = choose_target(storage, default=DEFAULT_STORAGE, env_var=STORAGE_ENV)
    missing = "://" not in storage and not Path(storage).expanduser().is_dir()  # resolve_storage would create it
    try:
        target = None if missing else resolve_storage(storage, endpoint_url=endpoint_url)
    except ValueError as exc:
        _fail(str(exc))
    where = f"{name}.latest.json under {storage}"
    try:
        pointer = None if target is None else read_pointer(name, target)
    except json.JSONDecodeError as exc:  # a damaged (e.g. truncated) pointer
        _fail(f"{where} is not valid JSON ({exc}); the pointer is damaged: restore it, or run the sweep again")
    except ValueError as exc:  # pyarrow raises these too (a store that refuses the read): not a damaged pointer
        _fail(f"{where} could not be read: {exc}")
    if pointer is None:
        _fail(f"no sweep named {name!r} under {storage} (looked for {name}.latest.json); "
              f"{_name_hint(name)}pass --storage with the sweep's storage.path")
    lacking = [k for k in _POINTER_KEYS if k not in pointer] if isinstance(pointer, dict) else list(_POINTER_KEYS)
    if lacking:
        _fail(f"{where} is not a sweep pointer (it lacks {', '.join(lacking)}); the pointer is damaged: restore "
              "it, or run the sweep again")
    return pointer


_POINTER_KEYS = ("sweep_id", "tracking_uri", "experiment_id", "parent_run_id", "sweep")


def _fail_if_store_gone(pointer: dict, name: str, *, fix: str) -> None:
    """Fail when the local MLflow store a sweep's pointer records no longer exists: opening it would create an
    empty store there (and report the parent run "not found", or resume into it)."""
    from fmx.commands.tracking import _missing_local_store

    uri = pointer.get("tracking_uri")
    gone = _missing_local_store(uri) if uri else None
    if gone is not None:
        _fail(f"the MLflow store of sweep {pointer['sweep_id']} ({uri}, from {name}.latest.json) is gone: no file "
              f"at {gone}; {fix}")


def _name_hint(name: str) -> str:
    """What to pass instead when NAME is the sweep's file or the id a run printed (``NAME-20261130-084214-166388``)."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        from fmx.schema import SweepFileError, load_sweep

        try:
            return f"NAME is the sweep's name: field, not its file: try {load_sweep(name, check_config=False).name}, or "
        except SweepFileError:
            return "NAME is the sweep's name: field, not its file; or "
    match = re.fullmatch(r"(.+)-\d{8}-\d{6}(-\d{6})?", name)
    if match:
        return f"NAME is the sweep's name (its latest run is shown), not a run's id: try {match.group(1)}, or "
    if name.endswith(".latest.json"):  # the pointer file docs/sweeps.md names
        folder = Path(name).parent
        where = f" --storage {shlex.quote(str(folder))}" if str(folder) != "." else ""
        return (f"NAME is the sweep's name, not its pointer file: try "
                f"{shlex.quote(Path(name).name.removesuffix('.latest.json'))}{where}, or ")
    return ""


def _pointer_sweep(pointer: dict, name: str):
    """The sweep a pointer recorded, validated (a pointer written by another version may hold what this one
    refuses)."""
    from fmx.schema import SweepFileError, parse_sweep

    try:
        return parse_sweep(pointer["sweep"], file=f"{name}.latest.json (sweep)")
    except SweepFileError as exc:
        _fail(f"{exc}; the sweep this pointer records does not validate here: run it again from its sweep file")


@app.command()
def resume(name: str = typer.Argument(..., help="sweep name (its latest run) as in the sweep file"),
           storage: str = typer.Option(DEFAULT_STORAGE, help="the sweep's storage.path (default: $FMX_STORAGE_PATH, "
                                                             "else runs/ray)"),
           endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// storage"),
           address: Optional[str] = typer.Option(None, help="Ray cluster address"),
           num_cpus: Optional[int] = typer.Option(None, min=1, help="CPUs of the local Ray")) -> None:
    """Continue an interrupted sweep: finished trials are kept, unfinished ones resume from checkpoints."""
    from fmx.runner import run_sweep

    pointer = _pointer(name, storage, endpoint_url)
    sweep = _pointer_sweep(pointer, name)
    # Resume where the run went, as the pointer records it (FMX_STORAGE_PATH / MLFLOW_TRACKING_URI may have
    # chosen it): re-resolving the file's defaults here would start the sweep over in ./runs/ray.
    sweep = sweep.model_copy(update={
        "storage": sweep.storage.model_copy(update={"path": pointer.get("storage_uri", sweep.storage.path),
                                                    "endpoint_url": endpoint_url or sweep.storage.endpoint_url}),
        "tracking": sweep.tracking.model_copy(update={"uri": pointer.get("tracking_uri", sweep.tracking.uri)})})
    from fmx.commands.tracking import check_reachable

    # the trials' runs are in that store: resuming into a new empty one would split the sweep across two stores
    _fail_if_store_gone(pointer, name, fix="move it back there, then resume")
    check_reachable(sweep.tracking.uri, f"tracking_uri in {name}.latest.json", fail=_fail,
                    label=f"cannot reach the MLflow store {sweep.tracking.uri}")
    _check_ray_address(address)
    try:
        outcome = run_sweep(sweep, address=address, resume_id=pointer["sweep_id"], num_cpus=num_cpus)
    except ValueError as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        _exit_interrupted(exc)
    except Exception as exc:
        _fail_aborted(exc, sweep)
    outcome = _cut_short(outcome)
    _print_outcome(outcome, sweep.metric.name)
    _exit_for(outcome, sweep)


@app.command()
def status(name: str = typer.Argument(..., help="sweep name"),
           storage: str = typer.Option(DEFAULT_STORAGE, help="the sweep's storage.path (default: $FMX_STORAGE_PATH, "
                                                             "else runs/ray)"),
           endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// storage")) -> None:
    """Show a sweep's trials: status, sampled values and the metric (from MLflow)."""
    from fmx import compare, tracking
    from fmx.runner import planned_trials

    pointer = _pointer(name, storage, endpoint_url)
    sweep = _pointer_sweep(pointer, name)
    from fmx.commands.tracking import check_reachable

    _fail_if_store_gone(pointer, name, fix=f"if it was moved, read the sweep with `fmx compare {pointer['sweep_id']} "
                                           "--tracking-uri sqlite:///NEW/PATH/mlflow.db`")
    check_reachable(pointer["tracking_uri"], f"tracking_uri in {name}.latest.json", fail=_fail,
                    label=f"cannot read the MLflow store {pointer['tracking_uri']}")
    c = tracking.client(pointer["tracking_uri"])
    try:
        parent = c.get_run(pointer["parent_run_id"])
        df = compare.ranked(compare.trials_frame(c, pointer["experiment_id"], pointer["parent_run_id"]),
                            sweep.metric.name, sweep.metric.mode)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException):
            raise
        _fail(f"cannot read the MLflow store {pointer['tracking_uri']}: "
              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    console.print(f"sweep [bold]{pointer['sweep_id']}[/bold] ({parent.info.status}); {len(df)} of "
                  f"{planned_trials(sweep)} trials started; storage {pointer['storage_uri']}")
    if not df.empty:
        console.print(_table(df, sweep.metric.name, title="trials"))
        counts = df["status"].value_counts().to_dict()
        console.print("status: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        _print_failures(c, pointer["experiment_id"], pointer["parent_run_id"])


def _print_failures(c, experiment_id: str, parent_run_id: str) -> None:
    """One line per failed trial: its id and why (the ``fmx.error`` tag; the traceback is its error/error.txt)."""
    from rich.markup import escape

    from fmx import tracking
    from fmx.storage import redact

    failed = [r for r in tracking.child_runs(c, experiment_id, parent_run_id) if r.info.status == "FAILED"]
    for run in failed:
        why = run.data.tags.get("fmx.error")  # absent when the sweep itself stopped (its own error says why)
        where = f" (traceback: artifact error/error.txt of run {run.info.run_id})" if why else ""
        console.print(f"[red]failed[/red] trial {escape(run.data.tags.get(tracking.TAG_TRIAL, run.info.run_id))}: "
                      f"{escape(redact(why or 'no error recorded'))}{where}", soft_wrap=True)


@app.command()
def submit(file: Path = typer.Argument(..., help="sweep YAML file"),
           address: Optional[str] = typer.Option(None, "--address", help="Ray dashboard URL, e.g. http://head:8265"),
           cluster: Optional[str] = typer.Option(None, "--cluster", help="a cluster recorded by `make deploy`"),
           working_dir: Optional[Path] = typer.Option(Path("."), help="folder uploaded as the job's working dir")) \
        -> None:
    """Submit a sweep to a Ray cluster as a job (Ray Jobs API); follow it with `fmx job status/logs`."""
    _load(file)
    from fmx import cluster as fmx_cluster

    try:
        url = fmx_cluster.resolve_address(address=address, cluster=cluster)
        # FILE is relative to where fmx runs, not to --working-dir (which submit_sweep resolves a relative one
        # against): absolute, it names the file _load just checked, and submit_sweep makes it relative to the upload.
        # It also refuses a relative data path the upload does not carry (before connecting).
        job_id = fmx_cluster.submit_sweep(str(file.resolve()), address=url, working_dir=working_dir)
    except (ValueError, ConnectionError, PermissionError) as exc:  # bad path or data path, no dashboard, bad token
        _fail(str(exc))
    console.print(f"submitted [bold]{job_id}[/bold] to {url}; follow with: fmx job logs {job_id} --address {url}")


if __name__ == "__main__":  # pragma: no cover
    app(sys.argv[1:])
