"""Deblurring a large frame: the detected crop at the model's training size (what ``fmolab deblur
--image --background`` does) against the whole frame through the network (what it did before, and
still does without a detection up to 1280x720), side by side in one run. Each case runs in its own
process (peak RSS is per process): wall seconds and peak RSS. The model is the default DeFMO
(resnet50 encoder) trained at 320x240, randomly initialised (cost does not depend on the weights).
Writes benchmarks/results/deblur_crop.json.

    .venv/bin/python benchmarks/deblur_crop.py [--sizes 640x360,1280x720,1920x1080] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def make_model(folder: Path) -> Path:
    import torch

    from fmolab.config import load_config, to_dict
    from fmolab.data import build_format
    from fmolab.models import build_model

    cfg = load_config([], [f"runtime.work_dir={folder}", "data.format=background_blur", "render.width=320",
                           "render.height=240"])
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(build_model(cfg.model, build_format("background_blur").in_channels).state_dict(), folder / "best_model.pt")
    (folder / "config.json").write_text(json.dumps(to_dict(cfg)))
    return folder


def scene(w: int, h: int, folder: Path) -> tuple[str, str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    bg = np.asarray(Image.fromarray((rng.random((h // 40 + 2, w // 40 + 2, 3)) * 255).astype(np.uint8))
                    .resize((w, h), Image.BILINEAR)) / 255.0
    yy, xx = np.mgrid[:h, :w]
    alpha = sum(((yy - h / 2) ** 2 + (xx - x) ** 2 <= 100) / 16.0 for x in np.linspace(w / 2 - 40, w / 2 + 40, 16))
    im = bg * (1 - alpha[..., None]) + np.array([1.0, 0.9, 0.2]) * alpha[..., None]
    paths = str(folder / f"im{w}.png"), str(folder / f"bg{w}.png")
    for path, arr in zip(paths, (im, bg)):
        Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(path)
    return paths


def child(mode: str, model: str, image: str, background: str, out: str, threads: int) -> dict:
    """One case in this process: returns seconds and peak RSS."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from fmolab.geometry import resize
    from fmolab.inference.images import deblur_images
    from fmolab.inference.predictor import load_predictor
    from fmolab.media import read_rgb

    predictor = load_predictor(model)
    t = time.perf_counter()
    if mode == "crop":
        res = deblur_images(predictor, [image], background, out, num_frames=8)
        box = res["box"]
    else:  # the whole frame at the nearest multiple of 16
        arrays = [read_rgb(p, ValueError) for p in (image, background)]
        h, w = arrays[0].shape[-2:]
        x = np.concatenate([resize(a, predictor.input_size(h, w)) for a in arrays])[None].astype(np.float32)
        predictor.render(x, 8)
        box = [0, 0, h, w]
    seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "box": box}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="640x360,1280x720,1920x1080")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, threads=args.threads)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="fmo-deblur-bench-"))
    os.environ.setdefault("FMOLAB_HOME", str(tmp / "work"))
    model = str(make_model(tmp / "model"))
    rows = []
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        image, background = scene(w, h, tmp)
        row = {"size": size}
        for mode in ("crop", "whole"):
            done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", mode, model,
                                   image, background, str(tmp / f"out-{mode}-{w}")], capture_output=True, text=True)
            if done.returncode:
                row[mode] = {"error": done.stderr.strip().splitlines()[-1][:300]}
            else:
                row[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        if "seconds" in row["crop"] and "seconds" in row["whole"]:
            row["whole_over_crop_seconds"] = round(row["whole"]["seconds"] / row["crop"]["seconds"], 2)
            row["whole_over_crop_rss"] = round(row["whole"]["peak_rss_mb"] / row["crop"]["peak_rss_mb"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": "deblur_crop", "model": "DeFMO resnet50 @320x240, background_blur, random init",
              "threads": args.threads, "machine": platform.processor() or platform.machine(), "cases": rows}
    (RESULTS / "deblur_crop.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
