"""One dataset row: draw parameters for (seed, index, try), build the object, check, render, encode.

Everything random is drawn from ``numpy.random.default_rng([seed, index, try])`` in a fixed order,
so a row depends only on those numbers (not on the worker, the block or what was rendered before).
Cheap checks run first: out-of-frame before any render, coverage on the blurs before the frames.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fmolab import storage
from fmolab.media.codecs import encode_webp
from fmolab.shards import content_box, crop
from render_cluster import objects, textures
from render_cluster.trajectory import TAN_HALF_X, frame_times, project, sample_trajectory

BOX_PAD = 3  # pixels around the projected mesh: pixel filter (1.5 px) + rounding


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def euler_matrix(rot: np.ndarray) -> np.ndarray:
    """Blender's XYZ Euler: R = Rz @ Ry @ Rx, for ``rot [..., 3]`` -> ``[..., 3, 3]``."""
    a, b, c = (rot[..., k] for k in range(3))
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    one, zero = np.ones_like(a), np.zeros_like(a)
    rx = np.stack([one, zero, zero, zero, ca, -sa, zero, sa, ca], -1).reshape(*a.shape, 3, 3)
    ry = np.stack([cb, zero, sb, zero, one, zero, -sb, zero, cb], -1).reshape(*a.shape, 3, 3)
    rz = np.stack([cc, -sc, zero, sc, cc, zero, zero, zero, one], -1).reshape(*a.shape, 3, 3)
    return rz @ ry @ rx


def screen_boxes(verts: np.ndarray, traj, times: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel bounding box ``[T, 4]`` (x0, y0, x1, y1 as floats) of the mesh at each time."""
    loc, rot = traj.at(times)
    world = np.einsum("tij,vj->tvi", euler_matrix(rot), verts) + loc[:, None, :]
    uv = project(world, width, height)
    return np.concatenate([uv.min(1), uv.max(1)], axis=-1)


def to_pixels(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = int(np.floor(box[0])) - BOX_PAD, int(np.floor(box[1])) - BOX_PAD
    x1, y1 = int(np.ceil(box[2])) + BOX_PAD, int(np.ceil(box[3])) + BOX_PAD
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def derived_blurs(spans: dict[str, list[float]]) -> dict[str, tuple[str, str]]:
    """Blurs that two other (engine-rendered) blurs partition: ``{name: (first, second)}``.

    A blur over [a, b] is the time average of the object over the span; when [a, m] and [m, b]
    are also rendered, it equals their length-weighted mean in premultiplied alpha (see
    :func:`mean_blur`), which is what the engine integrates anyway (its shutter times are drawn
    uniformly over [a, b]), so a third path-traced render is not needed.
    """
    out: dict[str, tuple[str, str]] = {}
    for name, (a, b) in spans.items():
        for p, (pa, pb) in spans.items():
            q = next((q for q, (qa, qb) in spans.items() if q not in (name, p) and qa == pb and qb == b), None)
            if p != name and pa == a and pb < b and q is not None and p not in out and q not in out:
                out[name] = (p, q)
                break
    return {k: v for k, v in out.items() if not set(v) & set(out)}  # parts are engine-rendered


def mean_blur(images: list[np.ndarray], spans: list[list[float]]) -> np.ndarray:
    """Length-weighted mean of straight-alpha RGBA uint8 blurs, in premultiplied alpha."""
    w = np.array([b - a for a, b in spans], dtype=np.float64)
    w /= w.sum()
    x = np.stack(images).astype(np.float64) / 255  # [K, H, W, 4]
    alpha = np.einsum("k,khw->hw", w, x[..., 3])
    premul = np.einsum("k,khwc->hwc", w, x[..., :3] * x[..., 3:])
    rgb = np.divide(premul, alpha[..., None], out=np.zeros_like(premul), where=alpha[..., None] > 0)
    out = np.concatenate([rgb, alpha[..., None]], -1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


class Assets:
    """Object/texture pools; a folder is listed once (in the driver) and passed to the workers. A
    folder may be a URI: each node reads its own cached copy (:func:`fmolab.storage.local_tree`)."""

    def __init__(self, objects_root: str, textures_root: str, object_files=None, texture_files=None):
        self.objects_root, self.textures_root = objects_root, textures_root
        self.object_files = object_files if object_files is not None else (
            [] if objects_root == "procedural" else objects.list_mesh_files(self.local("objects")))
        self.texture_files = texture_files if texture_files is not None else (
            [] if textures_root == "procedural" else textures.list_images(self.local("textures")))

    def local(self, kind: str) -> Path:
        """This node's folder of the ``objects`` or ``textures`` pool."""
        return storage.local_tree(self.objects_root if kind == "objects" else self.textures_root)

    def to_dict(self) -> dict:
        return dict(objects_root=self.objects_root, textures_root=self.textures_root,
                    object_files=self.object_files, texture_files=self.texture_files)


def _build(scene, render_cfg, assets: Assets, rng, size: float):
    """Object + material from the pools; raises objects.AssetError for a bad file."""
    if assets.object_files:
        rel = assets.object_files[int(rng.integers(len(assets.object_files)))]
        obj = objects.load_mesh(assets.local("objects") / rel, size)
        object_id, oparams = objects.obj_id(rel), {"file": rel}
    else:
        obj, object_id, oparams = objects.make_procedural(rng, size)
    if assets.texture_files:
        rel = assets.texture_files[int(rng.integers(len(assets.texture_files)))]
        mat, tparams = textures.image_material(assets.local("textures") / rel, rng, size)
        texture_id, tparams = textures.image_id(rel), dict(tparams, file=rel)
    else:
        mat, texture_id, tparams = textures.procedural_material(rng, size)
    obj.data.materials.append(mat)
    return obj, object_id, oparams, texture_id, tparams


def render_try(scene, render_cfg, assets: Assets, index: int, attempt: int) -> dict:
    """Render one try of ``index``; returns a shard row or raises :class:`Rejected`."""
    W, H, N = render_cfg.width, render_cfg.height, render_cfg.num_frames
    rng = np.random.default_rng([render_cfg.seed, index, attempt])
    scene.clear()
    traj = sample_trajectory(rng, render_cfg.trajectory, W, H)
    try:
        obj, object_id, oparams, texture_id, tparams = _build(scene, render_cfg, assets, rng, traj.size)
    except objects.AssetError as exc:
        raise Rejected("bad_asset", str(exc)) from exc
    scene.animate(obj, traj)
    verts = np.empty(len(obj.data.vertices) * 3)
    obj.data.vertices.foreach_get("co", verts)
    verts = verts.reshape(-1, 3)
    times = frame_times(N)
    boxes = screen_boxes(verts, traj, times, W, H)
    ends = screen_boxes(verts, traj, np.array([0.0, 1.0]), W, H)
    every = np.concatenate([boxes, ends])
    if (every[:, :2] < 0).any() or (every[:, 2] > W).any() or (every[:, 3] > H).any():
        raise Rejected("out_of_frame", f"object box {every[:, :2].min(0)}-{every[:, 2:].max(0)}")
    seed32 = int(rng.integers(2**31 - 1))  # render-noise seed, also from the sample's RNG
    derived = derived_blurs(render_cfg.blurs) if render_cfg.full_from_halves else {}
    images: dict[str, np.ndarray] = {}
    alphas: dict[str, np.ndarray] = {}
    blurs, coverage, opacity = [], [], []
    # Engine-rendered spans first (in config order), then the ones derived from them.
    for name in sorted(render_cfg.blurs, key=lambda k: k in derived):
        a, b = render_cfg.blurs[name]
        if name in derived:
            img = mean_blur([images[p] for p in derived[name]], [render_cfg.blurs[p] for p in derived[name]])
        else:
            span_boxes = screen_boxes(verts, traj, np.linspace(a, b, 17), W, H)
            box = to_pixels(np.concatenate([span_boxes[:, :2].min(0), span_boxes[:, 2:].max(0)]), W, H)
            img = scene.render((a, b), box, seed32)
        alpha = img[..., 3].astype(np.float32) / 255
        cov = float(alpha.mean())
        if cov < render_cfg.min_coverage:
            raise Rejected("low_coverage", f"blur {name} coverage {cov:.4f} < {render_cfg.min_coverage}")
        images[name], alphas[name] = img, alpha
    for name in render_cfg.blurs:  # rows keep the config's order
        alpha = alphas[name]
        blurs.append(images[name])
        coverage.append(float(alpha.mean()))
        support = alpha > 0
        opacity.append(float(alpha[support].mean()) if support.any() else 0.0)
    frames = np.stack([scene.render(float(t), to_pixels(bx, W, H), seed32) for t, bx in zip(times, boxes)])
    params = {
        "trajectory": traj.to_dict(), "object": oparams, "texture": tparams, "try": attempt,
        "frame_times": times.round(6).tolist(), "blur_opacity": opacity,
        "camera": {"lens_mm": 50.0, "tan_half_fov_x": TAN_HALF_X}, "render_seed": seed32,
    }
    # Store only the object's box (coverage above is over the full image): decode time scales with pixels.
    blurs = np.stack(blurs)
    keep = content_box(frames, blurs)
    frames, blurs = crop(frames, keep), crop(blurs, keep)
    q, m, mb = render_cfg.webp_quality, render_cfg.webp_method, render_cfg.webp_blur_method
    return {
        "seq_id": f"{render_cfg.seed}-{index}", "index": index, "seed": render_cfg.seed,
        "object_id": object_id, "texture_id": texture_id, "params": json.dumps(params),
        "width": W, "height": H, "num_frames": N,
        "frames": encode_webp(frames, quality=q, method=m),
        "blurs": [encode_webp(b, quality=q, method=mb) for b in blurs],
        "blur_names": list(render_cfg.blurs), "blur_spans": [list(map(float, s)) for s in render_cfg.blurs.values()],
        "blur_coverage": coverage, "box": keep,
    }


def render_index(scene, render_cfg, assets: Assets, index: int, reasons: Counter, bad_assets: Counter) -> dict | None:
    """Up to ``max_tries`` tries of ``index``; counts rejections by reason; None if all fail."""
    for attempt in range(render_cfg.max_tries):
        try:
            return render_try(scene, render_cfg, assets, index, attempt)
        except Rejected as rej:
            reasons[rej.reason] += 1
            if rej.reason == "bad_asset":
                bad_assets[rej.detail[:300]] += 1
    return None


def render_block(scene, render_cfg, assets: Assets, block: int, num_sequences: int) -> tuple[list[dict], dict]:
    """All rows of one shard block plus its summary."""
    t0 = time.time()
    reasons, bad = Counter(), Counter()
    lo, hi = block * render_cfg.shard_rows, min(num_sequences, (block + 1) * render_cfg.shard_rows)
    rows, failed = [], []
    for index in range(lo, hi):
        row = render_index(scene, render_cfg, assets, index, reasons, bad)
        (rows.append(row) if row is not None else failed.append(index))
    summary = {"block": block, "rows": len(rows), "first_index": lo, "end_index": hi, "failed": failed,
               "rejections": dict(reasons), "bad_assets": dict(bad), "seconds": time.time() - t0}
    return rows, summary
