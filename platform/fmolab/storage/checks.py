"""Checks before work starts: reachability, credentials, write access (fmolab.storage)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from fmolab.storage.errors import StorageError
from fmolab.storage.errors import explain
from fmolab.storage.files import delete_quietly, exists
from fmolab.storage.uri import filesystem, is_remote, normalize, scheme


def check_readable(path: str | os.PathLike, what: str = "path") -> None:
    """``path`` exists and can be listed: a clear error (URI, cause, what to set) before any cluster work."""
    _check_credentials(str(path))
    if not exists(path):
        raise StorageError(f"{what} {normalize(path)} does not exist")


def check_writable(path: str | os.PathLike) -> None:
    """Write and delete a small probe object below ``path``: missing bucket, missing credentials, a
    read-only bucket or an unreachable endpoint are reported here, in seconds, naming the URI."""
    path = normalize(path)
    if not is_remote(path):
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            probe = Path(path) / f".fmolab-probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"cannot write to {path}: {exc}") from exc
        return
    _check_credentials(path)
    fs, p = filesystem(path)
    probe = f"{p}/.fmolab-probe-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe) as out:
            out.write(b"probe")
    except Exception as exc:
        raise explain(path, exc, writing=True) from exc
    delete_quietly(fs, probe)


def _check_credentials(path: str) -> None:
    if scheme(path) != "s3":
        return
    try:
        import botocore.session
    except ImportError:  # pyarrow resolves credentials itself; its errors are explained below
        return
    if botocore.session.Session().get_credentials() is None:
        raise StorageError(f"no credentials for {path}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                           f"(or AWS_PROFILE), and AWS_ENDPOINT_URL for a non-AWS S3 server")
