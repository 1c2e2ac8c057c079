"""Render cluster: trajectory sampling, asset loaders, a real bpy render through Ray Data, resume,
determinism, blur-vs-frames consistency, backgrounds, and a 2-node cluster (slow)."""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fmolab.media.codecs import decode_webp
from fmolab.shard_reader import ShardReader
from fmolab.shards import BACKGROUND_SCHEMA, SEQUENCE_SCHEMA, content_box, decode_sequence
from render_cluster import trajectory as T

try:
    import bpy  # noqa: F401

    HAVE_BPY = True
except ImportError:
    HAVE_BPY = False
needs_bpy = pytest.mark.skipif(not HAVE_BPY, reason="bpy (Blender) is not installed")

TINY = ["render.width=64", "render.height=48", "render.num_frames=4", "render.samples=4",
        "render.motion_blur_steps=8", "render.shard_rows=2", "render.num_sequences=3",
        "render.backgrounds.num_clips=3", "render.backgrounds.frames_per_clip=3", "runtime.num_cpus=2"]


@pytest.fixture(autouse=True, scope="module")
def _ray_down():
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


# ---------------------------------------------------------------- trajectory (no bpy)


def test_trajectory_bounds_and_determinism(make_config):
    bounds = make_config().render.trajectory
    W, H = 320, 240
    for i in range(300):
        tr = T.sample_trajectory(np.random.default_rng([0, i]), bounds, W, H)
        assert bounds.object_size[0] <= tr.size <= bounds.object_size[1]
        for p in (np.array(tr.start), np.array(tr.end)):
            assert bounds.depth[0] - 1e-9 <= -p[2] <= bounds.depth[1] + 1e-9
            hx, hy = T.frustum_half_extent(-p[2], W, H)
            assert abs(p[0]) + tr.size / 2 <= hx * (1 - 2 * bounds.margin) + 1e-9
            assert abs(p[1]) + tr.size / 2 <= hy * (1 - 2 * bounds.margin) + 1e-9
        xy = math.dist(tr.start[:2], tr.end[:2]) / tr.size
        assert bounds.min_travel - 1e-9 <= xy <= bounds.max_travel + 1e-9
        assert abs(tr.end[2] - tr.start[2]) <= bounds.max_dz + 1e-9
        off = np.degrees(np.abs(np.array(tr.rot_end) - np.array(tr.rot_start)))
        assert (off <= bounds.max_end_rotation + 1e-9).all()
    a = T.sample_trajectory(np.random.default_rng([5, 7, 0]), bounds, W, H)
    b = T.sample_trajectory(np.random.default_rng([5, 7, 0]), bounds, W, H)
    assert a == b
    assert np.allclose(T.frame_times(4), [0.125, 0.375, 0.625, 0.875])
    loc, _ = a.at(0.5)
    assert np.allclose(loc, (np.array(a.start) + np.array(a.end)) / 2)


def test_impossible_bounds_fail_before_ray(tmp_path, make_config):
    import ray

    from render_cluster.pipeline import render_dataset

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path},
                      ["render.trajectory.min_travel=40", "render.trajectory.max_travel=50"])
    with pytest.raises(T.TrajectoryError, match="impossible trajectory bounds"):
        render_dataset(cfg, progress=False)
    assert not ray.is_initialized()


@pytest.mark.parametrize("key", ["render.objects", "render.textures", "render.backgrounds.source"])
def test_missing_asset_folder_fails_before_ray(tmp_path, key, make_config):
    import ray

    from render_cluster.pipeline import render_dataset

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path}, [f"{key}={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_dataset(cfg, progress=False)
    assert not ray.is_initialized()


def test_empty_asset_folder_is_an_error(tmp_path):
    from render_cluster.objects import list_mesh_files
    from render_cluster.textures import list_images

    (tmp_path / "notes.txt").write_text("not a mesh")
    with pytest.raises(FileNotFoundError, match=r"no mesh file \(.obj, .ply, .stl, .glb, .gltf\)"):
        list_mesh_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image"):
        list_images(tmp_path)


# ---------------------------------------------------------------- backgrounds (no bpy)


def test_procedural_backgrounds(tmp_path, make_config):
    from render_cluster.pipeline import render_backgrounds

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path})
    m = render_backgrounds(cfg, tmp_path / "bg")
    assert m["num_rows"] == 3 and m["kind"] == "backgrounds"
    t = pq.read_table(tmp_path / "bg" / "part-00000.parquet")
    assert t.schema.equals(BACKGROUND_SCHEMA)
    clip = decode_webp(t.column("frames")[0].as_py(), "RGB")
    assert clip.shape == (3, 48, 64, 3)
    assert np.abs(np.diff(clip.astype(float), axis=0)).mean() > 0.1  # the camera moves


def test_folder_backgrounds(tmp_path, make_config):
    from render_cluster.backgrounds import write_backgrounds

    root = tmp_path / "vot"
    rng = np.random.default_rng(0)
    for seq, sub in (("otb_seq", "img"), ("vot_seq", "")):
        d = root / seq / sub if sub else root / seq
        d.mkdir(parents=True)
        for k in range(5):
            Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(d / f"{k:08d}.jpg")
    (root / "clip.mp4").write_bytes(b"not a video Pillow can read")
    cfg = make_config(TINY, {"runtime.work_dir": tmp_path},
                      [f"render.backgrounds.source={root}", "render.backgrounds.num_clips=3"])
    m = write_backgrounds(cfg, tmp_path / "bg")
    assert m["num_rows"] == 2 and m["skipped_this_run"] == {"unreadable_video": 1}
    rows = ShardReader(tmp_path / "bg").column("source")
    assert sorted(rows) == ["otb_seq/img", "vot_seq"]


def test_a_background_clip_is_decoded_in_one_opening_of_its_video(tmp_path, monkeypatch):
    """A video that states its length (mp4) is probed once and decoded only up to the clip; one that does
    not (webm) is decoded once, and the window it gives is a uniformly drawn one of them all."""
    import av

    import fmolab.media.video as media_video
    from render_cluster.backgrounds import video_clip

    def write(path, n=12):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264" if path.suffix == ".mp4" else "libvpx-vp9", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
            for i in range(n):  # frame i is a flat grey of level 20 * i: its index is readable after decoding
                frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 20 * i, np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path

    probes, decoded = [], []
    real_probe, real_decode = media_video.probe, media_video.decode
    monkeypatch.setattr(media_video, "probe", lambda p: probes.append(p) or real_probe(p))

    def counting_decode(p):
        for item in real_decode(p):
            decoded.append(p)
            yield item

    monkeypatch.setattr(media_video, "decode", counting_decode)
    mp4, webm = write(tmp_path / "c.mp4"), write(tmp_path / "c.webm")
    assert media_video.open_video(webm).count() == 0  # the premise: webm does not state its frames
    probes.clear()

    def index(clip):  # frame index of each fitted frame, from its grey level
        return [int(round(float(f.mean()) / 20)) for f in clip]

    starts = {".mp4": set(), ".webm": set()}
    for seed in range(12):
        for path in (mp4, webm):
            probes.clear(), decoded.clear()
            start, clip = video_clip(path, np.random.default_rng(seed), 4, 16, 8)
            assert clip.shape == (4, 8, 16, 3) and index(clip) == list(range(start, start + 4))
            assert len(probes) == 1  # opened once
            assert len(decoded) == (start + 4 if path.suffix == ".mp4" else 12)  # mp4: only up to the clip
            starts[path.suffix].add(start)
    assert all(len(s) >= 4 and s <= set(range(9)) for s in starts.values()), starts
    assert video_clip(mp4, np.random.default_rng(0), 13, 16, 8) is None  # shorter than the clip
    assert video_clip(webm, np.random.default_rng(0), 13, 16, 8) is None


# ---------------------------------------------------------------- bpy: loaders


def _write_obj(path: Path, scale: float = 3.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    v = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    lines = [f"v {x * scale} {y * scale + 5} {z * scale}" for x, y, z in v]
    lines += ["f 1 3 2", "f 1 2 4", "f 1 4 3", "f 2 3 4"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.bpy
@needs_bpy
def test_mesh_loader_normalizes(tmp_path, make_config):
    from render_cluster import objects
    from render_cluster.scene import Scene

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path})
    scene = Scene(cfg.render, tmp_dir=str(tmp_path))
    good = _write_obj(tmp_path / "objs" / "02691156" / "abc" / "models" / "model_normalized.obj")
    (tmp_path / "objs" / "bad.obj").write_text("this is not an obj file\n")
    files = objects.list_mesh_files(tmp_path / "objs")
    assert files == ["02691156/abc/models/model_normalized.obj", "bad.obj"]
    assert objects.obj_id(files[0]) == "02691156/abc"
    obj = objects.load_mesh(good, size=0.8)
    co = np.array([v.co[:] for v in obj.data.vertices])
    assert np.isclose(np.linalg.norm(co.max(0) - co.min(0)), 0.8)
    assert np.allclose((co.max(0) + co.min(0)) / 2, 0, atol=1e-6)
    scene.clear()
    with pytest.raises(objects.AssetError):
        objects.load_mesh(tmp_path / "objs" / "bad.obj", size=1.0)
    scene.close()


@pytest.mark.bpy
@needs_bpy
def test_procedural_families_and_bad_assets_counted(tmp_path, make_config):
    """Every shape family builds; a folder with a bad OBJ and a bad texture renders, counting both."""
    from render_cluster import objects, textures
    from render_cluster.scene import Scene
    from render_cluster.sequence import Assets, render_index

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path}, ["render.max_tries=12", "render.num_frames=2"])
    scene = Scene(cfg.render, tmp_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    for fam in objects.FAMILIES:
        scene.clear()
        obj, oid, _ = objects.make_procedural(rng, 1.0, fam)
        co = np.array([v.co[:] for v in obj.data.vertices])
        assert oid.startswith(f"procedural/{fam}/") and np.isclose(np.linalg.norm(co.max(0) - co.min(0)), 1.0)
    for kind in textures.KINDS:
        textures.procedural_material(rng, 1.0, kind)
    # DTD layout: <root>/images/<category>/*.jpg, plus one corrupt image.
    dtd = tmp_path / "dtd"
    (dtd / "images" / "banded").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(dtd / "images" / "banded" / "b1.jpg")
    (dtd / "images" / "banded" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert textures.image_id(textures.list_images(dtd)[0]) == "banded/b1"
    _write_obj(tmp_path / "objs" / "good.obj")
    (tmp_path / "objs" / "bad.obj").write_text("garbage\n")
    assets = Assets(str(tmp_path / "objs"), str(dtd))
    reasons, bad = Counter(), Counter()
    rows = [render_index(scene, cfg.render, assets, i, reasons, bad) for i in range(3)]
    assert all(r is not None for r in rows)
    assert {r["object_id"] for r in rows} == {"good"} and {r["texture_id"] for r in rows} == {"banded/b1"}
    assert reasons["bad_asset"] >= 1 and bad  # the bad files were drawn and skipped
    scene.close()


@pytest.mark.bpy
@needs_bpy
def test_low_coverage_draws_are_rejected_counted_and_reported(tmp_path, make_config):
    """render.min_coverage above what any object covers: every try is rejected (low_coverage, counted by
    reason) and no row is written for the index; the block reports it as failed."""
    from render_cluster.scene import Scene
    from render_cluster.sequence import Assets, render_block

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path}, ["render.min_coverage=0.9", "render.max_tries=3"])
    scene = Scene(cfg.render, tmp_dir=str(tmp_path))
    rows, summary = render_block(scene, cfg.render, Assets("procedural", "procedural"), 0, 2)
    scene.close()
    assert rows == [] and summary["failed"] == [0, 1] and summary["rows"] == 0
    assert sum(summary["rejections"].values()) == 2 * 3 and summary["rejections"].get("low_coverage", 0) >= 3


@pytest.mark.bpy
@needs_bpy
def test_blur_matches_mean_of_sharp_frames(tmp_path, make_config):
    """The engine's blur over a span ~ the mean of the sharp frames inside it (premultiplied)."""
    from render_cluster.scene import Scene
    from render_cluster.sequence import Assets, render_try

    cfg = make_config(TINY, {"runtime.work_dir": tmp_path},
                      ["render.width=96", "render.height=72", "render.num_frames=16", "render.samples=8",
                       "render.motion_blur_steps=32", "render.trajectory.max_travel=2",
                       "render.blurs={full: [0, 1], first: [0, 0.5], second: [0.5, 1]}"])
    scene = Scene(cfg.render, tmp_dir=str(tmp_path))
    row = None
    for i in range(10):
        try:
            row = render_try(scene, cfg.render, Assets("procedural", "procedural"), i, 0)
            break
        except Exception:  # rejected draw: try the next index
            continue
    assert row is not None
    frames, blurs = decode_sequence(row)
    frames = frames.astype(np.float32) / 255
    times = T.frame_times(16)
    for blur, (a, b) in zip(blurs, row["blur_spans"]):
        blur = blur.astype(np.float32) / 255
        inside = frames[(times >= a) & (times <= b)]
        mean_alpha = inside[..., 3].mean(0)
        support = (mean_alpha > 0.02) | (blur[..., 3] > 0.02)
        err = np.abs(mean_alpha - blur[..., 3])[support].mean()
        assert err < 0.08, f"span {a}-{b}: mean |alpha difference| {err:.3f}"
        assert abs(mean_alpha.sum() - blur[..., 3].sum()) / blur[..., 3].sum() < 0.1
    scene.close()


@pytest.mark.bpy
@needs_bpy
def test_full_blur_from_halves_matches_engine(tmp_path, make_config):
    """render.full_from_halves: the full blur derived from the two half blurs (premultiplied mean)
    ~ the engine-rendered full blur, with one engine render less; off = every blur rendered."""
    from render_cluster.scene import Scene
    from render_cluster.sequence import Assets, Rejected, derived_blurs, render_try

    size = ["render.width=96", "render.height=72", "render.num_frames=4", "render.samples=4",
            "render.motion_blur_steps=32", "render.trajectory.max_travel=2"]
    engine = make_config(TINY, {"runtime.work_dir": tmp_path}, [*size, "render.full_from_halves=false"]).render
    derived = make_config(TINY, {"runtime.work_dir": tmp_path}, size).render
    assert derived.full_from_halves and derived_blurs(derived.blurs) == {"full": ("first", "second")}
    assert derived_blurs({"first": [0, 0.5], "second": [0.5, 1]}) == {}
    assert derived_blurs({"full": [0, 1], "first": [0, 0.5], "second": [0.6, 1]}) == {}
    scene = Scene(engine, tmp_dir=str(tmp_path))
    spans = []
    original = scene.render

    def counting(t_or_span, *a, **kw):
        if isinstance(t_or_span, (tuple, list)):
            spans.append(tuple(t_or_span))
        return original(t_or_span, *a, **kw)

    scene.render = counting
    rows = None
    for i in range(10):
        try:
            spans.clear()
            a = render_try(scene, engine, Assets("procedural", "procedural"), i, 0)
            n_engine = len(spans)
            spans.clear()
            rows = a, render_try(scene, derived, Assets("procedural", "procedural"), i, 0)
            break
        except Rejected:  # rejected draw: try the next index
            continue
    assert rows is not None
    assert n_engine == 3 and sorted(spans) == [(0.0, 0.5), (0.5, 1.0)]
    (fa, ba), (fb, bb) = (decode_sequence(r) for r in rows)
    assert rows[0]["blur_names"] == rows[1]["blur_names"] == ["full", "first", "second"]
    assert np.array_equal(fa, fb) and np.array_equal(ba[1:], bb[1:])  # same seed: same halves and frames
    x, y = ba[0].astype(np.float64) / 255, bb[0].astype(np.float64) / 255
    support = (x[..., 3] > 0.02) | (y[..., 3] > 0.02)
    d_alpha = np.abs(x[..., 3] - y[..., 3])[support].mean()
    d_rgb = np.abs(x[..., :3] * x[..., 3:] - y[..., :3] * y[..., 3:])[support].mean()
    assert d_alpha < 0.05 and d_rgb < 0.04, (d_alpha, d_rgb)
    assert abs(y[..., 3].sum() / x[..., 3].sum() - 1) < 0.05
    assert abs(rows[1]["blur_coverage"][0] - np.mean(rows[1]["blur_coverage"][1:])) < 1e-3
    scene.close()


# ---------------------------------------------------------------- bpy: the pipeline through Ray


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_config):
    import ray

    from render_cluster.pipeline import render_dataset

    ray.shutdown()
    work = tmp_path_factory.mktemp("rw")
    cfg = make_config(TINY, {"runtime.work_dir": work})
    manifest = render_dataset(cfg, progress=False)
    return cfg, manifest


@pytest.mark.bpy
@needs_bpy
def test_render_dataset_rows_and_manifest(dataset):
    cfg, m = dataset
    # the render actors' Blender temp folders go with them (waited for: actors exit after the run)
    deadline = time.time() + 60
    while list((Path(cfg.work_dir) / "tmp").glob("render-*")) and time.time() < deadline:
        time.sleep(0.5)
    assert not list((Path(cfg.work_dir) / "tmp").glob("render-*"))
    out = Path(cfg.dataset_dir)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    t = pq.read_table(out / "part-00000.parquet")
    assert t.schema.equals(SEQUENCE_SCHEMA)
    reader = ShardReader(out)
    assert len(reader) == m["num_rows"] == 3 - len(m["failed_indices"])
    assert sorted(reader.column("index")) == [i for i in range(3) if i not in m["failed_indices"]]
    for row in reader:
        frames, blurs = decode_sequence(row)  # stored cropped to row["box"], pasted back full size
        assert frames.shape == (4, 48, 64, 4)
        assert frames[..., 3].max() == 255 and frames[..., 3].min() == 0  # object on transparent film
        assert row["blur_names"] == ["full", "first", "second"]
        assert len(row["blurs"]) == 3 and blurs.shape == (3, 48, 64, 4)
        # The box holds every visible pixel of frames and blurs, and no more (WebP alpha is lossless).
        y0, x0, y1, x1 = row["box"]
        assert decode_webp(row["frames"]).shape == (4, y1 - y0, x1 - x0, 4)
        assert content_box(frames, blurs) == row["box"]
        assert all(c >= cfg.render.min_coverage for c in row["blur_coverage"])
        p = json.loads(row["params"])
        assert {"trajectory", "object", "texture", "try"} <= set(p)
    for key in ("seed", "render", "software", "rejections", "shards", "nodes", "failed_indices"):
        assert key in m
    assert m["software"]["blender"].startswith("5.") and m["software"]["ray"]
    assert m["render"]["samples"] == 4 and m["complete"]
    assert sum(s["rows"] for s in m["shards"]) == m["num_rows"]
    assert (out / "backgrounds" / "manifest.json").exists()
    assert json.loads((out / "manifest.json").read_text())["num_rows"] == m["num_rows"]


@pytest.mark.bpy
@needs_bpy
def test_resume_renders_nothing_new(dataset):
    from render_cluster.pipeline import render_dataset

    cfg, m = dataset
    before = {p.name: p.stat().st_mtime_ns for p in Path(cfg.dataset_dir).glob("*.parquet")}
    m2 = render_dataset(cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in Path(cfg.dataset_dir).glob("*.parquet")}
    assert before == after and m2["timing"]["blocks_rendered_this_run"] == 0
    assert m2["num_rows"] == m["num_rows"]
    # A lost shard is re-rendered byte for byte (docs/render.md, "Determinism"); the manifest is not
    # (its creation time and timings are this run's).
    lost = Path(cfg.dataset_dir) / "part-00001.parquet"
    old = lost.read_bytes()
    lost.unlink()
    m3 = render_dataset(cfg, progress=False)
    assert lost.read_bytes() == old and m3["timing"]["blocks_rendered_this_run"] == 1


@pytest.mark.bpy
@needs_bpy
def test_same_seed_and_index_give_same_row_in_process(dataset, tmp_path):
    """Determinism whatever the worker: re-render a row here, outside Ray, with another thread count,
    and get the stored row back bit for bit (pixels, params, box)."""
    from render_cluster.scene import Scene
    from render_cluster.sequence import Assets, render_index

    cfg, _ = dataset
    row = ShardReader(cfg.dataset_dir).row(0)
    scene = Scene(cfg.render, threads=2, tmp_dir=str(tmp_path))  # the actors render with 1 thread
    again = render_index(scene, cfg.render, Assets("procedural", "procedural"), row["index"], Counter(), Counter())
    assert again == {k: row[k] for k in again}
    scene.close()


@pytest.mark.bpy
@needs_bpy
def test_inspect_dataset(dataset, tmp_path):
    from render_cluster.inspect import inspect_dataset

    cfg, _ = dataset
    info = inspect_dataset(cfg.dataset_dir, tmp_path, n=2)
    assert info["rows"] == 3 and info["software"]["blender"]
    with Image.open(tmp_path / "preview.webp") as im:
        assert im.n_frames == 4 and im.width == 2 * 64
    assert Image.open(tmp_path / "contact_sheet.png").width > 64


# ---------------------------------------------------------------- two nodes (slow)


@pytest.mark.slow
@pytest.mark.bpy
@needs_bpy
def test_two_node_cluster_renders_on_both(tmp_path_factory, make_config):
    import ray
    from ray.cluster_utils import Cluster

    from fmolab.runtime import use_work_dir
    from render_cluster.pipeline import render_dataset

    ray.shutdown()
    work = use_work_dir(tmp_path_factory.mktemp("rc2"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        cfg = make_config(TINY, {"runtime.work_dir": work}, [f"runtime.address={cluster.address}", "render.num_sequences=4",
                          "render.shard_rows=1", "render.workers=2"])
        m = render_dataset(cfg, progress=False)
        assert m["num_rows"] + len(m["failed_indices"]) == 4
        assert len({s["node"] for s in m["shards"]}) == 2, m["shards"]
    finally:
        ray.shutdown()
        cluster.shutdown()
