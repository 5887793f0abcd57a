"""MLflow tracking owned by the platform: one parent run per sweep, one nested child run per trial.

Ray's MLflow helpers leave runs RUNNING after restores and early stops (shared/notes/stack.md), so the platform
creates and ends every run itself through :class:`mlflow.MlflowClient` (no global "active run" state, safe in
Ray workers). Runs are found again by tags (``fmx.sweep_id``, ``fmx.trial_id``), which makes every step
idempotent: a resumed sweep or a restarted trial continues its own runs instead of opening new ones.

Only rank 0 of a trial logs (:class:`fmx.train_worker.RankZeroMlflowLogger` is silent elsewhere). This module
does not import Lightning, so the CLI's read-only commands start fast.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from fmx.storage import redact

TAG_SWEEP = "fmx.sweep"
TAG_SWEEP_ID = "fmx.sweep_id"
TAG_TRIAL = "fmx.trial_id"
TAG_KIND = "fmx.kind"            # "sweep" | "trial"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests children under the parent
MAX_PARAM_LEN = 6000             # MLflow 3 param value limit


def resolve_tracking_uri(uri: str, *, root: str | Path | None = None, field: str = "tracking URI") -> str:
    """Make local stores absolute (Ray workers run in other directories) and create their folder.

    ``sqlite:///runs/mlflow.db`` (relative) -> ``sqlite:////abs/project/runs/mlflow.db``. A plain path is a
    sqlite store like the default: ``runs/mlruns`` -> ``sqlite:////abs/project/runs/mlruns/mlflow.db`` (artifacts
    beside it), ``runs/store.db`` (a ``.db``/``.sqlite`` file) -> that database. MLflow 3 refuses file stores
    unless ``MLFLOW_ALLOW_FILE_STORE=true``: with that set, a plain path and a ``file:`` URI stay file stores;
    without it a ``file:`` URI, or a folder that already holds a file store, is a ValueError naming ``field``,
    the value and the fix. http(s)://, databricks and other URIs pass unchanged; ``http:/host`` or a bare
    ``host:port`` (a URI with its ``//`` lost) is a ValueError, not a folder of that name.
    """
    root = Path(root or os.getcwd())
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        p = Path(path) if path.startswith("/") else root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{p.resolve()}"
    allow_file_store = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1")
    if uri.startswith("file:"):
        if not allow_file_store:
            raise ValueError(f"{field}={uri!r} is an MLflow file store, which MLflow 3 refuses: give a plain folder "
                             "path (a sqlite store mlflow.db is made there) or sqlite:///path/mlflow.db, or set "
                             "MLFLOW_ALLOW_FILE_STORE=true to keep the file store")
        return uri
    if "://" in uri or uri.startswith("databricks"):
        return uri
    if _MISSING_SLASHES.match(uri):  # else a local store in a folder "http:" or "host:5000": runs lost with a pod
        raise ValueError(f"{field}={uri!r} looks like a server or database URI with its // missing: write "
                         "http(s)://HOST:PORT for an MLflow server (sqlite:///path.db for a database), or give a "
                         "folder path without a colon")
    p = Path(uri).expanduser()  # ~/mlflow is home, not a folder named "~" in the project
    p = (p if p.is_absolute() else root / p).resolve()
    if p.suffix in _SQLITE_SUFFIXES:
        p.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{p}"
    if allow_file_store:
        p.mkdir(parents=True, exist_ok=True)
        return p.as_uri()
    if (p / ".trash").is_dir() or any(p.glob("*/meta.yaml")):
        raise ValueError(f"{field}={uri!r}: {p} holds an MLflow file store, which MLflow 3 refuses; migrate it "
                         f"(mlflow migrate-filestore, into e.g. sqlite:///{p}/mlflow.db) and point {field} at the "
                         "database, or set MLFLOW_ALLOW_FILE_STORE=true to keep using it")
    p.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p / 'mlflow.db'}"


_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# http:/host (what pathlib makes of http://host), sqlite:/x.db, or a bare host:port: URIs, not folder names
_MISSING_SLASHES = re.compile(r"^((https?|sqlite|postgres(ql)?|mysql|mssql)(\+\w+)?:|[\w.-]+:\d+(/|$))", re.I)


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a local sqlite store go beside it (``runs/mlartifacts/<experiment>``), not to ``./mlruns``
    of whatever directory created the experiment; servers and other stores keep their own default."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    folder = Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment
    return folder.resolve().as_uri()


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(c, name: str, *, artifact_location: str | None = None) -> str:
    """The experiment id of ``name``, created (optionally with an S3 artifact location) when missing.

    Raises
    ------
    ValueError
        In seconds, naming the URI and the settings, when nothing answers at an http(s) tracking URI (MLflow's
        client would retry a refused connection for about four minutes, a silent server for far longer).
    """
    # MlflowClient has no public accessor for its URI
    check_server(str(getattr(getattr(c, "_tracking_client", None), "tracking_uri", "")))
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # noqa: BLE001 - another process created it between our two calls
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class TrackingServerUnreachable(ValueError):
    """No MLflow server answers at an http(s) tracking URI (:func:`check_server`). ``uri`` (password masked) and
    ``reason`` let a command other than a sweep (``fmx fingerprint fit --mlflow``) name its own setting."""

    def __init__(self, message: str, *, uri: str, reason: str, detail: str = "") -> None:
        super().__init__(message)
        self.uri, self.reason, self.detail = uri, reason, detail


def check_server(uri: str, *, tries: int = 3, timeout_s: float = 5.0) -> None:
    """Raise a ValueError when no server answers at an http(s) tracking ``uri`` (other URIs pass).

    Any HTTP answer (200, 401, 404) counts; ``tries`` connection attempts about a second apart ride out a server
    that is restarting. A server that accepts the connection but does not answer within ``timeout_s`` fails too.
    """
    if not uri.lower().startswith(("http://", "https://")):  # schemes are case-insensitive (RFC 3986)
        return
    import requests

    from fmx.targets import mask_uri_password

    error: Exception | None = None
    for attempt in range(tries):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
            return
        except requests.exceptions.SSLError:
            return  # certificate settings (MLFLOW_TRACKING_INSECURE_TLS, ...) are MLflow's to apply
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            error = exc
            if attempt < tries - 1:
                time.sleep(1.0)
    masked, reason = mask_uri_password(uri), type(error).__name__
    root = error.args[0] if error.args else None  # urllib3's reason: "[Errno 111] Connection refused"
    detail = str(getattr(root, "reason", root) or error).split(": ")[-1].strip("')\"")
    raise TrackingServerUnreachable(f"tracking URI {masked!r}: no MLflow server answers there ({reason}); start the "
                                    "server, or set tracking.uri in the sweep file (else MLFLOW_TRACKING_URI) to the "
                                    "URI of a running one", uri=masked, reason=reason, detail=detail)


def find_run(c, experiment_id: str, tags: Mapping[str, str]):
    """The most recent run carrying all ``tags`` (None if there is none)."""
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=flt, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def get_or_create_run(c, experiment_id: str, *, tags: Mapping[str, str], run_name: str,
                      extra_tags: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """Return ``(run_id, created)``; an existing run with these identity ``tags`` is reopened (status RUNNING).

    ``extra_tags`` (git commit, storage) are set on the run but are not part of its identity.
    """
    run = find_run(c, experiment_id, tags)
    if run is not None:
        if run.info.status != "RUNNING":
            c.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, False
    run = c.create_run(experiment_id, tags={**dict(tags), **dict(extra_tags or {})}, run_name=run_name)
    return run.info.run_id, True


def end_run(c, run_id: str, status: str = "FINISHED") -> None:
    c.set_terminated(run_id, status=status)


def git_commit(repo: str | Path | None = None) -> str:
    """The project's git commit (``unknown`` outside a checkout), with ``-dirty`` when files changed."""
    repo = Path(repo or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_params(c, run_id: str, params: Mapping[str, Any]) -> None:
    """Log flattened params (redacted), in batches of 100.

    A value longer than MLflow's limit is cut with a note saying so, and logged whole (all such values in one
    JSON object) as the artifact ``params/truncated.json``.
    """
    from mlflow.entities import Param

    clean = redact({k: v for k, v in params.items()})
    existing = c.get_run(run_id).data.params
    items, truncated = [], {}
    for k, v in clean.items():
        value = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        if len(value) > MAX_PARAM_LEN:
            note = f"... [truncated from {len(value)} chars; whole value in params/truncated.json]"
            truncated[k] = value
            value = value[:MAX_PARAM_LEN - len(note)] + note
        if k not in existing:  # params are immutable: a resumed run keeps its own
            items.append(Param(k, value))
    # the whole values go first: a param logged before an upload that failed is skipped when the run resumes,
    # and its whole value would be lost
    if truncated and items:
        log_json(c, run_id, truncated, "params/truncated.json")
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def log_metrics(c, run_id: str, metrics: Mapping[str, float], *, step: int | None = None) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    # NaN is logged as NaN: dropping it would leave a diverged trial showing (and ranked by) its last finite value
    items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items() if _number(v)]
    for i in range(0, len(items), 500):
        c.log_batch(run_id, metrics=items[i:i + 500])


def _number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def log_text(c, run_id: str, text: str, artifact_file: str) -> None:
    """Log a text artifact (redacted)."""
    c.log_text(run_id, redact(text), artifact_file)


def log_json(c, run_id: str, obj: Any, artifact_file: str) -> None:
    log_text(c, run_id, json.dumps(redact(obj), indent=2, sort_keys=True, default=str), artifact_file)


def log_file(c, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    c.log_artifact(run_id, str(path), artifact_path)


def log_dataframe_parquet(c, run_id: str, df, artifact_file: str) -> None:
    import pyarrow as pa

    log_arrow_parquet(c, run_id, pa.Table.from_pandas(df, preserve_index=False), artifact_file)  # df.to_parquet's way


def log_arrow_parquet(c, run_id: str, table, artifact_file: str) -> None:
    """Log a :class:`pyarrow.Table` as a parquet artifact (no pandas conversion: the caller converts once)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        pq.write_table(table, path)
        c.log_artifact(run_id, str(path), str(Path(artifact_file).parent) if "/" in artifact_file else None)


def log_figure(c, run_id: str, fig, artifact_file: str) -> None:
    c.log_figure(run_id, fig, artifact_file)


def child_runs(c, experiment_id: str, parent_run_id: str) -> list:
    """All trial runs under a sweep's parent run."""
    return c.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                         max_results=10_000)


SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's own default; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it


def start_system_metrics(run_id: str, *, tracking_uri: str, interval_s: float = SYSTEM_METRICS_INTERVAL_S):
    """Start MLflow's system-metrics sampler (CPU, memory, GPU when present) on ``run_id``; None if unavailable.

    One sample every ``interval_s`` (``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` wins, as in MLflow). Each sample
    also reads the whole run back (MLflow checks that it is still running): at the 2 s used before, the sampler
    took 1 % of a Train worker's CPU time beside the training thread, and its Python work held the GIL the training
    steps wait on. ``finish()`` logs the last sample taken, which MLflow's own monitor drops: a fit shorter than
    the interval still gets its system metrics.
    """
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        class _LastSampleKept(SystemMetricsMonitor):
            def finish(self):
                thread = getattr(self, "_process", None)
                if thread is not None:
                    self._shutdown_event.set()
                    thread.join()
                    try:
                        pending = self.aggregate_metrics()  # the samples since the last publish
                        if pending:
                            self.publish_metrics(pending)
                    except Exception:  # noqa: BLE001 - the sample is a convenience; the run must still end
                        pass
                super().finish()  # flushes MLflow's batch logger

        monitor = _LastSampleKept(run_id, sampling_interval=interval_s, samples_before_logging=1,
                                  resume_logging=True, tracking_uri=tracking_uri)
        monitor.start()
        return monitor
    except Exception:  # noqa: BLE001 - psutil/pynvml missing: system metrics are optional
        return None


def tag_dict(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {k: str(v) for k, v in items}
