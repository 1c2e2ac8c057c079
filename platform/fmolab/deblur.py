"""Deblur real images with a trained model: two consecutive frames (double blur) or frame + background.

Output: the sub-frames as RGBA PNGs, their alpha mattes, an animated WebP over a checkerboard and, when
a background is known, the temporally super-resolved frames composited onto it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fmolab.compose import composite, frame_times
from fmolab.config import Config, config_from_dict
from fmolab.media import flatten_rgba, save_animation, to_uint8


class DeblurError(ValueError):
    """Bad input for deblurring; the message names the file and what to do."""


@dataclass
class Predictor:
    """Anything that maps stacked inputs ``[B,C,H,W]`` to renders ``[B,T,4,H,W]``."""

    config: Config
    model: object  # an MLflow pyfunc or a torch module
    source: str

    @property
    def input_kind(self) -> str:
        return self.config.data.format.split(":")[0]

    def __call__(self, inputs: np.ndarray, num_frames: int) -> np.ndarray:
        if isinstance(self.model, torch.nn.Module):
            with torch.no_grad():
                out = self.model(torch.from_numpy(inputs), frame_times(num_frames))
            return out["renders"].numpy()
        return self.model.predict(inputs, params={"num_frames": num_frames})


def load_predictor(source: str) -> Predictor:
    """``models:/name@alias`` / ``runs:/id/model`` (MLflow), or a checkpoint folder / ``best_model.pt``
    with ``config.json`` beside it."""
    if "://" in source or source.startswith("models:/") or source.startswith("runs:/"):
        from fmolab.tracking import load_model

        model = load_model(source)
        impl = model.unwrap_python_model()
        return Predictor(impl.config, model, source)
    path = Path(source)
    weights = path / "best_model.pt" if path.is_dir() else path
    config_file = weights.parent / "config.json"
    if not weights.exists() or not config_file.exists():
        raise DeblurError(f"{source}: expected models:/NAME@ALIAS, runs:/ID/model, or a checkpoint "
                          f"folder holding best_model.pt and config.json")
    from fmolab.data import in_channels
    from fmolab.models import build_model

    cfg = config_from_dict(json.loads(config_file.read_text()))
    model = build_model(cfg.model, in_channels(cfg.data.format))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return Predictor(cfg, model, source)


def read_image(path: str | Path) -> np.ndarray:
    """RGB float32 ``[3,H,W]`` in [0,1]; a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise DeblurError(f"input image {path} does not exist")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as exc:
        raise DeblurError(f"cannot read image {path}: {exc}") from exc
    return np.moveaxis(arr, -1, 0)


def _valid_size(h: int, w: int) -> tuple[int, int]:
    """The model needs multiples of 16: round to the nearest (at least 16)."""
    return max(16, int(round(h / 16)) * 16), max(16, int(round(w / 16)) * 16)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.shape[-2:] == size:
        return img
    t = torch.from_numpy(img)[None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()


def deblur_images(predictor: Predictor, images: list[str | Path], background: str | Path | None,
                  out_dir: str | Path, num_frames: int = 8) -> dict:
    """Deblur one input (2 frames for double blur, or image + background) and write the outputs."""
    kind = predictor.input_kind
    if kind in ("double_blur", "multi_object") and (len(images) != 2 or background):
        raise DeblurError(f"model {predictor.source} takes two consecutive frames (double blur): pass --frames A B")
    if kind == "background_blur" and (len(images) != 1 or not background):
        raise DeblurError(f"model {predictor.source} takes an image and its background: pass --image X --background B")
    arrays = [read_image(p) for p in images] + ([read_image(background)] if background else [])
    names = [str(p) for p in images] + ([str(background)] if background else [])
    sizes = {a.shape[-2:] for a in arrays}
    if len(sizes) != 1:
        detail = ", ".join(f"{n}: {a.shape[2]}x{a.shape[1]}" for n, a in zip(names, arrays))
        raise DeblurError(f"input images differ in size ({detail}); give frames of one video")
    (h, w), = sizes
    size = _valid_size(h, w)
    stacked = np.concatenate([_resize(a, size) for a in arrays], axis=0)[None].astype(np.float32)
    renders = predictor(stacked, num_frames)[0]  # [T,4,h,w]
    renders_t = torch.from_numpy(renders)
    if size != (h, w):
        renders_t = torch.nn.functional.interpolate(renders_t, size=(h, w), mode="bilinear", align_corners=False)
    return write_outputs(renders_t, out_dir, torch.from_numpy(arrays[-1]) if background else None)


def write_outputs(renders: torch.Tensor, out_dir: str | Path, background: torch.Tensor | None = None) -> dict:
    """Sub-frames (RGBA PNG), alpha mattes, animated previews; all or nothing (written to a temp folder)."""
    import os
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rgba = to_uint8(renders)
        for i, frame in enumerate(rgba):
            Image.fromarray(frame, "RGBA").save(tmp / f"subframe_{i:03d}.png")
            Image.fromarray(frame[..., 3], "L").save(tmp / f"alpha_{i:03d}.png")
        save_animation(tmp / "subframes.webp", flatten_rgba(renders))
        files = ["subframes.webp"]
        if background is not None:
            save_animation(tmp / "super_resolved.webp", composite(renders, background))
            files.append("super_resolved.webp")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"out_dir": str(out), "num_frames": int(renders.shape[0]), "files": files}
