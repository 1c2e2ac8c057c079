"""Reading, writing (atomically), listing and caching files at paths or URIs (fmolab.storage)."""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Callable

from fmolab.storage.errors import explain
from fmolab.storage.uri import filesystem, is_remote, join, normalize


def _info(path: str):
    fs, p = filesystem(path)
    try:
        return fs.get_file_info(p)
    except Exception as exc:
        raise explain(path, exc) from exc


def exists(path: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return _info(str(path)).type != pafs.FileType.NotFound


def is_dir(path: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return _info(str(path)).type == pafs.FileType.Directory


def is_file(path: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return _info(str(path)).type == pafs.FileType.File


def list_files(folder: str | os.PathLike, suffix: str = "") -> list[str]:
    """The finished files directly in ``folder`` ending in ``suffix``, sorted; hidden names (temporary
    files of unfinished writes) are left out. A missing folder lists nothing."""
    return list(list_sizes(folder, suffix))


def list_sizes(folder: str | os.PathLike, suffix: str = "") -> dict[str, int]:
    """``{file: bytes}`` of :func:`list_files`, in its order, from the same one listing (an object
    store's listing carries the sizes: opening with one saves a request a file)."""
    import pyarrow.fs as pafs

    fs, p = filesystem(folder)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=False))
    except Exception as exc:
        raise explain(str(folder), exc) from exc
    base = normalize(folder)
    return dict(sorted((join(base, i.base_name), i.size) for i in infos if i.type == pafs.FileType.File
                       and not i.base_name.startswith(".") and i.base_name.endswith(suffix)))


def list_dirs(folder: str | os.PathLike) -> list[str]:
    import pyarrow.fs as pafs

    fs, p = filesystem(folder)
    infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=False))
    return sorted(join(normalize(folder), i.base_name) for i in infos if i.type == pafs.FileType.Directory)


# ---------------------------------------------------------------- reading and writing


def read_bytes(path: str | os.PathLike) -> bytes:
    fs, p = filesystem(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise explain(str(path), exc) from exc


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_bytes(path))


def _write_through(path: str | os.PathLike, fill: Callable[[IO], Any], mode: str = "wb") -> str:
    """``path`` holding what ``fill(file)`` writes to a local temporary file, complete or unchanged."""
    tmp = tempfile.NamedTemporaryFile(mode, prefix=".fmolab-", delete=False)
    try:
        with tmp:
            fill(tmp)
        return upload(tmp.name, path)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` so that ``path`` holds it complete or does not change."""
    return _write_through(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """``obj`` as indented JSON, streamed to the file (made as one string, the manifest of 10^6
    sequences held ~30 MB of pieces)."""
    def fill(f):
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")

    return _write_through(path, fill, "w")


def upload(local: str | os.PathLike, path: str | os.PathLike) -> str:
    """Copy the local file ``local`` to ``path`` atomically: a hidden temporary beside it, then one
    rename (local) or one server-side copy (object store), so readers never see part of it."""
    path = normalize(path)
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
        os.close(fd)
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
    fs, p = filesystem(path)
    tmp = f"{posixpath.dirname(p)}/.{posixpath.basename(p)}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(local, "rb") as src, fs.open_output_stream(tmp) as out:
            shutil.copyfileobj(src, out, 8 << 20)
        fs.move(tmp, p)
    except Exception as exc:
        delete_quietly(fs, tmp)
        raise explain(path, exc, writing=True) from exc
    return path


def download(path: str | os.PathLike, local: str | os.PathLike) -> Path:
    """Copy ``path`` to the local file ``local`` (atomically: a reader of ``local`` sees all or nothing)."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    fs, p = filesystem(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
    os.close(fd)
    try:
        with fs.open_input_stream(p) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 8 << 20)
        os.replace(tmp, local)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise explain(str(path), exc) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return local


def upload_tree(local_dir: str | os.PathLike, path: str | os.PathLike, last: tuple[str, ...] = ()) -> str:
    """Every file below ``local_dir`` to the same names below ``path``, each atomically; the files
    named in ``last`` (a summary, a manifest) go last, so their presence means the rest is there."""
    local_dir = Path(local_dir)
    files = sorted((p for p in local_dir.rglob("*") if p.is_file()), key=lambda p: (p.name in last, str(p)))
    for f in files:
        upload(f, join(path, *f.relative_to(local_dir).parts))
    return normalize(path)


def remove(path: str | os.PathLike, missing_ok: bool = True) -> None:
    """Delete a file or a whole folder (prefix)."""
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)
    elif not missing_ok:
        raise FileNotFoundError(str(path))


def delete_quietly(fs, p: str) -> None:
    try:
        fs.delete_file(p)
    except Exception:
        pass


# ---------------------------------------------------------------- node-local cache


def resolve_work_dir(explicit: str | os.PathLike | None = "") -> Path:
    """This node's work folder (temporary files, caches, Ray's files; outputs too unless
    ``runtime.storage`` names other storage): ``explicit`` (``runtime.work_dir``, ``--work-dir``), else
    $FMOLAB_HOME, else ./fmolab-work. An explicit value wins: Ray workers may carry a stale FMOLAB_HOME."""
    return Path(explicit or os.environ.get("FMOLAB_HOME") or "fmolab-work").absolute()

