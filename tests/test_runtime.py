"""Ray, Blender and MLflow keep their temporary and config files in the work folder, not in $HOME."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bpy")


@pytest.mark.bpy
def test_render_leaves_home_clean(tmp_path):
    home = Path("/tmp") / f"fmh-home-{os.getpid()}"  # short: Ray's socket paths derive from it
    home.mkdir(exist_ok=True)
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "BLENDER_", "MLFLOW_", "TMPDIR", "FMOLAB_"))}
    env.update(HOME=str(home), FMOLAB_HOME=str(work))
    cmd = [str(Path(sys.executable).with_name("fmolab")), "render", "render.num_sequences=2", "render.width=32",
           "render.height=32", "render.num_frames=2", "render.samples=1", "render.min_coverage=0",
           "render.backgrounds.num_clips=1", "render.backgrounds.frames_per_clip=2", "render.workers=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(work.glob("datasets/fmo/*.parquet"))
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    # Ray's cluster authentication token is a credential it keeps in ~/.ray by design; nothing else
    assert [p for p in left if not p.startswith(".ray")] == [], left
    subprocess.run(["rm", "-rf", str(home)], check=False)
