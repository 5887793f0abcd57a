"""Where a sweep's checkpoints and runs go: the local defaults, the environment variables that override
them, and the precedence between the two (:func:`choose_target`; :func:`fmx.runner.resolve_targets` applies it).

Also the check that keeps passwords out of URIs (they would reach params, tags, logs and the sweep pointer).
"""
from __future__ import annotations

import os
import re
import urllib.parse

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


# The schemes MLflow opens as a tracking store (``+driver`` variants such as postgresql+psycopg2 included).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks", "databricks-uc",
                    "uc")
TRACKING_URI_FORMS = ("http(s)://HOST[:PORT] (an MLflow server), sqlite:///relative/path.db or "
                      "sqlite:////absolute/path.db, a folder path (a sqlite store mlflow.db is made there), "
                      "postgresql://, mysql://, mssql:// or databricks")


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot open ``uri`` as a tracking store (``None`` when its form is usable).

    Checks the form only (scheme, host, sqlite path); whether a server answers is
    :func:`fmx.commands.tracking.check_reachable`'s business. Plain paths are always usable.
    """
    if uri != uri.strip():
        return "has spaces around it"
    if not uri:
        return "is empty"
    if "://" not in uri:
        return None  # a folder or .db path, databricks, file:/path (fmx.tracking.resolve_tracking_uri decides)
    scheme, _, rest = uri.partition("://")
    base = scheme.lower().split("+", 1)[0]
    if base not in TRACKING_SCHEMES:
        return f"has the scheme {scheme}://, which is no MLflow tracking store"
    if base in ("http", "https"):
        try:
            parts = urllib.parse.urlsplit(uri)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
        except ValueError as exc:
            return f"is not a valid URL ({exc})"
        if not parts.hostname or any(c.isspace() for c in parts.netloc):
            return "names no host: http(s)://HOST[:PORT]"
    if base == "sqlite":
        if not rest.startswith("/"):
            return "is not a sqlite file URI: sqlite:/// (three slashes) comes before the path"
        path = rest[1:].partition("?")[0]  # ?timeout=30 and friends are SQLAlchemy options
        if not path or path.endswith("/"):
            return "names no database file after sqlite:///"
    return None
