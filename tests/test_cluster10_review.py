"""Review round 10: job submission as a library user meets it (the data-path check in submit_sweep, every place a
sweep sets a data path), the Ray auth token where Ray's own CLI finds it, and IPv6 dashboard addresses."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmx import cluster
from fmx.cli import app
from fmx.schema import load_sweep
import fixtures_servers as servers
import test_cluster_submit
from test_cluster9_review import SMOKE, _refused_address, _sweep_with_data_root

ray_head = test_cluster_submit.ray_head  # the token-auth Ray head (module-scoped): one of its own for this module

# ---------------------------------------------------------------- data paths: library and search space


def _one_line(output: str) -> str:
    return " ".join(output.split())


def test_library_submit_refuses_a_relative_data_path_before_connecting(tmp_path, monkeypatch):
    # The check lived only in `fmx sweep submit`: cluster.submit_sweep uploaded the sweep, and every trial failed on
    # the cluster reading ../shared/eeg from the job's unpacked copy, where nothing is.
    project = tmp_path / "project"
    (tmp_path / "shared" / "eeg").mkdir(parents=True)
    _sweep_with_data_root(project / "sweeps", "../shared/eeg")
    monkeypatch.chdir(project)
    with pytest.raises(ValueError, match=r"base\[\d+\]: data.root=../shared/eeg is relative.*outside the upload.*"
                                         r"s3://"):
        cluster.submit_sweep("sweeps/s.yaml", address=_refused_address(), working_dir=project)


def _sweep_with_data_parameter(folder: Path, spec: str) -> Path:
    """smoke.yaml (method random) reading files, with ``data.root`` a parameter (``spec``: its YAML mapping)."""
    text = SMOKE.read_text().replace("  - data=synthetic\n", "  - data=files\n")
    text = text.replace("\nparameters:\n", f"\nparameters:\n  data.root: {spec}\n", 1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s.yaml").write_text(text)
    return folder / "s.yaml"


@pytest.mark.parametrize("spec, where", [
    ("{distribution: categorical, values: [eeg, ../shared/eeg]}", "parameters.data.root.values[1]"),
    ("{distribution: grid, values: [../shared/eeg]}", "parameters.data.root.values[0]"),
    ("{value: ../shared/eeg}", "parameters.data.root.value"),
])
def test_a_data_path_in_the_search_space_is_checked_like_the_base(tmp_path, monkeypatch, spec, where):
    # A sweep comparing recordings samples data.root; search.py makes those values absolute against the job's
    # folder as it does the base's, so one outside the upload failed every trial that drew it.
    project = tmp_path / "project"
    (tmp_path / "shared" / "eeg").mkdir(parents=True)
    (project / "eeg").mkdir(parents=True)
    _sweep_with_data_parameter(project / "sweeps", spec)
    monkeypatch.chdir(project)
    assert load_sweep("sweeps/s.yaml").parameters["data.root"]  # a valid sweep, key paths checked
    with pytest.raises(ValueError, match=re.escape(where) + ": data.root=../shared/eeg is relative.*outside the upload"):
        cluster.submit_sweep("sweeps/s.yaml", address=_refused_address(), working_dir=project)
    result = CliRunner().invoke(app, ["sweep", "submit", "sweeps/s.yaml", "--address", _refused_address()])
    text = _one_line(result.output)
    assert result.exit_code == 2 and f"{where}: data.root=../shared/eeg is relative" in text, text
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert "no Ray dashboard answered" not in text  # refused before any upload


def test_a_data_parameter_inside_the_upload_passes_the_check(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "eeg").mkdir(parents=True)
    _sweep_with_data_parameter(project / "sweeps", "{distribution: categorical, values: [eeg, /data/eeg, s3://b/e]}")
    monkeypatch.chdir(project)
    with pytest.raises(ConnectionError, match="no Ray dashboard answered"):  # got past the check to the connection
        cluster.submit_sweep("sweeps/s.yaml", address=_refused_address(), working_dir=project)


# ---------------------------------------------------------------- IPv6 dashboard addresses


@pytest.mark.parametrize("address", ["http://[::1]:8265", "https://[fd00::2]:443/", "http://[2001:db8::8a2e:370:7334]"])
def test_bracketed_ipv6_addresses_are_accepted(address):
    assert cluster.resolve_address(address=address) == address.rstrip("/")


@pytest.mark.parametrize("address", ["http://::1:8265", "http://[::1:8265", "http://[zz::1]:8265",
                                     "http://[127.0.0.1]:8265", "http://[::1]x:8265", "http://[]:8265",
                                     "http://[::1]:port", "http://h:1:2"])
def test_malformed_addresses_are_still_refused(address):
    with pytest.raises(ValueError, match=r"is not a Ray dashboard URL; expected http\(s\)://HOST:PORT.*\[::1\]"):
        cluster.resolve_address(address=address)


# ---------------------------------------------------------------- the auth token, where Ray finds it


@pytest.fixture
def token_env(tmp_path, monkeypatch):
    """No token anywhere: the variables unset and HOME an empty folder (never the real ~/.ray/auth_token, which
    any local Ray in token mode writes). Ray's own loader is reset after, so its cache leaks into no other test."""
    from ray._raylet import AuthenticationTokenLoader

    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ENABLE_K8S_TOKEN_AUTH"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield home
    AuthenticationTokenLoader.instance().reset_cache()


def _ray_finds() -> str | None:
    """The token Ray's own CLI finds (`ray get-auth-token`: the C++ loader, auth mode ignored), read afresh."""
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    return loader.get_raw_token(ignore_auth_mode=True) or None


def test_token_lookup_agrees_with_rays_own_loader(token_env, tmp_path, monkeypatch):
    # fmx read RAY_AUTH_TOKEN only; Ray's clients also read RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token. Each case is
    # checked against Ray's loader itself, so a Ray upgrade that changes the order shows here.
    default = token_env / ".ray" / "auth_token"
    custom = tmp_path / "cluster.token"
    assert cluster.find_auth_token() == (None, None) and _ray_finds() is None
    default.parent.mkdir()
    default.write_text("  from-home\r\nsecond line\n")  # first line only, whitespace trimmed (CRLF too)
    assert cluster.find_auth_token() == ("from-home", str(default)) and _ray_finds() == "from-home"
    custom.write_text("from-path\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(custom))
    assert cluster.find_auth_token() == ("from-path", f"RAY_AUTH_TOKEN_PATH={custom}") and _ray_finds() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", " from-env\n")
    assert cluster.find_auth_token() == ("from-env", "RAY_AUTH_TOKEN") and _ray_finds() == "from-env"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "")  # empty: as if unset
    assert cluster.find_auth_token()[0] == "from-path" == _ray_finds()


def test_a_token_path_naming_no_file_is_an_error_as_in_ray(token_env, tmp_path, monkeypatch):
    # Ray refuses it rather than falling back to ~/.ray/auth_token (which may hold another cluster's token).
    from ray.exceptions import AuthenticationError

    (token_env / ".ray").mkdir()
    (token_env / ".ray" / "auth_token").write_text("from-home\n")
    for content in (None, "", " \n"):
        missing = tmp_path / "nope.token"
        if content is not None:
            missing.write_text(content)
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(missing))
        with pytest.raises(ValueError, match=r"RAY_AUTH_TOKEN_PATH=.*nope.token.*cannot be read or is empty.*unset"):
            cluster.find_auth_token()
        with pytest.raises(AuthenticationError, match="RAY_AUTH_TOKEN_PATH is set but file cannot be opened"):
            _ray_finds()


@pytest.mark.slow
def test_job_list_finds_the_token_in_a_token_file(ray_head, token_env, tmp_path, monkeypatch):
    # The head runs with RAY_AUTH_MODE=token. With the token only in a file (RAY_AUTH_TOKEN_PATH, as a Secret mounted
    # in CI; or ~/.ray/auth_token, as `ray start` writes it) fmx sent no token: PermissionError, "fmx job list" exit 2.
    address = ray_head["address"]
    token_file = tmp_path / "ray.token"
    token_file.write_text(ray_head["token"] + "\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert isinstance(cluster.list_jobs(address=address), list)
    out = CliRunner().invoke(app, ["job", "list", "--address", address])
    assert out.exit_code == 0, out.output

    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    (token_env / ".ray").mkdir()
    (token_env / ".ray" / "auth_token").write_text(ray_head["token"])
    out = CliRunner().invoke(app, ["job", "list", "--address", address])
    assert out.exit_code == 0, out.output

    # RAY_AUTH_TOKEN comes first, as in Ray; the refusal says which token was sent (never the token itself).
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(PermissionError, match="with the token from RAY_AUTH_TOKEN;"):
        cluster.list_jobs(address=address)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "absent.token"))
    out = CliRunner().invoke(app, ["job", "list", "--address", address])
    assert out.exit_code == 2 and "RAY_AUTH_TOKEN_PATH=" in out.output and "Traceback" not in out.output, out.output


# ---------------------------------------------------------------- a real dashboard on IPv6, its token in a file


@pytest.fixture(scope="module")
def ipv6_head(tmp_path_factory):
    """A token-auth Ray head whose dashboard listens on ``::`` (IPv6 only: asyncio sets IPV6_V6ONLY), and whose
    token is only in a file (RAY_AUTH_TOKEN_PATH, as a mounted Secret). The shared heads cannot serve here: theirs
    bind 127.0.0.1 (tests/fixtures_servers.py, test_cluster_submit.py). Stopped by its own process group."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    temp = tmp_path_factory.mktemp("rayv6")
    (temp / "home").mkdir()
    token_file = temp / "ray.token"
    token_file.write_text(secrets.token_hex(16) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    # HOME: a token-mode Ray must not read (or write) the user's ~/.ray/auth_token
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), HOME=str(temp / "home"),
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=str(servers.BIN) + os.pathsep + os.environ["PATH"])
    port = [servers.free_port() for _ in range(8)]
    ray_temp = servers.short_temp_dir()
    proc = servers._spawn(
        [str(servers.BIN / "ray"), "start", "--head", "--block", f"--port={port[0]}", "--dashboard-host=::",
         f"--dashboard-port={port[1]}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=true",
         f"--ray-client-server-port={port[2]}", f"--dashboard-agent-listen-port={port[3]}",
         f"--dashboard-agent-grpc-port={port[4]}", f"--runtime-env-agent-port={port[5]}",
         f"--metrics-export-port={port[6]}", f"--min-worker-port={port[7]}", "--max-worker-port=0",
         "--disable-usage-stats", f"--temp-dir={ray_temp}"],
        log=temp / "ray-start.log", env=env)
    address = f"http://[::1]:{port[1]}"
    try:
        # 401: up, and asking for the token (token mode guards /api/version too)
        servers._wait_http(f"{address}/api/version", timeout_s=90, proc=proc, log=temp / "ray-start.log",
                           ok_codes=(200, 401))
        yield {"address": address, "token_file": token_file}
    finally:
        servers.stop_group(proc, grace_s=10)
        shutil.rmtree(ray_temp, ignore_errors=True)


@pytest.mark.slow
def test_a_dashboard_on_ipv6_with_the_token_in_a_file(ipv6_head, token_env, monkeypatch):
    # http://[::1]:PORT was refused before any request ("not a Ray dashboard URL"): the host pattern forbade ':'.
    address = ipv6_head["address"]
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ipv6_head["token_file"]))
    job = cluster.submit_sweep("v6.yaml", address=address, entrypoint="python -c 'print(6)'")
    info = cluster.wait_for_job(job, address=address, timeout_s=120, poll_s=0.5)
    assert info.status == "SUCCEEDED", cluster.job_logs(job, address=address)
    out = CliRunner().invoke(app, ["job", "status", job, "--address", address])
    assert out.exit_code == 0 and "SUCCEEDED" in out.output, out.output
