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
frames              binary                 animated RGBA WebP of the sharp sub-frames
blurs               list<binary>           one RGBA WebP per exposure span
blur_names          list<string>           e.g. ``["full", "first", "second"]``
blur_spans          list<list<float>>      exposure span of each blur in [0, 1] time
blur_coverage       list<float>            mean alpha of each blur (coverage statistic)
==================  =====================  ==============================================

Background datasets use the columns ``clip_id, source, width, height, num_frames, frames`` (frames
is an animated RGB(A) WebP of consecutive video frames).

Shards are written atomically (temporary file + rename), so a reader never sees half a shard and
a rerun can tell finished work from unfinished work by the files alone.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageSequence

MANIFEST = "manifest.json"

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
    ]
)

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


# ---------------------------------------------------------------- WebP encoding


def encode_webp(images: np.ndarray, quality: int = 80, method: int = 4, lossless: bool = False) -> bytes:
    """Encode ``[H,W,C]`` (one image) or ``[N,H,W,C]`` (animation) uint8 RGB/RGBA as WebP bytes."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"encode_webp wants uint8 pixels, got {images.dtype}")
    frames = images[None] if images.ndim == 3 else images
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"encode_webp wants [H,W,3|4] or [N,H,W,3|4], got shape {images.shape}")
    mode = "RGBA" if frames.shape[-1] == 4 else "RGB"
    pil = [Image.fromarray(f, mode) for f in frames]
    buf = io.BytesIO()
    options: dict[str, Any] = dict(format="WEBP", quality=quality, method=method, lossless=lossless)
    if len(pil) > 1:
        # minimize_size off: keyframe search costs much time for little gain on short clips.
        options.update(save_all=True, append_images=pil[1:], duration=40, loop=0, minimize_size=False)
    pil[0].save(buf, **options)
    return buf.getvalue()


def decode_webp(data: bytes, mode: str = "RGBA") -> np.ndarray:
    """Decode WebP bytes into ``[N,H,W,C]`` uint8 (N = 1 for a still image)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            frames = [np.asarray(f.convert(mode)) for f in ImageSequence.Iterator(img)]
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ShardError(f"undecodable WebP ({len(data)} bytes): {exc}") from exc
    return np.stack(frames)


# ---------------------------------------------------------------- writing


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a Parquet file so that it either exists complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # Images are already compressed: Parquet compression would only cost time.
        pq.write_table(table, tmp, compression="none", use_dictionary=["object_id", "texture_id", "source"])
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_shard(rows: list[dict], path: str | os.PathLike, schema: pa.Schema = SEQUENCE_SCHEMA) -> Path:
    """Write rows (dicts keyed by column) as one atomic shard; missing columns are an error."""
    missing = [n for n in schema.names if rows and n not in rows[0]]
    if missing:
        raise ValueError(f"shard rows lack columns {missing}")
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    return write_table_atomic(table, path)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- reading


def shard_files(root: str | os.PathLike) -> list[Path]:
    """The finished shards of a dataset folder (temporary files of unfinished writes excluded)."""
    root = Path(root)
    if not root.exists():
        raise ShardError(f"dataset path {root} does not exist: render one with `fmolab render` first")
    if root.is_file():
        return [root]
    # Top level only: background clips live in a sub-folder (<dataset>/backgrounds) with their own schema.
    files = sorted(p for p in root.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise ShardError(f"dataset path {root} holds no .parquet shards")
    return files


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path} is not valid JSON: {exc}") from exc


@dataclass
class RowRef:
    """Where a row lives, for error messages and lazy reads."""

    file: Path
    row: int


class ShardReader:
    """Random access to the rows of a dataset, reading one row's columns at a time.

    Unreadable shards are skipped and counted in ``bad_shards`` (named with the error); a dataset
    with no readable shard at all raises :class:`ShardError`.
    """

    def __init__(self, root: str | os.PathLike, columns: Iterable[str] | None = None):
        self.root = Path(root)
        self.manifest = read_manifest(self.root) if self.root.is_dir() else {}
        self.columns = list(columns) if columns else None
        self.refs: list[RowRef] = []
        self.bad_shards: dict[str, str] = {}
        self._files: dict[Path, pq.ParquetFile] = {}
        for f in shard_files(self.root):
            try:
                pf = pq.ParquetFile(f)
            except Exception as exc:
                self.bad_shards[str(f)] = str(exc)
                continue
            self._files[f] = pf
            self.refs.extend(RowRef(f, i) for i in range(pf.metadata.num_rows))
        if not self._files:
            raise ShardError(f"no readable shard under {self.root}: {self.bad_shards}")

    def __len__(self) -> int:
        return len(self.refs)

    def row(self, i: int) -> dict:
        ref = self.refs[i]
        pf = self._files[ref.file]
        # Row groups are small (one shard = a few dozen rows), so reading the group is cheap.
        offset = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if ref.row < offset + n:
                table = pf.read_row_group(g, columns=self.columns)
                out = table.slice(ref.row - offset, 1).to_pylist()[0]
                out["_source"] = f"{ref.file.name}#{ref.row}"
                return out
            offset += n
        raise IndexError(i)

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self.row(i)

    def column(self, name: str) -> list:
        return [v for pf in self._files.values() for v in pf.read(columns=[name]).column(name).to_pylist()]
