"""A toy FMO dataset in the exact shard schema, numpy only (no Blender), for tests and benchmarks.

Objects are textured ellipses moving along a line while spinning. Sharp frames sit at
``t_i = (i + 0.5) / N``; each blur is the premultiplied average of densely supersampled positions
inside its span, so the two half blurs average to the full blur (up to WebP quantisation).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmolab.media.codecs import encode_webp
from fmolab.shards import BACKGROUND_SCHEMA, content_box, crop, write_json_atomic, write_shard

BLUR_SPANS = {"full": (0.0, 1.0), "first": (0.0, 0.5), "second": (0.5, 1.0)}
SUPERSAMPLE = 8  # positions per half span: enough for a smooth streak at test sizes
ROWS_PER_SHARD = 8


def _object_look(obj: int, seed: int) -> dict:
    """Shape and texture of object ``obj``: the same for every sequence that uses it."""
    rng = np.random.default_rng([seed, 7919, obj])
    return dict(
        radius=rng.uniform(0.08, 0.16),  # of the image diagonal-ish scale (min(W, H))
        aspect=rng.uniform(0.6, 1.0),
        colors=rng.uniform(0.1, 0.95, size=(2, 3)),
        stripes=float(rng.integers(2, 6)),
    )


def _render(look: dict, cx: float, cy: float, angle: float, xx: np.ndarray, yy: np.ndarray, scale: float):
    """Straight-alpha RGBA float ``[H,W,4]`` of one object pose (anti-aliased edge)."""
    rx = look["radius"] * scale
    ry = rx * look["aspect"]
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    r = np.sqrt(u * u + v * v)
    alpha = np.clip((1.0 - r) * rx, 0.0, 1.0)  # ~one pixel soft edge
    mix = (np.sin(u * np.pi * look["stripes"]) > 0).astype(np.float32)[..., None]
    shade = (0.75 + 0.25 * np.clip(1 - r, 0, 1))[..., None]  # radial shading makes rotation visible
    rgb = (look["colors"][0] * mix + look["colors"][1] * (1 - mix)) * shade
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def _premult_mean(images: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(images)
    alpha = stack[..., 3:4].mean(0)
    rgb = (stack[..., :3] * stack[..., 3:4]).mean(0) / np.maximum(alpha, 1e-6)
    return np.concatenate([rgb, alpha], axis=-1)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _sequence_row(i: int, seed: int, width: int, height: int, num_frames: int, num_objects: int,
                  quality: int, cropped: bool = True) -> dict:
    rng = np.random.default_rng([seed, i])
    obj = i % num_objects
    look = _object_look(obj, seed)
    scale = float(min(width, height))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    margin = look["radius"] * scale
    start = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    direction = rng.uniform(0, 2 * np.pi)
    travel = rng.uniform(1.0, 3.0) * 2 * margin
    end = start + travel * np.array([np.cos(direction), np.sin(direction)])
    end = np.clip(end, margin, [width - margin, height - margin])
    a0 = rng.uniform(0, 2 * np.pi)
    a1 = a0 + rng.uniform(-0.5, 0.5)

    def pose(t: float) -> np.ndarray:
        p = start + (end - start) * t
        return _render(look, p[0], p[1], a0 + (a1 - a0) * t, xx, yy, scale)

    frames = [pose((k + 0.5) / num_frames) for k in range(num_frames)]
    # Dense samples per half; the full blur reuses them so full == mean(first, second) exactly.
    halves = {
        name: [pose(a + (b - a) * (k + 0.5) / SUPERSAMPLE) for k in range(SUPERSAMPLE)]
        for name, (a, b) in BLUR_SPANS.items() if name != "full"
    }
    blur_imgs = {"first": _premult_mean(halves["first"]), "second": _premult_mean(halves["second"])}
    blur_imgs["full"] = _premult_mean(halves["first"] + halves["second"])
    names = list(BLUR_SPANS)
    frames_u8, blurs_u8 = _u8(np.stack(frames)), _u8(np.stack([blur_imgs[n] for n in names]))
    # Stored cropped to the object (faster decode); cropped=False writes the old full-size layout.
    box = content_box(frames_u8, blurs_u8) if cropped else None
    if box is not None:
        frames_u8, blurs_u8 = crop(frames_u8, box), crop(blurs_u8, box)
    params = dict(generator="fmolab.data.synthetic", start=start.tolist(), end=end.tolist(),
                  rotation=[a0, a1], radius=look["radius"], aspect=look["aspect"])
    return dict(
        seq_id=f"{seed}-{i}",
        index=i,
        seed=seed,
        object_id=f"synthetic/ellipse/{obj}",
        texture_id=f"synthetic/stripes/{obj}",
        params=json.dumps(params),
        width=width,
        height=height,
        num_frames=num_frames,
        frames=encode_webp(frames_u8, quality=quality, method=0),
        blurs=[encode_webp(b, quality=quality, method=0) for b in blurs_u8],
        blur_names=names,
        blur_spans=[list(BLUR_SPANS[n]) for n in names],
        blur_coverage=[float(blur_imgs[n][..., 3].mean()) for n in names],
        box=box,
    )


def _background_row(j: int, seed: int, width: int, height: int, clip_frames: int, quality: int) -> dict:
    """Smooth value noise drifting across the frame: consecutive frames differ a little, like video."""
    rng = np.random.default_rng([seed, 104729, j])
    pad = 16
    gh, gw = 5, 6
    grid = rng.uniform(0, 1, size=(gh, gw, 3)).astype(np.float32)
    big_h, big_w = height + pad * 2, width + pad * 2
    ys = np.linspace(0, gh - 1, big_h)
    xs = np.linspace(0, gw - 1, big_w)
    y0, x0 = np.floor(ys).astype(int).clip(0, gh - 2), np.floor(xs).astype(int).clip(0, gw - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g = grid
    canvas = (g[y0][:, x0] * (1 - fy) * (1 - fx) + g[y0 + 1][:, x0] * fy * (1 - fx)
              + g[y0][:, x0 + 1] * (1 - fy) * fx + g[y0 + 1][:, x0 + 1] * fy * fx)
    canvas += rng.normal(0, 0.03, size=canvas.shape).astype(np.float32)  # fine grain
    vx, vy = rng.uniform(-2, 2, size=2)
    clip = []
    for k in range(clip_frames):
        ox = int(np.clip(pad + round(vx * k), 0, 2 * pad))
        oy = int(np.clip(pad + round(vy * k), 0, 2 * pad))
        clip.append(canvas[oy:oy + height, ox:ox + width])
    return dict(clip_id=f"synthetic-bg-{seed}-{j}", source="synthetic", width=width, height=height,
                num_frames=clip_frames, frames=encode_webp(_u8(np.stack(clip)), quality=quality, method=0))


def write_synthetic_dataset(root, num_sequences: int = 16, width: int = 64, height: int = 48, num_frames: int = 8,
                            num_objects: int = 4, seed: int = 0, num_clips: int = 4, clip_frames: int = 6,
                            quality: int = 90, cropped: bool = True) -> Path:
    """Write sequences to ``root`` and background clips to ``root/backgrounds``; returns ``root``.

    ``cropped=False`` stores full-size images and no box (the layout of datasets written before ``box``).
    """
    root = Path(root)
    rows = [_sequence_row(i, seed, width, height, num_frames, num_objects, quality, cropped)
            for i in range(num_sequences)]
    for s in range(0, num_sequences, ROWS_PER_SHARD):
        write_shard(rows[s:s + ROWS_PER_SHARD], root / f"shard-{s // ROWS_PER_SHARD:05d}.parquet")
    write_json_atomic(dict(generator="fmolab.data.synthetic", seed=seed, num_sequences=num_sequences,
                           width=width, height=height, num_frames=num_frames, num_objects=num_objects,
                           blurs={k: list(v) for k, v in BLUR_SPANS.items()}, supersample=SUPERSAMPLE),
                      root / "manifest.json")
    bg = [_background_row(j, seed, width, height, clip_frames, quality) for j in range(num_clips)]
    write_shard(bg, root / "backgrounds" / "clips-00000.parquet", schema=BACKGROUND_SCHEMA)
    write_json_atomic(dict(kind="backgrounds", generator="fmolab.data.synthetic", seed=seed, num_clips=num_clips,
                           clip_frames=clip_frames, width=width, height=height),
                      root / "backgrounds" / "manifest.json")
    return root
