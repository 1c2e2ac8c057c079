"""Random access to the rows of a dataset's shards: each footer read once at start-up (object-store
footers 16 at a time), a bounded number of shards kept open afterwards, row references made on demand."""
from __future__ import annotations

import bisect
import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import pyarrow.parquet as pq

from fmolab import storage
from fmolab.shards import ShardError, open_parquet, read_manifest, shard_sizes


@dataclass
class RowRef:
    """Where a row lives, for error messages and lazy reads."""

    file: str  # path or URI
    row: int


def _opened(files: dict[str, int | None], visit=None, chunk: int = 256) -> Iterator[tuple[str, Any, Any]]:
    """``(file, its open Parquet file or the error, visit's value)`` for ``{file: size}`` in order;
    object-store footers are fetched (and visited) 16 at a time (each a round trip: 10^4 shards one by
    one took minutes), the listed size given (else a second round trip asks for it), a chunk at a time
    so that few are held at once."""
    def attempt(f: str):
        try:
            pf = open_parquet(f, size=files[f])
        except Exception as exc:  # the caller names the shard
            return exc, None
        return pf, visit(f, pf) if visit is not None else None

    names = list(files)
    if not names or not storage.is_remote(names[0]):  # local footers: a file read each, no round trip
        yield from ((f, *attempt(f)) for f in names)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        for i in range(0, len(names), chunk):
            part = names[i:i + chunk]
            yield from ((f, *got) for f, got in zip(part, pool.map(attempt, part)))


class RowRefs:
    """Every row of a reader's shards as :class:`RowRef`, made when asked for (a list of 10^6 of them
    held ~100 MB): files and their row counts only."""

    def __init__(self, files: list[str], rows: list[int]):
        self.files = files
        self.starts = list(itertools.accumulate(rows, initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> RowRef:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.starts, i) - 1
        return RowRef(self.files[k], i - self.starts[k])

    def __iter__(self) -> Iterator[RowRef]:
        for f, lo, hi in zip(self.files, self.starts, self.starts[1:]):
            for r in range(hi - lo):
                yield RowRef(f, r)


class ShardReader:
    """Random access to the rows of a dataset, reading one row's columns at a time.

    Each shard's footer is read once while the shards are scanned; ``visit(file, parquet_file)`` runs
    then, beside the read (on a reader thread for object storage), and its values are ``visits``, in
    the order of ``files``. Afterwards the first :attr:`OPEN_FILES` shards stay open (an open footer
    holds ~60 KB: 10^4 of them held GBs), and a row of another opens its shard again.
    Unreadable shards are skipped and counted in ``bad_shards`` (named with the error); a dataset
    with no readable shard at all raises :class:`ShardError`.
    """

    OPEN_FILES = 64

    def __init__(self, root: str | os.PathLike, columns: Iterable[str] | None = None,
                 visit: Callable[[str, pq.ParquetFile], Any] | None = None):
        self.root = storage.normalize(root)
        self.sizes = shard_sizes(self.root)  # from the listing: the opens need not ask for them
        files = list(self.sizes)
        self.manifest = read_manifest(self.root) if files != [self.root] else {}
        self.columns = list(columns) if columns else None
        self.bad_shards: dict[str, str] = {}
        self._open: OrderedDict[str, pq.ParquetFile] = OrderedDict()
        readable, rows, self.visits = [], [], []
        for f, pf, seen in _opened(self.sizes, visit):
            if isinstance(pf, Exception):
                self.bad_shards[str(f)] = str(pf)
                continue
            readable.append(f)
            rows.append(pf.metadata.num_rows)
            self.visits.append(seen)
            if len(self._open) < self.OPEN_FILES:  # the first ones: preflight reads row 0 next
                self._open[f] = pf
        if not readable:
            raise ShardError(f"no readable shard under {self.root}: {self.bad_shards}")
        self.refs = RowRefs(readable, rows)

    def _keep(self, f: str, pf: pq.ParquetFile) -> pq.ParquetFile:
        self._open[f] = pf
        self._open.move_to_end(f)
        while len(self._open) > self.OPEN_FILES:
            self._open.popitem(last=False)
        return pf

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def files(self) -> list[str]:
        """The readable shards, in order."""
        return self.refs.files

    def parquet(self, file: str) -> pq.ParquetFile:
        """The open Parquet file of one of this reader's shards (opened again if it was closed)."""
        pf = self._open.get(file)
        return self._keep(file, pf if pf is not None else open_parquet(file, size=self.sizes.get(file)))

    def row(self, i: int) -> dict:
        ref = self.refs[i]
        pf = self.parquet(ref.file)
        # Row groups are small (one shard = a few dozen rows), so reading the group is cheap.
        offset = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if ref.row < offset + n:
                table = pf.read_row_group(g, columns=self.columns)
                out = table.slice(ref.row - offset, 1).to_pylist()[0]
                out["_source"] = f"{storage.basename(ref.file)}#{ref.row}"
                return out
            offset += n
        raise IndexError(i)

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self.row(i)

    def column(self, name: str) -> list:
        return [v for f in self.files for v in self.parquet(f).read(columns=[name]).column(name).to_pylist()]
