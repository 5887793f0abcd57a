"""`fmx job ...`: follow and control jobs on a remote Ray cluster (status, logs, stop, list).

The cluster is ``--address http://HOST:8265`` (a port-forwarded or exposed Ray dashboard; an IPv6 host in
brackets, ``http://[::1]:8265``), or ``--cluster NAME`` recorded by ``make deploy``, or ``$FMX_RAY_ADDRESS``. The
token for a cluster with token auth is found where Ray's own CLI looks: ``$RAY_AUTH_TOKEN``, else the file named by
``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (:func:`fmx.cluster.find_auth_token`). States are the Ray
Jobs API's own.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Optional

import typer

from fmx import cluster

app = typer.Typer(help="Cluster jobs: status, logs, stop, list (Ray Jobs API).", no_args_is_help=True)

AddressOpt = typer.Option(None, "--address", "-a", help="Ray dashboard URL, e.g. http://127.0.0.1:8265")
ClusterOpt = typer.Option(None, "--cluster", "-c", help="cluster name recorded by `make deploy`")


def _address(address: Optional[str], cluster_name: Optional[str]) -> str:
    try:
        return cluster.resolve_address(address=address, cluster=cluster_name)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@contextmanager
def _clean_errors():
    """Known failures (bad id, no dashboard, wrong token) end the command with their message, not a traceback."""
    try:
        yield
    except (ValueError, ConnectionError, PermissionError, TimeoutError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _when(t: Optional[float]) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@app.command()
def status(
    job_id: str = typer.Argument(..., help="submission id printed by `fmx sweep submit`"),
    address: Optional[str] = AddressOpt,
    cluster_name: Optional[str] = ClusterOpt,
    as_json: bool = typer.Option(False, "--json", help="print the state as JSON"),
) -> None:
    """Print a job's state; exits 1 when it FAILED or was STOPPED."""
    with _clean_errors():
        info = cluster.job_status(job_id, address=_address(address, cluster_name))
    if as_json:
        typer.echo(json.dumps(info.as_dict(), indent=2))
    else:
        typer.echo(f"{info.job_id}  {info.status}  started {_when(info.start_time)}  ended {_when(info.end_time)}")
        if info.message:
            typer.echo(info.message)
    if info.status in {"FAILED", "STOPPED"}:
        raise typer.Exit(1)


@app.command()
def logs(
    job_id: str = typer.Argument(...),
    address: Optional[str] = AddressOpt,
    cluster_name: Optional[str] = ClusterOpt,
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing until the job ends"),
) -> None:
    """Print a job's driver log."""
    addr = _address(address, cluster_name)
    with _clean_errors():
        if follow:
            for chunk in cluster.follow_job_logs(job_id, address=addr):
                typer.echo(chunk, nl=False)
        else:
            typer.echo(cluster.job_logs(job_id, address=addr), nl=False)


@app.command()
def stop(
    job_id: str = typer.Argument(...),
    address: Optional[str] = AddressOpt,
    cluster_name: Optional[str] = ClusterOpt,
    wait_s: float = typer.Option(30.0, "--wait", help="seconds to wait for the job to stop"),
) -> None:
    """Stop a running job and print the state it ended in."""
    with _clean_errors():
        info = cluster.stop_job(job_id, address=_address(address, cluster_name), wait_s=wait_s)
    typer.echo(f"{info.job_id}  {info.status}")


@app.command("list")
def list_(
    address: Optional[str] = AddressOpt,
    cluster_name: Optional[str] = ClusterOpt,
    sweeps: bool = typer.Option(False, "--sweeps", help="only jobs started by `fmx sweep submit`"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List submitted jobs, oldest first."""
    with _clean_errors():
        jobs = cluster.list_jobs(address=_address(address, cluster_name), sweeps_only=sweeps)
    if as_json:
        typer.echo(json.dumps([j.as_dict() for j in jobs], indent=2))
        return
    for j in jobs:
        sweep = j.metadata.get(cluster.SWEEP_METADATA_KEY, "")
        typer.echo(f"{j.job_id}  {j.status:<9}  {_when(j.start_time)}  {sweep or j.entrypoint}")
