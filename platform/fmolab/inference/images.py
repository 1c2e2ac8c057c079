"""Deblur real images with a trained model: two consecutive frames (double blur) or frame + background.

Output: the sub-frames as RGBA PNGs, their alpha mattes, an animated WebP over a checkerboard and, when
a background is known, the temporally super-resolved frames composited onto it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fmolab import storage
from fmolab.atomic import atomic_dir
from fmolab.compose import composite
from fmolab.geometry import resize
from fmolab.inference.predictor import DeblurError, Predictor
from fmolab.media import flatten_rgba, read_rgb, save_animation, to_uint8


MIN_SIDE = 16  # the encoder's output stride: a smaller image has no latent pixel to render from
# Without a detected object the whole frame goes through the network; time and memory grow with the
# pixels (benchmarks/deblur_crop.py, resnet50 DeFMO on 2 CPU threads: 8.3 s / 1.35 GB at 1280x720,
# 21 s / 2.4 GB at 1920x1080, against 1.2 s / 0.76 GB and 1.9 s / 1.0 GB for the crop), so frames
# larger than this are refused instead.
MAX_WHOLE_PIXELS = 1280 * 720


def deblur_images(predictor: Predictor, images: list[str | Path], background: str | Path | None,
                  out_dir: str | Path, num_frames: int = 8, threshold: float = 0.1, min_area: int = 12,
                  ext_factor: float = 2.0, max_objects: int = 4) -> dict:
    """Deblur one input (2 frames for double blur, or image + background) and write the outputs.

    The objects are found first (the difference to the background, or between the two frames), and a
    crop around each (up to ``max_objects``) of the model's aspect ratio (grown by ``ext_factor`` object
    radii on every side) goes through the network at the model's training size, as in training: memory
    does not grow with the frame. With a background the sub-frames are also pasted back into the full
    frame."""
    from fmolab.inference.movers import crops, detect_movers, detect_pair

    fmt = predictor.input_format
    if len(images) != fmt.n_images or fmt.background_input != bool(background):
        raise DeblurError(wrong_kind(predictor.source, fmt, len(images), bool(background)))
    arrays = [read_rgb(p, DeblurError) for p in images] + ([read_rgb(background, DeblurError)] if background else [])
    names = [str(p) for p in images] + ([str(background)] if background else [])
    sizes = {a.shape[-2:] for a in arrays}
    if len(sizes) != 1:
        detail = ", ".join(f"{n}: {a.shape[2]}x{a.shape[1]}" for n, a in zip(names, arrays))
        raise DeblurError(f"input images differ in size ({detail}); give frames of one video")
    (h, w), = sizes
    if min(h, w) < MIN_SIDE:
        raise DeblurError(f"{names[0]}: {w}x{h} is below the smallest input a model takes ({MIN_SIDE}x{MIN_SIDE}: its "
                          f"latent is at 1/16 of the image); give a crop around the object of at least that size")
    found = (detect_movers(arrays[0], arrays[-1], threshold, min_area, max_objects) if background else
             detect_pair(arrays[0], arrays[1], threshold, min_area, max_objects) if len(arrays) == 2 else [])
    boxes = [box for box, _ in crops(found, ext_factor, predictor.size, (h, w), max_objects)]
    size = predictor.input_size(*predictor.size)
    if not boxes and h * w <= MAX_WHOLE_PIXELS:
        boxes, size = [(0, 0, h, w)], predictor.input_size(h, w)
    elif not boxes:
        raise DeblurError(f"{names[0]}: no moving object found (nothing differs by more than {threshold} over "
                          f"{min_area} pixels) and the {w}x{h} frame is too large to run whole (over "
                          f"{MAX_WHOLE_PIXELS} pixels); lower --threshold / --min-area or give a crop around the object")
    objects = []
    for y0, x0, y1, x1 in boxes:
        stacked = np.concatenate([resize(a[:, y0:y1, x0:x1], size) for a in arrays], axis=0)[None].astype(np.float32)
        renders = resize(predictor.render(stacked, num_frames)[0], (y1 - y0, x1 - x0))  # [T,4,h,w] over the crop
        objects.append(((y0, x0, y1, x1), torch.from_numpy(renders)))
    bg = torch.from_numpy(arrays[-1]) if background else None
    out = write_outputs(objects, out_dir, bg)
    return {**out, "box": [int(v) for v in boxes[0]], "boxes": [[int(v) for v in b] for b in boxes],
            "detected": bool(found), "size": [w, h]}


# What each input kind needs, and how to get such a model (the presets of platform/fmolab/presets).
GET_A_MODEL = {
    "frames": "a double-blur model (two consecutive frames): `fmolab demo --preset demo_double_blur` registers "
              "one (models:/fmolab-demo-double-blur@demo), or `fmolab train --preset double_blur`",
    "background": "a background+blur model (image + background): `fmolab demo` registers one "
                  "(models:/fmolab-demo@demo), `fmolab import defmo encoder_best.pt "
                  "rendering_best.pt --register defmo` loads the published DeFMO weights, or `fmolab train "
                  "--preset background_blur` / `--preset defmo`",
    "single": "a single-image model (no background): `fmolab train data.format=single_blur`",
}


def wrong_kind(source: str, fmt, n_images: int, background: bool) -> str:
    """One line: what the model takes, and which kind of model the given inputs need, and where to get it."""
    takes = ("two consecutive frames (--frames A B)" if fmt.n_images == 2 else
             "an image and its background (--image X --background B)" if fmt.background_input else
             "one image and no background (--image X)")
    given = "frames" if n_images == 2 else "background" if background else "single"
    return f"model {source} takes {takes}; the inputs given need {GET_A_MODEL[given]}"


def write_outputs(objects: list[tuple[tuple, torch.Tensor]] | torch.Tensor, out_dir: str | Path,
                  background: torch.Tensor | None = None) -> dict:
    """For every object ``(box, renders [T,4,h,w] over the box)``: its sub-frames (RGBA PNG), alpha
    mattes and an animated preview (the first, largest object's in ``out_dir``, the others' in
    ``object_<j>/``); with the full frame's background, all objects pasted into it
    (``super_resolved.webp``). Renders alone are one object over the whole frame. All or nothing
    (written to a temp folder)."""
    if isinstance(objects, torch.Tensor):
        objects = [((0, 0, *objects.shape[-2:]), objects)]
    out = storage.normalize(out_dir)  # a folder or a URI (atomic_dir uploads the finished folder)
    with atomic_dir(out) as tmp:
        for j, (_, renders) in enumerate(objects):
            folder = tmp / f"object_{j}" if j else tmp
            folder.mkdir(exist_ok=True)
            rgba = to_uint8(renders)
            for i, frame in enumerate(rgba):
                Image.fromarray(frame, "RGBA").save(folder / f"subframe_{i:03d}.png")
                Image.fromarray(frame[..., 3], "L").save(folder / f"alpha_{i:03d}.png")
            save_animation(folder / "subframes.webp", flatten_rgba(renders))
        if background is not None:
            full = background[None].repeat(objects[0][1].shape[0], 1, 1, 1)
            for box, renders in objects:
                y0, x0, y1, x1 = box
                full[:, :, y0:y1, x0:x1] = composite(renders, full[:, :, y0:y1, x0:x1])
            save_animation(tmp / "super_resolved.webp", full)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())  # the summary's list
    return {"out_dir": out, "num_frames": int(objects[0][1].shape[0]), "objects": len(objects), "files": files}
