"""fmx.cluster and `fmx job`: address resolution and input checks, then the whole submission path
against a real local Ray head with token auth (submit, poll to SUCCEEDED, logs, stop to STOPPED)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmx import cluster
from fmx.cli import app
from fixtures_servers import short_temp_dir, stop_group

# ---------------------------------------------------------------- fast: no server


def test_resolve_address_prefers_explicit_then_record_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FMX_HOME", str(tmp_path))
    monkeypatch.setenv("FMX_RAY_ADDRESS", "http://10.0.0.9:8265")
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "cw.json").write_text(json.dumps({"ray_address": "http://127.0.0.1:18265/"}))
    assert cluster.resolve_address(address="http://h:1") == "http://h:1"
    assert cluster.resolve_address(cluster="cw") == "http://127.0.0.1:18265"
    assert cluster.resolve_address() == "http://10.0.0.9:8265"


def test_resolve_address_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FMX_HOME", str(tmp_path))
    monkeypatch.delenv("FMX_RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="make deploy"):
        cluster.resolve_address(cluster="nope")
    with pytest.raises(ValueError, match="FMX_RAY_ADDRESS"):
        cluster.resolve_address()
    with pytest.raises(ValueError, match=r"address='127.0.0.1:8265'.*http\(s\)://HOST:PORT"):
        cluster.resolve_address(address="127.0.0.1:8265")


def test_sweep_entrypoint_quotes_the_path():
    assert cluster.sweep_entrypoint("sweeps/smoke.yaml") == "fmx sweep run sweeps/smoke.yaml"
    assert cluster.sweep_entrypoint("my sweeps/a;b.yaml") == "fmx sweep run 'my sweeps/a;b.yaml'"


def test_submit_checks_the_sweep_file_before_connecting(tmp_path):
    # No server at this address: the ValueError must come from the local check, not a connection error.
    with pytest.raises(ValueError, match="not found under working_dir"):
        cluster.submit_sweep("missing.yaml", address="http://127.0.0.1:9", working_dir=tmp_path)
    (tmp_path / "s.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.yaml sweep"):
        cluster.submit_sweep("s.txt", address="http://127.0.0.1:9", working_dir=tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        cluster.submit_sweep("s.yaml", address="http://127.0.0.1:9", working_dir=tmp_path / "nodir")


def test_connect_reports_a_missing_dashboard():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"no Ray dashboard answered at http://127.0.0.1:{port}"):
        cluster.connect(f"http://127.0.0.1:{port}")


def test_apply_rayjob_needs_a_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    manifest = cluster.rayjob_manifest("sweeps/smoke.yaml", name="smoke", ray_cluster="neurofmx")
    with pytest.raises(ValueError, match="no kubeconfig file"):
        cluster.apply_rayjob(manifest, kubeconfig=str(tmp_path / "absent"))


def test_cli_without_address_explains_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FMX_HOME", str(tmp_path))
    monkeypatch.delenv("FMX_RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(app, ["job", "list"])
    assert result.exit_code != 0
    assert "FMX_RAY_ADDRESS" in result.output


# ---------------------------------------------------------------- slow: a real Ray head


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A token-auth Ray head on free ports; stopped by killing its own process group (never `ray stop`)."""
    token = secrets.token_hex(16)
    temp = tmp_path_factory.mktemp("rayh6")
    ray_temp = short_temp_dir()
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=bindir + os.pathsep + os.environ["PATH"])
    env.pop("RAY_ADDRESS", None)
    # Every port on a free one: Ray's fixed defaults (dashboard agent 52365, client server 10001)
    # clash with any other Ray head on the machine, and a head without its agent accepts no jobs.
    gcs, dash, agent, client_port = _free_port(), _free_port(), _free_port(), _free_port()
    log = open(temp / "ray-start.log", "w")
    proc = subprocess.Popen(
        [os.path.join(bindir, "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=true",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client_port}",
         "--disable-usage-stats", f"--temp-dir={ray_temp}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                cluster.connect(address, token=token)
                break
            except (ConnectionError, PermissionError, RuntimeError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray head did not start; see {temp / 'ray-start.log'}") from None
                time.sleep(0.5)
        yield {"address": address, "token": token}
    finally:
        stop_group(proc, grace_s=10)
        log.close()
        shutil.rmtree(ray_temp, ignore_errors=True)


@pytest.fixture
def ray_env(ray_head, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head["token"])
    return ray_head


@pytest.mark.slow
def test_submit_poll_logs_and_list(ray_env, tmp_path):
    address = ray_env["address"]
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "tiny.yaml").write_text("name: tiny\ntrials: 1\n")
    seen: list[str] = []
    job = cluster.submit_sweep(
        "sweeps/tiny.yaml", address=address, working_dir=tmp_path,
        # The uploaded working_dir is the job's cwd: reading the sweep proves it travelled.
        entrypoint="python -c \"import sys; print(open('sweeps/tiny.yaml').read().strip()); print(sys.executable)\"",
        runtime_env={"env_vars": {"FMX_TEST": "1"}},
    )
    info = cluster.wait_for_job(job, address=address, timeout_s=120, poll_s=0.5, on_status=lambda i: seen.append(i.status))
    assert info.status == "SUCCEEDED", cluster.job_logs(job, address=address)
    assert seen[-1] == "SUCCEEDED" and len(seen) == len(set(seen))
    assert info.start_time and info.end_time and info.end_time >= info.start_time
    logs = cluster.job_logs(job, address=address)
    assert "name: tiny" in logs and "trials: 1" in logs
    assert info.metadata[cluster.SWEEP_METADATA_KEY] == "sweeps/tiny.yaml"

    ids = [j.job_id for j in cluster.list_jobs(address=address, sweeps_only=True)]
    assert job in ids

    runner = CliRunner()
    out = runner.invoke(app, ["job", "status", job, "--address", address, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["status"] == "SUCCEEDED"
    out = runner.invoke(app, ["job", "logs", job, "--address", address])
    assert "name: tiny" in out.output
    out = runner.invoke(app, ["job", "list", "--address", address, "--sweeps"])
    assert job in out.output and "sweeps/tiny.yaml" in out.output


@pytest.mark.slow
def test_failed_job_is_reported_failed(ray_env):
    address = ray_env["address"]
    job = cluster.submit_sweep("x.yaml", address=address, entrypoint="python -c 'raise SystemExit(3)'")
    info = cluster.wait_for_job(job, address=address, timeout_s=120, poll_s=0.5)
    assert info.status == "FAILED"
    out = CliRunner().invoke(app, ["job", "status", job, "--address", address])
    assert out.exit_code == 1 and "FAILED" in out.output


@pytest.mark.slow
def test_stop_a_long_job(ray_env):
    address = ray_env["address"]
    job = cluster.submit_sweep(
        "long.yaml", address=address,
        entrypoint="python -c \"import time; print('started', flush=True); time.sleep(600)\"",
    )
    deadline = time.monotonic() + 120
    while cluster.job_status(job, address=address).status != "RUNNING":
        assert time.monotonic() < deadline, "job never reached RUNNING"
        time.sleep(0.5)
    out = CliRunner().invoke(app, ["job", "stop", job, "--address", address, "--wait", "60"])
    assert out.exit_code == 0, out.output
    assert "STOPPED" in out.output
    info = cluster.job_status(job, address=address)
    assert info.status == "STOPPED" and info.terminal


@pytest.mark.slow
def test_follow_logs_streams_until_the_job_ends(ray_env):
    address = ray_env["address"]
    job = cluster.submit_sweep(
        "f.yaml", address=address,
        entrypoint="python -c \"import time\nfor i in range(3): print('line', i, flush=True); time.sleep(1)\"",
    )
    text = "".join(cluster.follow_job_logs(job, address=address))
    assert all(f"line {i}" in text for i in range(3))
    assert cluster.job_status(job, address=address).status == "SUCCEEDED"


@pytest.mark.slow
def test_unknown_job_id_is_a_clear_error(ray_env):
    address = ray_env["address"]
    with pytest.raises(ValueError, match="job_id='raysubmit_nope': no such job"):
        cluster.job_status("raysubmit_nope", address=address)
    out = CliRunner().invoke(app, ["job", "logs", "raysubmit_nope", "--address", address])
    assert out.exit_code == 2 and "no such job" in out.output


@pytest.mark.slow
def test_wrong_token_is_refused(ray_head):
    with pytest.raises(PermissionError, match="RAY_AUTH_TOKEN"):
        cluster.connect(ray_head["address"], token="not-the-token")



# ---------------------------------------------------------------- review round: bad addresses, large uploads


@pytest.fixture(params=[404, 200])
def not_ray_server(request):
    """An HTTP server that is not a Ray dashboard: 404 on /api/version (MLflow, a static server) or an HTML page."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = b"<html>a web app</html>" if request.param == 200 else b""
            self.send_response(request.param)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", request.param
    finally:
        server.shutdown()
        server.server_close()


def test_an_address_that_is_not_a_ray_dashboard_is_a_clear_error(not_ray_server, monkeypatch):
    # The MLflow port-forward (5000) next to the Ray one (8265) is an easy mix-up: it must end in a
    # ConnectionError naming the address, and `fmx job` must print it, not a RuntimeError/HTTPError traceback.
    address, code = not_ray_server
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    reason = "404" if code == 404 else "Expecting value"
    with pytest.raises(ConnectionError, match=rf"{address} answered, but not as a Ray dashboard.*{reason}"):
        cluster.connect(address)
    out = CliRunner().invoke(app, ["job", "list", "--address", address])
    assert out.exit_code == 2 and "not as a Ray dashboard" in out.output, out.output


@pytest.mark.slow
def test_a_working_dir_over_the_upload_limit_names_the_fix(ray_env, tmp_path):
    # The dashboard refuses uploads over 100 MiB with a bare "status code 413"; the user must learn
    # which argument is too big and how to shrink it, before anything runs on the cluster.
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.yaml").write_text("name: s\n")
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "big.bin").write_bytes(os.urandom(101 * 2**20))  # incompressible
    with pytest.raises(ValueError, match=r"working_dir=.*100 MiB.*excludes.*\.rayignore"):
        cluster.submit_sweep("sweeps/s.yaml", address=ray_env["address"], working_dir=tmp_path, entrypoint="true")
    # The same folder goes through once the large file is excluded.
    job = cluster.submit_sweep("sweeps/s.yaml", address=ray_env["address"], working_dir=tmp_path, entrypoint="true",
                               runtime_env={"excludes": ["recordings"]})
    assert cluster.wait_for_job(job, address=ray_env["address"], timeout_s=120, poll_s=0.5).status == "SUCCEEDED"


def test_working_dir_upload_leaves_out_deploy_credentials_even_without_gitignore(tmp_path, monkeypatch):
    # `make deploy` leaves the CoreWeave API token (infra/.state/*.kubeconfig) and the bucket's secret key
    # (terraform.tfstate, terraform.tfvars) in the repository; `fmx sweep submit` uploads the repository.
    # .gitignore covers them only while Ray honours it (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1 turns that off).
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")
    secrets_ = ["infra/.state/coreweave.kubeconfig", "terraform/coreweave/terraform.tfstate",
                "terraform/crusoe/terraform.tfstate.backup", "terraform/crusoe/terraform.tfvars"]
    for rel in [*secrets_, "sweeps/smoke.yaml", "infra/deploy.sh", "terraform/coreweave/main.tf"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    package = tmp_path.parent / f"{tmp_path.name}.zip"
    create_package(str(tmp_path), package, include_gitignore=False, excludes=list(cluster.DEFAULT_EXCLUDES))
    names = {n.rstrip("/") for n in zipfile.ZipFile(package).namelist()}
    assert {"sweeps/smoke.yaml", "infra/deploy.sh", "terraform/coreweave/main.tf"} <= names
    assert not names & set(secrets_), names & set(secrets_)
