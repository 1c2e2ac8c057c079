"""Learning at the shipped small scale: samples to the animation point per variant (median over seeds)
and held-out TIoU / crop PSNR (and the static "im" baseline) at a fixed sample budget.

Runs a study (``fmolab study``: Ray Tune trials of the real Ray Train loop, nested MLflow runs) of one
arm per variant on the CPU scale (``presets/scales/small.yaml``), then writes
``benchmarks/results/learning.json``. The data is rendered first when missing (Blender, ~2 min).

    python benchmarks/learning.py                                  # 4 variants x 2 seeds, 24k samples
    python benchmarks/learning.py --variants double_blur --seeds 3 --budget 32000
    python benchmarks/learning.py --renderers defmo,defmo:time_stages=true --variants double_blur

``--renderers`` compares renderers (fmolab's time_stages option against the thesis' renderer) arm by arm.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml

VARIANTS = {
    "double_blur": {},
    "background_blur": {"variant": "background_blur", "data.format": "background_blur"},
    "multi_object": {"variant": "multi_object", "data.format": "multi_object:min_objects=1,max_objects=3"},
    "self_supervised": {"variant": "self_supervised",
                        "loss.train": ["Reconstruction:kind=l2,binary=true", "BackgroundRejection:weight=0.1",
                                       "Contiguity:weight=0.1"], "loss.compare": ["DeFMOSupervised", "AlphaDice"]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--renderers", default="defmo:time_stages=true", help="renderer specs to compare")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=24000, help="samples per trial")
    ap.add_argument("--work-dir", default="", help="work folder (default: a temporary one)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "learning.json"))
    args = ap.parse_args()

    from fmolab.config import load_config, preset_path
    from fmolab.study.run import run_study

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fmolab-learning-"))
    renderers = args.renderers.split(",")
    arms = {}
    for v in args.variants.split(","):
        for r in renderers:
            name = v if len(renderers) == 1 else f"{v}-{r.replace(':', '-').replace('=', '-')}"
            arms[name] = {**VARIANTS[v], "model.renderer": r}
    study = {"description": "benchmarks/learning.py", "preset": ["double_blur", "small"],
             "base": {"train.threads": 1, "train.val_every": 200, "train.ckpt_every": 200, "train.preview_samples": 2,
                      "tracking.experiment": "fmolab-learning", "runtime.work_dir": str(work)},
             "budget_samples": args.budget, "seeds": args.seeds, "groups": {"learning": {"arms": arms}}}
    path = work / f"learning-{args.budget}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))

    cfg = load_config([preset_path("double_blur"), preset_path("small")], [f"runtime.work_dir={work}"])
    from fmolab.storage import exists, join

    if not exists(join(cfg.dataset_dir, "manifest.json")):
        from render_cluster.pipeline import render_dataset

        render_dataset(cfg, progress=True)
    started = time.time()
    report = run_study(str(path), work_dir=str(work))
    results = {}
    for name in arms:
        trials = [t for t in report["trials"] if t["arm"] == f"learning/{name}"]
        moved = [t["animation_samples"] for t in trials if t["animation_samples"] is not None]
        results[name] = {
            "renderer": arms[name]["model.renderer"], "seeds": len(trials), "animated": len(moved),
            "samples_to_animation_median": statistics.median(moved) if moved else None,
            "samples_to_animation": [t["animation_samples"] for t in trials],
            **{k.replace("val/", "final_"): statistics.mean(t["final"][k] for t in trials) if trials else None
               for k in ("val/tiou", "val/crop_psnr", "val/im_crop_psnr", "val/animation_ratio")}}
    out = {"what": "samples to the animation point (val/animation_ratio > 0.5) and held-out metrics at a fixed "
                   "budget, small scale (64x48, tiny encoder), one trial per arm and seed",
           "budget_samples": args.budget, "machine": {"cpus": __import__("os").cpu_count(),
                                                      "python": platform.python_version()},
           "wall_s": round(time.time() - started, 1), "table": report["markdown"], "variants": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(report["markdown"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
