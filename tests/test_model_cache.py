"""The model cache: a second deblur on the same registered model reads it from <work>/cache/models
without importing MLflow, and follows the registry (an alias moved to another version, a model
registered again) on SQLite and on a tracking server."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from fmo_fakes import checkpoint_model, tiny_model_config, write_disc_gif


def _register(cfg, name: str, alias: str, seed: int) -> int:
    from fmolab.tracking import model_registry, store

    store.setup_tracking(cfg)
    run_id = store.start_or_resume_run(cfg, f"{name}-{seed}", {"variant": "double_blur"})
    folder = checkpoint_model(Path(cfg.runtime.work_dir) / f"ckpt-{seed}", "double_blur", seed=seed)
    return model_registry.register(model_registry.log_model(cfg, folder / "best_model.pt", run_id), name, alias)


def _weights(predictor) -> torch.Tensor:
    return next(iter(predictor.model.state_dict().values())).clone()


def test_a_second_deblur_reads_the_cached_model_without_mlflow(work, tmp_path):
    cfg = tiny_model_config(work)
    _register(cfg, "cached", "live", seed=0)
    gif = write_disc_gif(tmp_path / "disc.gif", n=2)
    frames = []
    from PIL import Image

    with Image.open(gif) as im:
        for i in range(2):
            im.seek(i)
            frames.append(str(tmp_path / f"f{i}.png"))
            im.convert("RGB").save(frames[-1])
    script = ("import sys; from fmolab.cli import main; rc = main(sys.argv[1:]); "
              "print('MLFLOW-IMPORTED' if 'mlflow' in sys.modules else 'NO-MLFLOW'); sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    seen = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-c", script, "deblur", "--model", "models:/cached@live", "--frames",
                               *frames, "--out", str(tmp_path / f"out{i}"), "--work-dir", str(work)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen.append(proc.stdout.strip().splitlines()[-1])
    assert seen == ["MLFLOW-IMPORTED", "NO-MLFLOW"]
    assert len(list((Path(work) / "cache" / "models").iterdir())) == 1
    assert (tmp_path / "out1" / "subframe_000.png").exists()


def test_the_cache_follows_the_registry(work, mlflow_server):
    from fmolab.inference.predictor import load_predictor
    from fmolab.tracking import model_cache
    from fmolab.tracking.model_registry import promote

    sqlite = tiny_model_config(work)
    server = tiny_model_config(work, "double_blur", {"tracking.uri": mlflow_server})
    cache = Path(work) / "cache" / "models"
    for cfg in (sqlite, server):
        store = cfg.tracking_uri
        _register(cfg, "moving", "live", seed=1)
        first = model_cache.version_key("models:/moving@live", store)
        assert first and first == model_cache.version_key("models:/moving/1", store)
        a = load_predictor("models:/moving@live", cache=cache, store=store)
        assert model_cache.lookup(cache, first) is not None
        assert torch.equal(_weights(load_predictor("models:/moving@live", cache=cache, store=store)), _weights(a))
        _register(cfg, "moving", "candidate", seed=2)  # version 2
        promote("moving", "live", 2)
        second = model_cache.version_key("models:/moving@live", store)
        assert second != first
        b = load_predictor("models:/moving@live", cache=cache, store=store)
        assert not torch.equal(_weights(b), _weights(a))  # the alias moved: the new version, not the cache
        assert model_cache.version_key("models:/nothing@live", store) is None
    assert len(list(cache.iterdir())) == 4  # two versions in each store, nothing shared between them
