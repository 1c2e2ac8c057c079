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


def test_simulated_rows_go_through_the_pipeline_and_keep_the_shard_contract(work, ray_local, make_config, monkeypatch):
    import pyarrow.parquet as pq

    from fmolab.data import build_dataset, to_device
    from fmolab.shard_reader import ShardReader
    from fmolab.shards import SEQUENCE_SCHEMA, decode_sequence, shard_files
    from render_cluster.pipeline import render_dataset

    cfg = make_config({"runtime.work_dir": work}, SIMULATED)
    monkeypatch.setattr("render_cluster.manifest.INDEX_CHUNK", 2)  # the manifest's chunks across 5 shards
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
    _the_row_index_spares_every_footer(cfg.dataset_dir, files)
    from fmolab import storage

    listings = []
    real_list = storage.list_files

    def counting(folder, suffix=""):
        listings.append((str(folder), suffix))
        return real_list(folder, suffix)

    import render_cluster.manifest as manifest_module

    reads, footers = [], []
    real_json, real_footer = storage.read_json, manifest_module.open_parquet
    manifest_module.storage.list_files = counting
    manifest_module.storage.read_json = lambda p: reads.append(str(p)) or real_json(p)
    manifest_module.open_parquet = lambda p: footers.append(str(p)) or real_footer(p)
    try:
        again = render_dataset(cfg, progress=False)  # resume: every block is there, nothing is made again
        assert again["timing"]["blocks_rendered_this_run"] == 0 and again["num_rows"] == 40
        # the shards are listed a fixed number of times, not once per block (10^5 sequences took 41 s)
        shard_listings = [f for f, suffix in listings if suffix == ".parquet" and f == str(cfg.dataset_dir)]
        assert len(shard_listings) <= 3, listings
        # the last manifest's entries stand for their shards: no summary and no footer is read again
        assert not [r for r in reads if "/.render/part-" in r] and not footers, (reads, footers)
        assert again["shards"] == manifest["shards"] and again["rejections"] == manifest["rejections"]
        storage.remove(storage.join(cfg.dataset_dir, "part-00002.parquet"))
        reads.clear()
        third = render_dataset(cfg, progress=False)  # the block made again is read from its new summary
        assert third["timing"]["blocks_rendered_this_run"] == 1 and third["num_rows"] == 40
        assert [r.rsplit("/", 1)[-1] for r in reads if "/.render/part-" in r] == ["part-00002.json"] and not footers
        assert [e for e in third["shards"] if e["block"] != 2] == [e for e in manifest["shards"] if e["block"] != 2]
        _the_row_index_spares_every_footer(cfg.dataset_dir, shard_files(cfg.dataset_dir))  # 4 kept, 1 new
        old = json.loads((work / "datasets" / "sim" / "manifest.json").read_text())
        for e in old["shards"]:  # a manifest of an older version (no per-shard counts): every entry is read
            del e["rejections"]
        (work / "datasets" / "sim" / "manifest.json").write_text(json.dumps(old))
        reads.clear()
        fourth = render_dataset(cfg, progress=False)
        assert len([r for r in reads if "/.render/part-" in r]) == 5 and fourth["shards"] == third["shards"]
        _the_row_index_spares_every_footer(cfg.dataset_dir, shard_files(cfg.dataset_dir))  # kept through resumes
    finally:
        manifest_module.storage.list_files = real_list
        manifest_module.storage.read_json = real_json
        manifest_module.open_parquet = real_footer


def _the_row_index_spares_every_footer(root: str, files: list[str]) -> None:
    """The render's row index (rows.arrow) gives a loader what the footers would, and no footer is read."""
    import fmolab.shard_reader as shard_reader
    from fmolab import storage
    from fmolab.data.loader import FMOLoader
    from fmolab.shard_reader import ROWS, read_row_index

    assert storage.read_json(storage.join(root, "manifest.json"))["row_index"] == ROWS  # the manifest names it
    assert sorted(read_row_index(root, {f: storage.list_sizes(root, ".parquet")[f] for f in files})) == sorted(files)
    opened, real = [], shard_reader.open_parquet
    shard_reader.open_parquet = lambda path, **kw: opened.append(path) or real(path, **kw)
    try:
        indexed = FMOLoader(root, split="train", val_fraction=0.25)
        assert opened == []
        preflight = shard_reader.ShardReader(root, columns=["width", "height", "blur_names"])  # as preflight reads
        assert len(preflight) == sum(len(r["objects"]) for r in read_row_index(root).values()) and opened == []
        assert preflight.row(0)["width"] == 32 and opened == [preflight.files[0]]  # its one footer read
    finally:
        shard_reader.open_parquet = real
    index = storage.read_bytes(storage.join(root, ROWS))
    storage.remove(storage.join(root, ROWS))
    try:
        footers = FMOLoader(root, split="train", val_fraction=0.25)
    finally:
        storage.write_bytes(storage.join(root, ROWS), index)
    assert indexed.refs == footers.refs and indexed.object_ids == footers.object_ids and len(indexed.refs) > 0
    assert indexed.row_groups == footers.row_groups and indexed.files == footers.files


def test_a_render_runs_in_passes_of_blocks_per_pass(work, ray_local, make_config, monkeypatch):
    import render_cluster.pipeline as pipeline

    passes = []
    real = pipeline._render_pass

    def counting(cfg, assets, out, blocks, *args):
        passes.append(list(blocks))
        return real(cfg, assets, out, blocks, *args)

    monkeypatch.setattr(pipeline, "_render_pass", counting)
    cfg = make_config({"runtime.work_dir": work}, SIMULATED, ["render.name=passes", "render.blocks_per_pass=2"])
    manifest = pipeline.render_dataset(cfg, progress=False)
    assert passes == [[0, 1], [2, 3], [4]] and manifest["complete"] and manifest["num_rows"] == 40
    assert manifest["timing"]["blocks_rendered_this_run"] == 5


def test_the_simulated_engine_makes_the_default_blurs_only(make_config, tmp_path):
    with pytest.raises(ConfigError, match="render.blurs.*simulated engine makes the default blurs"):
        make_config({"runtime.work_dir": tmp_path}, SIMULATED, ["render.blurs={full: [0, 1]}"])
