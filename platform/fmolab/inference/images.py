"""Deblur real images with a trained model: two consecutive frames (double blur) or frame + background.

Output: the sub-frames as RGBA PNGs, their alpha mattes, an animated WebP over a checkerboard and, when
a background is known, the temporally super-resolved frames composited onto it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fmolab.atomic import atomic_dir
from fmolab.compose import composite
from fmolab.geometry import resize
from fmolab.inference.predictor import DeblurError, Predictor
from fmolab.media import flatten_rgba, read_rgb, save_animation, to_uint8


MIN_SIDE = 16  # the encoder's output stride: a smaller image has no latent pixel to render from


def deblur_images(predictor: Predictor, images: list[str | Path], background: str | Path | None,
                  out_dir: str | Path, num_frames: int = 8) -> dict:
    """Deblur one input (2 frames for double blur, or image + background) and write the outputs."""
    fmt = predictor.input_format
    if len(images) != fmt.n_images or fmt.background_input != bool(background):
        wanted = ("two consecutive frames (double blur): pass --frames A B" if fmt.n_images == 2 else
                  "an image and its background: pass --image X --background B" if fmt.background_input else
                  "one image and no background: pass --image X")
        raise DeblurError(f"model {predictor.source} takes {wanted}")
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
    size = predictor.input_size(h, w)
    stacked = np.concatenate([resize(a, size) for a in arrays], axis=0)[None].astype(np.float32)
    renders = resize(predictor(stacked, num_frames)[0], (h, w))  # [T,4,H,W]
    return write_outputs(torch.from_numpy(renders), out_dir, torch.from_numpy(arrays[-1]) if background else None)


def write_outputs(renders: torch.Tensor, out_dir: str | Path, background: torch.Tensor | None = None) -> dict:
    """Sub-frames (RGBA PNG), alpha mattes, animated previews; all or nothing (written to a temp folder)."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        rgba = to_uint8(renders)
        for i, frame in enumerate(rgba):
            Image.fromarray(frame, "RGBA").save(tmp / f"subframe_{i:03d}.png")
            Image.fromarray(frame[..., 3], "L").save(tmp / f"alpha_{i:03d}.png")
        save_animation(tmp / "subframes.webp", flatten_rgba(renders))
        if background is not None:
            save_animation(tmp / "super_resolved.webp", composite(renders, background))
        files = sorted(p.name for p in tmp.iterdir())  # every file written, the summary's list
    return {"out_dir": str(out), "num_frames": int(renders.shape[0]), "files": files}
