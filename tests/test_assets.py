"""A user's own assets through the real pipeline: meshes Blender itself wrote (OBJ + MTL with UVs in
ShapeNet's layout, binary glTF, PLY) render inside the Ray render actors (`fmolab render`, not a direct
call) over background clips in three codecs (H.264 mp4, VP9 webm, MJPEG mov), and a folder of unusable
meshes stops the render in one line instead of finishing empty."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from test_render import needs_bpy

pytestmark = [pytest.mark.bpy, needs_bpy]
HERE = Path(__file__).resolve().parent
RENDER = ["render.width=64", "render.height=48", "render.num_frames=4", "render.samples=4",
          "render.motion_blur_steps=8", "render.shard_rows=2", "render.backgrounds.num_clips=2",
          "render.backgrounds.frames_per_clip=3", "runtime.num_cpus=2"]
MESHES = {"02691156/monkey", "letters/fmo", "shapes/ring"}  # as tests/blender_meshes.py writes them


@pytest.fixture(scope="module")
def meshes(session_home) -> Path:
    root = session_home / "meshes"
    done = subprocess.run([sys.executable, str(HERE / "blender_meshes.py"), str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root


CLIPS = {"a.mp4": ("libx264", "yuv420p"), "b.webm": ("libvpx-vp9", "yuv420p"), "c.mov": ("mjpeg", "yuvj420p")}


@pytest.fixture(scope="module")
def clips(session_home) -> Path:
    """Short clips of a panning gradient, one per codec, written with PyAV."""
    import av

    root = session_home / "clips"
    root.mkdir(exist_ok=True)
    yy, xx = np.mgrid[0:72, 0:96]
    for name, (codec, pix_fmt) in CLIPS.items():
        with av.open(str(root / name), "w") as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 96, 72, pix_fmt
            for k in range(8):
                rgb = np.stack([(xx * 2 + 9 * k) % 256, (yy * 3) % 256, np.full_like(xx, 40 * (ord(name[0]) - 96))], -1)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")))
            container.mux(stream.encode())
    return root


def render(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FMOLAB_HOME": str(work)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "fmolab.cli", "render", "--work-dir", str(work), *RENDER, *args],
                          env=env, capture_output=True, text=True, timeout=600)


def test_each_mesh_format_loads_normalized(meshes, tmp_path, make_config):
    from render_cluster import objects
    from render_cluster.scene import Scene

    scene = Scene(make_config({"runtime.work_dir": tmp_path}).render, tmp_dir=str(tmp_path))
    files = objects.list_mesh_files(meshes)
    assert {Path(f).suffix for f in files} == {".obj", ".glb", ".ply"}
    assert {objects.obj_id(f) for f in files} == MESHES
    for rel in files:
        scene.clear()
        obj = objects.load_mesh(meshes / rel, size=0.8)
        co = np.array([v.co[:] for v in obj.data.vertices])
        assert len(co) > 100 and np.isclose(np.linalg.norm(co.max(0) - co.min(0)), 0.8), rel
        assert len(obj.data.uv_layers) >= (1 if rel.endswith(".obj") else 0)  # the OBJ's UVs came through
    scene.close()


def test_meshes_render_in_the_ray_actors_over_video_clips_and_unusable_meshes_stop_the_render(meshes, clips, work):
    done = render(work, "render.name=meshes", f"render.objects={meshes}", "render.num_sequences=8",
                  f"render.backgrounds.source={clips}", "render.backgrounds.num_clips=3")
    assert done.returncode == 0, done.stderr[-3000:]
    data = work / "datasets" / "meshes"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_rows"] >= 6 and not manifest["bad_assets"], manifest
    ids = [i for p in sorted(data.glob("part-*.parquet")) for i in pq.read_table(p).column("object_id").to_pylist()]
    assert set(ids) <= MESHES and len(set(ids)) >= 2, ids  # the rows name the files they show
    backgrounds = json.loads((data / "backgrounds" / "manifest.json").read_text())
    assert backgrounds["clips_per_source"] == {name: 1 for name in CLIPS}, backgrounds  # every codec decoded
    assert backgrounds["skipped_this_run"] == {} and backgrounds["num_rows"] == 3
    sources = [s for p in sorted((data / "backgrounds").glob("part-*.parquet"))
               for s in pq.read_table(p).column("source").to_pylist()]
    assert sorted(sources) == sorted(CLIPS)

    broken = work / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "a" / "model.obj").write_text("this is no mesh\n")
    (broken / "b.ply").write_bytes(b"ply\nformat nonsense\n")
    done = render(work, "render.name=broken", f"render.objects={broken}", "render.num_sequences=40",
                  "render.max_tries=2")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(x for x in done.stderr.splitlines() if x.startswith("fmolab render: error:"))
    assert "failed on asset files, more than render.max_bad_asset_fraction=0.5" in line
    assert "a/model.obj" in line or "b.ply" in line, line
    manifest = json.loads((work / "datasets" / "broken" / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["error"] in line
    assert manifest["num_shards"] < 20  # stopped early, not after every block
