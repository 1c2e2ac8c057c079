"""All-or-nothing output folders: a reader (or a user) never sees half of one."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fmolab import storage


@contextmanager
def atomic_dir(out: str | os.PathLike, last: tuple[str, ...] = ("summary.json",)) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out`` whole, on an error it is removed and
    ``out`` is left as it was. ``out`` may be a URI: the finished folder is then uploaded file by file
    (each atomically), the files named in ``last`` after the rest, so their presence means it is whole."""
    if storage.is_remote(out):
        tmp = Path(tempfile.mkdtemp(prefix=".fmolab-out-"))
        try:
            yield tmp
            storage.remove(out)
            storage.upload_tree(tmp, out, last=last)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
