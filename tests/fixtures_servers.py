"""Real local servers for tests (Ray, MLflow, S3), started and stopped by PID. Owner: platform (issue 5).

Every server binds 127.0.0.1 on ports chosen at run time, runs in its own process group and is stopped by
signalling that group (never ``ray stop``, which would kill other people's Ray processes on a shared host).
Session-scoped fixtures are shared by every test module of a pytest run so the slow start-up is paid once:

``ray_cluster``      a local Ray head (``ray start --head --block``) -> :class:`RayHead` (address, dashboard url)
``mlflow_server``    ``mlflow server`` on sqlite with local artifacts -> :class:`MlflowServer` (tracking uri)
``seaweed_s3``       SeaweedFS ``weed mini`` S3 gateway with real access-key auth -> :class:`S3Server`
``moto_s3``          moto server mode (fast, accepts any key) -> :class:`S3Server`

The ``start_*`` functions are public so a test can start a private server (for example an MLflow server whose
artifacts go to S3) and stop it with ``.stop()``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the venv's bin: mlflow, ray, weed, moto_server live beside python


def free_port(*, also_free_offset: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 now (and ``port + also_free_offset`` too when given, for gRPC twins)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if also_free_offset is None:
            return port
        twin = port + also_free_offset
        if twin < 65535 and _port_is_free(twin):
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_http(url: str, *, timeout_s: float, proc: subprocess.Popen, log: Path, ok_codes=(200,)) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered; log {log}:\n"
                               + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok_codes:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok_codes:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s; log {log}:\n" + log.read_text()[-3000:])


def stop_group(proc: subprocess.Popen, *, grace_s: float = 15.0) -> None:
    """SIGTERM the process group we started (the server and its children), SIGKILL what is left.

    The group is signalled even when its leader has exited: daemons it started may live on."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@contextlib.contextmanager
def _stop_on_failure(server):
    """Stop a server that never became ready before its error propagates: no orphaned processes."""
    try:
        yield server
    except BaseException:
        server.stop()
        raise


def _spawn(cmd: list[str], *, log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


# --------------------------------------------------------------------------------------------------- Ray
@dataclass
class RayHead:
    """A local Ray head node started with ``ray start --head --block``."""

    address: str           # "127.0.0.1:PORT", for ray.init(address=...)
    dashboard_url: str     # "http://127.0.0.1:PORT", for the Jobs API
    temp_dir: Path
    proc: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    def stop(self) -> None:
        # `ray start --block` tears down the processes it started when it receives SIGTERM; the group kill
        # catches anything left behind.
        stop_group(self.proc, grace_s=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def short_temp_dir() -> Path:
    """A new /tmp/rayfmx_XXXXXXXX for a Ray head's --temp-dir (the caller removes it).

    Not under pytest's tmp_path: Ray's socket paths under it must stay within AF_UNIX's 107 bytes, and
    pytest-xdist's popen-gwN/ level pushed them over ("validate_socket_filename failed").
    """
    path = Path(f"/tmp/rayfmx_{uuid.uuid4().hex[:8]}")
    path.mkdir()
    return path


def start_ray_head(tmp: Path, *, num_cpus: int = 4, object_store_mb: int = 512, timeout_s: float = 90) -> RayHead:
    """Start a Ray head bound to 127.0.0.1 with its own temp dir (short path: Ray's socket paths are limited).

    ``num_cpus`` is logical: 4 on a 2-core machine lets a 2-worker trial and its Tune driver actor fit.
    """
    port, dash = free_port(), free_port()
    temp_dir = short_temp_dir()
    log = tmp / "ray_head.log"
    # No drain wait on SIGTERM (Ray waits 30 s by default); token auth off: an in-process ray.init earlier in the
    # session leaves RAY_AUTH_MODE=token in os.environ, and the dashboard then answered /api/version with 401 only
    # (tests/test_cluster_submit.py starts its own token-auth head).
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               RAY_AUTH_MODE="disabled")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", "--num-gpus=0", f"--object-store-memory={object_store_mb * 2**20}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--ray-client-server-port={free_port()}", f"--min-worker-port={free_port()}",
           "--max-worker-port=0",
           # Ray's fixed default agent ports (52365 and friends) clash with any other Ray on the host: a head
           # whose agent cannot bind serves the dashboard but accepts no jobs.
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    proc = _spawn(cmd, log=log, env=env)
    head = RayHead(address=f"127.0.0.1:{port}", dashboard_url=f"http://127.0.0.1:{dash}", temp_dir=temp_dir,
                   proc=proc, log=log)
    with _stop_on_failure(head):
        _wait_http(f"{head.dashboard_url}/api/version", timeout_s=timeout_s, proc=proc, log=log)
    return head


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray head shared by the session; tests call ``ray.init(address=ray_cluster.address)``."""
    head = start_ray_head(tmp_path_factory.mktemp("ray"))
    yield head
    head.stop()


# ------------------------------------------------------------------------------------------------ MLflow
@dataclass
class MlflowServer:
    """An ``mlflow server`` subprocess on 127.0.0.1."""

    tracking_uri: str
    backend_uri: str
    artifacts_destination: str
    proc: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    def stop(self) -> None:
        stop_group(self.proc)


def start_mlflow_server(tmp: Path, *, artifacts_destination: str | None = None, extra_env: dict | None = None,
                        timeout_s: float = 90) -> MlflowServer:
    """Start ``mlflow server`` with a sqlite store in ``tmp``; artifacts proxied to ``artifacts_destination``.

    ``extra_env`` reaches the server only (for example ``MLFLOW_S3_ENDPOINT_URL`` and keys for S3 artifacts).
    The job-execution workers are switched off (about 0.7 GB instead of 1.8 GB, see shared/notes/stack.md).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend = f"sqlite:///{tmp / 'mlflow.db'}"
    artifacts = artifacts_destination or str(tmp / "artifacts")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **(extra_env or {}))
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend, "--artifacts-destination", artifacts]
    log = tmp / "mlflow_server.log"
    proc = _spawn(cmd, log=log, env=env, cwd=tmp)
    server = MlflowServer(tracking_uri=f"http://127.0.0.1:{port}", backend_uri=backend,
                          artifacts_destination=artifacts, proc=proc, log=log)
    with _stop_on_failure(server):
        _wait_http(f"{server.tracking_uri}/health", timeout_s=timeout_s, proc=proc, log=log)
    return server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server shared by the session (sqlite store, local artifacts)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------------- S3
@dataclass
class S3Server:
    """An S3-compatible server on 127.0.0.1 and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    proc: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)
    checks_auth: bool = True

    def env(self) -> dict[str, str]:
        """The environment variables a client (boto3, pyarrow, MLflow, Ray) needs to reach this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ENDPOINT_URL_S3": self.endpoint_url, "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a new bucket (a fresh name by default) and return its name."""
        name = name or f"fmx-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        stop_group(self.proc)


def start_seaweed_s3(tmp: Path, *, timeout_s: float = 60) -> S3Server:
    """Start SeaweedFS ``weed mini`` with one identity (random keys): requests with other keys are rejected."""
    tmp.mkdir(parents=True, exist_ok=True)
    access, secret = "fmx" + uuid.uuid4().hex[:13], uuid.uuid4().hex + uuid.uuid4().hex[:8]
    config = tmp / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "fmx-test", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    # weed listens on each port and on port+10000 (gRPC): pick pairs that are both free.
    ports = {name: free_port(also_free_offset=10000) for name in ("master", "volume", "filer", "s3")}
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    cmd = [str(BIN / "weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           f"-s3.port={ports['s3']}", f"-s3.config={config}", "-master.telemetry=false", "-webdav=false",
           "-admin.ui=false", f"-admin.port={free_port(also_free_offset=10000)}", "-s3.port.iceberg=0",
           "-s3.port.lance=0", f"-filer.localSocket={tmp / 'filer.sock'}", f"-s3.localSocket={tmp / 's3.sock'}"]
    log = tmp / "weed.log"
    proc = _spawn(cmd, log=log, cwd=tmp)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3']}", access_key=access, secret_key=secret,
                      region="us-east-1", proc=proc, log=log, checks_auth=True)
    with _stop_on_failure(server):
        _wait_s3(server, timeout_s=timeout_s)
    return server


def start_moto_s3(tmp: Path, *, timeout_s: float = 30) -> S3Server:
    """Start ``moto_server`` (server mode; any key is accepted, nothing persists)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp / "moto.log"
    proc = _spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log=log, cwd=tmp)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{port}", access_key="testing", secret_key="testing",
                      region="us-east-1", proc=proc, log=log, checks_auth=False)
    with _stop_on_failure(server):
        _wait_s3(server, timeout_s=timeout_s)
    return server


def _wait_s3(server: S3Server, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"S3 server exited with {server.proc.returncode}; log {server.log}:\n"
                               + server.log.read_text()[-3000:])
        try:
            server.client().list_buckets()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet" until the deadline
            last = exc
            time.sleep(0.3)
    raise TimeoutError(f"S3 server at {server.endpoint_url} not ready in {timeout_s:.0f} s ({last}); "
                       f"log {server.log}:\n" + server.log.read_text()[-3000:])


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory):
    """SeaweedFS S3 with real access-key auth, shared by the session."""
    server = start_seaweed_s3(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server_s3(tmp_path_factory, seaweed_s3):
    """An MLflow server whose artifacts are proxied to a bucket of the session's SeaweedFS S3.

    Yields ``(server, bucket)``; the server alone holds the S3 keys (clients upload through it).
    """
    bucket = seaweed_s3.make_bucket()
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow_s3"), artifacts_destination=f"s3://{bucket}/mlflow",
                                 extra_env=seaweed_s3.env())
    yield server, bucket
    server.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """moto S3 server (fast, no auth), shared by the session."""
    server = start_moto_s3(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
