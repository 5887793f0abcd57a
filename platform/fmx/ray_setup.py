"""Starting or joining Ray for a sweep, and refusing a trial a fixed-size local Ray can never place."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import sys
import time
from typing import Mapping

from fmx import storage as st
from fmx.schema import Resources, uri_has_password

logger = logging.getLogger("fmx.runner")

TRIAL_CPU = 0.01  # the Tune function only waits on its TorchTrainer; 0 is rejected by Tune


SWEEP_NOT_STARTED = "no MLflow run or sweep pointer was recorded; run the sweep again"


def init_ray(address: str | None, *, num_cpus: int | None = None, not_started: str = SWEEP_NOT_STARTED,
             logging_level: str | None = None) -> bool:
    """Connect to ``address`` (or start a local Ray); forward only non-secret environment to the workers.

    Returns True when it started a local Ray (a fixed size: :func:`check_trial_fits` applies), else False.
    ``not_started`` ends the message of an interrupt while Ray starts: what the caller had not yet done, and what
    to run. Such an interrupt raises :class:`fmx.lifecycle.SigtermInterrupt` (SIGTERM) or KeyboardInterrupt.
    ``logging_level`` sets the driver's "ray" logger (None: Ray's default, ``RAY_LOGGER_LEVEL`` or info).
    """
    import ray

    _keep_keys_out_of_tune_runtime_env()  # on the caller's own Ray too: Tune's trials start on any Ray
    if ray.is_initialized():
        if address or num_cpus:
            logger.warning("Ray is already initialised in this process (ray.init): the sweep runs on that Ray, "
                           "and address=%r, num_cpus=%r are not used; call ray.shutdown() first to use them",
                           address, num_cpus)
        return False
    # a URI with user:password@ (an unused MLFLOW_TRACKING_URI) would show in the dashboard's runtime_env
    env = {k: os.environ[k] for k in st.FORWARDED_ENV if os.environ.get(k) and not uri_has_password(os.environ[k])}
    runtime_env = {"env_vars": env} if env else None
    quiet = {"logging_level": logging_level} if logging_level else {}
    # inside a Ray job RAY_ADDRESS names the cluster; address="local" (Ray's own word for "start one here") is the
    # local start below: through the connect path it ignored num_cpus and shared the driver's process group
    if address != "local" and (address or os.environ.get("RAY_ADDRESS")):
        _ray_init("connecting to Ray", not_started, address=address, runtime_env=runtime_env, log_to_driver=False,
                  **quiet)
        return False
    # "local": a new Ray even where `ray start` left its address in /tmp/ray (plain ray.init() joined that
    # cluster, and with num_cpus refused: "When connecting to an existing cluster, num_cpus ... must not be provided")
    with _ray_processes_in_their_own_session():
        _ray_init("starting a local Ray", not_started, address="local", num_cpus=num_cpus, runtime_env=runtime_env,
                  include_dashboard=False, log_to_driver=False, **quiet)
    return True


@contextlib.contextmanager
def _ray_processes_in_their_own_session():
    """Start the local Ray's processes (GCS, raylet and, through the raylet, the workers) in a session of their own.

    They shared the driver's process group, so a SIGTERM to the whole group (``timeout 600 fmx sweep run``, a shell
    job, a pod killed by group) stopped the GCS under the driver: the driver hung a minute on "Failed to connect to
    GCS", left the trial runs RUNNING and printed no resume command. Now only the driver gets such a signal and
    stops the sweep as for ``kill PID``; the Ray processes still die with the driver (Ray's kernel fate sharing,
    PR_SET_PDEATHSIG, is kept: only the session changes).
    """
    from ray._private import services, utils

    plain = services.ConsolePopen
    # Without kernel fate sharing Ray's reaper kills the driver's process group when the driver dies: its
    # processes must stay in that group. Windows has no sessions; another Ray layout may lack ConsolePopen.
    if sys.platform == "win32" or not isinstance(plain, type) or not utils.detect_fate_sharing_support():
        yield
        return

    class _OwnSessionPopen(plain):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = _OwnSessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = plain


def _ray_init(doing: str, not_started: str, **kwargs) -> None:
    """``ray.init(**kwargs)`` that leaves no Ray process behind when it is interrupted.

    ``ray.init`` replaces the SIGTERM handler with ``sys.exit(15)`` before it starts the GCS, the raylet and their
    agents; a SIGTERM (or Ctrl-C) while they start left the agents running after the driver exited, and the
    driver exited 15 with no word. The processes it had started are stopped by PID (never ``ray stop``: other
    Rays on the host are not ours) and a KeyboardInterrupt says what happened.
    """
    import psutil
    import ray

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    started_at = time.time()
    try:
        ray.init(**kwargs)
    except BaseException as exc:
        started = _freeze_new_ray_processes(me, before)
        _kill(started)
        frozen = {p.pid for p in started}
        started += [p for p in _kill_stray_session_processes(since=started_at) if p.pid not in frozen]
        try:
            ray.shutdown()  # Ray's own record of the half-started node (its processes are gone already)
        except Exception:  # noqa: BLE001 - nothing of it is left running
            pass
        from fmx.lifecycle import SigtermInterrupt

        # ray.init's handler: sys.exit(15); fmx's own (before ray.init replaced it): SigtermInterrupt, or a
        # fingerprint job's JobTerminated (it carries the signal number)
        by_sigterm = (isinstance(exc, SigtermInterrupt) or getattr(exc, "signum", None) == signal.SIGTERM
                      or (isinstance(exc, SystemExit) and exc.code == signal.SIGTERM))
        if by_sigterm:
            why = "SIGTERM arrived"
        elif isinstance(exc, KeyboardInterrupt):
            why = "interrupted (Ctrl-C)"
        else:
            raise
        stopped = (f"the {len(started)} Ray process{'es' if len(started) > 1 else ''} it had started "
                   f"{'are' if len(started) > 1 else 'is'} stopped; ") if started else ""
        message = f"{why} while fmx was {doing}: {stopped}{not_started}"
        logger.warning(message)
        raise (SigtermInterrupt if by_sigterm else KeyboardInterrupt)(message) from None


def _freeze_new_ray_processes(me, before: set[int]) -> list:
    """Suspend (SIGSTOP) every process this process started since ``before`` was taken, until no new one
    appears: a raylet that kept running would start its agents after the snapshot, and once it is gone they are
    no longer our descendants (left running for good)."""
    import psutil

    frozen, tried = [], set(before)
    while True:
        new = [p for p in _descendants(me) if p.pid not in tried]
        if not new:
            return frozen
        for p in new:
            tried.add(p.pid)
            # every process that appeared during ray.init is Ray's: a child forked but not yet exec'd still shows
            # the driver's command line, and went on to exec a dashboard agent that was left running (CI flake)
            try:
                p.suspend()
                frozen.append(p)
            except psutil.Error:
                pass


def _descendants(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _kill(procs: list, *, wait_s: float = 5.0) -> None:
    """SIGKILL these (suspended) processes by PID and wait for them.

    Not SIGTERM then resume: a raylet resumed to act on its SIGTERM ran its other threads first, and one of them
    started an agent after the freeze (CI flake); a stopped process that gets SIGKILL dies without running again.
    """
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=wait_s)


def _kill_stray_session_processes(*, since: float, quiet_s: float = 1.0, give_up_s: float = 10.0) -> list:
    """SIGKILL any process of this driver's Ray session that is no longer our descendant; return those killed.

    Backstop for :func:`_freeze_new_ray_processes`: an agent whose raylet died is re-parented (to init or a
    subreaper) and escapes a walk of our children. Ray names the session ``session_<date>_<driver pid>`` and every
    one of its processes carries that folder in its command line; only processes created since ``since`` count, so
    a Ray of an earlier process with the same PID is not touched. Repeats until none appears for ``quiet_s``.
    """
    import psutil

    session = re.compile(rf"session_[^/\s]*_{os.getpid()}(?=[/\s'\"]|$)")
    killed: dict[int, object] = {}
    deadline, quiet_until = time.monotonic() + give_up_s, time.monotonic() + quiet_s
    while time.monotonic() < min(deadline, quiet_until):
        found = []
        for p in psutil.process_iter(["cmdline", "create_time"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if p.pid != os.getpid() and p.info["create_time"] >= since - 1.0 and session.search(cmd):
                    found.append(p)
            except psutil.Error:
                pass
        if found:
            _kill(found)
            killed.update((p.pid, p) for p in found)
            quiet_until = time.monotonic() + quiet_s
        else:
            time.sleep(0.1)
    return list(killed.values())


_AWS_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"}


def _keep_keys_out_of_tune_runtime_env() -> None:
    """Stop Ray Tune copying the driver's AWS keys into every trial's ``runtime_env``: Ray prints that in plain
    text (``runtime_env_agent.log``, the dashboard). Workers read the keys from their own environment or the
    mounted secret (:func:`fmx.storage.s3_filesystem`), as the cluster's pods get them."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # another Ray layout: nothing to patch
        return
    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - _AWS_KEYS


def check_session_fits(resources: Resources, *, started_here: bool) -> None:
    """Refuse (or, where nodes may still join, warn about) a trial the Ray this process is attached to cannot place.

    A Ray started by ``ray.init`` in this process (by fmx when ``started_here``, else by the caller before
    ``run_sweep``) has a fixed size: a trial larger than it waits for ever, so it is refused. A cluster joined by
    address may grow (an autoscaler adds nodes): refused only beyond the maximum its autoscaler publishes, else a
    warning. Nothing is checked when Ray is not initialised.

    Raises
    ------
    ValueError
        From :func:`check_trial_fits`, naming the ``resources`` keys, the need, what the Ray has, and the fix.
    """
    import ray

    if not ray.is_initialized():
        return
    node = getattr(ray._private.worker, "_global_node", None)  # noqa: SLF001 - no public "who started it"
    if started_here or (node is not None and node.is_head()):  # a local Ray of this process: nothing joins it
        check_trial_fits(resources, ray.cluster_resources(), ray_kind="fmx" if started_here else "caller")
        return
    try:
        check_trial_fits(resources, ray.cluster_resources(), ray_kind="cluster")
        largest = _largest_node_cpus()
        if largest is not None and resources.cpus_per_worker > largest + 1e-9:
            raise ValueError(f"one worker asks for resources.cpus_per_worker={resources.cpus_per_worker:g} CPUs, "
                             f"but the largest node of the Ray cluster has CPU {largest:g}: lower "
                             "resources.cpus_per_worker (and raise resources.workers), or add larger nodes")
    except ValueError as exc:
        maximum = _autoscaler_maximum()
        if maximum is not None:  # the cluster can never grow past this: the trial would wait for ever
            check_trial_fits(resources, maximum, ray_kind="autoscaled")
        logger.warning("%s (the trials wait until the cluster has room: an autoscaler may add nodes)", exc)


def _largest_node_cpus() -> float | None:
    """The CPUs of the cluster's largest live node (one worker runs on one node); None when unknown."""
    import ray

    try:
        return max((n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=None)
    except Exception:  # noqa: BLE001 - a Ray client without node listing: the total check stands alone
        return None


def _autoscaler_maximum() -> dict[str, float] | None:
    """The most of each resource the cluster's autoscaler may provide (None when it publishes no limit)."""
    try:
        from ray._private import state

        maximum = state.state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - another Ray layout, a Ray client: no known limit
        return None
    return {k: float(v) for k, v in maximum.items()} if maximum else None


_RAY_NAMES = {"fmx": "the local Ray", "caller": "the Ray your ray.init started",
              "cluster": "the Ray cluster now", "autoscaled": "the Ray cluster at its autoscaler's maximum"}


def check_trial_fits(resources: Resources, available: Mapping[str, float], *, ray_kind: str = "fmx") -> None:
    """Refuse a trial that a fixed-size (local) Ray can never place.

    One trial holds ``workers x cpus_per_worker`` CPUs (and ``workers x gpus_per_worker`` GPUs) plus
    :data:`TRIAL_CPU` for its Tune function. Ray Train waits for workers that do not fit, timing out and retrying
    without limit, so such a sweep would hang instead of failing. ``ray_kind`` says whose Ray ``available``
    describes, for the message: ``"fmx"`` (started by fmx), ``"caller"`` (the caller's own ``ray.init``),
    ``"cluster"`` or ``"autoscaled"``.

    Raises
    ------
    ValueError
        Naming what one trial asks for, what the Ray has, and the fix.
    """
    need = {"CPU": TRIAL_CPU + resources.workers * resources.cpus_per_worker}
    if resources.gpus_per_worker > 0:
        need["GPU"] = resources.workers * resources.gpus_per_worker
    short = {k: v for k, v in need.items() if v > available.get(k, 0.0) + 1e-9}
    if not short:
        return
    asks = (f"CPU {need['CPU']:g} (resources.workers={resources.workers:g} x resources.cpus_per_worker="
            f"{resources.cpus_per_worker:g} + {TRIAL_CPU:g} for the trial itself)")
    if "GPU" in need:
        asks += (f" and GPU {need['GPU']:g} (resources.workers x resources.gpus_per_worker="
                 f"{resources.gpus_per_worker:g})")
    has = ", ".join(f"{k} {available.get(k, 0.0):g}" for k in need)
    fixes = []
    if "CPU" in short:
        more = {"fmx": f"give the local Ray more CPUs with --num-cpus (run_sweep's num_cpus; this machine has "
                       f"{os.cpu_count()}; logical CPUs may exceed it)",
                "caller": f"call ray.init(num_cpus={math.ceil(need['CPU'])}) or more, or let fmx start Ray (no "
                          "ray.init before run_sweep)"}.get(ray_kind, "add nodes to the cluster")
        fixes.append(f"lower resources.workers or resources.cpus_per_worker, or {more}")
    if "GPU" in short:
        fixes.append("set resources.gpus_per_worker: 0 to train on CPUs, or run where GPUs are")
    tail = ", or submit the sweep to a cluster (--address)" if ray_kind in ("fmx", "caller") else ""
    raise ValueError(f"one trial asks for {asks}, but {_RAY_NAMES.get(ray_kind, ray_kind)} has {has}: it would "
                     "wait for them for ever; " + "; ".join(fixes) + tail)
