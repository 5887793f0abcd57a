"""Where a sweep's checkpoints and runs go: the local defaults, the environment variables that override
them, and the precedence between the two (:func:`choose_target`; :func:`fmx.runner.resolve_targets` applies it).

Also the check that keeps passwords out of URIs (they would reach params, tags, logs and the sweep pointer).
"""
from __future__ import annotations

import os
import re

# scheme://user:password@host: a password inside a URI would reach params, tags, logs and the sweep pointer.
_URI_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]*@")
# The local defaults. A sweep whose storage.path / tracking.uri equals them lets FMX_STORAGE_PATH /
# MLFLOW_TRACKING_URI choose instead (choose_target; fmx.runner.resolve_targets): cluster pods set both.
DEFAULT_STORAGE_PATH = "runs/ray"
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
STORAGE_ENV = "FMX_STORAGE_PATH"     # the Helm chart sets it in every Ray pod: s3://BUCKET/ray
TRACKING_ENV = "MLFLOW_TRACKING_URI"  # the Helm chart sets it to the in-cluster MLflow service
SOURCE_FILE, SOURCE_DEFAULT = "sweep file", "default"


def choose_target(value: str, *, default: str, env_var: str, env=None) -> tuple[str, str]:
    """The precedence of a storage path or tracking URI: ``(value, source)``.

    A value other than ``default`` is the sweep file's own (source ``"sweep file"``); a value equal to it (omitted,
    or written as the default, as the shipped sweeps do; a resumed sweep also comes back from its pointer with
    every field filled in) yields to a non-empty ``env[env_var]`` (source: the variable's name); otherwise the
    default (source ``"default"``). ``env`` defaults to ``os.environ``.
    """
    if value != default:
        return value, SOURCE_FILE
    from_env = ((os.environ if env is None else env).get(env_var) or "").strip()
    return (from_env, env_var) if from_env else (default, SOURCE_DEFAULT)


def uri_has_password(uri: str) -> bool:
    """Whether ``uri`` carries ``user:password@`` (refused: credentials come from the environment)."""
    return bool(_URI_PASSWORD.match(uri))


def mask_uri_password(uri: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host``, for error messages."""
    return re.sub(r"(?<=://)[^/@\s]*(?=@)", "***", uri, count=1) if uri_has_password(uri) else uri
