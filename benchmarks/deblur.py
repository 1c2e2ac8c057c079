"""``fmolab deblur --video`` throughput and memory: frames/s, seconds per stage (decode, running-median
background, detection, model, compositing, crops, encoding) and peak RSS, on a 320x240 and a 1920x1080
H.264 video, and the same 1080p video at two lengths side by side (streaming: peak memory must not
grow with the length); the 320x240 case again with each further ``--crops`` choice (the PNG crops' cost). The model is the demo's (`presets/demo.yaml`: tiny encoder, double blur at
128x96), randomly initialised (its cost does not depend on the weights). Each case runs in its own
process (peak RSS is per process); the videos are written first, not timed. Writes
benchmarks/results/deblur.json.

    .venv/bin/python benchmarks/deblur.py [--small 120] [--hd 30,120] [--num-frames 8] [--threads 2] [--crops webp,png]
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

    from fmolab.config import load_config, preset_path, to_dict
    from fmolab.data import build_format
    from fmolab.models import build_model

    cfg = load_config([preset_path("demo")], [f"runtime.work_dir={folder}"])
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(build_model(cfg.model, build_format(cfg.data.format).in_channels).state_dict(), folder / "best_model.pt")
    (folder / "config.json").write_text(json.dumps(to_dict(cfg)))
    return folder


def make_video(path: Path, w: int, h: int, frames: int, fps: int = 30) -> Path:
    """A ball bouncing across a textured, slowly drifting background, blurred along its path."""
    import av
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    big = np.asarray(Image.fromarray((rng.random((h // 30 + 4, w // 30 + 4, 3)) * 255).astype(np.uint8))
                     .resize((w + 64, h), Image.BILINEAR)).astype(np.float32) / 255.0
    r = max(4, h // 40)
    yy, xx = np.mgrid[:h, :w]
    x, y, vx, vy = w * 0.2, h * 0.3, w / 25, h / 40
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast"}
        for k in range(frames):
            shift = int(k * 0.5) % 64  # the camera pans slowly
            bg = big[:, shift:shift + w]
            alpha = np.zeros((h, w), np.float32)
            for t in np.linspace(0, 1, 12):
                alpha += ((yy - (y + t * vy)) ** 2 + (xx - (x + t * vx)) ** 2 <= r * r) / 12
            x, y = x + 1.25 * vx, y + 1.25 * vy
            if not r < x < w - r:
                vx = -vx
            if not r < y < h - r:
                vy = -vy
            image = bg * (1 - alpha[..., None]) + np.array([1.0, 0.9, 0.2], np.float32) * alpha[..., None]
            container.mux(stream.encode(av.VideoFrame.from_ndarray((image * 255).astype(np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return path


def child(model: str, video: str, out: str, num_frames: int, threads: int, crops: str) -> dict:
    import torch

    from fmolab.inference.options import VideoOptions
    from fmolab.inference.predictor import load_predictor
    from fmolab.inference.video import deblur_video

    torch.set_num_threads(threads)
    predictor = load_predictor(model)
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = deblur_video(predictor, video, out, num_frames=num_frames, options=VideoOptions(crops=crops))
    wall = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    summary = json.loads((Path(out) / "summary.json").read_text())
    return {"frames": result["frames"], "frames_with_object": result["frames_with_object"], "wall_s": round(wall, 2),
            "frames_per_s": round(result["frames"] / wall, 2), "crops": crops,
            "cpu_ms_per_frame": round(1000 * cpu_s / result["frames"], 1), "cores_busy": round(cpu_s / wall, 2),
            "stage_s": summary["seconds"],
            "stage_ms_per_frame": {k: round(1000 * v / result["frames"], 1) for k, v in summary["seconds"].items()},
            "output_frames": summary["mp4"]["frames"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_case(model: Path, video: Path, out: Path, num_frames: int, threads: int, crops: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(model), str(video), str(out), str(num_frames), str(threads), crops]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "FMOLAB_PROGRESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=120, help="frames of the 320x240 video")
    ap.add_argument("--hd", default="30,120", help="frames of the 1920x1080 videos (two lengths: memory vs length)")
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crops", default="webp,png", help="--crops choices: every case with the first, 320x240 with each")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, video, out, n, threads, crops = args.child
        print(json.dumps(child(model, video, out, int(n), int(threads), crops)))
        return
    crops = args.crops.split(",")
    hd = [int(v) for v in args.hd.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-deblur-") as tmp:
        root = Path(tmp)
        model = make_model(root / "model")
        cases = [("320x240", 320, 240, args.small, crops[0])] + [(f"1920x1080_{n}", 1920, 1080, n, crops[0]) for n in hd]
        cases += [(f"320x240_crops_{c}", 320, 240, args.small, c) for c in crops[1:]]
        results = {}
        for name, w, h, n, crop in cases:
            video = root / f"{w}x{h}_{n}.mp4"
            if not video.exists():
                make_video(video, w, h, n)
            results[name] = {"size": [w, h], "input_frames": n, "video_mb": round(video.stat().st_size / 2**20, 2),
                             **run_case(model, video, root / f"out-{name}", args.num_frames, args.threads, crop)}
            print(name, json.dumps(results[name]), flush=True)
    short, long = (results[f"1920x1080_{n}"] for n in hd[:2]) if len(hd) > 1 else (None, None)
    report = {
        "what": "fmolab deblur --video, demo model (random weights), per stage; peak RSS per process",
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version()},
        "num_frames": args.num_frames, "cases": results,
        "hd_peak_rss_ratio_long_vs_short": round(long["peak_rss_mb"] / short["peak_rss_mb"], 3) if long else None,
        "hd_frames_long_vs_short": [hd[0], hd[1]] if long else None,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deblur.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    main()
