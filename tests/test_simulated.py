"""render.engine=simulated: rows without Blender drive the real render pipeline (Ray Data actors,
claims, the shard writer, the manifest, resume), and they keep the shard contract the training
reads (schema, decode, composite)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fmolab.config import ConfigError

SIMULATED = ["render.engine=simulated", "render.width=32", "render.height=24", "render.num_frames=4",
             "render.num_sequences=40", "render.shard_rows=8", "render.name=sim", "render.workers=2",
             "render.backgrounds.num_clips=3", "render.backgrounds.frames_per_clip=3"]


def test_simulated_rows_go_through_the_pipeline_and_keep_the_shard_contract(work, ray_local, make_config):
    import pyarrow.parquet as pq

    from fmolab.data import build_dataset, to_device
    from fmolab.shards import SEQUENCE_SCHEMA, ShardReader, decode_sequence, shard_files
    from render_cluster.pipeline import render_dataset

    cfg = make_config({"runtime.work_dir": work}, SIMULATED)
    manifest = render_dataset(cfg, progress=False)
    assert manifest["complete"] and manifest["num_rows"] == 40 and manifest["num_shards"] == 5
    files = shard_files(cfg.dataset_dir)
    assert len(files) == 5 and all(pq.read_schema(f).equals(SEQUENCE_SCHEMA, check_metadata=False) for f in files)
    reader = ShardReader(cfg.dataset_dir)
    rows = [reader.row(i) for i in range(len(reader))]
    assert sorted(r["index"] for r in rows) == list(range(40))
    assert len({r["seq_id"] for r in rows}) == 40 and json.loads(rows[7]["params"])["engine"] == "simulated"
    frames, blurs = decode_sequence(rows[3])
    assert frames.shape == (4, 24, 32, 4) and blurs.shape == (3, 24, 32, 4) and frames[..., 3].max() > 0
    train = make_config({"runtime.work_dir": work}, SIMULATED, ["data.format=background_blur", "data.frames_per_sample=4"])
    item = to_device(build_dataset(train, "train")[0])  # composited over a background clip, as training does
    assert item["inputs"].shape[-2:] == (24, 32) and np.isfinite(item["inputs"].numpy()).all()
    summaries = json.loads((work / "datasets" / "sim" / "manifest.json").read_text())
    assert summaries["num_rows"] == 40
    from fmolab import storage

    listings = []
    real_list = storage.list_files

    def counting(folder, suffix=""):
        listings.append((str(folder), suffix))
        return real_list(folder, suffix)

    import render_cluster.manifest as manifest_module

    manifest_module.storage.list_files = counting
    try:
        again = render_dataset(cfg, progress=False)  # resume: every block is there, nothing is made again
    finally:
        manifest_module.storage.list_files = real_list
    assert again["timing"]["blocks_rendered_this_run"] == 0 and again["num_rows"] == 40
    # the shards are listed a fixed number of times, not once per block (10^5 sequences took 41 s)
    shard_listings = [f for f, suffix in listings if suffix == ".parquet" and f == str(cfg.dataset_dir)]
    assert len(shard_listings) <= 3, listings


def test_the_simulated_engine_makes_the_default_blurs_only(make_config, tmp_path):
    with pytest.raises(ConfigError, match="render.blurs.*simulated engine makes the default blurs"):
        make_config({"runtime.work_dir": tmp_path}, SIMULATED, ["render.blurs={full: [0, 1]}"])
