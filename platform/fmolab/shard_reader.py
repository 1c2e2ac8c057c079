"""Random access to the rows of a dataset's shards: each footer read once at start-up (object-store
footers 16 at a time) or not at all where the dataset's row index (:data:`ROWS`, written with the
manifest) covers the shard, a bounded number of shards kept open afterwards, row references made on
demand."""
from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from fmolab import storage
from fmolab.shards import ShardError, open_parquet, read_manifest, shard_sizes

log = logging.getLogger("fmolab.data")


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
                 visit: Callable[[str, pq.ParquetFile], Any] | None = None,
                 indexed: Callable[[str, dict], Any] | None = None):
        """A shard the dataset's row index covers (:func:`read_row_index`) is not opened: its rows are
        counted from the index, and ``indexed(file, record)`` stands for ``visit``'s value (with a
        ``visit`` and no ``indexed``, every footer is read)."""
        self.root = storage.normalize(root)
        self.sizes = shard_sizes(self.root)  # from the listing: the opens need not ask for them
        files = list(self.sizes)
        single = files == [self.root]
        self.manifest = read_manifest(self.root) if not single else {}
        # only a manifest that names the index is asked for it (a render's; not clips', not synthetic ones)
        use_index = not single and (visit is None or indexed is not None) and self.manifest.get("row_index") == ROWS
        index = read_row_index(self.root, self.sizes) if use_index else {}
        self.columns = list(columns) if columns else None
        self.bad_shards: dict[str, str] = {}
        self._open: OrderedDict[str, pq.ParquetFile] = OrderedDict()
        readable, rows, self.visits = [], [], []
        opened = _opened({f: n for f, n in self.sizes.items() if f not in index}, visit)
        for f in files:
            if f in index:
                readable.append(f)
                rows.append(len(index[f]["objects"]))
                self.visits.append(indexed(f, index[f]) if indexed is not None else None)
                continue
            f, pf, seen = next(opened)
            if isinstance(pf, Exception):
                self.bad_shards[str(f)] = str(pf)
                continue
            readable.append(f)
            rows.append(pf.metadata.num_rows)
            self.visits.append(seen)
            if len(self._open) < self.OPEN_FILES:  # the first ones: preflight reads row 0 next
                self._open[f] = pf
        opened.close()
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


# ---------------------------------------------------------------- the row index

ROWS = "rows.arrow"  # beside manifest.json, which names it ("row_index"): what start-up needs of every shard
INDEXED = ("bytes", "row_groups", "objects", "indices")  # what it keeps of a shard (write_shard returns them)
_ROWS_SCHEMA = pa.schema([("file", pa.string()), ("bytes", pa.int64()), ("row_groups", pa.int32()),
                          ("objects", pa.list_(pa.string())), ("indices", pa.list_(pa.int64()))])


def _batch(part: list[tuple[str, dict]]) -> pa.RecordBatch:
    """Index records (``{bytes, row_groups, objects, indices}``) of a chunk of shards as one Arrow batch."""
    return pa.record_batch([
        pa.array([name for name, _ in part], pa.string()), pa.array([r["bytes"] for _, r in part], pa.int64()),
        pa.array([r["row_groups"] for _, r in part], pa.int32()),
        pa.array([list(r["objects"]) for _, r in part], pa.list_(pa.string())),
        pa.array([list(r["indices"]) for _, r in part], pa.list_(pa.int64()))], schema=_ROWS_SCHEMA)


class RowIndexWriter:
    """The dataset's :data:`ROWS` (an Arrow file, one record a shard), written ``chunk`` shards at a time
    as the caller adds them, so that no more than one chunk of records is ever held as Python objects
    (all of 10^6 sequences' held ~30 MB in the driver). The file is put in one atomic write on a clean
    exit from the ``with`` block; after an error the previous index stays."""

    def __init__(self, root: str | os.PathLike, chunk: int = 1024):
        self.path, self.chunk, self.pending = storage.join(root, ROWS), chunk, []
        self.sink = pa.BufferOutputStream()
        self.writer = pa.ipc.new_file(self.sink, _ROWS_SCHEMA, options=pa.ipc.IpcWriteOptions(compression="zstd"))

    def add(self, name: str, record: dict) -> None:
        self.pending.append((name, record))
        if len(self.pending) >= self.chunk:
            self._flush()

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Records already in Arrow (a batch of an earlier index, see :func:`index_batches`)."""
        self._flush()
        if batch.num_rows:
            self.writer.write_batch(batch)

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_batch(_batch(self.pending))
            self.pending = []

    def __enter__(self) -> "RowIndexWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self._flush()
        self.writer.close()
        if kind is None:
            storage.write_bytes(self.path, self.sink.getvalue().to_pybytes())


def index_batches(root: str | os.PathLike) -> Iterator[pa.RecordBatch]:
    """The dataset's :data:`ROWS` batch by batch (each decompressed when reached); none where there is no
    index (older datasets, synthetic ones: the footers say it all) or it cannot be read."""
    path = storage.join(root, ROWS)
    try:
        reader = pa.ipc.open_file(pa.BufferReader(storage.read_bytes(path)))
        names = list(_ROWS_SCHEMA.names)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i).select(names).cast(_ROWS_SCHEMA)
    except FileNotFoundError:
        return
    except Exception as exc:  # noqa: BLE001 - unreadable: the footers say it all too
        log.warning("row index %s is unreadable (%s): reading every shard's footer instead", path, exc)
        return


def read_row_index(root: str | os.PathLike, sizes: dict[str, int | None] | None = None) -> dict[str, dict]:
    """The dataset's :data:`ROWS` as ``{shard name: {bytes, row_groups, objects, indices}}``; with
    ``sizes`` (``{path: bytes}`` of a listing) only the shards of that size, keyed by path (a shard
    rendered again since holds other rows). Empty where there is no index or it cannot be read."""
    records = [r for batch in index_batches(root) for r in batch.to_pylist()]
    index = {r.pop("file"): r for r in records}
    if sizes is None:
        return index
    return {f: index[name] for f, size in sizes.items()
            if (name := storage.basename(f)) in index and size is not None and index[name]["bytes"] == size}
