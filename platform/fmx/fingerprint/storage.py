"""Local folders and ``s3://`` prefixes behind one small API, with atomic writes.

S3 goes through :class:`pyarrow.fs.S3FileSystem`. The endpoint comes from ``AWS_ENDPOINT_URL``
(an S3-compatible server such as SeaweedFS or MinIO), credentials only from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) or the mounted secret named by
``FMX_S3_SECRET_FILE``, the region from ``AWS_DEFAULT_REGION``/``AWS_REGION``: the same rules as the sweeps'
checkpoints (:func:`fmx.storage.s3_filesystem`). Nothing here takes a key as an argument, so none ends up in
a config file or a log.

Atomicity: a local file is written to a temporary name in the same folder and moved into place
with :func:`os.replace`; an S3 object becomes visible only when its upload completes, so a reader
sees the old object or the new one, never half of one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

__all__ = ["is_s3", "join", "s3_filesystem", "exists", "read_bytes", "write_bytes_atomic", "list_files", "fetch_local"]


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts with ``/`` for S3 and the OS separator for local paths."""
    if is_s3(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def s3_filesystem():
    """An S3 filesystem configured only from the environment (see the module docstring): the platform's
    :func:`fmx.storage.s3_filesystem`, allowed to create the output bucket."""
    from fmx import storage as st

    return st.s3_filesystem(allow_bucket_creation=True)


def _s3_path(uri: str) -> str:
    from fmx.schema import mask_uri_password, uri_has_password

    if uri_has_password(str(uri)):  # pyarrow's error would print the key pair
        raise ValueError(f"uri: {mask_uri_password(str(uri))!r}: credentials never go in a URI (user:password@); "
                         "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment")
    path = str(uri)[len("s3://"):].strip("/")
    if not path or str(uri)[len("s3://"):].startswith("/"):  # s3:///a/b names no bucket (not bucket "a")
        raise ValueError(f"uri: {uri!r} names no bucket; use s3://BUCKET/PREFIX")
    return path


def exists(uri: str | os.PathLike) -> bool:
    if is_s3(uri):
        from pyarrow import fs

        return s3_filesystem().get_file_info(_s3_path(str(uri))).type != fs.FileType.NotFound
    return Path(uri).exists()


def read_bytes(uri: str | os.PathLike) -> bytes:
    if is_s3(uri):
        with s3_filesystem().open_input_stream(_s3_path(str(uri))) as f:
            return f.read()
    return Path(uri).read_bytes()


def write_bytes_atomic(uri: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that readers never see a partial file (see the module docstring)."""
    if is_s3(uri):
        s3 = s3_filesystem()
        path = _s3_path(str(uri))
        bucket = path.split("/", 1)[0]
        from pyarrow import fs

        if s3.get_file_info(bucket).type == fs.FileType.NotFound:
            s3.create_dir(bucket)
        with s3.open_output_stream(path) as f:
            f.write(data)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def list_files(uri: str | os.PathLike) -> list[str]:
    """Every file below a folder or prefix (recursive), as full paths/URIs, sorted."""
    if is_s3(uri):
        from pyarrow import fs

        s3 = s3_filesystem()
        root = _s3_path(str(uri))
        infos = s3.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
        return sorted(f"s3://{i.path}" for i in infos if i.type == fs.FileType.File)
    root = Path(uri)
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def version_of(uri: str | os.PathLike) -> tuple[int, int]:
    """``(size, mtime in ns)`` of a file or object: what a resume key needs to see a changed recording
    (size alone misses a rewrite of the same length)."""
    if is_s3(uri):
        info = s3_filesystem().get_file_info(_s3_path(str(uri)))
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        return int(info.size or 0), int(mtime)
    try:
        stat = Path(uri).stat()
    except FileNotFoundError:  # as a missing S3 object: (0, 0); reading it fails that recording alone
        return 0, 0
    return stat.st_size, stat.st_mtime_ns


def fetch_local(uri: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Path:
    """A local path for ``uri``: the path itself when local, else a downloaded copy in ``workdir``.

    Readers such as MNE and pynwb need a real file; the copy keeps the object's file name so the
    extension still picks the reader.
    """
    if not is_s3(uri):
        return Path(uri)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fmx-fetch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / Path(_s3_path(str(uri))).name
    with s3_filesystem().open_input_stream(_s3_path(str(uri))) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    return target
