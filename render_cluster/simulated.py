"""``render.engine=simulated``: rows made without Blender, for the orchestration at scale.

Every row has the real schema and valid, decodable images (one tiny synthetic sequence made per
actor by :mod:`fmolab.data.synthetic`, stamped with each row's own index, seed and id), so the Ray
Data pipeline, claims, the shard writer, the manifest, resume and the training start-up all run for
real while no time goes to rendering: what a million-sequence render costs the driver and the
storage, measured without a million Blender renders (``benchmarks/render_scale.py``)."""
from __future__ import annotations

import functools
import json
import time



@functools.lru_cache(maxsize=4)
def _template(seed: int, width: int, height: int, num_frames: int, quality: int) -> dict:
    from fmolab.data.synthetic import _sequence_row

    return _sequence_row(0, seed, width, height, num_frames, 1, quality)


def simulate_block(render_cfg, block: int, num_sequences: int) -> tuple[list[dict], dict]:
    """All rows of one shard block plus its summary, as :func:`render_cluster.sequence.render_block`
    returns them."""
    t0 = time.time()
    lo, hi = block * render_cfg.shard_rows, min(num_sequences, (block + 1) * render_cfg.shard_rows)
    template = _template(render_cfg.seed, render_cfg.width, render_cfg.height, render_cfg.num_frames,
                         min(100, render_cfg.webp_quality))
    rows = [dict(template, seq_id=f"{render_cfg.seed}-{i}", index=i, seed=render_cfg.seed,
                 object_id=f"simulated/{i % 97}", params=json.dumps({"engine": "simulated", "index": i}))
            for i in range(lo, hi)]
    summary = {"block": block, "rows": len(rows), "first_index": lo, "end_index": hi, "failed": [],
               "rejections": {}, "bad_assets": {}, "seconds": time.time() - t0}
    return rows, summary
