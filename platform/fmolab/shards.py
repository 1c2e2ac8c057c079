"""Shards: the contract between rendering and training.

A dataset is a folder of Parquet files plus ``manifest.json``. One row is one sequence:

==================  =====================  ==============================================
column              type                   meaning
==================  =====================  ==============================================
seq_id              string                 ``"<dataset seed>-<index>"``, unique in the dataset
index               int64                  position in the dataset (0..N-1); gaps = rejected
seed                int64                  the seed this row was rendered from
object_id           string                 e.g. ``"procedural/torus/17"`` or an OBJ path stem
texture_id          string                 e.g. ``"procedural/voronoi/3"`` or an image stem
params              string (JSON)          every sampled parameter (trajectory, rotation...)
width, height       int32                  render resolution
num_frames          int32                  sharp sub-frames in ``frames``
frames              binary                 animated RGBA WebP of the sharp sub-frames, cropped to ``box``
blurs               list<binary>           one RGBA WebP per exposure span, cropped to ``box``
blur_names          list<string>           e.g. ``["full", "first", "second"]``
blur_spans          list<list<float>>      exposure span of each blur in [0, 1] time
blur_coverage       list<float>            mean alpha of each blur over the full image (coverage statistic)
box                 list<int32> or null    ``[y0, x0, y1, x1]`` (half-open): where ``frames`` and ``blurs``
                                           sit in the ``height x width`` image, the union of alpha > 0 over
                                           all of them; outside it every pixel is 0. Null (or no column, in
                                           older datasets): images are stored full size
==================  =====================  ==============================================

Cropping to ``box`` is for read speed: WebP decode time scales with pixels and the object covers a
small part of the image. Read images back with :func:`paste` (or :func:`decode_sequence`). The
footer's key-value metadata holds a copy of ``object_id`` and ``index`` (:data:`ROW_INDEX`, JSON):
what a loader needs of every row at start-up, in the footer's one read. A rendered dataset also has
``rows.arrow`` (:data:`fmolab.shard_reader.ROWS`, named by its manifest's ``row_index``): the same facts
for every shard with its size and row groups, in one file, so that start-up opens no shard at all.

Background datasets use the columns ``clip_id, source, width, height, num_frames, frames`` (frames
is an animated RGB(A) WebP of consecutive video frames).

A dataset lives in a local folder or at an object-store URI (:mod:`fmolab.storage`). Shards are
written atomically (a hidden temporary, then a rename or a server-side copy), so a reader never sees
half a shard and a rerun can tell finished work from unfinished work by the listing alone.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmolab import storage
from fmolab.media.codecs import decode_webp

MANIFEST = "manifest.json"
# Rows per Parquet row group: the unit a streaming reader fetches (one range request of ~2 MB at
# 320x240), whatever the shard (object) size.
ROW_GROUP_ROWS = 64
# the footer's copy of each row's object and index: what a loader scans at start-up, in the one read
# of the footer (on an object store the columns themselves were a round trip more per shard)
ROW_INDEX = b"fmolab.rows"

SEQUENCE_SCHEMA = pa.schema(
    [
        ("seq_id", pa.string()),
        ("index", pa.int64()),
        ("seed", pa.int64()),
        ("object_id", pa.string()),
        ("texture_id", pa.string()),
        ("params", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_frames", pa.int32()),
        ("frames", pa.binary()),
        ("blurs", pa.list_(pa.binary())),
        ("blur_names", pa.list_(pa.string())),
        ("blur_spans", pa.list_(pa.list_(pa.float32()))),
        ("blur_coverage", pa.list_(pa.float32())),
        ("box", pa.list_(pa.int32())),
    ]
)
# Columns a writer may leave out (written as null): added after datasets existed.
OPTIONAL_COLUMNS = ("box",)

BACKGROUND_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_frames", pa.int32()),
        ("frames", pa.binary()),
    ]
)


class ShardError(RuntimeError):
    """A dataset path or a row of it cannot be read; the message says which and why."""


# ---------------------------------------------------------------- content box


def content_box(frames: np.ndarray, blurs: np.ndarray, pad: int = 0) -> list[int]:
    """``[y0, x0, y1, x1]`` (half-open) holding every alpha > 0 of ``frames [N,H,W,4]`` and ``blurs [K,H,W,4]``.

    ``pad`` widens it (clipped to the image). No visible pixel at all gives ``[0, 0, 1, 1]``: a WebP
    cannot be empty.
    """
    frames, blurs = np.asarray(frames), np.asarray(blurs)
    mask = (frames[..., 3] > 0).any(0)
    if blurs.size:
        mask |= (blurs[..., 3] > 0).any(0)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return [0, 0, 1, 1]
    h, w = mask.shape
    return [max(0, int(rows[0]) - pad), max(0, int(cols[0]) - pad),
            min(h, int(rows[-1]) + 1 + pad), min(w, int(cols[-1]) + 1 + pad)]


def crop(images: np.ndarray, box) -> np.ndarray:
    """``images[..., y0:y1, x0:x1, :]``, contiguous (for the encoder)."""
    y0, x0, y1, x1 = box
    return np.ascontiguousarray(images[..., y0:y1, x0:x1, :])


def paste(cropped: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """Put ``cropped [..., h, w, C]`` at ``box`` in a zero ``[..., height, width, C]`` canvas.

    ``box`` None means "not cropped": the input must already be ``height x width`` and is returned as is.
    Raises ValueError when the sizes disagree.
    """
    if box is None:
        if cropped.shape[-3:-1] != (height, width):
            raise ValueError(f"image is {cropped.shape[-2]}x{cropped.shape[-3]}, expected {width}x{height}")
        return cropped
    y0, x0, y1, x1 = (int(v) for v in box)
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"box {[y0, x0, y1, x1]} does not fit a {width}x{height} image")
    if cropped.shape[-3:-1] != (y1 - y0, x1 - x0):
        raise ValueError(f"image is {cropped.shape[-2]}x{cropped.shape[-3]}, its box is {x1 - x0}x{y1 - y0}")
    out = np.zeros(cropped.shape[:-3] + (height, width, cropped.shape[-1]), cropped.dtype)
    out[..., y0:y1, x0:x1, :] = cropped
    return out


def decode_sequence(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """All sharp frames ``[N,H,W,4]`` and blurs ``[K,H,W,4]`` (uint8, full size) of a sequence row dict."""
    box, h, w = row.get("box"), int(row["height"]), int(row["width"])
    try:
        frames = paste(decode_webp(row["frames"], error=ShardError), box, h, w)
        blurs = [paste(decode_webp(b, error=ShardError)[0], box, h, w) for b in row["blurs"]]
    except ValueError as exc:
        raise ShardError(f"{row.get('seq_id')}: {exc}") from exc
    return frames, np.stack(blurs) if blurs else np.zeros((0, h, w, 4), np.uint8)


# ---------------------------------------------------------------- writing


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> dict:
    """Write a Parquet file (local path or URI) so that it either exists complete or not at all;
    ``{"bytes", "row_groups"}`` of what was written."""
    path = storage.normalize(path)
    folder = Path(path).parent if not storage.is_remote(path) else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{storage.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        # Images are already compressed: Parquet compression would only cost time.
        pq.write_table(table, tmp, compression="none", use_dictionary=["object_id", "texture_id", "source"],
                       row_group_size=ROW_GROUP_ROWS)
        written = {"bytes": os.path.getsize(tmp), "row_groups": pq.read_metadata(tmp).num_row_groups}
        if folder is not None:
            os.replace(tmp, path)
        else:
            storage.upload(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return written


def write_shard(rows: list[dict], path: str | os.PathLike, schema: pa.Schema = SEQUENCE_SCHEMA) -> dict:
    """Write rows (dicts keyed by column) as one atomic shard; missing columns are an error, except
    :data:`OPTIONAL_COLUMNS` (written as null). Returns what the dataset's row index keeps of it
    (:data:`fmolab.shard_reader.INDEXED`: bytes, row groups, and for sequences the rows' objects and
    indices)."""
    missing = [n for n in schema.names if rows and n not in rows[0] and n not in OPTIONAL_COLUMNS]
    if missing:
        raise ValueError(f"shard rows lack columns {missing}")
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    index = {}
    if {"object_id", "index"} <= set(schema.names):
        index = {c: table.column(c).to_pylist() for c in ("object_id", "index")}
        table = table.replace_schema_metadata({**(schema.metadata or {}), ROW_INDEX: json.dumps(index)})
    written = write_table_atomic(table, path)
    return {**written, "objects": index["object_id"], "indices": index["index"]} if index else written


def row_index(pf) -> tuple[list, list]:
    """``(object_id, index)`` of every row of an open shard: from the footer's copy (:data:`ROW_INDEX`),
    or, in a shard written before it, from the columns."""
    meta = pf.metadata.metadata or {}
    if ROW_INDEX in meta:
        index = json.loads(meta[ROW_INDEX])
        return index["object_id"], index["index"]
    table = pf.read(columns=["object_id", "index"])
    return table.column("object_id").to_pylist(), table.column("index").to_pylist()


def write_json_atomic(obj: Any, path: str | os.PathLike) -> str:
    return storage.write_json(path, obj)


# ---------------------------------------------------------------- reading


def open_parquet(path: str | os.PathLike, memory_map: bool = False, size: int | None = None):
    """A Parquet file by path or URI: a ``pq.ParquetFile``, or for a remote one with its ``size`` (from a
    listing: :func:`shard_sizes`) a :class:`RemoteParquet`, read by ranges without asking for the size
    (should the object have changed since it was listed, it is opened again, asking)."""
    if not storage.is_remote(path):
        return pq.ParquetFile(storage.normalize(path), memory_map=memory_map)
    fs, p = storage.filesystem(path)
    if size is not None:
        try:
            return RemoteParquet(fs, p, size)
        except Exception:
            pass
    return pq.ParquetFile(fs.open_input_file(p))


class RemoteParquet:
    """The part of ``pq.ParquetFile`` fmolab reads (``metadata``, ``schema_arrow``, ``read``,
    ``read_row_group``) of an object of a known size: through a dataset fragment, which takes the
    size (pyarrow's ``open_input_file`` asks the store for it: a request more per file), reads the
    footer in one ranged request and each read's column chunks in as few as it can."""

    def __init__(self, fs, path: str, size: int):
        import pyarrow.dataset as pads

        self._fragment = pads.ParquetFileFormat().make_fragment(path, filesystem=fs, file_size=size)
        self.metadata = self._fragment.metadata  # the footer's one read (a wrong size fails here)
        self.schema_arrow = self._fragment.physical_schema

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return self._fragment.to_table(columns=columns)

    def read_row_group(self, i: int, columns: list[str] | None = None) -> pa.Table:
        return self._fragment.subset(row_group_ids=[i]).to_table(columns=columns)


def shard_files(root: str | os.PathLike) -> list[str]:
    """The finished shards of a dataset (temporary files of unfinished writes excluded)."""
    return list(shard_sizes(root))


def shard_sizes(root: str | os.PathLike) -> dict[str, int | None]:
    """``{shard: bytes}`` of :func:`shard_files`, from one listing (None: a single file given)."""
    root = storage.normalize(root)
    if storage.is_file(root):
        return {root: None}
    if not storage.exists(root):
        raise ShardError(f"dataset path {root} does not exist: render one with `fmolab render` first")
    # Top level only: background clips live in a sub-folder (<dataset>/backgrounds) with their own schema.
    files = storage.list_sizes(root, ".parquet")
    if not files:
        raise ShardError(f"dataset path {root} holds no .parquet shards")
    return files


def read_manifest(root: str | os.PathLike) -> dict:
    path = storage.join(root, MANIFEST)
    try:
        return json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path} is not valid JSON: {exc}") from exc
