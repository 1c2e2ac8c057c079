"""`fmolab demo --fresh` removes the demo's own outputs and nothing else in the work folder."""
from pathlib import Path

from fmolab.config import load_config
from fmolab.demo import remove_demo_outputs


def test_fresh_removes_only_the_demos_outputs(tmp_path):
    cfg = load_config([], [f"runtime.work_dir={tmp_path}", "render.name=demo"])
    keep = [tmp_path / "runs" / "double_blur-1", tmp_path / "ray_results" / "other", tmp_path / "datasets" / "fmo"]
    gone = [tmp_path / "runs" / "demo-20261121-1", tmp_path / "ray_results" / "demo-20261121-1", Path(cfg.dataset_dir)]
    for d in keep + gone:
        d.mkdir(parents=True)
    remove_demo_outputs(cfg)
    assert all(d.exists() for d in keep) and not any(d.exists() for d in gone)

    named = load_config([], [f"runtime.work_dir={tmp_path}", "train.run_name=mine"])
    (tmp_path / "runs" / "mine").mkdir()
    remove_demo_outputs(named)
    assert not (tmp_path / "runs" / "mine").exists() and (tmp_path / "runs" / "double_blur-1").exists()
