"""Paths and URIs: names, and the pyarrow filesystem behind each (fmolab.storage)."""
from __future__ import annotations

import functools
import os
import posixpath
import re
from pathlib import Path

from fmolab.storage.errors import StorageError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# What a worker on another node needs to reach the same storage (values are never logged).
CREDENTIAL_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                   "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
                   "MLFLOW_S3_ENDPOINT_URL")
# The non-secret part of the above: where the store is. Secrets never travel through Ray (a runtime
# env is written in plain text to every node's runtime_env_agent.log): workers of a local Ray inherit
# them from the process that started it, a cluster's nodes take them from their own environment.
SETTING_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "MLFLOW_S3_ENDPOINT_URL",
                "FMOLAB_CACHE_GB")  # the node cache's bound (runtime.cache_gb) travels with them
TIMEOUT_S = 5.0  # connect timeout per request: a wrong endpoint fails in seconds, not minutes


# ---------------------------------------------------------------- names


def scheme(path: str | os.PathLike) -> str:
    m = _SCHEME.match(str(path))
    return m.group(1).lower() if m else ""


def is_remote(path: str | os.PathLike) -> bool:
    return scheme(path) not in ("", "file")


def normalize(path: str | os.PathLike) -> str:
    """A URI as given (without a trailing slash), or a local path made absolute."""
    text = str(path)
    if scheme(text) == "file":
        text = text[len("file://"):]
    if is_remote(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().absolute())


def join(base: str | os.PathLike, *parts: str) -> str:
    base = normalize(base)
    if is_remote(base):
        return "/".join([base, *(p.strip("/") for p in parts if p)])
    return str(Path(base, *parts))


def basename(path: str | os.PathLike) -> str:
    return posixpath.basename(normalize(path)) if is_remote(path) else Path(path).name


def parent(path: str | os.PathLike) -> str:
    path = normalize(path)
    return path.rsplit("/", 1)[0] if is_remote(path) else str(Path(path).parent)


# ---------------------------------------------------------------- filesystems


@functools.lru_cache(maxsize=32)
def _remote_fs(kind: str, netloc: str, env: tuple):  # env: the credentials it was made with
    import pyarrow.fs as pafs

    if kind == "s3":
        # Keys, session token and region come from the environment through the AWS SDK; the endpoint
        # of a non-AWS server from AWS_ENDPOINT_URL(_S3), as boto3 and the AWS CLI read it. Fail fast.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region, connect_timeout=TIMEOUT_S,
                                 request_timeout=30, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))
    fs, _ = pafs.FileSystem.from_uri(f"{kind}://{netloc}")
    return fs


def filesystem(path: str | os.PathLike):
    """``(pyarrow filesystem, path inside it)`` for a local path or a URI."""
    import pyarrow.fs as pafs

    path = normalize(path)
    if not is_remote(path):
        return pafs.LocalFileSystem(), path
    kind = scheme(path)
    rest = path[len(kind) + 3:]
    try:
        fs = _remote_fs(kind, rest.split("/", 1)[0], tuple(os.environ.get(v, "") for v in CREDENTIAL_VARS))
    except Exception as exc:
        raise StorageError(f"{path}: no filesystem for {kind}:// ({exc}); fmolab reaches storage through "
                           f"pyarrow.fs (s3, gs, abfs, hdfs)") from exc
    return fs, rest if kind in ("s3", "gs", "gcs") else pafs.FileSystem.from_uri(path)[1]


def ray_storage(path: str | os.PathLike) -> dict:
    """``storage_path`` (+ ``storage_filesystem`` for a URI) for Ray Train's and Tune's ``RunConfig``:
    checkpoints and results go where every node reaches them, through the same filesystem object
    (endpoint, timeouts) fmolab uses."""
    if not is_remote(path):
        return {"storage_path": normalize(path)}
    fs, p = filesystem(path)
    return {"storage_path": p, "storage_filesystem": fs}
