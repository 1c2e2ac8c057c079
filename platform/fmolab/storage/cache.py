"""This node's cache of remote files (``<work>/cache/storage``): bounded, evicting, keyed by content.

A training loader reads each row group of a shard many times, and an object store answers every read
with a round trip, so remote shards are read from a local copy. The copy is keyed by the URI, the size
and the modification time the store gives (a rewritten shard of the same size is a new entry, never
served stale). The cache holds at most ``FMOLAB_CACHE_GB`` (``runtime.cache_gb``), by default half of
what its disk has free (counting what the cache holds) when the process first uses it; the entries
used least recently go first. A copy that cannot fit is refused as a full disk, with the numbers.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil

from pathlib import Path

from fmolab.storage.errors import explain
from fmolab.storage.uri import basename, filesystem, is_remote, join, normalize

CACHE_VAR = "FMOLAB_CACHE_GB"
GB = 1 << 30


class CacheFullError(OSError):
    """The node cache cannot hold a file: its disk is full or its bound is smaller than the file."""


def cache_dir() -> Path:
    from fmolab.storage.files import resolve_work_dir

    return resolve_work_dir() / "cache" / "storage"


def _entries(root: Path) -> list[tuple[float, int, Path]]:
    """(last use, bytes, folder) of every file entry (``<key>/<name>``; trees are kept apart)."""
    out = []
    for d in root.iterdir() if root.is_dir() else []:
        if d.name == "trees" or not d.is_dir():
            continue
        files = [f for f in d.iterdir() if f.is_file() and not f.name.endswith(".tmp")]
        out.append((d.stat().st_mtime, sum(f.stat().st_size for f in files), d))
    return out


def limit_bytes(root: Path, held: int) -> int:
    """The cache's bound: $FMOLAB_CACHE_GB, else half of (free space + what the cache holds)."""
    value = os.environ.get(CACHE_VAR, "")
    if value:
        try:
            gb = float(value)
        except ValueError:
            raise ValueError(f"{CACHE_VAR}={value!r} (runtime.cache_gb) must be a number of GB") from None
        if gb > 0:
            return int(gb * GB)
    root.mkdir(parents=True, exist_ok=True)
    return (shutil.disk_usage(root).free + held) // 2


def make_room(root: Path, size: int, what: str) -> list[Path]:
    """Evict least recently used entries until ``size`` more bytes fit the bound and the disk; returns
    the evicted folders. Raises :class:`CacheFullError` when it cannot fit even in an empty cache."""
    entries = sorted(_entries(root))
    held = sum(s for _, s, _ in entries)
    limit = limit_bytes(root, held)
    evicted = []
    margin = 64 << 20  # never fill the disk to the last byte: logs and checkpoints need it too
    while entries and (held + size > limit or shutil.disk_usage(root).free < size + margin):
        _, s, d = entries.pop(0)
        shutil.rmtree(d, ignore_errors=True)  # an open (memory-mapped) copy stays readable until closed
        held -= s
        evicted.append(d)
    free = shutil.disk_usage(root).free
    if size > limit or free < size + margin:
        raise CacheFullError(errno.ENOSPC, f"node cache full: {what} needs {size / 2**20:.1f} MB in {root}, "
                             f"whose disk has {free / 2**20:.1f} MB free and whose bound is {limit / 2**20:.1f} MB "
                             f"({CACHE_VAR} / runtime.cache_gb); free space on this node or raise the bound")
    return evicted


def local(path: str | os.PathLike) -> Path:
    """A local file with the content of ``path``: the file itself, or this node's cached copy of a
    remote one (see the module's notes)."""
    from fmolab.storage.files import _info, download

    if not is_remote(path):
        return Path(normalize(path))
    path = normalize(path)
    info = _info(path)
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    key = hashlib.sha1(f"{path}\0{info.size}\0{mtime}".encode()).hexdigest()[:20]
    root = cache_dir()
    target = root / key / basename(path)
    if target.exists():
        os.utime(target.parent)  # its last use, for eviction
        return target
    make_room(root, info.size or 0, path)
    try:
        download(path, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space left" in str(exc):
            raise CacheFullError(errno.ENOSPC, f"node cache full: the disk of {root} ran out of space while "
                                 f"copying {path}; free space on this node or lower {CACHE_VAR}") from exc
        raise
    return target


def local_tree(path: str | os.PathLike) -> Path:
    """A local folder with the content of ``path``: the folder itself, or this node's cached copy of a
    remote one (assets: OBJ meshes, textures, background videos), fetched once per node and marked
    complete only when every file is there. Asset trees are small and read by every block: they are
    not evicted."""
    import pyarrow.fs as pafs

    from fmolab.storage.files import download

    if not is_remote(path):
        return Path(normalize(path))
    path = normalize(path)
    target = cache_dir() / "trees" / hashlib.sha1(path.encode()).hexdigest()[:20]
    if (target / ".complete").exists():
        return target
    fs, p = filesystem(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except Exception as exc:
        raise explain(path, exc) from exc
    for info in infos:
        if info.type == pafs.FileType.File:
            rel = info.path[len(p):].lstrip("/")
            if not (target / rel).exists():
                download(join(path, rel), target / rel)
    (target / ".complete").write_text(path)
    return target


def local_copy(path: str | os.PathLike) -> Path:
    """:func:`local_tree` of a folder, :func:`local` of a file: what a reader that takes either (a
    video file or a folder of its frames) opens on this node."""
    from fmolab.storage.files import is_dir

    return local_tree(path) if is_remote(path) and is_dir(path) else local(path)
