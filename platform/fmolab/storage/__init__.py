"""One storage layer for every path a user gives: a local folder or an object-store URI (``s3://``,
``gs://``, ``abfs://``, or anything ``pyarrow.fs`` resolves: the filesystem layer Ray itself uses).

Paths are plain strings; local ones stay local paths. Writes are atomic on both: locally a temporary
file renamed into place, on an object store a hidden temporary object copied to its name, so a shard
or a manifest is either there complete or not at all, and "which shards exist" is a listing.

Endpoint and credentials come from the standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``GOOGLE_APPLICATION_CREDENTIALS``,
...), never from config files; :data:`CREDENTIAL_VARS` are read from the environment;
only :data:`SETTING_VARS` (endpoint, region: no secret) go to Ray workers in their runtime env.
Remote shards are read through a bounded node-local cache (:mod:`fmolab.storage.cache`).
"""
from fmolab.storage.checks import check_readable, check_writable
from fmolab.storage.errors import StorageError
from fmolab.storage.cache import CACHE_VAR, CacheFullError, cache_dir, local, local_copy, local_tree
from fmolab.storage.files import (download, exists, is_dir, is_file, list_dirs, list_files, list_sizes, read_bytes,
                                  read_json, remove, resolve_work_dir, upload, upload_tree, write_bytes, write_json)
from fmolab.storage.uri import (CREDENTIAL_VARS, SETTING_VARS, TIMEOUT_S, basename, filesystem, is_remote, join, normalize, parent,
                                ray_storage, scheme)

__all__ = [
    "CACHE_VAR", "CREDENTIAL_VARS", "CacheFullError", "SETTING_VARS", "TIMEOUT_S", "StorageError", "basename", "cache_dir", "check_readable", "check_writable",
    "download", "exists", "filesystem", "is_dir", "is_file", "is_remote", "join", "list_dirs", "list_files", "list_sizes", "local", "local_copy", "local_tree",
    "normalize", "parent", "ray_storage", "read_bytes", "read_json", "remove", "resolve_work_dir", "scheme",
    "upload", "upload_tree", "write_bytes", "write_json",
]
