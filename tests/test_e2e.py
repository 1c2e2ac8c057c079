"""The whole pipeline through the CLI, as `make demo` runs it, shrunk: bpy render -> Ray Train -> MLflow
registry -> deblur of a held-out sample. Runs in CI."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")
pytestmark = pytest.mark.bpy

SMALL = [
    "render.num_sequences=12", "render.width=64", "render.height=48", "render.num_frames=6", "render.samples=4",
    "render.shard_rows=4", "render.backgrounds.num_clips=3", "render.backgrounds.frames_per_clip=4",
    "data.frames_per_sample=3", "data.val_fraction=0.25", "train.steps=12", "train.time_limit=60",
    "train.val_every=6", "train.ckpt_every=6", "train.log_every=3", "train.val_samples=2",
    "tracking.register_as=e2e-model", "tracking.alias=demo", "train.run_name=e2e",
]


def test_demo_end_to_end(session_home):
    import mlflow

    work = session_home / "e2e"
    env = {**os.environ, "FMOLAB_HOME": str(work), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    fmolab = Path(sys.executable).with_name("fmolab")
    proc = subprocess.run([str(fmolab), "demo", "--work-dir", str(work), *SMALL], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout

    # a quiet run: fmolab's lines, not third-party chatter (each of these was printed before, some 100s of times)
    both = proc.stdout + proc.stderr
    for noise in ("Failed to query Ray Train Controller", "Add type hints", "\x1b[", "Creating initial MLflow database",
                  "Successfully registered model", "Checkpoint successfully created", "Token authentication is enabled",
                  "Progress bars disabled", "execution finished in", "Wrapping provided model", "random init"):
        assert noise not in both, noise

    # shards with a manifest
    data = work / "datasets" / "demo"
    assert (data / "manifest.json").exists() and list(data.glob("*.parquet"))
    assert (data / "backgrounds" / "manifest.json").exists()

    # the MLflow run: params, metrics, an animated preview, a registered model loading by alias
    store = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)  # process-global: an earlier test's registry would answer otherwise
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("fmolab-demo")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["variant"] == "background_blur" and "val/loss" in run.data.metrics
    assert any(a.path.endswith(".webp") for a in client.list_artifacts(run.info.run_id, "previews"))
    model = mlflow.pyfunc.load_model("models:/e2e-model@demo")
    renders = model.predict(np.zeros((1, 6, 48, 64), np.float32), params={"num_frames": 4})
    assert renders.shape == (1, 4, 4, 48, 64)

    # the held-out numbers the demo prints are the registered model's own (its best validation in MLflow)
    import re

    line = next(x for x in out.splitlines() if x.startswith("held-out objects, best checkpoint"))
    best_step = int(re.search(r"\(step (\d+)\)", line).group(1))
    logged = {k: [m.value for m in client.get_metric_history(run.info.run_id, k) if m.step == best_step][-1]
              for k in ("val/animation_ratio", "val/tiou", "val/crop_psnr", "val/im_crop_psnr")}
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/tiou")]
    assert len(steps) == len(set(steps)), steps  # linking the model to its validation logs no step twice
    assert f"animation ratio {logged['val/animation_ratio']:.2f}" in line and f"TIoU {logged['val/tiou']:.3f}" in line
    assert f"crop PSNR {logged['val/crop_psnr']:.2f} dB" in line
    assert f"input image (im) crop PSNR {logged['val/im_crop_psnr']:.2f} dB" in out
    assert ("Animation point at step" in out) != ("Never animated" in out)
    version = client.get_model_version("e2e-model", client.get_model_version_by_alias("e2e-model", "demo").version)
    assert ("Animation point at step" in version.description) == ("Animation point at step" in out)

    # the held-out deblur and what the demo tells the user
    assert (work / "demo" / "deblur_preview.webp").stat().st_size > 0
    assert len(list((work / "demo" / "deblurred").glob("subframe_*.png"))) == 3
    assert "mlflow ui --backend-store-uri" in out and "127.0.0.1" in out
    # the address opens this run's page in the model-training view (tests/test_mlflow_record.py opens one)
    assert f"#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning" in out

    # the second quick preset: a double-blur model from the same rendered data (no new render)
    db_run = ["tracking.register_as=e2e-db", "train.run_name=e2e-db"]
    proc = subprocess.run([str(fmolab), "demo", "--preset", "demo_double_blur", "--work-dir", str(work), *SMALL, *db_run],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "double_blur model" in proc.stdout and "held-out objects, best checkpoint" in proc.stdout
    import json

    assert json.loads((data / "manifest.json").read_text())["timing"]["blocks_rendered_this_run"] == 0
    (db,) = client.search_runs([exp.experiment_id], "params.variant = 'double_blur'")
    assert db.info.status == "FINISHED"
    # the official single-image example runs with the demo's own (background+blur) model
    yy, xx = np.mgrid[:48, :64]
    background = np.stack([0.4 + 0.2 * np.sin(xx / 6), 0.5 + 0.2 * np.cos(yy / 5), 0.45 + 0.0 * xx], -1)
    streak = ((yy - 24) ** 2 + (xx - 32) ** 2 <= 25)[..., None] | ((yy - 24) ** 2 + (xx - 40) ** 2 <= 25)[..., None]
    from PIL import Image

    Image.fromarray((background * 255).astype(np.uint8)).save(work / "bg.png")
    Image.fromarray((np.where(streak, [1.0, 0.9, 0.2], background) * 255).astype(np.uint8)).save(work / "im.png")
    proc = subprocess.run([str(fmolab), "deblur", "--model", "models:/e2e-model@demo", "--image", str(work / "im.png"),
                           "--background", str(work / "bg.png"), "--out", str(work / "official-example"),
                           "--work-dir", str(work)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "official-example" / "super_resolved.webp").exists()
