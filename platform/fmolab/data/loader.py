"""FMO loader: indexed, filterable, split-by-object access to sequence shards, decoding lazily.

A :class:`Sequence` holds a row's compressed bytes; WebP is decoded only when a blur or frames are
asked for, and only up to the last frame needed (animated WebP decodes sequentially). Images stored
cropped to the row's ``box`` are pasted back into a full-size zero canvas after decoding. With a row
cache (``data.row_cache_mb``) rows and their decoded images are kept per process, least recently
used out first: a small dataset trained for many epochs is read and decoded once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import OrderedDict
from typing import Iterable

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from fmolab import storage
from fmolab.data.lru import ByteLRU
from fmolab.media.codecs import decode_webp
from fmolab.shard_reader import ShardReader
from fmolab.shards import OPTIONAL_COLUMNS, SEQUENCE_SCHEMA, ShardError, paste, row_index

log = logging.getLogger("fmolab.data")

COLUMNS = ["seq_id", "index", "object_id", "texture_id", "params", "width", "height", "num_frames",
           "frames", "blurs", "blur_names", "blur_spans"]
# Read when the shard has it (older shards do not: their images are full size).
OPTIONAL = list(OPTIONAL_COLUMNS)
SPLITS = ("all", "train", "val")
OPEN_FILES = 256  # shards kept open per loader (a shuffled epoch over more opens them again)


class RowError(ShardError):
    """One row cannot be used; ``source`` is ``"<shard file>#<row>"``."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def object_hash(object_id: str) -> float:
    """Stable (process- and platform-independent) position of an object id in [0, 1)."""
    return int(hashlib.sha1(object_id.encode()).hexdigest()[:12], 16) / 16**12


def val_objects(object_ids: Iterable[str], val_fraction: float) -> set[str]:
    """The objects held out for validation: the ``val_fraction`` with the smallest hashes.

    Ranking by hash (not thresholding it) keeps both splits non-empty whenever there are >= 2 objects.
    """
    ids = sorted(set(object_ids), key=lambda o: (object_hash(o), o))
    if val_fraction <= 0 or len(ids) < 2:
        return set()
    n = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    return set(ids[:n])


@functools.lru_cache(maxsize=64)  # asked once per item, with one or two distinct arguments per dataset
def frame_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` evenly spaced sub-frame indices: the frame nearest each centre of ``count`` slices
    (read-only: the array is shared)."""
    if count > num_frames:
        raise ValueError(f"data.frames_per_sample = {count} but the sequences have only {num_frames} frames")
    idx = np.minimum(((np.arange(count) + 0.5) * num_frames / count).astype(np.int64), num_frames - 1)
    idx.flags.writeable = False
    return idx


def manifest_size(manifest: dict) -> tuple[int, int] | None:
    """(height, width) a dataset's manifest gives (render cluster: under ``render``), if any."""
    m = manifest.get("render", manifest)
    return (int(m["height"]), int(m["width"])) if isinstance(m, dict) and "width" in m and "height" in m else None


class Sequence:
    """One sequence row, undecoded until asked. Images come back as uint8 ``[..., H, W, 4]``."""

    def __init__(self, row: dict, source: str, cache: ByteLRU | None = None, key=None):
        self.source = source
        self._cache, self._key = cache, key  # decoded images are kept there, under (key, what)
        for col in COLUMNS:
            if row.get(col) is None:
                raise RowError(source, f"missing value in column {col!r}")
        self.seq_id: str = row["seq_id"]
        self.index: int = row["index"]
        self.object_id: str = row["object_id"]
        self.texture_id: str = row["texture_id"]
        self.width, self.height, self.num_frames = int(row["width"]), int(row["height"]), int(row["num_frames"])
        self._params = row["params"]
        self.box: list[int] | None = row.get("box")
        self._frames: bytes = row["frames"]
        self._blurs: list[bytes] = row["blurs"]
        self.blur_names: list[str] = list(row["blur_names"])
        self.blur_spans: list[list[float]] = [list(s) for s in row["blur_spans"]]
        if not (len(self._blurs) == len(self.blur_names) == len(self.blur_spans)):
            raise RowError(source, "blurs, blur_names and blur_spans differ in length")

    @property
    def params(self) -> dict:
        try:
            return json.loads(self._params)
        except json.JSONDecodeError as exc:
            raise RowError(self.source, f"params is not JSON: {exc}") from exc

    def span(self, name: str) -> list[float]:
        return self.blur_spans[self._blur_pos(name)]

    def _blur_pos(self, name: str) -> int:
        if name not in self.blur_names:
            raise RowError(self.source, f"no blur {name!r} (has {self.blur_names})")
        return self.blur_names.index(name)

    def _check(self, img: np.ndarray, what: str) -> np.ndarray:
        """The full-size image: ``img`` pasted at the row's box (a crop must match the box exactly)."""
        try:
            return paste(img, self.box, self.height, self.width)
        except ValueError as exc:
            raise RowError(self.source, f"{what}: {exc}") from exc

    @property
    def nbytes(self) -> int:
        return len(self._frames) + sum(len(b) for b in self._blurs)

    def memo(self, what, make) -> np.ndarray:
        """``make()`` once per cached row: decoded images, and what is derived from them alone (callers
        get the kept array: they copy before changing it)."""
        if self._cache is None:
            return make()
        key = (self._key, what)
        arr = self._cache.get(key)
        if arr is None:
            arr = make()
            self._cache.put(key, arr, arr.nbytes)
        return arr

    def _blur(self, name: str) -> np.ndarray:
        arr = decode_webp(self._blurs[self._blur_pos(name)], error=self._error, what=f"blur {name!r} WebP")[0]
        return self._check(arr, f"blur {name!r}")

    def blur(self, name: str) -> np.ndarray:
        """RGBA blur ``[H,W,4]`` uint8."""
        return self.memo(f"blur {name}", lambda: self._blur(name)).copy()

    def blurs(self, names: tuple[str, ...]) -> np.ndarray:
        """RGBA blurs ``[K,H,W,4]`` uint8 in the order of ``names`` (kept stacked: a format asks for them all)."""
        return self.memo(("blurs", names), lambda: np.stack([self._blur(n) for n in names])).copy()

    def frames(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Sharp RGBA sub-frames ``[T,H,W,4]`` uint8 (all when ``indices`` is None)."""
        if self._cache is None:
            frames = decode_webp(self._frames, frames=indices, error=self._error, what="frames WebP")
            return self._check(frames, "frames")
        every = self.memo("frames", lambda: self._check(
            decode_webp(self._frames, error=self._error, what="frames WebP"), "frames"))
        if indices is None:
            return every.copy()
        return every[np.asarray(indices if isinstance(indices, np.ndarray) else list(indices), dtype=np.int64)]

    def _error(self, message: str) -> RowError:
        return RowError(self.source, message)

    def pil(self) -> tuple[list[Image.Image], list[Image.Image]]:
        """(blurs, frames) as Pillow images, the thesis's loader interface."""
        return ([Image.fromarray(self.blur(n), "RGBA") for n in self.blur_names],
                [Image.fromarray(f, "RGBA") for f in self.frames()])


class FMOLoader:
    """Rows of a sequence dataset, optionally one split (by object) and an ``index`` range.

    Shards under the dataset folder that hold another schema (the ``backgrounds/`` clips) are left
    out; shards lacking a sequence column have their rows skipped and counted in ``skipped``.
    """

    def __init__(self, root, split: str = "all", val_fraction: float = 0.1,
                 index_range: tuple[int, int] | None = None, cache_groups: int = 4, cache_mb: float = 0.0):
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: must be one of {SPLITS}")
        self.root = storage.normalize(root)
        self.skipped: dict[str, str] = {}
        self.files: list[str] = []  # paths or URIs
        self.row_groups: dict[str, int] = {}  # per file (Ray Data reads by row group)
        refs, objects, indices = [], [], []

        def visit(f: str, pf: pq.ParquetFile):  # beside each footer's read: the schema and the rows' objects
            names = set(pf.schema_arrow.names)
            if "clip_id" in names and "blurs" not in names:
                return None  # a background dataset nested under the sequences (data.backgrounds default)
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                return missing, pf.metadata.num_rows
            return (*row_index(pf), pf.metadata.num_row_groups)

        def indexed(f: str, record: dict):  # a shard the dataset's row index covers: no footer read
            return record["objects"], record["indices"], record["row_groups"]

        # raises ShardError for a missing or wholly unreadable path
        reader = ShardReader(self.root, visit=visit, indexed=indexed)
        self.sizes = reader.sizes  # bytes per shard, as listed (Ray Data's readers open with them)
        for f, seen in zip(reader.files, reader.visits):
            if seen is None:
                continue
            if len(seen) == 2:
                missing, n = seen
                for r in range(n):
                    self._skip(f"{storage.basename(f)}#{r}", f"shard lacks columns {missing}")
                continue
            oids, idxs, self.row_groups[f] = seen
            self.files.append(f)
            for r, (oid, idx) in enumerate(zip(oids, idxs)):
                refs.append((f, r))
                objects.append(oid or "")
                indices.append(idx if idx is not None else -1)
        self.manifest = reader.manifest
        # A cropped image cannot show that its row's width/height is wrong: the manifest can.
        self.size = manifest_size(self.manifest)
        self.skipped.update(reader.bad_shards)
        if not refs:
            raise ShardError(f"{self.root} holds no readable sequence rows (schema {SEQUENCE_SCHEMA.names}); "
                             f"skipped: {self.skipped}")
        self.val_objects = val_objects(objects, val_fraction)
        keep = []
        for k, (oid, idx) in enumerate(zip(objects, indices)):
            if split == "train" and oid in self.val_objects or split == "val" and oid not in self.val_objects:
                continue
            if index_range is not None and not (index_range[0] <= idx < index_range[1]):
                continue
            keep.append(k)
        self.refs = [refs[k] for k in keep]
        self.object_ids = [objects[k] for k in keep]
        self.split = split
        self._cache_groups = cache_groups
        self._handles: OrderedDict[str, tuple[pq.ParquetFile, list[int]]] = OrderedDict()  # at most OPEN_FILES
        self._groups: OrderedDict = OrderedDict()
        self._rows = ByteLRU(cache_mb * 2**20) if cache_mb > 0 else None

    def _skip(self, source: str, reason: str) -> None:
        if source not in self.skipped:
            log.warning("skipping row %s: %s", source, reason)
        self.skipped[source] = reason

    def __len__(self) -> int:
        return len(self.refs)

    # Open files and cached row groups do not travel to DataLoader workers / Ray actors.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_groups"] = OrderedDict(), OrderedDict()
        state["_rows"] = self._rows.empty() if self._rows is not None else None
        return state

    def _group(self, f: str, row: int) -> tuple[object, int]:
        if f not in self._handles:
            # a remote shard is read from this node's cached copy: every row group is read many times
            pf = pq.ParquetFile(storage.local(f), memory_map=True)
            starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)])
            self._handles[f] = (pf, list(starts))
            if len(self._handles) > OPEN_FILES:  # an open footer holds ~60 KB: 10^4 shards held GBs
                self._handles.popitem(last=False)
        self._handles.move_to_end(f)
        pf, starts = self._handles[f]
        g = int(np.searchsorted(starts, row, side="right") - 1)
        key = (f, g)
        if key not in self._groups:
            self._groups[key] = pf.read_row_group(g, columns=COLUMNS + OPTIONAL)  # absent ones are left out
            if len(self._groups) > self._cache_groups:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key], row - starts[g]

    def get(self, i: int) -> Sequence:
        """Row ``i`` of this (filtered) loader; raises :class:`RowError` for a corrupt row."""
        if self._rows is not None and (hit := self._rows.get(i)) is not None:
            return hit
        f, r = self.refs[i]
        source = f"{storage.basename(f)}#{r}"
        try:
            table, local = self._group(f, r)
            row = table.slice(local, 1).to_pylist()[0]
        except storage.CacheFullError:
            raise  # this node's disk, not the row: skipping rows would only hide it
        except Exception as exc:
            raise RowError(source, f"unreadable row: {exc}") from exc
        seq = Sequence(row, source, self._rows, key=(f, r))
        if self.size is not None and (seq.height, seq.width) != self.size:
            raise RowError(source, f"row is {seq.width}x{seq.height}, the manifest says {self.size[1]}x{self.size[0]}")
        if self._rows is not None:
            self._rows.put(i, seq, seq.nbytes)
        return seq

    def __getitem__(self, i: int) -> Sequence:
        return self.get(i)

    def source(self, i: int) -> str:
        f, r = self.refs[i]
        return f"{storage.basename(f)}#{r}"
