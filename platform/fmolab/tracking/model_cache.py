"""Models cached on this machine, so a second command on the same model starts in about the time it
takes to import torch: importing MLflow and downloading through it is half of a 4.5 s start.

Without MLflow, the registry is asked which version a name and alias mean now (one read-only SQLite
query, or one request to the tracking server), and that version's config and weights are read from
``<work>/cache/models/`` when an earlier command fetched them. A registered version never changes; the
key also holds its creation time, so a model deleted and registered again is fetched anew, and an
alias that moved names another version, so another entry. ``runs:/`` and ``models:/m-<id>`` URIs name
immutable logged models. Whatever cannot be told this way (another store, an error) goes through
MLflow as before.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

REGISTERED = re.compile(r"^models:/([^/@]+)(?:@([^/]+)|/(\d+))/?$")
IMMUTABLE = re.compile(r"^(runs:/[^/]+/.+|models:/m-[0-9a-f]+)/?$")
FILES = ("config.json", "weights.pt")


def version_key(uri: str, store: str, timeout: float = 5.0) -> str | None:
    """A key naming exactly the model files ``uri`` means in ``store`` now; None when it cannot be told
    cheaply."""
    if IMMUTABLE.match(uri):
        return f"{store}|{uri.rstrip('/')}"
    match = REGISTERED.match(uri)
    if not match:
        return None
    name, alias, version = match.groups()
    try:
        if store.startswith("sqlite:///"):
            found = _from_sqlite(Path(store[len("sqlite:///"):]), name, alias, version)
        elif store.startswith(("http://", "https://")):
            found = _from_server(store.rstrip("/"), name, alias, version, timeout)
        else:
            return None
    except (OSError, sqlite3.Error, ValueError, KeyError, TypeError):
        return None
    return None if found is None else f"{store}|{name}|{found[0]}|{found[1]}"


def _from_sqlite(db: Path, name: str, alias: str | None, version: str | None) -> tuple[int, int] | None:
    if not db.is_file():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as con:  # read-only: never creates a store
        if alias:
            rows = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                               (name, alias)).fetchall()
            if len(rows) != 1:
                return None
            version = rows[0][0]
        rows = con.execute("SELECT version, creation_time FROM model_versions WHERE name = ? AND version = ?",
                           (name, int(version))).fetchall()
    return (int(rows[0][0]), int(rows[0][1])) if len(rows) == 1 else None


def _from_server(base: str, name: str, alias: str | None, version: str | None, timeout: float) -> tuple[int, int]:
    from fmolab.tracking.store import authorized

    path, query = (("registered-models/alias", {"name": name, "alias": alias}) if alias else
                   ("model-versions/get", {"name": name, "version": version}))
    request = authorized(urllib.request.Request(f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"))
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        found = json.loads(resp.read())["model_version"]
    return int(found["version"]), int(found["creation_timestamp"])


def folder(root: Path, key: str) -> Path:
    return Path(root) / hashlib.sha1(key.encode()).hexdigest()[:20]


def lookup(root: Path, key: str | None) -> tuple[Path, Path] | None:
    """The cached ``(config.json, weights.pt)`` of ``key``, if an earlier command kept them."""
    if not key:
        return None
    here = folder(root, key)
    files = tuple(here / f for f in FILES)
    return files if all(f.is_file() for f in files) else None  # type: ignore[return-value]


def keep(root: Path, key: str | None, config_file: str | Path, weights: str | Path) -> None:
    """Copy a fetched model's files under ``key``: into a temporary folder, renamed when complete (two
    commands fetching at once: the first rename wins, the other's copy goes)."""
    if not key:
        return
    target = folder(root, key)
    if target.is_dir():
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for src, name in zip((config_file, weights), FILES):
            shutil.copyfile(src, tmp / name)
        (tmp / "key.txt").write_text(key.split("|", 1)[1] + "\n")  # what it is, for a person (no store URI)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a cache: failing to fill it costs the next start, nothing else
