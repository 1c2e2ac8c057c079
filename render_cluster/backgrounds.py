"""Background clips: consecutive frames with plausible camera motion, stored as their own shards.

Procedural clips need no Blender: a large random texture image (fractal colour noise + blurred
shapes) is panned and zoomed smoothly with a little hand-held shake. A source folder holds
VOT/OTB-style sequences (``<root>/<seq>/img/*.jpg`` or ``<root>/<seq>/*.jpg``) and video files: every
container FFmpeg reads (mp4, webm, mov, mkv, avi, ...) and animated GIF/APNG, all read through
:mod:`fmolab.media.video`; a clip that cannot be decoded is skipped and counted.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import math
from collections import Counter, deque
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fmolab import storage
from fmolab.media.codecs import encode_webp
from fmolab.media.video import FRAME_SUFFIXES, VIDEO_SUFFIXES, open_video
from fmolab.shards import BACKGROUND_SCHEMA, MANIFEST, open_parquet, write_json_atomic, write_shard

SEED_OFFSET = 7919  # background RNG stream differs from the objects' for the same seed


def check_source(source: str) -> None:
    if source == "procedural":
        return
    if storage.is_remote(source):
        source = str(storage.local_tree(source))  # this node's copy of the clips folder
    if not Path(source).is_dir():
        raise FileNotFoundError(f"render.backgrounds.source = {source!r}: folder does not exist (want "
                                f"VOT/OTB-style frame folders or videos, or 'procedural')")
    if not any(list_sources(source)):
        raise FileNotFoundError(f"render.backgrounds.source = {source!r}: no frame folder or video "
                                f"({', '.join(sorted(VIDEO_SUFFIXES))}) inside")


# ---------------------------------------------------------------- procedural


def _fractal(rng: np.random.Generator, h: int, w: int, octaves: int = 5) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1], ``[h, w]``."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        cells = 2 ** (k + 2)
        small = rng.random((cells, max(2, cells * w // h))).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
        total += amp
        amp *= float(rng.uniform(0.45, 0.65))
    out /= total
    return (out - out.min()) / max(1e-6, float(out.max() - out.min()))


def procedural_texture(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A large RGB image with colour noise and blurred shapes (edges, like real scenes have)."""
    palette = rng.random((int(rng.integers(3, 6)), 3)) * 255
    stops = np.linspace(0, 1, len(palette))
    v = _fractal(rng, h, w)
    rgb = np.stack([np.interp(v, stops, palette[:, c]) for c in range(3)], -1)
    rgb *= (0.7 + 0.6 * _fractal(rng, h, w, 3))[..., None]  # large-scale shading
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(10, 40))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.02, 0.15) * w
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x - s, y - s * rng.uniform(0.3, 1), x + s, y + s * rng.uniform(0.3, 1)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))


def procedural_clip(rng: np.random.Generator, width: int, height: int, frames: int) -> np.ndarray:
    """``[frames, H, W, 3]`` uint8: a smooth pan/zoom over a texture 2.5x the frame size."""
    W, H = int(width * 2.5), int(height * 2.5)
    tex = procedural_texture(rng, H, W)
    z0 = rng.uniform(0.5, 1.0)
    z1 = z0 * rng.uniform(0.9, 1.1)  # zoom: crop size as a fraction of the max that fits
    cx0, cy0 = rng.uniform(0.35, 0.65) * W, rng.uniform(0.35, 0.65) * H
    speed = rng.uniform(0, 0.02) * W  # pixels of texture per frame
    ang = rng.uniform(0, 2 * math.pi)
    shake = rng.uniform(0, 1.5)
    out = []
    for f in range(frames):
        s = f / max(1, frames - 1)
        z = z0 + (z1 - z0) * s
        cw, ch = z * W / 2.5 * 1.2, z * H / 2.5 * 1.2
        cx = cx0 + math.cos(ang) * speed * f + rng.normal(0, shake)
        cy = cy0 + math.sin(ang) * speed * f + rng.normal(0, shake)
        cx, cy = np.clip(cx, cw / 2, W - cw / 2), np.clip(cy, ch / 2, H - ch / 2)
        box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
        out.append(np.asarray(tex.resize((width, height), Image.BILINEAR, box=box)))
    return np.stack(out)


# ---------------------------------------------------------------- folders


def list_sources(root: str | Path) -> tuple[list[Path], list[Path]]:
    """(frame folders, video files) below ``root``, sorted."""
    folders, videos = set(), []
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES:
            folders.add(p.parent)  # OTB <seq>/img/, VOT <seq>/color/ or plain <seq>/
        elif p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(p)
    return sorted(folders), videos


def fit(img: Image.Image, width: int, height: int) -> np.ndarray:
    """Resize to cover ``width x height`` and centre-crop (no distortion)."""
    img = img.convert("RGB")
    s = max(width / img.width, height / img.height)
    w, h = max(width, round(img.width * s)), max(height, round(img.height * s))
    img = img.resize((w, h), Image.BILINEAR)
    x, y = (w - width) // 2, (h - height) // 2
    return np.asarray(img.crop((x, y, x + width, y + height)))


def folder_clip(folder: Path, start: int, frames: int, width: int, height: int) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    out = []
    for p in files[start:start + frames]:
        with Image.open(p) as im:
            out.append(fit(im, width, height))
    return np.stack(out)


def video_clip(path: Path, rng: np.random.Generator, frames: int, width: int, height: int):
    """``(start, clip)``: ``frames`` consecutive frames of a video from a random start, the video opened
    and decoded once (only up to the frames taken when it states its length); None when it is shorter.
    Raises (naming the file) when it cannot be decoded."""
    def fitted(frame):
        return fit(Image.fromarray(frame), width, height)

    source = open_video(path)
    total = source.count()
    if total:
        if total < frames:
            return None
        start = int(rng.integers(total - frames + 1))
        clip = [fitted(f) for f in itertools.islice(source.rgb(), start, start + frames)]
        return (start, np.stack(clip)) if len(clip) == frames else None  # a container that overstated its length
    # The file does not say: one pass keeping a uniformly drawn window (reservoir sampling over windows).
    last: deque = deque(maxlen=frames)
    chosen = None
    for k, frame in enumerate(source.rgb()):
        last.append(fitted(frame))
        j = k - frames + 1  # the window ending at frame k
        if j >= 0 and rng.random() * (j + 1) < 1:
            chosen = (j, np.stack(last))
    return chosen


# ---------------------------------------------------------------- writing


def _clip_rows(cfg, indices: list[int], sources, counts: Counter) -> list[dict]:
    render_cfg, bg = cfg.render, cfg.render.backgrounds
    W, H, F = render_cfg.width, render_cfg.height, bg.frames_per_clip
    rows = []
    for i in indices:
        rng = np.random.default_rng([render_cfg.seed + SEED_OFFSET, i])
        if bg.source == "procedural":
            clip, source, clip_id = procedural_clip(rng, W, H, F), "procedural", f"procedural/{render_cfg.seed}/{i}"
        else:
            folders, videos = sources
            items = [("folder", f) for f in folders] + [("video", v) for v in videos]
            kind, path = items[i % len(items)]  # round robin: every source is used
            rel = str(path.relative_to(storage.local_tree(bg.source)))
            try:
                if kind == "folder":
                    n = sum(1 for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
                    if n < F:
                        counts["too_short"] += 1
                        continue
                    start = int(rng.integers(n - F + 1))
                    clip = folder_clip(path, start, F, W, H)
                else:
                    found = video_clip(path, rng, F, W, H)
                    if found is None:
                        counts["too_short"] += 1
                        continue
                    start, clip = found
            except Exception:  # an unreadable frame, or a video that cannot be decoded
                counts[f"unreadable_{kind}"] += 1
                continue
            source, clip_id = rel, f"{rel}/{start}"
        rows.append({"clip_id": clip_id, "source": source, "width": W, "height": H, "num_frames": len(clip),
                     "frames": encode_webp(clip, quality=render_cfg.webp_quality, method=render_cfg.webp_method)})
    return rows


def write_backgrounds(cfg, out_dir: str) -> dict:
    """Write ``num_clips`` clips as shards of ``shard_rows`` (existing shards are kept) + manifest, into
    a folder or an object-store URI."""
    render_cfg, bg = cfg.render, cfg.render.backgrounds
    check_source(bg.source)
    out_dir = storage.normalize(out_dir)
    sources = ([], []) if bg.source == "procedural" else list_sources(storage.local_tree(bg.source))
    counts: Counter = Counter()
    n_blocks = math.ceil(bg.num_clips / render_cfg.shard_rows)
    existing = {storage.basename(p) for p in storage.list_files(out_dir, ".parquet")}
    todo = [b for b in range(n_blocks) if f"part-{b:05d}.parquet" not in existing]

    def block(b: int, counts: Counter):
        idx = list(range(b * render_cfg.shard_rows, min(bg.num_clips, (b + 1) * render_cfg.shard_rows)))
        write_shard(_clip_rows(cfg, idx, sources, counts), storage.join(out_dir, f"part-{b:05d}.parquet"),
                    BACKGROUND_SCHEMA)

    try:
        import ray

        parallel = ray.is_initialized() and len(todo) > 1
    except ImportError:
        parallel = False
    if parallel:  # one Ray task per shard; counts come back with the results
        @ray.remote(num_cpus=1)
        def task(b):
            c = Counter()
            block(b, c)
            return c

        for c in ray.get([task.remote(b) for b in todo]):
            counts.update(c)
    else:
        for b in todo:
            block(b, counts)
    shards = [p for p in storage.list_files(out_dir, ".parquet") if storage.basename(p).startswith("part-")]
    manifest = {
        "kind": "backgrounds", "source": bg.source, "seed": render_cfg.seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_clips_requested": bg.num_clips, "frames_per_clip": bg.frames_per_clip,
        "width": render_cfg.width, "height": render_cfg.height, "webp_quality": render_cfg.webp_quality,
        "num_rows": sum(open_parquet(p).metadata.num_rows for p in shards),
        "clips_per_source": dict(sorted(Counter(s for p in shards
                                                for s in open_parquet(p).read(columns=["source"]).column(0).to_pylist()).items())),
        "skipped_this_run": dict(counts), "shards": [storage.basename(p) for p in shards],
        "columns": BACKGROUND_SCHEMA.names,
    }
    write_json_atomic(manifest, storage.join(out_dir, MANIFEST))
    return manifest
