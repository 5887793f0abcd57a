"""Where a sweep's checkpoints and runs go: the local defaults, the environment variables that override
them, and the precedence between the two (:func:`choose_target`; :func:`fmx.runner.resolve_targets` applies it).

Also the check that keeps passwords out of URIs (they would reach params, tags, logs and the sweep pointer).
"""
from __future__ import annotations

import os
import re
import urllib.parse

# scheme://user:password@host: a password inside a URI would reach params, tags, logs and the sweep pointer.
# The password runs to the LAST '@' before the host: it may hold '@' or ':' unencoded, and an AWS secret key
# (s3://KEY:SECRET@bucket) often holds '/'. Digits then '/', '?', '#' or the end after the colon are a port
# (http://host:5000/a@b has no password).
_USERINFO = r"[^/@\s:]*:(?!\d*(?:[/?#\s'\"]|$))\S*(?=@[^@/\s]*(?:[/?#\s'\"]|$))"
_URI_PASSWORD = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://" + _USERINFO)
# An object store's bucket has no port: there any ':' before the host's '@' starts a password, even one that
# begins with digits and '/' (s3://KEY:12/ab@bucket), which _USERINFO takes for a port.
_BUCKET_USERINFO = r"[^/@\s:]*:\S*(?=@[^@/\s]*(?:[/?#\s'\"]|$))"
_BUCKET_SCHEMES = r"(?i:s3|s3a|s3n|gs|gcs)://"
_BUCKET_URI_PASSWORD = re.compile(r"^\s*" + _BUCKET_SCHEMES + _BUCKET_USERINFO)
_NETLOC_USERINFO = re.compile(r"(?<=://)[^/@\s:]*:[^/\s]*(?=@)")
# Credentials as query parameters: libpq and MySQL take ?password=, pyarrow's S3 URIs ?secret_key=, presigned
# URLs X-Amz-Security-Token; servers take ?token=.
QUERY_SECRET = re.compile(r"(?i)(?<=[?&;])(?:password|passwd|pwd|token|access_token|auth_token|api_key|apikey|"
                          r"secret|secret_key|secret_access_key|access_key|session_token|x-amz-security-token)="
                          r"(?=[^&#\s'\"])")
_QUERY_SECRET_VALUE = re.compile(QUERY_SECRET.pattern + r"[^&#\s'\"]+")
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
    """Whether ``uri`` carries ``user:password@`` or a credential query parameter (``?password=``,
    ``?token=``, ``?secret_key=``...): refused, credentials come from the environment."""
    uri = str(uri)
    if _URI_PASSWORD.match(uri) or _BUCKET_URI_PASSWORD.match(uri):
        return True
    return "://" in uri and "?" in uri and bool(QUERY_SECRET.search(uri))


def mask_uri_password(uri: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host`` and ``?password=X`` -> ``?password=***``, for
    error messages."""
    if not uri_has_password(uri):
        return uri
    return mask_credentials(str(uri), count=1)


def mask_credentials(text: str, *, count: int = 0) -> str:
    """Mask every ``user:password@`` and credential query value in free ``text`` (an error message, a log line)."""
    text = _NETLOC_USERINFO.sub("***", text, count=count)  # '@' in the host part: up to its last '@'
    text = re.sub(r"(?<=://)" + _USERINFO, "***", text, count=count)  # a secret holding '/': up to the host
    text = re.sub(r"(?<![A-Za-z0-9+.-])(" + _BUCKET_SCHEMES + ")" + _BUCKET_USERINFO, r"\1***", text, count=count)
    return _QUERY_SECRET_VALUE.sub(lambda m: m.group(0).split("=", 1)[0] + "=***", text)


# The schemes MLflow opens as a tracking store (``+driver`` variants such as postgresql+psycopg2 included).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks", "databricks-uc",
                    "uc")
TRACKING_URI_FORMS = ("http(s)://HOST[:PORT] (an MLflow server), sqlite:///relative/path.db or "
                      "sqlite:////absolute/path.db, a folder path (a sqlite store mlflow.db is made there), "
                      "postgresql://, mysql://, mssql:// or databricks")


# http:/host (what pathlib makes of http://host), sqlite:/x.db, or a bare host:port: URIs, not folder names (the
# same forms fmx.tracking.resolve_tracking_uri refuses at run time)
_MISSING_SLASHES = re.compile(r"^((https?|sqlite|postgres(ql)?|mysql|mssql)(\+\w+)?:|[\w.-]+:\d+(/|$))", re.I)


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
        if _MISSING_SLASHES.match(uri):  # else a local store in a folder "http:" or "host:5000" at run time
            return ("looks like a server or database URI with its // missing (pathlib joins drop one): write "
                    "http(s)://HOST:PORT for an MLflow server, sqlite:///path.db for a database, or a folder path "
                    "without a colon")
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
