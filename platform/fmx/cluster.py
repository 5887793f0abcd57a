"""Run sweeps on a remote Ray cluster and follow them there.

Two ways in, one source of truth for the job's state:

* **Ray Jobs API** (:func:`submit_sweep`): the job is submitted to the head's dashboard with
  :class:`ray.job_submission.JobSubmissionClient`; the entrypoint is ``fmx sweep run <file>``.
* **KubeRay RayJob** (:func:`rayjob_manifest`, :func:`apply_rayjob`): a ``RayJob`` custom resource
  that runs the same entrypoint on the chart's long-running RayCluster (``clusterSelector``).

Either way the state reported by :func:`job_status` comes from the Ray Jobs API, never from the
RayJob resource's ``status`` field, which lags or disagrees with the job in practice. A RayJob is
created with a fixed ``jobId`` precisely so that its Ray job can be looked up.

Token authentication (Ray's default since 2.52, and KubeRay's ``authOptions.mode: token``): ``token=``, else
the token Ray's own clients find (:func:`find_auth_token`: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
``~/.ray/auth_token``); it is sent as ``Authorization: Bearer <token>``.

Addresses: ``address=`` wins; otherwise ``cluster=`` names a cluster recorded by ``make deploy``
under ``$FMX_HOME/clusters/<name>.json`` (default ``~/.fmx``); otherwise ``$FMX_RAY_ADDRESS``. An IPv6 host
goes in brackets: ``http://[::1]:8265``.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fmx.ray_address import check_address as _check_address, find_auth_token

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
SWEEP_METADATA_KEY = "fmx.sweep"
# Uploading these with a working_dir would be slow (venv, caches) or leak local state (runs, secrets):
# `make deploy` leaves the provider token in infra/.state and the bucket key in the Terraform state,
# excluded here so that their safety does not hang on Ray honouring .gitignore.
DEFAULT_EXCLUDES = (".git", ".venv", "**/__pycache__", "mlruns", "runs", "*.ckpt", ".env", ".env.*",
                    "terraform/**/.terraform",
                    "infra/.state", "*.tfstate", "*.tfstate.*", "*.tfvars")
_RAYJOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class JobInfo:
    """What the Ray Jobs API says about one submitted job.

    ``start_time``/``end_time`` are Unix seconds (the API reports milliseconds).
    """

    job_id: str
    status: str
    entrypoint: str
    message: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """True once the job has SUCCEEDED, FAILED or been STOPPED."""
        return self.status in TERMINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "entrypoint": self.entrypoint,
            "message": self.message,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "metadata": dict(self.metadata),
        }


def fmx_home() -> Path:
    """Where ``make deploy`` records clusters: ``$FMX_HOME`` or ``~/.fmx``."""
    return Path(os.environ.get("FMX_HOME", Path.home() / ".fmx")).expanduser()


def resolve_address(*, address: str | None = None, cluster: str | None = None) -> str:
    """The Ray dashboard URL to talk to: ``address``, else the recorded ``cluster``, else ``$FMX_RAY_ADDRESS``."""
    if address:
        return _check_address(address)
    if cluster:
        record = fmx_home() / "clusters" / f"{cluster}.json"
        if not record.is_file():
            raise ValueError(
                f"cluster={cluster!r}: no record at {record}; run `make deploy PROVIDER=...` first, "
                f"or pass address='http://HOST:8265' (a port-forwarded Ray dashboard)"
            )
        try:
            data = json.loads(record.read_text())
        except ValueError:  # empty or cut short, e.g. a `make deploy` interrupted while writing it
            data = None
        if not isinstance(data, dict):
            raise ValueError(f"cluster={cluster!r}: {record} is not a JSON object; re-run `make deploy`, or pass "
                             f"address='http://HOST:8265'")
        if not data.get("ray_address"):
            raise ValueError(f"cluster={cluster!r}: {record} has no 'ray_address'; re-run `make deploy`")
        return _check_address(data["ray_address"])
    env = os.environ.get("FMX_RAY_ADDRESS")
    if env:
        return _check_address(env)
    raise ValueError(
        "no Ray cluster given: pass address='http://HOST:8265', cluster=NAME (recorded by `make deploy`), "
        "or set FMX_RAY_ADDRESS"
    )


def connect(address: str, *, token: str | None = None):
    """A :class:`~ray.job_submission.JobSubmissionClient` for ``address``, authenticated when a token is known:
    ``token``, else the one :func:`find_auth_token` finds.

    Raises
    ------
    ConnectionError
        When no Ray dashboard answers at ``address``.
    PermissionError
        When the dashboard rejects the token (or needs one and none was given).
    ValueError
        When ``address`` is not an http(s)://HOST:PORT URL, or ``RAY_AUTH_TOKEN_PATH`` names an unreadable file.
    """
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = _check_address(address)
    source = "the token= argument"
    if token is None:
        token, source = find_auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        client = JobSubmissionClient(address, headers=headers)
        # The constructor only reads the version endpoint, which is open; listing jobs needs the token.
        client.list_jobs()
    except ConnectionError as err:
        raise ConnectionError(f"no Ray dashboard answered at {address}: {err}") from err
    except (RuntimeError, requests.HTTPError, requests.JSONDecodeError) as err:
        # Another HTTP server on that port (a 404 or 5xx on /api/version, or a page that is not JSON):
        # most often the MLflow port-forward given in place of the Ray one.
        if isinstance(err, RuntimeError) and "Version check" not in str(err):
            raise
        raise ConnectionError(
            f"{address} answered, but not as a Ray dashboard ({str(err).splitlines()[0]}); pass the Ray "
            f"dashboard's address (port 8265 by default; MLflow's 5000 is a common mix-up)"
        ) from err
    except AuthenticationError as err:
        # A stale ~/.ray/auth_token from a local Ray is sent as readily as the right token: say which one went.
        sent = f"the token from {source}" if token else "no token (none in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or " \
                                                         "~/.ray/auth_token)"
        raise PermissionError(
            f"the Ray dashboard at {address} rejected the request ({str(err).splitlines()[0]}) with {sent}; "
            f"pass token= or set RAY_AUTH_TOKEN to the cluster's token"
        ) from err
    return client


def secret_excludes(root: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> set[str]:
    """The mounted secret named by ``FMX_S3_SECRET_FILE``, when it lies inside ``root``, as a working_dir
    exclude: the job package (kept by the cluster, unpacked on every node) must not carry the keys."""
    secret = ((os.environ if environ is None else environ).get("FMX_S3_SECRET_FILE") or "").strip()
    if not secret:
        return set()
    try:
        rel = Path(secret).expanduser().resolve().relative_to(Path(root).resolve())
    except ValueError:  # outside the folder: not uploaded
        return set()
    return {"/" + rel.as_posix()} if rel.parts else set()


def sweep_entrypoint(sweep_file: str, *, extra_args: tuple[str, ...] = ()) -> str:
    """The shell command the cluster runs: ``fmx sweep run <file>`` (the sweep runner, :mod:`fmx.runner`)."""
    return " ".join(["fmx", "sweep", "run", shlex.quote(sweep_file), *map(shlex.quote, extra_args)])


def submit_sweep(
    sweep_file: str | os.PathLike[str],
    *,
    address: str,
    runtime_env: dict[str, Any] | None = None,
    working_dir: str | os.PathLike[str] | None = None,
    entrypoint: str | None = None,
    submission_id: str | None = None,
    metadata: dict[str, str] | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
    token: str | None = None,
    agent_wait_s: float = 60.0,
) -> str:
    """Submit a sweep to a Ray cluster through the Jobs API; returns the submission id.

    Parameters
    ----------
    sweep_file
        The sweep YAML. With ``working_dir`` it must lie inside it locally and is uploaded with it;
        without, it is a path on the cluster (for example one baked into the image).
    address
        The Ray dashboard URL, e.g. ``http://127.0.0.1:8265`` (see :func:`resolve_address`).
    runtime_env
        Ray runtime environment (``env_vars``, ``pip``...). ``working_dir`` is merged into it.
    working_dir
        Local folder uploaded as the job's working directory (``.venv``, ``.git``, runs excluded). A relative
        ``data.root``/``data.path`` (``base`` or ``parameters``) that the job would resolve elsewhere in it than
        here is a ValueError, raised before connecting (unless ``entrypoint`` is given).
    entrypoint
        Overrides ``fmx sweep run <file>`` (tests and one-off commands).
    submission_id, metadata, entrypoint_num_cpus, entrypoint_num_gpus
        Passed to Ray; ``metadata`` gains ``fmx.sweep`` so :func:`list_jobs` can pick out sweeps.
    token
        Ray auth token; defaults to the one Ray's clients find (:func:`find_auth_token`).
    agent_wait_s
        How long to keep retrying while a freshly started head has no job agent yet.
    """
    sweep = os.fspath(sweep_file)
    env = dict(runtime_env or {})
    if working_dir is not None:
        root = Path(working_dir).resolve()
        if not root.is_dir():
            raise ValueError(f"working_dir={os.fspath(working_dir)!r} is not a folder")
        local = Path(sweep) if Path(sweep).is_absolute() else root / sweep
        if not local.resolve().is_file():
            raise ValueError(f"sweep_file={sweep!r} not found under working_dir={str(root)!r}")
        try:
            sweep = local.resolve().relative_to(root).as_posix()
        except ValueError:
            raise ValueError(f"sweep_file={sweep!r} lies outside working_dir={str(root)!r}; move it inside") from None
        env.setdefault("working_dir", str(root))
        env["excludes"] = sorted(set(env.get("excludes", [])) | set(DEFAULT_EXCLUDES) | secret_excludes(root))
    if not sweep.endswith((".yaml", ".yml")) and entrypoint is None:
        raise ValueError(f"sweep_file={sweep!r} should be a .yaml sweep description")
    if working_dir is not None and entrypoint is None:
        _check_uploaded_data_paths(local, root, shown=os.fspath(sweep_file))
    client = connect(address, token=token)
    meta = {SWEEP_METADATA_KEY: sweep, **(metadata or {})}
    # A head that has just started serves the API before its job agent registers ("No available
    # agent to submit job"); nothing was submitted then, so waiting and retrying is safe.
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint or sweep_entrypoint(sweep),
                runtime_env=env or None,
                submission_id=submission_id,
                metadata=meta,
                entrypoint_num_cpus=entrypoint_num_cpus,
                entrypoint_num_gpus=entrypoint_num_gpus,
            )
        except RuntimeError as err:
            if "status code 413" in str(err) and working_dir is not None:
                # The dashboard caps an upload at 100 MiB (aiohttp client_max_size) and says only "413".
                raise ValueError(
                    f"working_dir={str(root)!r} packs to more than the Ray dashboard accepts in one upload "
                    f"(100 MiB); leave large files out with runtime_env={{'excludes': [...]}} or a .rayignore "
                    f"file in the folder, and read data from the data volume (/data) or the bucket"
                ) from None
            if "No available agent" not in str(err):
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Ray head at {address} still has no job agent after {agent_wait_s:.0f} s; see its "
                    f"dashboard_agent.log (a port clash on the agent's listen port is a common cause)"
                ) from err
            time.sleep(1.0)


def _check_uploaded_data_paths(sweep_file: str | os.PathLike[str], working_dir: str | os.PathLike[str], *,
                              shown: str | None = None) -> None:
    """Refuse a relative ``data.root``/``data.path`` (in ``base`` or a parameter's ``values``/``value``) that the
    job, which runs in its unpacked copy of ``working_dir``, would resolve to another place than here: every
    trial would fail on it. A ValueError names the file, the place in it, the value and the fix."""
    from fmx.config import DATA_PATH_KEYS
    from fmx.schema import Categorical, Constant, Grid, load_sweep

    root = Path(working_dir).resolve()
    sweep = load_sweep(sweep_file, check_config=False)  # the key paths are the cluster's to compose
    found = [(f"base[{i}]", key.lstrip("+~"), value.strip("'\""))
             for i, (key, sep, value) in enumerate(str(item).partition("=") for item in sweep.base) if sep]
    for key, spec in sweep.parameters.items():
        if isinstance(spec, (Categorical, Grid)):
            found += [(f"parameters.{key}.values[{i}]", key, v) for i, v in enumerate(spec.values)]
        elif isinstance(spec, Constant):
            found.append((f"parameters.{key}.value", key, spec.value))
    for where, key, value in found:
        if (key not in DATA_PATH_KEYS or not isinstance(value, str) or not value or value == "null" or "://" in value
                or value.startswith("~") or Path(value).is_absolute()):  # ~ and absolute: the nodes' own paths
            continue
        here, there = (Path.cwd() / value).resolve(), (root / value).resolve()
        if here != there or not there.is_relative_to(root):
            problem = (f"{here} lies outside the upload" if not there.is_relative_to(root)
                       else f"the job reads {there} there, not {here}")
            raise ValueError(f"{shown or os.fspath(sweep_file)}: {where}: {key}={value} is relative, and the job "
                             f"resolves it in its copy of working_dir {root}: {problem}; give a path the cluster's "
                             f"nodes have (absolute, e.g. /data/...) or an s3:// URI, or put the data inside {root} "
                             f"and submit from there")


def _info(details) -> JobInfo:
    ms = lambda t: None if not t else t / 1000.0  # noqa: E731 - the API reports epoch milliseconds
    return JobInfo(
        job_id=details.submission_id or details.job_id,
        status=str(getattr(details.status, "value", details.status)),
        entrypoint=details.entrypoint,
        message=details.message,
        start_time=ms(details.start_time),
        end_time=ms(details.end_time),
        metadata=dict(details.metadata or {}),
    )


def _known(client, job_id: str, call: str, *args):
    """Run ``client.<call>(job_id, ...)``; an unknown job becomes a ValueError that names it."""
    try:
        return getattr(client, call)(job_id, *args)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise ValueError(
                f"job_id={job_id!r}: no such job on {client.get_address()}; list the jobs with `fmx job list`"
            ) from None
        raise


def job_status(job_id: str, *, address: str, token: str | None = None) -> JobInfo:
    """The job's own state (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) from the Ray Jobs API."""
    return _info(_known(connect(address, token=token), job_id, "get_job_info"))


def job_logs(job_id: str, *, address: str, token: str | None = None) -> str:
    """Everything the job's driver has printed so far."""
    return _known(connect(address, token=token), job_id, "get_job_logs")


def follow_job_logs(job_id: str, *, address: str, token: str | None = None) -> Iterator[str]:
    """Yield log chunks as the driver prints them, until the job ends."""
    client = connect(address, token=token)
    _known(client, job_id, "get_job_info")  # fail fast with a clear error for an unknown id
    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def list_jobs(*, address: str, token: str | None = None, sweeps_only: bool = False) -> list[JobInfo]:
    """Submitted jobs on the cluster, oldest first; ``sweeps_only`` keeps those made by :func:`submit_sweep`."""
    jobs = [
        _info(d)
        for d in connect(address, token=token).list_jobs()
        if d.submission_id  # drivers started with plain ray.init() have no submission id
    ]
    if sweeps_only:
        jobs = [j for j in jobs if SWEEP_METADATA_KEY in j.metadata]
    return sorted(jobs, key=lambda j: (j.start_time or 0.0, j.job_id))


def wait_for_job(
    job_id: str,
    *,
    address: str,
    timeout_s: float,
    poll_s: float = 1.0,
    token: str | None = None,
    on_status: Callable[[JobInfo], None] | None = None,
) -> JobInfo:
    """Poll until the job reaches a terminal state; ``on_status`` sees each change of state.

    Raises
    ------
    TimeoutError
        If the job is still running after ``timeout_s`` seconds (it keeps running on the cluster).
    """
    if timeout_s <= 0 or poll_s <= 0:
        raise ValueError(f"timeout_s={timeout_s} and poll_s={poll_s} must both be > 0")
    client = connect(address, token=token)
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        info = _info(_known(client, job_id, "get_job_info"))
        if on_status is not None and info.status != last:
            on_status(info)
        last = info.status
        if info.terminal:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {info.status} after {timeout_s:.0f} s; it keeps running")
        time.sleep(poll_s)


def stop_job(job_id: str, *, address: str, token: str | None = None, wait_s: float = 30.0) -> JobInfo:
    """Ask Ray to stop the job, then wait up to ``wait_s`` seconds for it to reach a terminal state."""
    client = connect(address, token=token)
    _known(client, job_id, "stop_job")
    if wait_s <= 0:
        return _info(client.get_job_info(job_id))
    try:
        return wait_for_job(job_id, address=address, timeout_s=wait_s, poll_s=0.5, token=token)
    except TimeoutError:
        return _info(client.get_job_info(job_id))


# ---------------------------------------------------------------------------------------------
# KubeRay RayJob: a manifest for the chart's RayCluster, applied only when a cluster is configured.
# ---------------------------------------------------------------------------------------------


def rayjob_manifest(
    sweep_file: str,
    *,
    name: str,
    ray_cluster: str,
    namespace: str = "neurofmx",
    job_id: str | None = None,
    runtime_env_yaml: str | None = None,
    active_deadline_s: int | None = None,
    entrypoint: str | None = None,
    entrypoint_num_gpus: float | None = None,
) -> dict[str, Any]:
    """A ``ray.io/v1`` RayJob that runs ``fmx sweep run <file>`` on the existing RayCluster ``ray_cluster``.

    The job id is fixed (``job_id`` or ``<name>``) so :func:`job_status` can ask the Jobs API about
    it directly. ``submissionMode: HTTPMode`` submits from the operator, so no submitter pod is needed.
    """
    if not _RAYJOB_NAME.match(name):
        raise ValueError(f"name={name!r} must be a DNS label (lowercase letters, digits, '-', at most 63 chars)")
    if not _RAYJOB_NAME.match(ray_cluster):
        raise ValueError(f"ray_cluster={ray_cluster!r} must be the RayCluster's name (a DNS label)")
    if active_deadline_s is not None and active_deadline_s <= 0:
        raise ValueError(f"active_deadline_s={active_deadline_s} must be a positive number of seconds")
    spec: dict[str, Any] = {
        "entrypoint": entrypoint or sweep_entrypoint(sweep_file),
        "jobId": job_id or name,
        "clusterSelector": {"ray.io/cluster": ray_cluster},
        "submissionMode": "HTTPMode",
        "metadata": {SWEEP_METADATA_KEY: sweep_file},
    }
    if runtime_env_yaml:
        spec["runtimeEnvYAML"] = runtime_env_yaml
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_s)
    if entrypoint_num_gpus is not None:
        spec["entrypointNumGpus"] = float(entrypoint_num_gpus)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "neurofmx", "app.kubernetes.io/component": "sweep"},
        },
        "spec": spec,
    }


def apply_rayjob(manifest: dict[str, Any], *, kubeconfig: str | None = None, context: str | None = None) -> dict:
    """Create the RayJob in the cluster named by ``kubeconfig``/``$KUBECONFIG``; returns the created object."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    if not path or not Path(path).expanduser().is_file():
        raise ValueError(
            f"kubeconfig={path!r}: no kubeconfig file; `make deploy` writes one (terraform output), "
            f"pass kubeconfig=PATH or set KUBECONFIG"
        )
    api_client = config.new_client_from_config(config_file=str(Path(path).expanduser()), context=context)
    meta = manifest["metadata"]
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        group="ray.io", version="v1", namespace=meta["namespace"], plural="rayjobs", body=manifest
    )
