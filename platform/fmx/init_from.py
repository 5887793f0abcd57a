"""Fetch an ``s3://`` ``model.init_from`` checkpoint to a per-node cache before a trial builds its module.

:mod:`models.adapters` reads only local files (``models`` does not depend on the platform), so
:func:`fmx.train_worker.build_module_and_data` calls :func:`localize_init_from` first: an ``s3://`` URI is
downloaded once per node to ``<tempdir>/fmx-init-from/<sha256(uri)[:16]>/model.ckpt`` and the module is built
from a copy of the config naming that file. The download goes to a temporary name in the same folder and is
renamed into place only once complete, so neither two workers of a node fetching at once nor an interrupted
download leaves a partial file that a later build would take as the checkpoint.
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from fmx import storage as st

__all__ = ["CACHE_FOLDER", "cache_path", "check_object", "fetch", "localize_init_from"]

CACHE_FOLDER = "fmx-init-from"
_CHUNK = 8 << 20


def cache_path(uri: str, root: str | Path | None = None) -> Path:
    """Where this node keeps the checkpoint of ``uri``: ``<root or tempdir>/fmx-init-from/<hash>/model.ckpt``."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(root or tempfile.gettempdir()) / CACHE_FOLDER / digest / "model.ckpt"


def _filesystem():
    """The S3 filesystem a trial worker reaches its sweep's store with.

    Inside a Ray Train worker: the settings (endpoint, region) of the run storage's filesystem, i.e. the sweep's
    ``storage.endpoint_url`` (made by :func:`fmx.storage.s3_filesystem`, which Ray unpickles with this process's
    keys). Elsewhere (the acceptance benchmarks, plain Python): :func:`fmx.storage.s3_filesystem` with the
    endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, which :mod:`fmx.ray_setup` forwards to every
    Ray worker. Keys come from the environment or the mounted secret (``FMX_S3_SECRET_FILE``) either way.
    """
    settings: Mapping[str, Any] = {}
    if "ray" in sys.modules:  # a trial imported Ray already; plain Python needs no Ray for this
        try:
            import ray.train

            fs = ray.train.get_context().get_storage().storage_filesystem  # a DeveloperAPI, as in train_worker
            settings = getattr(fs, "_fmx_settings", None) or {}
        except (AttributeError, NotImplementedError, RuntimeError, ImportError):  # not in a Ray Train worker
            settings = {}
    return st.s3_filesystem(endpoint_url=settings.get("endpoint_url"), region=settings.get("region"))


def _copy(src, dst) -> None:
    shutil.copyfileobj(src, dst, _CHUNK)


_WHAT = ("give the s3:// URI of an existing model.ckpt (a pretraining trial's s3://bucket/prefix/<sweep>/<trial>/"
         "checkpoint_<n>/model.ckpt) or a local file path")


def _store_fix(fs) -> str:
    """What to check when the store refuses or does not answer, naming the endpoint in use."""
    return st._s3_fix(st.StorageTarget(uri="s3://", storage_path="", filesystem=fs))


def _bucket_key(uri: str) -> str:
    bucket_key = uri[len("s3://"):]
    if not uri.startswith("s3://") or "/" not in bucket_key.strip("/") or bucket_key.startswith("/"):
        raise ValueError(f"model.init_from: {uri!r} is not s3://bucket/path/to/model.ckpt; fix the URI")
    return bucket_key


def _object_size(uri: str, fs) -> int:
    """The size of the object ``uri`` (one HEAD request); a ValueError naming ``model.init_from`` if absent."""
    from pyarrow import fs as pafs

    try:
        info = fs.get_file_info(_bucket_key(uri))
    except OSError as exc:
        raise ValueError(f"model.init_from: cannot look up {uri}: {st.redact(str(exc)).splitlines()[0]}; "
                         f"{_store_fix(fs)}") from None
    if info.type != pafs.FileType.File:
        raise ValueError(f"model.init_from: no object at {uri}; {_WHAT}")
    return info.size


def check_object(uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
    """Refuse (ValueError naming ``model.init_from``) an ``s3://`` checkpoint that is not in the store at
    ``endpoint_url`` (else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``): one HEAD request, nothing fetched."""
    _object_size(uri, st.s3_filesystem(endpoint_url=endpoint_url, region=region))


def fetch(uri: str, *, cache_root: str | Path | None = None, filesystem=None) -> Path:
    """The local copy of the ``s3://bucket/key`` object ``uri``, downloaded into this node's cache if not there.

    Raises
    ------
    ValueError
        Naming ``model.init_from`` and the URI: a URI without bucket or key, a missing object, or a store that
        refuses or does not answer (with the settings to check).
    """
    bucket_key = _bucket_key(uri)
    target = cache_path(uri, cache_root)
    if target.is_file():  # only complete downloads are ever renamed to this name
        return target
    fs = filesystem if filesystem is not None else _filesystem()
    size = _object_size(uri, fs)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".model.ckpt.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst, fs.open_input_stream(bucket_key) as src:
            _copy(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        if tmp.stat().st_size != size:  # a stream cut short without an error
            raise ValueError(f"model.init_from: {uri} came down as {tmp.stat().st_size} bytes of {size}; "
                             "run again (nothing was cached)")
        os.replace(tmp, target)  # atomic: a concurrent worker's identical copy may replace it, never a part
    except OSError as exc:
        raise ValueError(f"model.init_from: downloading {uri} failed: {st.redact(str(exc)).splitlines()[0]}; "
                         f"run again (nothing was cached); {_store_fix(fs)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def localize_init_from(cfg: Mapping[str, Any], *, cache_root: str | Path | None = None,
                       endpoint_url: str | None = None, region: str | None = None) -> Mapping[str, Any]:
    """``cfg`` itself unless ``model.init_from`` is ``s3://``; then a copy naming the fetched local file. The store
    is reached at ``endpoint_url``/``region`` when given (the sweep's), else as :func:`_filesystem` says."""
    model = cfg.get("model") or {}
    uri = model.get("init_from") if isinstance(model, Mapping) else None
    if not (isinstance(uri, str) and uri.startswith("s3://")):
        return cfg
    fs = st.s3_filesystem(endpoint_url=endpoint_url, region=region) if endpoint_url else None
    local = fetch(uri, cache_root=cache_root, filesystem=fs)
    out = copy.deepcopy(dict(cfg))
    out["model"] = {**out["model"], "init_from": str(local)}
    return out
