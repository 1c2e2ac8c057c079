"""Render benchmark: core-seconds and bytes per sequence by engine/quality, WebP/AVIF PSNR per setting.

Runs each configuration in a fresh process (no Ray: the figures are per core, which is what a Ray
actor gets; bpy and the TBB thread cap are per process) and measures CPU time with getrusage
(Blender's render and TBB threads included), so other load on the machine matters less than for
wall time. Writes ``benchmarks/results/render.json``.

    .venv/bin/python benchmarks/render.py --n 4
    .venv/bin/python benchmarks/render.py --n 6 --only-encoders --out benchmarks/results/encoders.json
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
from fmolab.media.codecs import decode_webp, encode_webp
from fmolab.shards import paste


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


def _cpu_timed(fn, key: str, split: dict):
    def wrapped(*a, **kw):
        c0 = cpu_seconds()
        try:
            return fn(*a, **kw)
        finally:
            split[key] = split.get(key, 0.0) + cpu_seconds() - c0
    return wrapped


def run_config(overrides: list[str], n: int, keep_raw: bool = False, cap_tbb: bool = True) -> dict:
    """Render ``n`` indices with ``overrides``; call it in a fresh process (:func:`run_isolated`):
    bpy and the TBB thread cap are per process, and so is getrusage."""
    import render_cluster.sequence as seq
    from render_cluster.scene import Scene

    cfg = load_config(overrides=overrides)
    render_cfg = cfg.render
    t0 = time.time()
    try:
        scene = Scene(render_cfg, cap_tbb=cap_tbb)
    except Exception as exc:  # e.g. EEVEE without a GPU
        return {"overrides": overrides, "error": str(exc)}
    setup = time.time() - t0
    raw: list[list] = []  # per row: the (cropped) images it encodes, then (box, height, width)
    split: dict[str, float] = {}
    original, original_render = seq.encode_webp, Scene.render
    encode = _cpu_timed(original, "encode", split)

    def keep(x, **kw):  # capture the uint8 images the row encodes
        raw[-1].append(x)
        return encode(x, **kw)

    def render(self, t_or_span, *a, **kw):
        key = "render_blurs" if isinstance(t_or_span, (tuple, list)) else "render_frames"
        return _cpu_timed(original_render, key, split)(self, t_or_span, *a, **kw)

    seq.encode_webp, Scene.render = keep, render
    reasons, bad, sizes, frame_bytes, rows = Counter(), Counter(), [], [], 0
    c0, w0 = cpu_seconds(), time.time()
    try:
        for i in range(n):
            raw.append([])
            row = seq.render_index(scene, render_cfg, seq.Assets("procedural", "procedural"), i, reasons, bad)
            if row is None:
                raw.pop()
                continue
            rows += 1
            raw[-1].append((row["box"], row["height"], row["width"]))
            sizes.append(len(row["frames"]) + sum(len(b) for b in row["blurs"]))
            frame_bytes.append(len(row["frames"]))
    finally:
        seq.encode_webp, Scene.render = original, original_render
        scene.close()
    cpu, wall = cpu_seconds() - c0, time.time() - w0
    per = max(rows, 1)
    split["other"] = cpu - sum(split.values())  # object/material build, clear, checks, cropping
    out = {"overrides": overrides, "cap_tbb": cap_tbb, "tbb_capped": scene.tbb_limited, "rows": rows,
           "rejections": dict(reasons), "setup_seconds": round(setup, 2),
           "core_seconds_per_sequence": round(cpu / per, 3),  # rejected tries included
           "core_seconds_split": {k: round(v / per, 3) for k, v in split.items()},
           "wall_seconds_per_sequence": round(wall / per, 3),
           "bytes_per_sequence": int(np.mean(sizes)) if sizes else None,
           "frame_bytes_per_sequence": int(np.mean(frame_bytes)) if sizes else None}
    if keep_raw:
        out["_raw"] = raw
    return out


def run_isolated(overrides: list[str], n: int, keep_raw: bool = False, cap_tbb: bool = True) -> dict:
    """:func:`run_config` in a fresh spawned process."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(run_config, overrides, n, keep_raw, cap_tbb).result()


def _alpha_psnr(images: list[np.ndarray], decoded: list[np.ndarray]) -> float:
    se = sum(float(((x.astype(np.float64)[..., 3] - y[..., 3]) ** 2).sum()) for x, y in zip(images, decoded))
    n = sum(x[..., 3].size for x in images)
    return 10 * np.log10(255 ** 2 / max(se / max(n, 1), 1e-12))


# Encoder settings compared on the same rendered rows (Pillow 13's WebP plugin exposes quality,
# method, alpha_quality, and for animations kmin/kmax, allow_mixed, minimize_size; libwebp's
# sharp_yuv / near_lossless / sns are not reachable through it).
WEBP_SETTINGS = [dict(quality=q, method=4, blur_method=4) for q in (60, 70, 80, 90, 100)] + [
    dict(quality=80, method=5, blur_method=5), dict(quality=80, method=6, blur_method=6)] + [
    dict(quality=q, method=5, blur_method=6) for q in (70, 75, 80, 90, 100)] + [
    dict(quality=80, method=4, blur_method=4, alpha_quality=70),
    dict(quality=80, method=4, blur_method=4, minimize_size=True),
    dict(quality=80, method=4, blur_method=4, allow_mixed=True),
    dict(quality=80, method=4, blur_method=4, kmin=1, kmax=1),
    dict(lossless=True, method=4, blur_method=4),
]


# AVIF for comparison (Pillow 13 bundles libavif: aom encodes, dav1d decodes). Unlike WebP lossy it
# can keep full chroma (4:4:4); 4:2:0 for reference. Both run on one thread, as a Ray actor or a
# loader worker gets one core. ``advanced`` goes to aom (tune=psnr: fewer dB lost per byte;
# alpha is lossy unless a:lossless).
_AVIF = dict(format="AVIF", subsampling="4:4:4", speed=6)
AVIF_SETTINGS = [dict(_AVIF, quality=q) for q in (50, 60, 70, 80, 90)] + [
    dict(_AVIF, quality=q, subsampling="4:2:0") for q in (70, 80, 90)] + [
    dict(_AVIF, quality=80, speed=4)] + [
    dict(_AVIF, quality=q, speed=4, advanced={"tune": "psnr"}) for q in (65, 70, 75)] + [
    dict(_AVIF, quality=70, speed=4, advanced={"tune": "psnr", "a:lossless": "1"})]  # "a:": alpha only


def encoder_sweep(raw: list[list], settings=None) -> list[dict]:
    """Re-encode the rows with each setting (frames as one animation, blurs as stills; WebP:
    ``method`` for the frames, ``blur_method`` for the blurs) and decode them as the loader does."""
    from PIL import AvifImagePlugin, features

    AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # decoder threads
    if settings is None:
        settings = WEBP_SETTINGS + (AVIF_SETTINGS if features.check("avif") else [])
    res = []
    for opts in settings:
        t_enc = t_dec = 0.0
        sizes, frame_sizes, per_seq, all_x, all_y = [], [], [], [], []
        frame_x, frame_y, blur_x, blur_y = [], [], [], []
        frame_opts = {k: v for k, v in opts.items() if k != "blur_method"}
        blur_opts = {**frame_opts, "method": opts["blur_method"]} if "blur_method" in opts else frame_opts
        for *images, (box, h, w) in raw:
            c0 = cpu_seconds()
            enc = [_encode(x, frame_opts if k == 0 else blur_opts) for k, x in enumerate(images)]
            c1 = cpu_seconds()
            dec = [decode_webp(e) for e in enc]  # PIL's Image.open: reads AVIF too
            t_enc, t_dec = t_enc + c1 - c0, t_dec + cpu_seconds() - c1
            # PSNR on the full-size images the loader gives (pasted), as before cropping.
            dec = [paste(d, box, h, w) for d in dec]
            images = [paste(x if x.ndim == 4 else x[None], box, h, w) for x in images]
            sizes.append(sum(map(len, enc)))
            frame_sizes.append(len(enc[0]))
            per_seq.append(psnr_opaque(images, dec))
            all_x += images
            all_y += dec
            frame_x.append(images[0])
            frame_y.append(dec[0])
            blur_x += images[1:]
            blur_y += dec[1:]
        res.append({"format": "WEBP", **opts, "bytes_per_sequence": int(np.mean(sizes)),
                    "frame_bytes_per_sequence": int(np.mean(frame_sizes)),
                    "blur_bytes_per_sequence": int(np.mean(sizes) - np.mean(frame_sizes)),
                    "psnr_opaque_pooled_db": round(psnr_opaque(all_x, all_y), 2),
                    "psnr_opaque_frames_db": round(psnr_opaque(frame_x, frame_y), 2),
                    "psnr_opaque_blurs_db": round(psnr_opaque(blur_x, blur_y), 2),
                    "psnr_opaque_median_db": round(float(np.median(per_seq)), 2),
                    "psnr_opaque_min_db": round(float(np.min(per_seq)), 2),
                    "alpha_psnr_db": round(_alpha_psnr(all_x, all_y), 1),
                    "encode_core_seconds_per_sequence": round(t_enc / len(raw), 3),
                    "decode_core_seconds_per_sequence": round(t_dec / len(raw), 4)})
        print(json.dumps(res[-1]), file=sys.stderr)
    return res


def _encode(x: np.ndarray, opts: dict) -> bytes:
    """encode_webp plus the options it does not take (alpha_quality, kmin/kmax, allow_mixed, ...) and AVIF."""
    import io

    from PIL import Image

    plain = {"quality", "method", "lossless"}
    if set(opts) <= plain:
        return encode_webp(x, **opts)
    frames = x[None] if x.ndim == 3 else x
    pil = [Image.fromarray(f, "RGBA") for f in frames]
    o = {"format": "WEBP", **opts}
    if o["format"] == "AVIF":
        o["max_threads"] = 1
        if len(pil) > 1:
            o.update(save_all=True, append_images=pil[1:], duration=40)
    elif len(pil) > 1:
        o = {"save_all": True, "append_images": pil[1:], "duration": 40, "loop": 0, "minimize_size": False, **o}
    else:
        o = {k: v for k, v in o.items() if k not in ("kmin", "kmax", "allow_mixed", "minimize_size")}
    buf = io.BytesIO()
    pil[0].save(buf, **o)
    return buf.getvalue()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="sequences per configuration")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "render.json"))
    ap.add_argument("--work", default="fmolab-work")
    ap.add_argument("--eevee", action="store_true", help="also time EEVEE (needs a GPU to be practical)")
    ap.add_argument("--only-encoders", action="store_true",
                    help="render the default config only, then run the encoder sweep (WebP, AVIF)")
    args = ap.parse_args(argv)
    use_work_dir(args.work)
    base = ["render.engine=cycles"]
    # name, overrides, cap_tbb. "before" = the previous defaults: TBB uncapped, full blur engine-rendered.
    configs = [
        ("before: samples=4 denoise, TBB uncapped, full blur rendered, WebP effort 4",
         ["render.full_from_halves=false", "render.webp_method=4", "render.webp_blur_method=4"], False),
        ("TBB capped, full blur rendered, WebP effort 4",
         ["render.full_from_halves=false", "render.webp_method=4", "render.webp_blur_method=4"], True),
        ("TBB capped, full blur from halves, WebP effort 4", ["render.webp_method=4", "render.webp_blur_method=4"],
         True),
        ("cycles default", [], True),
        ("samples=4 no denoise", ["render.denoise=false"], True),
        ("samples=8 denoise", ["render.samples=8"], True),
        ("samples=8 no denoise", ["render.samples=8", "render.denoise=false"], True),
        ("samples=16 no denoise", ["render.samples=16", "render.denoise=false"], True),
    ]
    if args.only_encoders:
        configs = [c for c in configs if c[0] == "cycles default"]
    elif args.eevee:  # without a GPU EEVEE runs on software OpenGL: minutes per sequence
        configs.append(("eevee default", ["render.engine=eevee"], True))
    results = []
    raw = None
    for name, extra, cap in configs:
        ov = base + extra if "eevee" not in name else extra
        # EEVEE without a GPU falls back to software OpenGL (very slow): one sequence is enough.
        n = 1 if "eevee" in name else args.n
        r = run_isolated(ov, n, keep_raw=name == "cycles default", cap_tbb=cap)
        if "_raw" in r:
            raw = r.pop("_raw")
        r["name"] = name
        print(json.dumps(r), file=sys.stderr)
        results.append(r)
    default = load_config().render
    report = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "defaults": {k: getattr(default, k) for k in ("width", "height", "num_frames", "samples", "max_bounces",
                                                      "denoise", "motion_blur_steps", "webp_quality", "webp_method",
                                                      "webp_blur_method", "full_from_halves")},
        "blurs": default.blurs,
        "n_per_config": args.n,
        "configs": results,
        "encoders": encoder_sweep(raw) if raw else [],
        "note": ("core-seconds = process CPU time / accepted sequence (rejected tries included), one fresh "
                 "process per config; split: render_blurs/render_frames = CPU inside Scene.render (path "
                 "tracing, OIDN, scene sync, PNG readback), encode = WebP encoding, other = build/checks; "
                 "denoise cost = a config minus its 'no denoise' twin. encoders: every setting re-encodes "
                 "the default config's rows (WebP, AVIF; one thread); PSNR over opaque pixels (alpha 255) "
                 "of RGB, pooled over frames and blurs unless named; alpha_psnr over all pixels; encode/"
                 "decode = CPU seconds per sequence (24 frames + 3 blurs, decode to uint8 RGBA)."),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
