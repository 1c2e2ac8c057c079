"""Claims: markers created only where absent, with a lease, in a folder or an S3 bucket alike.

Several drivers working on one dataset (two users rendering it at once) must not both do a block.
Before its work, a worker *claims* the block: it creates ``<folder>/<name>/g<N>.json`` only if that
object does not exist yet (a hard link locally; ``If-None-Match: *`` on S3), which exactly one writer
wins. A claim lives for ``lease_s`` seconds after its last renewal (the file's modification time, as
the store gives it), so the claims of a dead driver expire. An expired claim is taken over by creating
the next generation ``g<N+1>``, again only where absent: two late comers cannot both take it.
Stores without conditional writes (gs://, abfs://) fall back to check-then-write, which two drivers
started in the same second can both pass.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from fmolab.storage.errors import explain
from fmolab.storage.files import _info, read_json, write_bytes
from fmolab.storage.uri import is_remote, join, normalize, scheme


def create_exclusive(path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; True when this call created it."""
    path = normalize(path)
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            Path(tmp).write_bytes(data)
            os.link(tmp, path)  # atomic, and fails where the name exists: readers see all or nothing
            return True
        except FileExistsError:
            return False
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)  # also after a full disk: never a partial temporary left behind
    if scheme(path) == "s3":
        import boto3
        import botocore.exceptions

        bucket, _, key = path[len("s3://"):].partition("/")
        try:
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise explain(path, exc, writing=True) from exc
    if _info(path).type.name != "NotFound":
        return False
    write_bytes(path, data)
    return True


def owner_id() -> str:
    """One driver's identity in its claims: host, process, and a random part (pids repeat)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claims:
    """The claims below ``folder`` of one owner (a driver; its workers pass the same ``owner``)."""

    def __init__(self, folder: str, owner: str, lease_s: float):
        self.folder, self.owner, self.lease_s = normalize(folder), owner, float(lease_s)

    def _newest(self, name: str = "") -> dict[str, tuple[int, str, float]]:
        """{claim name: (newest generation, its path, its age in seconds)} below the folder (one
        recursive listing), or for ``name`` only."""
        import pyarrow.fs as pafs

        from fmolab.storage.uri import filesystem

        folder = join(self.folder, name) if name else self.folder
        fs, p = filesystem(folder)
        try:
            infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=True))
        except Exception as exc:
            raise explain(folder, exc) from exc
        now, out = time.time(), {}
        for i in infos:
            parts = i.path[len(p):].strip("/").split("/")
            stem = parts[-1][:-5] if parts[-1].endswith(".json") else ""
            if i.type != pafs.FileType.File or stem[:1] != "g" or not stem[1:].isdigit():
                continue
            key = name or "/".join(parts[:-1])
            age = now - i.mtime_ns / 1e9 if i.mtime_ns is not None else 0.0
            if int(stem[1:]) > out.get(key, (-1,))[0]:
                out[key] = (int(stem[1:]), join(folder, *parts), age)
        return out

    def _current(self, name: str) -> tuple[int, str, dict, float]:
        """(generation, path, content, age in seconds) of ``name``'s newest claim; generation -1: none."""
        gen, path, age = self._newest(name).get(name, (-1, "", 0.0))
        if gen < 0:
            return -1, "", {}, 0.0
        try:
            content = read_json(path)
        except (ValueError, FileNotFoundError):
            content = {}
        return gen, path, content, age

    def _other(self, content: dict, age: float) -> dict | None:
        """The claim of another owner that has not expired, with ``expires_in``; else None."""
        if content.get("owner") == self.owner or age > self.lease_s:
            return None
        return {**content, "expires_in": round(self.lease_s - age, 1)}

    def holders(self) -> dict[str, dict]:
        """Every name another owner holds now (unexpired), with its claim and ``expires_in``."""
        out = {}
        for name, (_, path, age) in self._newest().items():
            if age > self.lease_s:
                continue  # expired: not worth reading
            try:
                held = self._other(read_json(path), age)
            except (ValueError, FileNotFoundError):
                continue
            if held:
                out[name] = held
        return out

    def claim(self, name: str, **info) -> dict | None:
        """Take ``name``: None when this owner holds it now, else the other holder's claim (with
        ``expires_in``)."""
        for _ in range(3):  # a lost race for an expired claim: look again
            gen, _, content, age = self._current(name)
            held = self._other(content, age) if gen >= 0 else None
            if held or (gen >= 0 and content.get("owner") == self.owner):
                return held
            body = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), **info,
                    "taken_over": gen >= 0}
            if create_exclusive(join(self.folder, name, f"g{gen + 1}.json"), json.dumps(body).encode()):
                return None
        gen, _, content, age = self._current(name)
        return self._other(content, age) or {"owner": "unknown", "expires_in": self.lease_s}

    def renew(self, name: str) -> None:
        """Push this owner's claim of ``name`` a lease further (rewriting it renews its time)."""
        gen, path, content, _ = self._current(name)
        if gen >= 0 and content.get("owner") == self.owner:
            write_bytes(path, json.dumps(content).encode())
