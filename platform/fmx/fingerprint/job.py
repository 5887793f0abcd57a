"""The fingerprint job: fan recordings out as Ray tasks, resume, and write the cohort tables.

Layout of ``OUT`` (a folder or ``s3://`` prefix)::

    parts/<key>.parquet     one finished recording (tidy rows; its info in the parquet metadata)
    fingerprint.parquet     tidy table: subject, session, condition, channel, measure, value
    summary.parquet         one row per subject/session/condition: channel-mean of every measure
                            (network measures as they are) plus participants.tsv columns
    recordings.parquet      one row per recording: path, labels, key, status, seconds, n_epochs, the share
                            annotated BAD and the share not measured (bad_fraction, excluded_fraction)
    failures.parquet        path, labels, error for every recording that could not be fitted
    flags.parquet           channel-level quality flags from fractals.fingerprint (flat, poor_fit, ...):
                            NaN values are left out of fingerprint.parquet and listed here
    participants.parquet    the participant columns (for ``fmx fingerprint compare --group-by``)
    job.json                the resolved config, the data source and the counts (with the recordings that had
                            spans annotated BAD and the mean share of their data not measured)

``<key>`` hashes the recording's path, size, modification time and labels with the whole job config, so a re-run
skips every recording whose part exists and refits only new, changed or failed ones. Every file
is written atomically (:func:`fmx.fingerprint.storage.write_bytes_atomic`).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import signal
import time
from typing import Any, Callable, Mapping, Sequence

from fmx.fingerprint import storage
from fmx.fingerprint.config import check_config, config_hash, load_config
from fmx.fingerprint.discover import discover
from fmx.fingerprint.interrupt import JobTerminated, rearm_sigterm, saved_counter, stop_cleanly, write_failed_message
from fmx.fingerprint.recording import TIDY_COLUMNS, fit_recording

__all__ = ["JobResult", "run_fingerprint_job", "subject_summary", "measure_columns", "read_parquet", "write_parquet",
           "plan_job"]

LABELS = ("subject", "session", "condition")


@dataclasses.dataclass
class JobResult:
    """What a job produced (tables are also written under ``out``)."""

    out: str
    table: Any            # tidy DataFrame, TIDY_COLUMNS
    summary: Any          # per subject/session/condition, wide
    recordings: Any       # per recording status
    failures: Any         # path, labels, error
    n_fitted: int
    n_skipped: int
    n_failed: int
    seconds: float
    mlflow_run_id: str | None = None
    flags: Any = None     # channel-level quality flags (flags.parquet): the plots draw flagged values open


def write_parquet(frame, uri: str, metadata: Mapping[str, str] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes_atomic(uri, buf.getvalue())


def read_parquet(uri: str, *, with_metadata: bool = False):
    import pyarrow.parquet as pq

    if not storage.exists(uri):
        raise ValueError(f"{uri}: not found; run `fmx fingerprint fit DATA --out OUT` first")
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    frame = table.to_pandas()
    if with_metadata:
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if not k.startswith(b"pandas")}
        return frame, meta
    return frame


def plan_job(data: str, cfg: Mapping[str, Any], *, modality: str | None = None):
    """Discover recordings and attach each one's resume ``key``."""
    entries = discover(data, modality=modality)
    keys = []
    for row in entries.itertuples(index=False):
        size, mtime = storage.version_of(row.path)
        keys.append(config_hash(str(row.path), row.member, size, mtime, {c: getattr(row, c) for c in LABELS},
                                dict(cfg)))
    entries["key"] = keys
    return entries


def _apply_cli(cfg: dict, *, channels, resample, band, notch, epoch) -> dict:
    pre = dict(cfg.get("preprocess") or {})
    for name, value in (("channels", channels), ("resample", resample), ("band", band), ("notch", notch),
                        ("epoch", epoch)):
        if value is not None:
            pre[name] = list(value) if isinstance(value, (list, tuple)) else value
    if pre.get("band") is not None and len(pre["band"]) != 2:
        raise ValueError(f"band: needs two numbers LOW HIGH in Hz, got {pre['band']}")
    return {**cfg, "preprocess": pre}


def run_fingerprint_job(
    data: str,
    out: str,
    *,
    config: Sequence[str] | Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    resample: float | None = None,
    band: Sequence[float] | None = None,
    notch: float | None = None,
    epoch: float | None = None,
    modality: str | None = None,
    executor: str = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    gpus_per_task: float = 0.25,
    mlflow_uri: str | None = None,
    log_mlflow: bool = True,
    experiment: str = "fingerprint",
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
) -> JobResult:
    """Fingerprint every recording in ``data`` and write the cohort tables to ``out``.

    Parameters
    ----------
    data : str
        Folder, ``s3://`` prefix, manifest CSV or RR cohort ``.npz`` (see :func:`discover`).
    out : str
        Output folder or ``s3://`` prefix (layout in the module docstring).
    config : list of str or dict, optional
        ``["NAME", "key=value", ...]`` for :func:`load_config`, or an already composed dict.
    channels, resample, band, notch, epoch
        Shortcuts for the config's ``preprocess`` section (they win over it).
    executor : {"ray", "serial"}
        ``ray`` fans recordings out as Ray tasks (one CPU each, plus ``gpus_per_task`` of a GPU
        when the cluster has GPUs); ``serial`` runs them in this process (debugging).
    address : str, optional
        Ray cluster address; without it a local Ray instance with ``num_cpus`` CPUs is started
        (and shut down afterwards). An already initialised Ray is reused as it is.
    mlflow_uri, log_mlflow, experiment
        Where to log the run (tables, plots, params); ``mlflow_uri=None`` uses MLflow's own default
        (``MLFLOW_TRACKING_URI``).
    """
    start = time.perf_counter()
    if executor not in ("ray", "serial"):
        raise ValueError(f"executor: must be 'ray' or 'serial', got {executor!r}")
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise ValueError(f"num_cpus (--num-cpus): needs a whole number >= 1 of CPUs for local Ray, got {num_cpus!r}")
    if not (isinstance(gpus_per_task, (int, float)) and 0 <= gpus_per_task < float("inf")):
        raise ValueError(f"gpus_per_task (--gpus-per-task): needs a GPU share >= 0 (0: CPU), got {gpus_per_task!r}")
    if log_mlflow:  # before any work: a store MLflow refuses would surface only after the whole cohort
        mlflow_uri = _tracking_uri(mlflow_uri)
    if not storage.is_s3(out) and os.path.isfile(out):
        raise ValueError(f"out: {str(out)!r} is a file; give a folder (created if missing) or an s3:// prefix")
    cfg = dict(config) if isinstance(config, Mapping) else load_config(config)
    cfg = _apply_cli(cfg, channels=channels, resample=resample, band=band, notch=notch, epoch=epoch)
    check_config(cfg)  # a bad value would fail every recording alike, a quoted switch flip silently
    entries = plan_job(data, cfg, modality=modality)
    if not storage.is_s3(out):
        try:  # now, not at the first part's write after that recording was fitted
            os.makedirs(out, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"out: {str(out)!r} cannot be created ({exc.strerror or exc}); give a writable folder "
                             "or an s3:// prefix") from None
    parts_dir = storage.join(out, "parts")
    done = {os.path.basename(p)[:-len(".parquet")] for p in storage.list_files(parts_dir) if p.endswith(".parquet")} \
        if storage.exists(parts_dir) else set()
    todo = entries[~entries["key"].isin(done)]
    failures: list[dict] = []
    stats: dict[str, dict] = {}

    def handle(entry: Mapping[str, Any], result: dict) -> None:
        stats[entry["key"]] = {"seconds": result["seconds"], "error": result["error"]}
        if result["error"] is None:
            try:
                write_parquet(result["rows"], storage.join(parts_dir, f"{entry['key']}.parquet"),
                              metadata={"fmx.info": json.dumps(result["info"]), "fmx.path": str(entry["path"])})
            except OSError as exc:  # a full disk, a read-only OUT: one line saying how to go on, the parts stay
                saved = len(done) + sum(1 for k, s in stats.items() if s["error"] is None and k != entry["key"])
                raise ValueError(write_failed_message(exc, out=str(out), saved=saved, total=len(entries))) from None
        else:
            failures.append({"path": str(entry["path"]), "member": entry.get("member", ""),
                             **{c: entry[c] for c in LABELS}, "error": result["error"]})
        if on_result is not None:
            on_result({**result, "entry": dict(entry)})

    records = todo.to_dict("records")
    saved = saved_counter(parts_dir, set(entries["key"]))
    with stop_cleanly(out=str(out), total=len(entries), saved=saved, progress=progress), \
            _Progress(progress, total=len(entries), done=len(entries) - len(records)) as bar:
        def tick(entry, result):
            handle(entry, result)
            bar.advance(failed=len(failures))

        if executor == "serial":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            for entry in records:
                tick(entry, _fit_reporting(entry, cfg, device=device, report=bar.step if progress else None))
        else:
            _run_ray(records, cfg, tick, address=address, num_cpus=num_cpus, gpus_per_task=gpus_per_task,
                     step=bar.step if progress else None)
    with stop_cleanly(out=str(out), total=len(entries), saved=saved, progress=progress):
        return _write_tables(entries, done, stats, failures, out=out, parts_dir=parts_dir, data=data, cfg=cfg,
                             executor=executor, start=start, log_mlflow=log_mlflow, mlflow_uri=mlflow_uri,
                             experiment=experiment)


def _write_tables(entries, done, stats, failures, *, out, parts_dir, data, cfg, executor, start, log_mlflow,
                  mlflow_uri, experiment) -> JobResult:
    """Gather the parts into the cohort tables, write them and job.json, and log the MLflow run."""
    import pandas as pd

    ok_keys = [k for k in entries["key"] if k in done or stats.get(k, {}).get("error", "x") is None]
    frames, infos = [], {}
    for key in ok_keys:
        frame, meta = read_parquet(storage.join(parts_dir, f"{key}.parquet"), with_metadata=True)
        frames.append(frame)
        infos[key] = json.loads(meta.get("fmx.info", "{}"))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype="float64" if c == "value" else "str") for c in TIDY_COLUMNS})
    table = table[list(TIDY_COLUMNS)]
    participant_cols = [c for c in entries.columns if c not in (*LABELS, "path", "member", "modality", "key")]
    participants = entries[["subject", *participant_cols]].drop_duplicates("subject").reset_index(drop=True)
    summary = subject_summary(table, participants if participant_cols else None)
    failures_frame = pd.DataFrame(failures, columns=["path", "member", *LABELS, "error"])
    status = []
    for entry in entries.to_dict("records"):
        key = entry["key"]
        state = "skipped" if key in done else ("failed" if stats.get(key, {}).get("error") else "fitted")
        info = infos.get(key, {})
        status.append({"path": str(entry["path"]), "member": entry["member"], **{c: entry[c] for c in LABELS},
                       "key": key, "status": state, "seconds": stats.get(key, {}).get("seconds", float("nan")),
                       "n_epochs": info.get("n_epochs", 0), "duration_s": info.get("duration_s", float("nan")),
                       "trimmed_s": info.get("trimmed_s", 0.0), "n_segments": info.get("n_segments", 0),
                       "bad_fraction": info.get("bad_fraction", float("nan")),
                       "excluded_fraction": info.get("excluded_fraction", float("nan"))})
    recordings = pd.DataFrame(status)
    flag_rows = [{**{c: entry[c] for c in LABELS}, **flag}
                 for entry in entries.to_dict("records") for flag in infos.get(entry["key"], {}).get("flags", [])]
    flags = pd.DataFrame(flag_rows, columns=[*LABELS, "channel", "measure", "flag", "epoch"])

    try:
        write_parquet(table, storage.join(out, "fingerprint.parquet"))
        write_parquet(summary, storage.join(out, "summary.parquet"))
        write_parquet(recordings, storage.join(out, "recordings.parquet"))
        write_parquet(failures_frame, storage.join(out, "failures.parquet"))
        write_parquet(flags, storage.join(out, "flags.parquet"))
        # always: a stale file from an earlier run into this OUT would hand `compare --group-by` removed columns
        write_parquet(participants, storage.join(out, "participants.parquet"))
    except OSError as exc:
        raise ValueError(write_failed_message(exc, out=str(out), saved=len(ok_keys), total=len(entries))) from None
    result = JobResult(out=str(out), table=table, summary=summary, recordings=recordings, failures=failures_frame,
                       n_fitted=int((recordings["status"] == "fitted").sum()),
                       n_skipped=int((recordings["status"] == "skipped").sum()),
                       n_failed=len(failures_frame), seconds=time.perf_counter() - start, flags=flags)
    job_info = {"data": str(data), "config": cfg, "executor": executor, "n_recordings": len(entries),
                "n_fitted": result.n_fitted, "n_skipped": result.n_skipped, "n_failed": result.n_failed,
                "seconds": round(result.seconds, 3), **_bad_span_counts(recordings)}
    try:
        storage.write_bytes_atomic(storage.join(out, "job.json"),
                                   json.dumps(job_info, indent=2, default=str).encode())
    except OSError as exc:
        raise ValueError(write_failed_message(exc, out=str(out), saved=len(ok_keys), total=len(entries))) from None
    if log_mlflow:
        from fmx.fingerprint.tracking import log_job

        result.mlflow_run_id = log_job(result, cfg, data=str(data), uri=mlflow_uri, experiment=experiment)
    return result


def _bad_span_counts(recordings) -> dict[str, Any]:
    """job.json's account of spans annotated BAD: how many measured recordings had some, and the mean share of
    those recordings' data left unmeasured."""
    measured = recordings[recordings["status"] != "failed"]
    marked = measured[measured["bad_fraction"].fillna(0) > 0]
    mean = float(marked["excluded_fraction"].mean()) if len(marked) else 0.0
    return {"n_with_bad_spans": int(len(marked)), "excluded_fraction_with_bad_spans": round(mean, 4)}


def _tracking_uri(uri: str | None) -> str | None:
    """``uri`` (else ``MLFLOW_TRACKING_URI``) made absolute as sweeps make theirs (a plain path is a sqlite store
    there, a file store is refused with the fix); None leaves MLflow's own default."""
    from fmx.schema import mask_uri_password, uri_has_password
    from fmx.tracking import resolve_tracking_uri

    field, uri = ("mlflow_uri (--mlflow)", uri) if uri else ("MLFLOW_TRACKING_URI",
                                                             (os.environ.get("MLFLOW_TRACKING_URI") or "").strip())
    if not uri:
        return None
    if uri_has_password(uri):  # it would reach tracebacks and logs
        raise ValueError(f"{field}={mask_uri_password(uri)!r}: credentials never go in the URI (user:password@); set "
                         "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment")
    return resolve_tracking_uri(uri, field=field)


def subject_summary(table, participants=None):
    """One row per subject/session/condition: the channel mean of each measure, wide.

    Network-level rows (channel ``network``) are kept as they are under ``network:<measure>``.
    """
    import pandas as pd

    if table.empty:
        return pd.DataFrame(columns=list(LABELS))
    is_net = table["channel"].str.lower() == "network"
    per_channel = table[~is_net].pivot_table(index=list(LABELS), columns="measure", values="value", aggfunc="mean")
    parts = [per_channel]
    if is_net.any():
        net = table[is_net].pivot_table(index=list(LABELS), columns="measure", values="value", aggfunc="mean")
        parts.append(net.add_prefix("network:"))
    wide = pd.concat(parts, axis=1).reset_index()
    wide.columns.name = None
    counts = table[~is_net].groupby(list(LABELS))["channel"].nunique().rename("n_channels").reset_index()
    wide = wide.merge(counts, on=list(LABELS), how="left")
    if participants is not None:
        wide = wide.merge(participants, on="subject", how="left")
    return wide


def measure_columns(summary) -> list[str]:
    """The measure columns of a :func:`subject_summary` table (between the labels and ``n_channels``)."""
    columns = list(summary.columns)
    end = columns.index("n_channels") if "n_channels" in columns else len(columns)
    return [c for c in columns[:end] if c not in LABELS]


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The S3 settings Ray workers get to read ``s3://`` inputs: endpoint, region, the secret file's path.

    Never the keys themselves: the Ray dashboard shows a task's runtime_env. Workers take credentials
    from their own environment (a local Ray inherits the driver's; a cluster's pods mount the secret)
    or from the file named by ``FMX_S3_SECRET_FILE``, as sweep workers do.
    """
    from fmx.schema import uri_has_password
    from fmx.storage import FORWARDED_ENV

    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in FORWARDED_ENV if environ.get(k) and not uri_has_password(environ[k])}


PROGRESS_EVERY_S = 0.5  # a worker reports a recording's fingerprint steps at most this often


def _fit_reporting(entry: Mapping[str, Any], cfg: Mapping[str, Any], *, device: str = "cpu",
                   threads: int | None = None, report: Callable | None = None) -> dict[str, Any]:
    """:func:`fit_recording`, passing each fingerprint step as ``report(name, done, total, step)`` (throttled;
    ``name`` is the file's name, and its member in an archive).

    One big recording takes minutes (256 channels x 30 min at 1 kHz: ~2.5 min) and the bar counts
    recordings; this says which measure of which recording is running. Reporting never fails the fit.
    """
    if report is None:
        return fit_recording(entry, cfg, device=device, threads=threads)
    from fractals.fingerprint import progress_hook

    member = entry.get("member")
    name = os.path.basename(str(entry.get("path") or entry.get("key"))) + (f":{member}" if member else "")
    last = [-float("inf")]

    def hook(done: int, total: int, step: str) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S and done < total:
            return
        last[0] = now
        try:
            report(name, done, total, step)
        except Exception:  # progress is best effort (a Ray queue gone at shutdown): the fit goes on
            pass

    with progress_hook(hook):
        return fit_recording(entry, cfg, device=device, threads=threads)


def _put(queue, *item) -> None:
    queue.put_nowait(item)  # one item per report: Queue.put_nowait takes one


def _run_ray(records: list[dict], cfg: dict, tick, *, address, num_cpus, gpus_per_task,
             step: Callable | None = None) -> None:
    if not records:
        return
    import ray

    started = not ray.is_initialized()
    if started:
        from fmx.lifecycle import SigtermInterrupt
        from fmx.ray_setup import init_ray

        try:  # a SIGTERM while Ray starts stops what it had started (by PID) and ends the job as any SIGTERM does
            init_ray(address, num_cpus=num_cpus, logging_level="warning",
                     not_started="no recording was fitted on it; run the job again")
        except SigtermInterrupt:
            raise JobTerminated(signal.SIGTERM) from None
        rearm_sigterm()
    steps = None
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        options: dict[str, Any] = {"num_cpus": 1, "num_gpus": gpus_per_task if has_gpu else 0, "max_retries": 0}
        if any(storage.is_s3(r["path"]) for r in records):
            env = worker_env()
            if env:
                options["runtime_env"] = {"env_vars": env}
        task = ray.remote(_fit_reporting).options(**options)
        cfg_ref = ray.put(cfg)
        if step is not None:  # workers report fingerprint steps through a queue actor (holding no CPU)
            from ray.util.queue import Queue

            steps = Queue(actor_options={"num_cpus": 0})
        # a task granted no GPU sees none (Ray empties its CUDA_VISIBLE_DEVICES): --gpus-per-task 0 means CPU
        device = "cuda" if has_gpu and gpus_per_task > 0 else "cpu"
        width = max(1, int(ray.cluster_resources().get("CPU", 1))) * 2  # bounded in-flight: memory stays flat
        pending: dict = {}
        queue = list(records)
        while queue or pending:
            while queue and len(pending) < width:
                entry = queue.pop(0)
                report = None if steps is None else functools.partial(_put, steps)
                pending[task.remote(entry, cfg_ref, device=device, threads=1, report=report)] = entry
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if steps is None else PROGRESS_EVERY_S)
            if steps is not None:
                try:
                    waiting = steps.qsize()
                    items = steps.get_nowait_batch(waiting) if waiting else []
                except Exception:  # the queue actor is gone: progress is best effort, the job goes on
                    items, steps = [], None
                for item in items:
                    step(*item)
            for ref in ready:
                entry = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # worker crash (OOM, segfault in a reader): a failure, not an abort
                    result = {"key": entry["key"], "rows": None, "info": {}, "seconds": float("nan"),
                              "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                tick(entry, result)
    finally:
        if steps is not None:
            steps.shutdown()
        if started:
            ray.shutdown()


class _Progress:
    """A rich progress bar over recordings (a no-op when disabled); its description names the running step."""

    def __init__(self, enabled: bool, *, total: int, done: int):
        self.enabled, self.total, self.done = enabled, total, done
        self._skipped = f"({done} done before) " if done else ""
        self._note, self._step = self._skipped, ""

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]fingerprint[/] {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
            self._bar.start()
            self._task = self._bar.add_task(self._note, total=self.total, completed=self.done)
        return self

    def advance(self, failed: int = 0) -> None:
        """One more recording finished (``failed`` of them failed so far)."""
        if self.enabled:
            self._note = f"{self._skipped}[red]{failed} failed[/]" if failed else self._skipped
            self._bar.update(self._task, advance=1, description=self._note + self._step)

    def step(self, name: str, done: int, total: int, step: str) -> None:
        """Show ``name: step (done/total)``, the fingerprint step running on a recording."""
        if self.enabled:
            from rich.markup import escape

            self._step = "" if step == "done" else escape(f" {name}: {step} ({done}/{total})")
            self._bar.update(self._task, description=self._note + self._step)

    def __exit__(self, *exc):
        if self.enabled:
            self._bar.stop()
        return False
