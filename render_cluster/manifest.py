"""The dataset's self-documentation: ``manifest.json`` built from the shard files and the per-shard
summaries the render actors wrote (so shards of earlier, interrupted runs are accounted for too)."""
from __future__ import annotations

import datetime as _dt
import sys
from collections import Counter

import pyarrow as pa

from fmolab import storage
from fmolab.config import Config, to_dict
from fmolab.shard_reader import INDEXED, ROWS, RowIndexWriter, index_batches
from fmolab.shards import MANIFEST, SEQUENCE_SCHEMA, open_parquet

SUMMARY_DIR = ".render"  # per-shard summaries
INDEX_CHUNK = 256  # shards whose summaries are read and indexed at a time: the rows held at once


def shard_path(out: str, block: int) -> str:
    return storage.join(out, f"part-{block:05d}.parquet")


def finished_blocks(out: str) -> set[int]:
    """Blocks whose shard exists (one listing, local or remote)."""
    names = {storage.basename(p) for p in storage.list_files(out, ".parquet")}
    return {int(n[5:10]) for n in names if n.startswith("part-") and n[5:10].isdigit()}


def _previous(out: str, render_cfg) -> tuple[dict[int, dict], str]:
    """The entries of the dataset's last manifest that can stand for their shard (same block bounds,
    written with their own counts), and its Blender version; nothing if there is none or it is unreadable."""
    try:
        old = storage.read_json(storage.join(out, MANIFEST))
        entries = {int(e["block"]): e for e in old.get("shards", []) if "rejections" in e}
        blender = old.get("software", {}).get("blender", "unknown")
    except Exception:  # missing, partial or from an older version: every entry is read again
        return {}, "unknown"
    return {b: e for b, e in entries.items() if e.get("indices") == block_indices(render_cfg, b)}, blender


def block_indices(render_cfg, b: int) -> list[int]:
    """``[first, end)`` of the sequence indices block ``b`` holds."""
    return [b * render_cfg.shard_rows, min(render_cfg.num_sequences, (b + 1) * render_cfg.shard_rows)]


def _read_entry(out: str, render_cfg, b: int, summary: str | None) -> tuple[dict, dict | None]:
    """One shard's entry from its summary (the shard's footer only where the summary is missing), and
    its rows for the row index (None: a summary from before the index)."""
    name = storage.basename(shard_path(out, b))
    s = storage.read_json(summary) if summary else {}
    rows = s["rows"] if isinstance(s.get("rows"), int) and s["rows"] >= 0 else \
        open_parquet(shard_path(out, b)).metadata.num_rows
    same = {k: sys.intern(s[k]) for k in ("node", "host", "render", "blender") if isinstance(s.get(k), str)}
    entry = {"file": name, "block": b, "rows": rows, "node": same.get("node"), "host": same.get("host"),
             "render": same.get("render"), "seconds": round(s.get("seconds", 0.0), 3),
             "indices": block_indices(render_cfg, b), "rejections": s.get("rejections", {})}
    entry.update({k: s[k] for k in ("bad_assets", "failed", "bytes") if s.get(k)})
    if same.get("blender"):  # strings every shard repeats, held once: every entry is held until the end
        entry["blender"] = same["blender"]
    return entry, ({k: s[k] for k in INDEXED} if all(k in s for k in INDEXED) else None)


def build_manifest(cfg: Config, out: str, n_blocks: int, seconds: float, rendered: int,
                   fresh: frozenset[int] = frozenset()) -> dict:
    """Self-documenting summary from the shard files and their per-shard summaries.

    Entries of the last manifest are kept for shards still there and not rendered again (``fresh``);
    only the others' summaries are read, on a thread pool (each a request on object storage): a resume
    of 10^4 shards reads one manifest instead of 10^4 summaries and footers. Writes the dataset's row
    index (:data:`fmolab.shard_reader.ROWS`: each shard's rows, from the summaries and the last index)
    before returning, so that training and evaluation start without reading every footer."""
    from concurrent.futures import ThreadPoolExecutor

    render_cfg = cfg.render
    done = sorted(b for b in finished_blocks(out) if b < n_blocks)
    known, blender = _previous(out, render_cfg)
    need = {b for b in done if b not in known or b in fresh}
    summaries = {storage.basename(p): p for p in storage.list_files(storage.join(out, SUMMARY_DIR), ".json")} \
        if need else {}
    shards, chunk = [], INDEX_CHUNK
    with RowIndexWriter(out, chunk) as index, ThreadPoolExecutor(16) as pool:
        for i in range(0, len(done), chunk):
            todo = [b for b in done[i:i + chunk] if b in need]
            read = dict(zip(todo, pool.map(lambda b: _read_entry(out, render_cfg, b, summaries.get(
                f"part-{b:05d}.json")), todo)))
            for b in done[i:i + chunk]:
                entry, rows = read.get(b, (known.get(b), None))
                shards.append(entry)
                if rows:
                    index.add(entry["file"], rows)
        kept = {e["file"]: e["bytes"] for b, e in zip(done, shards) if b not in need and e.get("bytes")}
        for batch in index_batches(out) if kept else ():  # the kept shards' rows, from the last index
            files, sizes = batch.column("file").to_pylist(), batch.column("bytes").to_pylist()
            index.add_batch(batch.filter(pa.array([kept.get(f) == size for f, size in zip(files, sizes)])))
    rejections, bad, failed, nodes, busy = Counter(), Counter(), [], set(), 0.0
    for e in shards:
        rejections.update(e["rejections"])
        bad.update(e.get("bad_assets", {}))
        failed.extend(e.get("failed", []))
        nodes.add(e.get("node") or "unknown")
        busy += e.get("seconds", 0.0)
        blender = e.pop("blender", None) or blender
    num_rows = sum(s["rows"] for s in shards)
    return {
        "kind": "fmo_sequences",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": render_cfg.seed,
        "num_sequences": render_cfg.num_sequences,
        "num_rows": num_rows,
        "num_shards": len(shards),
        "complete": len(shards) == n_blocks,
        "failed_indices": sorted(failed),
        "rejections": dict(rejections),
        "bad_assets": dict(bad),
        "render": to_dict(render_cfg),
        "software": _versions(blender),
        "nodes": sorted(n for n in nodes if n),
        "shards": shards,
        "columns": SEQUENCE_SCHEMA.names,
        "row_index": ROWS,  # written above: readers ask for it only where a manifest names it
        "time_convention": "sharp frame i of N at t_i=(i+0.5)/N over the exposure [0,1]",
        "backgrounds": "backgrounds",
        "timing": {"wall_seconds_this_run": round(seconds, 2), "blocks_rendered_this_run": rendered,
                   "actor_seconds_per_row": round(busy / num_rows, 3) if num_rows else None},
    }


def _versions(blender: str) -> dict:
    import platform

    import numpy
    import PIL
    import pyarrow
    import ray

    import fmolab

    return {"blender": blender, "fmolab": getattr(fmolab, "__version__", "unknown"), "ray": ray.__version__,
            "python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__,
            "pyarrow": pyarrow.__version__}
