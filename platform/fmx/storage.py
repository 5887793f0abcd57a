"""Where checkpoints and artifacts live: a local folder or an S3-compatible store, and how credentials reach it.

Credentials come only from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional
``AWS_SESSION_TOKEN``) or from a mounted secret (``FMX_S3_SECRET_FILE``: a JSON or ``KEY=VALUE`` file, or a
Kubernetes-style folder with one file per key). They are never written into configs, params, logs or
artifacts: :func:`redact` masks every known secret value in any text the platform emits (a short, word-like
one where it stands as a credential: see :func:`redact`).

The endpoint of an S3-compatible store (MinIO, SeaweedFS, CoreWeave Object Storage) comes from the sweep file's
``storage.endpoint_url`` or the environment (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlparse

from fmx.targets import mask_credentials, mask_uri_password, uri_has_password

SECRET_FILE_ENV = "FMX_S3_SECRET_FILE"
# Environment variables that are safe to forward to Ray workers (no secret in them).
ADDRESSING_ENV = "FMX_S3_ADDRESSING_STYLE"  # path | virtual; unset: virtual for CoreWeave hosts, else path
# Object stores that serve only virtual-hosted requests (BUCKET.host), per their providers' docs.
VIRTUAL_ONLY_HOSTS = ("cwobject.com", "cwlota.com")
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                 "AWS_REGION", SECRET_FILE_ENV, "MLFLOW_TRACKING_URI", "FMX_CONF_DIR", "PYTHONPATH", ADDRESSING_ENV,
                 # the bounds on MLflow's client retries: trials log from Ray workers, where a caller's bound must hold
                 "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 # how often Ray Train's controller takes reports (fmx.trial_support.REPORT_POLL_ENV): a caller's
                 # setting holds in the trials on a cluster too
                 "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                 # rank 0's system-metrics sampling (fmx.tracking.start_system_metrics; MLflow reads it)
                 "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
_KEY_ALIASES = {
    "access_key": ("AWS_ACCESS_KEY_ID", "access_key_id", "accessKey", "access_key"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "secret_access_key", "secretKey", "secret_key"),
    "session_token": ("AWS_SESSION_TOKEN", "session_token", "sessionToken"),
}
# Anything that looks like an AWS access key, masked even when not a known value (URL passwords and credential
# query parameters: fmx.targets.mask_credentials).
_PATTERNS = [re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}")]
# Where redact looks for a known secret value. One of 12 characters or more (AWS secret keys have 40, access key
# IDs 20, session and MLflow tokens more) is random enough never to occur by chance: masked wherever it appears,
# inside a word or a path too. A shorter one is a dev default (moto/localstack "test", MinIO "minioadmin") or a
# short password; as a plain substring it masked "/tests/", "testing" and line numbers, and so turned every failing
# trial's exception into a MaskedTrialError with a mangled traceback. So a short value that mixes letters, digits
# or symbols ("hunter2") is masked as a whole token only, never inside a longer word, number or path component;
# one of letters only (words joined by - _ .) or digits only reads as a word or a number (and is guessable: no
# secret worth hiding in prose), so it is masked only where it stands as a credential: a secret-named field's value
# in an env, dict, JSON or YAML dump (AWS_SECRET_ACCESS_KEY=test, 'password': 'test'). Any password inside a URL
# (user:pw@, ?password=) is masked whatever its length or value (fmx.targets.mask_credentials).
_ANYWHERE_LEN = 12
_WORD_LIKE = re.compile(r"[^\W\d_]+(?:[-_.][^\W\d_]+)*|\d+")
_CREDENTIAL_FIELD = r"(?i:(?:secret|passw|pwd|token(?![a-z])|access[_-]?key|key[_-]?id|credential)[\w.-]*)"
_FIELD_SEP = r"""(?:\\?['"])?\s*[:=]\s*(?:[bru]?\\?['"])?"""


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair; ``repr`` and ``str`` never show the secret."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = "environment"

    def __str__(self) -> str:
        return f"S3Credentials(access_key={self.access_key[:3]}***, source={self.source})"

    __repr__ = __str__


def _read_secret_source(path: Path) -> dict[str, str]:
    if path.is_dir():  # Kubernetes secret volume: one file per key
        return {p.name: p.read_text().strip() for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}
    text = path.read_text()
    try:
        data = json.loads(text)
        return {str(k): str(v) for k, v in data.items()}
    except (json.JSONDecodeError, AttributeError):
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        return {k.strip(): v.strip().strip('"') for k, v in pairs}


def load_credentials(env: Mapping[str, str] | None = None) -> S3Credentials | None:
    """Credentials from the environment, else from the mounted secret named by ``FMX_S3_SECRET_FILE``.

    Returns ``None`` when neither is set (an S3 store may still be reachable through an instance role).

    Raises
    ------
    ValueError
        When the secret file is named but missing or lacks a key pair.
    """
    env = os.environ if env is None else env
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return S3Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"))
    secret = env.get(SECRET_FILE_ENV)
    if not secret:
        return None
    path = Path(secret)
    if not path.exists():
        raise ValueError(f"{SECRET_FILE_ENV}: secret file {path} does not exist; mount the secret there or unset it")
    data = _read_secret_source(path)
    found = {name: next((data[a] for a in aliases if a in data), None) for name, aliases in _KEY_ALIASES.items()}
    if not (found["access_key"] and found["secret_key"]):
        raise ValueError(f"{SECRET_FILE_ENV}: {path} needs an access key and a secret key "
                         f"(keys {_KEY_ALIASES['access_key'][:2]} and {_KEY_ALIASES['secret_key'][:2]}); "
                         f"found keys {sorted(data)}")
    return S3Credentials(found["access_key"], found["secret_key"], found["session_token"], source=f"file {path}")


def export_credentials(creds: S3Credentials | None) -> None:
    """Put credentials into this process's environment for boto3 (MLflow's S3 artifact client).

    Called inside Ray workers that read a mounted secret; the values stay in process memory and never reach
    Ray's runtime_env, the dashboard or a log.
    """
    if creds is None:
        return
    os.environ["AWS_ACCESS_KEY_ID"] = creds.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = creds.secret_key
    if creds.session_token:
        os.environ["AWS_SESSION_TOKEN"] = creds.session_token


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value known to this process (to mask them)."""
    env = os.environ if env is None else env
    values = [env.get(k) for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
                                   "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]
    try:
        creds = load_credentials(env)
    except ValueError:
        creds = None
    if creds is not None:
        values += [creds.access_key, creds.secret_key, creds.session_token]
    # URL-encoded too: a secret holding '/', '+' or '@' (AWS secret keys often do) appears so inside URLs
    values += [quote(v, safe=safe) for v in values if v for safe in ("", "/")]
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """Mask secret values in a string, or in every string of a (nested) dict/list.

    A value under 12 characters is masked as a whole token only, and a word-like one (letters only, or digits
    only) just where it stands as a credential (``KEY=value``, ``'password': 'value'``, a URL's ``user:value@``),
    so that a short dev key such as ``test`` leaves ``/tests/`` and the word "test" as they are.
    """
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, str):
        for s in secrets:
            obj = _mask_value(obj, s)
        for pat in _PATTERNS:
            obj = pat.sub("***", obj)
        return mask_credentials(obj)
    if isinstance(obj, Mapping):
        return {k: ("***" if re.search(r"secret|password|token(?![a-z])", str(k), re.I) and v else redact(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    return obj


def _mask_value(text: str, value: str) -> str:
    """``text`` with the known secret ``value`` masked where it can be that secret (see ``_ANYWHERE_LEN``)."""
    if not value or value not in text:
        return text
    if len(value) >= _ANYWHERE_LEN:
        return text.replace(value, "***")
    # a symbol at the value's edge delimits it by itself ("x#pw" holds "#pw" whole)
    whole = ((r"(?<!\w)" if re.match(r"\w", value) else "") + re.escape(value)
             + (r"(?!\w)" if re.match(r"\w", value[-1]) else ""))
    if not _WORD_LIKE.fullmatch(value):
        return re.sub(whole, "***", text)
    return re.sub(f"({_CREDENTIAL_FIELD}{_FIELD_SEP}){whole}", lambda m: m.group(1) + "***", text)


def endpoint_from_env(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


def _endpoint_env_name(env: Mapping[str, str] | None = None) -> str:
    """The environment variable :func:`endpoint_from_env` takes the endpoint from (to name it in errors)."""
    env = os.environ if env is None else env
    return "AWS_ENDPOINT_URL_S3" if env.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"


def s3_filesystem(*, endpoint_url: str | None = None, region: str | None = None,
                  credentials: S3Credentials | None = None, allow_bucket_creation: bool = False):
    """A ``pyarrow.fs.S3FileSystem``; ``endpoint_url`` (http://host:port) selects an S3-compatible store.

    With credentials from the environment or the mounted secret it pickles without them: Ray pickles the
    filesystem into Tune's experiment state (``tuner.pkl``, ``basic-variant-state-*.json``), which it uploads
    beside the checkpoints, and into the actors it starts. Unpickled, it reads them again from that process's
    environment or mounted secret (``FMX_S3_SECRET_FILE`` reaches Ray workers; the keys never do). Only
    ``credentials`` given by the caller are kept in the object (and pickle with it).
    """
    from pyarrow import fs as pafs

    source = "storage.endpoint_url" if endpoint_url else _endpoint_env_name()
    endpoint_url = endpoint_url or endpoint_from_env()
    region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    given = credentials is not None
    credentials = credentials if given else load_credentials()
    kwargs: dict[str, Any] = {"region": region, "allow_bucket_creation": allow_bucket_creation}
    if credentials is not None:
        kwargs.update(access_key=credentials.access_key, secret_key=credentials.secret_key,
                      session_token=credentials.session_token)
    if endpoint_url:
        parsed = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        # pyarrow would answer a typo'd scheme with "Invalid S3 connection scheme" naming no setting, and would
        # silently drop a path (http://host:9000/bucket): requests would go to the host's root instead
        if parsed.scheme not in ("http", "https") or parsed.path.strip("/") or not parsed.netloc:
            raise ValueError(f"{source}={mask_uri_password(endpoint_url)!r}: an S3 endpoint is http(s)://host[:port] "
                             "(no path: the bucket goes in storage.path, s3://bucket/prefix); fix "
                             f"{source}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        kwargs["force_virtual_addressing"] = _virtual_addressing(parsed.hostname or "")
    if given:
        return pafs.S3FileSystem(**kwargs)
    fs = _keyless_s3_class()(**kwargs)
    fs._fmx_settings = {"endpoint_url": endpoint_url, "region": region, "allow_bucket_creation": allow_bucket_creation}
    return fs


def _s3_from_settings(settings: dict):
    """Unpickling a filesystem made by :func:`s3_filesystem`: the same store, this process's credentials."""
    return s3_filesystem(**settings)


_KEYLESS_S3 = None


def _keyless_s3_class():
    """``pyarrow.fs.S3FileSystem`` pickled by its settings, not its keys (pyarrow is imported on first use)."""
    global _KEYLESS_S3
    if _KEYLESS_S3 is None:
        from pyarrow import fs as pafs

        class S3FileSystem(pafs.S3FileSystem):  # pyarrow's, but pickled without the keys
            def __reduce__(self):
                return _s3_from_settings, (self._fmx_settings,)

        _KEYLESS_S3 = S3FileSystem
    return _KEYLESS_S3


def _virtual_addressing(host: str) -> bool:
    """Virtual-hosted (BUCKET.host) or path-style requests for an endpoint ``host``.

    Most S3-compatible stores (MinIO, SeaweedFS) serve path style on a bare host:port; CoreWeave's object
    storage refuses it. ``FMX_S3_ADDRESSING_STYLE`` (``path`` or ``virtual``) overrides the choice.
    """
    style = os.environ.get(ADDRESSING_ENV, "").strip().lower()
    if style not in ("", "path", "virtual"):
        raise ValueError(f"{ADDRESSING_ENV}: must be 'path' or 'virtual' (or unset), got {style!r}")
    if style:
        return style == "virtual"
    return any(host == h or host.endswith("." + h) for h in VIRTUAL_ONLY_HOSTS)


@dataclass(frozen=True)
class StorageTarget:
    """What Ray needs: ``storage_path`` and an optional pyarrow ``filesystem``; ``uri`` for display."""

    uri: str
    storage_path: str
    filesystem: Any = None

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def join(self, *parts: str) -> str:
        return "/".join([self.storage_path.rstrip("/"), *parts])


def resolve_storage(path: str, *, endpoint_url: str | None = None, region: str | None = None,
                    root: str | Path | None = None, field: str = "storage.path") -> StorageTarget:
    """Turn a sweep's ``storage.path`` into a Ray storage target.

    Local paths are made absolute against ``root`` (default: the current directory) and created; ``s3://bucket/
    prefix`` gets a pyarrow S3 filesystem (endpoint override for S3-compatible stores) and a bucket-relative
    ``storage_path`` as Ray expects with a custom filesystem.
    """
    if uri_has_password(path):  # pyarrow's errors would echo it
        raise ValueError(f"{field}: {mask_uri_password(path)!r}: credentials never go in a URI (user:password@ or "
                         "a ?secret_key= parameter); use s3://bucket/prefix and AWS_ACCESS_KEY_ID/"
                         f"AWS_SECRET_ACCESS_KEY in the environment or the file named by {SECRET_FILE_ENV}")
    if path.startswith("s3://"):
        rest = path[len("s3://"):].strip("/")
        if not rest or path[len("s3://"):].startswith("/"):  # s3:///ray names no bucket (not bucket "ray")
            raise ValueError(f"{field}: {path!r} needs a bucket: s3://bucket/prefix")
        return StorageTarget(uri=path, storage_path=rest,
                             filesystem=s3_filesystem(endpoint_url=endpoint_url, region=region))
    if "://" in path:
        raise ValueError(f"{field}: {path!r} is neither a local path nor s3://bucket/prefix")
    if path.lower().startswith("s3:"):  # s3:/bucket (pathlib makes it of s3://bucket) was a local folder "s3:"
        raise ValueError(f"{field}: {path!r} is an S3 URI missing a slash: write s3://bucket/prefix (pathlib "
                         "joins drop one: build S3 URIs as text)")
    p = Path(path).expanduser()  # ~/ckpt is home, not a folder named "~" in the project
    if not p.is_absolute():
        p = Path(root or os.getcwd()) / p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a read-only or missing mount: one line, not a traceback
        raise ValueError(f"{field}: cannot create the folder {p} ({exc.strerror or exc}); choose a writable "
                         "folder or s3://bucket/prefix") from None
    return StorageTarget(uri=str(p.resolve()), storage_path=str(p.resolve()))


def write_bytes(target: StorageTarget, rel: str, data: bytes) -> str:
    """Write ``data`` under the storage target (atomically on local disk); return the full path."""
    full = target.join(rel)
    if target.filesystem is None:
        Path(full).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{full}.tmp{os.getpid()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, full)
        finally:  # a full disk: no half-written temp file left beside the old one
            tmp.unlink(missing_ok=True)
    else:
        with target.filesystem.open_output_stream(full) as fh:  # S3 puts are atomic per object
            fh.write(data)
    return full


def read_bytes(target: StorageTarget, rel: str) -> bytes | None:
    """Read a file under the storage target; ``None`` when it does not exist."""
    full = target.join(rel)
    if target.filesystem is None:
        p = Path(full)
        return p.read_bytes() if p.exists() else None
    from pyarrow import fs as pafs

    try:
        if target.filesystem.get_file_info(full).type == pafs.FileType.NotFound:
            return None
        with target.filesystem.open_input_stream(full) as fh:
            return fh.read()
    except OSError as exc:  # wrong keys, no server at the endpoint: pyarrow's OSError named no setting
        raise ValueError(f"storage: cannot read {full} from {target.uri}: {redact(str(exc)).splitlines()[0]}; "
                         f"{_s3_fix(target)}") from None


def _s3_fix(target: StorageTarget) -> str:
    """What to check when an S3 store refuses a request or does not answer, naming the endpoint in use."""
    settings = getattr(target.filesystem, "_fmx_settings", None) or {}
    endpoint = settings.get("endpoint_url") or endpoint_from_env()
    where = f"now {mask_uri_password(endpoint)}" if endpoint else "unset: AWS's own S3"
    return ("check the keys (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the file named by "
            f"{SECRET_FILE_ENV}) and the endpoint (storage.endpoint_url, else "
            f"AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; {where})")


def check_writable(target: StorageTarget, *, field: str = "storage.path") -> None:
    """Write and delete a small probe under the storage target, so a store that refuses writes (missing bucket,
    wrong keys, read-only folder) stops a sweep before any run is recorded rather than after.

    Raises
    ------
    ValueError
        Naming ``field``, the target, the store's answer and the fix.
    """
    rel = f".fmx-write-check-{os.getpid()}"
    try:
        full = write_bytes(target, rel, b"fmx")
    except OSError as exc:  # pyarrow's S3 errors and local PermissionError are OSErrors
        fix = "create the bucket, " + _s3_fix(target) if target.is_s3 else "make the folder writable"
        raise ValueError(f"{field}: cannot write to {target.uri}: {redact(str(exc)).splitlines()[0]}; {fix}, "
                         "or choose another storage.path") from None
    try:
        if target.filesystem is None:
            Path(full).unlink(missing_ok=True)
        else:
            target.filesystem.delete_file(full)
    except OSError:  # a store that takes writes but refuses deletes (object lock) still holds checkpoints
        pass


def exists(target: StorageTarget, rel: str) -> bool:
    full = target.join(rel)
    if target.filesystem is None:
        return Path(full).exists()
    from pyarrow import fs as pafs

    try:
        return target.filesystem.get_file_info(full).type != pafs.FileType.NotFound
    except OSError as exc:
        raise ValueError(f"storage: cannot look up {full} in {target.uri}: {redact(str(exc)).splitlines()[0]}; "
                         f"{_s3_fix(target)}") from None


def pointer_name(sweep_name: str) -> str:
    """The file under the storage root naming a sweep's latest run (``fmx sweep resume/status NAME``)."""
    return f"{sweep_name}.latest.json"


def read_pointer(sweep_name: str, target: StorageTarget) -> dict | None:
    data = read_bytes(target, pointer_name(sweep_name))
    return json.loads(data) if data else None
