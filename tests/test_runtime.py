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


def test_ray_train_errors_it_recovers_from_are_one_line_each_without_traceback():
    """What a lost node makes Ray Train log in its controller and workers (through the worker setup
    hook's filter): one line per event, the error's first line kept, no traceback through Ray."""
    import io
    import logging

    from fmolab.runtime import quiet_third_party

    stream = io.StringIO()
    ray_logger = logging.getLogger("ray")
    handler = logging.StreamHandler(stream)
    ray_logger.addHandler(handler)
    try:
        quiet_third_party()
        controller = logging.getLogger("ray.train.v2._internal.execution.controller.controller")
        try:
            raise TimeoutError("The worker group startup timed out after 15.0 seconds waiting for 2 workers.\nmore")
        except TimeoutError:
            controller.exception("Error in control loop iteration: The worker group startup timed out after 15.0 "
                                 "seconds waiting for 2 workers.\nmore")
        try:
            raise RuntimeError("Read error [127.0.0.1]:416: Connection reset by peer\nsecond line")
        except RuntimeError:
            logging.getLogger("ray.train.v2.worker").error("Error in training function:", exc_info=True)
        logging.getLogger("ray.fmolab_test").warning("kept\nas it is")  # not ray.train: as it is
    finally:
        ray_logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == ["Error in control loop iteration: The worker group startup timed out after 15.0 seconds "
                     "waiting for 2 workers.",
                     "Error in training function: RuntimeError: Read error [127.0.0.1]:416: Connection reset by peer",
                     "kept", "as it is"], lines


def _link_after(barrier, work):
    from fmolab.runtime import ray_temp_dir

    barrier.wait()
    return str(ray_temp_dir(work))


def test_drivers_starting_at_once_share_the_short_ray_temp_link(tmp_path):
    """Two renders of one dataset start together (issue 24): both make the /tmp link to a long work
    folder's Ray temp dir at once; neither may fail with FileExistsError (a clean-clone CI run did)."""
    import multiprocessing as mp
    from functools import partial

    work = tmp_path / ("a-work-folder-whose-path-is-too-long-for-ray-sockets-" * 2)
    work.mkdir(parents=True)
    ctx = mp.get_context("fork")
    for _ in range(10):
        with ctx.Manager() as manager:
            barrier = manager.Barrier(12)
            with ctx.Pool(12) as pool:
                links = pool.map(partial(_link_after, barrier), [work] * 12)
        assert len(set(links)) == 1 and os.readlink(links[0]) == str(work / "ray")
        os.unlink(links[0])
