"""The dataset's self-documentation: ``manifest.json`` built from the shard files and the per-shard
summaries the render actors wrote (so shards of earlier, interrupted runs are accounted for too)."""
from __future__ import annotations

import datetime as _dt
from collections import Counter

from fmolab import storage
from fmolab.config import Config, to_dict
from fmolab.shards import SEQUENCE_SCHEMA, open_parquet

SUMMARY_DIR = ".render"  # per-shard summaries


def shard_path(out: str, block: int) -> str:
    return storage.join(out, f"part-{block:05d}.parquet")


def finished_blocks(out: str) -> set[int]:
    """Blocks whose shard exists (one listing, local or remote)."""
    names = {storage.basename(p) for p in storage.list_files(out, ".parquet")}
    return {int(n[5:10]) for n in names if n.startswith("part-") and n[5:10].isdigit()}


def build_manifest(cfg: Config, out: str, n_blocks: int, seconds: float, rendered: int) -> dict:
    """Self-documenting summary from the shard files and their per-shard summaries."""
    render_cfg = cfg.render
    shards, rejections, bad, failed, nodes = [], Counter(), Counter(), [], set()
    blender, busy = "unknown", 0.0
    done = finished_blocks(out)
    summaries = {storage.basename(p): p for p in storage.list_files(storage.join(out, SUMMARY_DIR), ".json")}
    for b in range(n_blocks):
        if b not in done:
            continue
        path = shard_path(out, b)
        name = storage.basename(path)
        sfile = summaries.get(name.replace(".parquet", ".json"))
        s = storage.read_json(sfile) if sfile else {}
        rows = open_parquet(path).metadata.num_rows
        rejections.update(s.get("rejections", {}))
        bad.update(s.get("bad_assets", {}))
        failed.extend(s.get("failed", []))
        nodes.add(s.get("node", "unknown"))
        blender = s.get("blender", blender)
        busy += s.get("seconds", 0.0)
        shards.append({"file": name, "block": b, "rows": rows, "node": s.get("node"), "host": s.get("host"),
                       "render": s.get("render"),
                       "seconds": round(s.get("seconds", 0.0), 3),
                       "indices": [b * render_cfg.shard_rows, min(render_cfg.num_sequences, (b + 1) * render_cfg.shard_rows)]})
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
