"""Starting or joining Ray for a sweep, and refusing a trial a fixed-size local Ray can never place."""
from __future__ import annotations

import os
from typing import Mapping

from fmx import storage as st
from fmx.schema import Resources, uri_has_password

TRIAL_CPU = 0.01  # the Tune function only waits on its TorchTrainer; 0 is rejected by Tune


def init_ray(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (or start a local Ray); forward only non-secret environment to the workers.

    Returns True when it started a local Ray (a fixed size: :func:`check_trial_fits` applies), else False.
    """
    import ray

    if ray.is_initialized():
        return False
    _keep_keys_out_of_tune_runtime_env()
    # a URI with user:password@ (an unused MLFLOW_TRACKING_URI) would show in the dashboard's runtime_env
    env = {k: os.environ[k] for k in st.FORWARDED_ENV if os.environ.get(k) and not uri_has_password(os.environ[k])}
    runtime_env = {"env_vars": env} if env else None
    if address or os.environ.get("RAY_ADDRESS"):  # inside a Ray job RAY_ADDRESS names the cluster
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return False
    ray.init(num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
    return True


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


def check_trial_fits(resources: Resources, available: Mapping[str, float]) -> None:
    """Refuse a trial that a fixed-size (local) Ray can never place.

    One trial holds ``workers x cpus_per_worker`` CPUs (and ``workers x gpus_per_worker`` GPUs) plus
    :data:`TRIAL_CPU` for its Tune function. Ray Train waits for workers that do not fit, timing out and retrying
    without limit, so such a sweep would hang instead of failing.

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
        fixes.append(f"lower resources.workers or resources.cpus_per_worker, or give the local Ray more CPUs with "
                     f"--num-cpus (this machine has {os.cpu_count()}; logical CPUs may exceed it)")
    if "GPU" in short:
        fixes.append("set resources.gpus_per_worker: 0 to train on CPUs, or run where GPUs are")
    raise ValueError(f"one trial asks for {asks}, but the local Ray has {has}: it would wait for them for ever; "
                     + "; ".join(fixes) + ", or submit the sweep to a cluster (--address)")
