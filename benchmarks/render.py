"""Render benchmark: core-seconds and bytes per sequence by engine/quality, WebP PSNR per quality.

Runs in one process (no Ray: the figures are per core, which is what a Ray actor gets) and measures
CPU time with getrusage (Blender's render thread included), so other load on the machine matters
less than for wall time. Writes ``benchmarks/results/render.json``.

    .venv/bin/python benchmarks/render.py --n 4
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fmolab.config import load_config
from fmolab.runtime import use_work_dir
from fmolab.shards import decode_webp, encode_webp, paste


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def psnr_opaque(images: list[np.ndarray], decoded: list[np.ndarray]) -> float:
    """PSNR of RGB over the pixels that are fully opaque in the original (pooled MSE)."""
    se, n = 0.0, 0
    for x, y in zip(images, decoded):
        x = x if x.ndim == 4 else x[None]
        m = x[..., 3] == 255
        d = x[..., :3].astype(np.float64)[m] - y[..., :3].astype(np.float64)[m]
        se, n = se + float((d ** 2).sum()), n + d.size
    return 10 * np.log10(255 ** 2 / max(se / max(n, 1), 1e-12))


def run_config(overrides: list[str], n: int, keep_raw: bool = False) -> dict:
    import render_cluster.sequence as seq
    from render_cluster.scene import Scene

    cfg = load_config(overrides=overrides)
    rc = cfg.render
    t0 = time.time()
    try:
        scene = Scene(rc)
    except Exception as exc:  # e.g. EEVEE without a GPU
        return {"overrides": overrides, "error": str(exc)}
    setup = time.time() - t0
    raw: list[list] = []  # per row: the (cropped) images it encodes, then (box, height, width)
    original = seq.encode_webp

    def keep(x, **kw):  # capture the uint8 images the row encodes
        raw[-1].append(x)
        return original(x, **kw)

    seq.encode_webp = keep
    reasons, bad, sizes, rows = Counter(), Counter(), [], 0
    c0, w0 = cpu_seconds(), time.time()
    try:
        for i in range(n):
            raw.append([])
            row = seq.render_index(scene, rc, seq.Assets("procedural", "procedural"), i, reasons, bad)
            if row is None:
                raw.pop()
                continue
            rows += 1
            raw[-1].append((row["box"], row["height"], row["width"]))
            sizes.append(len(row["frames"]) + sum(len(b) for b in row["blurs"]))
    finally:
        seq.encode_webp = original
        scene.close()
    cpu, wall = cpu_seconds() - c0, time.time() - w0
    out = {"overrides": overrides, "rows": rows, "rejections": dict(reasons), "setup_seconds": round(setup, 2),
           "core_seconds_per_sequence": round(cpu / max(rows, 1), 3),  # rejected tries included
           "wall_seconds_per_sequence": round(wall / max(rows, 1), 3),
           "bytes_per_sequence": int(np.mean(sizes)) if sizes else None}
    if keep_raw:
        out["_raw"] = raw
    return out


def webp_sweep(raw: list[list], qualities=(60, 70, 80, 90), method: int = 4) -> list[dict]:
    res = []
    for q in qualities:
        t0 = time.time()
        sizes, per_seq, all_x, all_y = [], [], [], []
        for *images, (box, h, w) in raw:
            enc = [encode_webp(x, quality=q, method=method) for x in images]
            # PSNR on the full-size images the loader gives (pasted), as before cropping.
            dec = [paste(decode_webp(e), box, h, w) for e in enc]
            images = [paste(x if x.ndim == 4 else x[None], box, h, w) for x in images]
            sizes.append(sum(map(len, enc)))
            per_seq.append(psnr_opaque(images, dec))
            all_x += images
            all_y += dec
        res.append({"quality": q, "method": method, "bytes_per_sequence": int(np.mean(sizes)),
                    "psnr_opaque_pooled_db": round(psnr_opaque(all_x, all_y), 2),
                    "psnr_opaque_median_db": round(float(np.median(per_seq)), 2),
                    "psnr_opaque_min_db": round(float(np.min(per_seq)), 2),
                    "encode_seconds_per_sequence": round((time.time() - t0) / len(raw), 3)})
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="sequences per configuration")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "render.json"))
    ap.add_argument("--work", default="fmolab-work")
    ap.add_argument("--eevee", action="store_true", help="also time EEVEE (needs a GPU to be practical)")
    args = ap.parse_args(argv)
    use_work_dir(args.work)
    base = ["render.engine=cycles"]
    configs = [
        ("cycles default", []),
        ("cycles samples=8 no denoise", ["render.samples=8", "render.denoise=false"]),
        ("cycles samples=16 no denoise", ["render.samples=16", "render.denoise=false"]),
        ("cycles samples=16 max_bounces=4 no denoise", ["render.samples=16", "render.max_bounces=4",
                                                         "render.denoise=false"]),
    ]
    if args.eevee:  # without a GPU EEVEE runs on software OpenGL: minutes per sequence
        configs.append(("eevee default", ["render.engine=eevee"]))
    results = []
    raw = None
    for name, extra in configs:
        ov = base + extra if "eevee" not in name else extra
        # EEVEE without a GPU falls back to software OpenGL (very slow): one sequence is enough.
        n = 1 if "eevee" in name else args.n
        r = run_config(ov, n, keep_raw=name == "cycles default")
        if "_raw" in r:
            raw = r.pop("_raw")
        r["name"] = name
        print(json.dumps(r), file=sys.stderr)
        results.append(r)
    default = load_config().render
    report = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "defaults": {k: getattr(default, k) for k in ("width", "height", "num_frames", "samples", "max_bounces",
                                                      "denoise", "motion_blur_steps", "webp_quality", "webp_method")},
        "blurs": default.blurs,
        "n_per_config": args.n,
        "configs": results,
        "webp": webp_sweep(raw) if raw else [],
        "note": "core-seconds = process CPU time / accepted sequence (rejected tries included)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["webp"], indent=1), file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
