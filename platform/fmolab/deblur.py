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

from fmolab.atomic import atomic_dir
from fmolab.compose import composite, frame_times
from fmolab.config import Config, config_from_dict
from fmolab.media import flatten_rgba, save_animation, to_uint8
from fmolab.shards import encode_webp


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

    @property
    def module(self) -> torch.nn.Module:
        """The torch network (inside an MLflow pyfunc too)."""
        if isinstance(self.model, torch.nn.Module):
            return self.model
        return self.model.unwrap_python_model().model

    def render(self, inputs: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Renders ``[B,T,4,H,W]`` at arbitrary ``times [T]`` (or ``[B,T]``) of the exposure."""
        t = torch.as_tensor(np.asarray(times, dtype=np.float32))
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        if t.dim() == 1:
            t = t[None].expand(x.shape[0], -1)
        with torch.no_grad():
            return self.module(x, t)["renders"].numpy()

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)`` the model was trained at: the training dataset's manifest, else ``render.height/width``."""
        from fmolab.shards import read_manifest

        try:
            m = read_manifest(self.config.train_dir)
            if m.get("height") and m.get("width"):
                return _valid_size(int(m["height"]), int(m["width"]))
        except Exception:  # the training data need not be on this machine
            pass
        return _valid_size(self.config.render.height, self.config.render.width)


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
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        rgba = to_uint8(renders)
        for i, frame in enumerate(rgba):
            Image.fromarray(frame, "RGBA").save(tmp / f"subframe_{i:03d}.png")
            Image.fromarray(frame[..., 3], "L").save(tmp / f"alpha_{i:03d}.png")
        save_animation(tmp / "subframes.webp", flatten_rgba(renders))
        files = ["subframes.webp"]
        if background is not None:
            save_animation(tmp / "super_resolved.webp", composite(renders, background))
            files.append("super_resolved.webp")
    return {"out_dir": str(out), "num_frames": int(renders.shape[0]), "files": files}


# ---------------------------------------------------------------- video


def deblur_video(predictor: Predictor, video: str | Path, out_dir: str | Path, num_frames: int = 8,
                 window: int = 9, threshold: float = 0.1, min_area: int = 12, ext_factor: float = 2.0,
                 chunk_frames: int = 240) -> dict:
    """Temporal super-resolution of a video, streamed (at most ``window`` input frames and one output
    chunk of ``chunk_frames`` frames in memory).

    Each frame's background is the running median of ``window`` frames; the fast mover is the largest
    region differing from it. Around it a crop of the model's aspect ratio (grown by ``ext_factor`` object
    radii on every side) is resized to the model's training size. Double-blur models see the crops of
    frames k-1 and k and render ``2 * num_frames`` sub-frames over both exposures (the second half is
    frame k's; the first frame takes the first half of its pair); background+blur models see frame k and
    its background. Outputs in ``out_dir`` (written to a temporary folder, renamed at the end):

    * ``super_resolved.webp``: ``num_frames`` frames per input frame (the renders composited back into
      the full frame; frames without a mover are repeated), at ``num_frames`` times the frame rate;
      longer videos are split into ``super_resolved_000.webp``, ``_001`` ... of ``chunk_frames`` frames;
    * ``crops/<frame>.webp`` (the sub-frames over a checkerboard), ``crops/<frame>_subframe_<i>.png``
      (RGBA) and ``crops/<frame>_alpha_<i>.png`` for every frame with a mover;
    * ``summary.json``: frames, detections (boxes), files.
    """

    from fmolab.benchmarks_fmo import grow, model_box, resize, union
    from fmolab.video import VideoError, detect_mover, open_video, with_background

    kind = predictor.input_kind
    try:
        source = open_video(video)
    except VideoError as exc:
        raise DeblurError(str(exc)) from exc
    size = predictor.size
    n = int(num_frames)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "crops").mkdir()
        chunk: list[np.ndarray] = []
        parts: list[str] = []
        detections: dict[int, list[int]] = {}
        state = {"frames": 0}
        sub_ms = source.frame_ms / n

        def flush(final: bool) -> None:
            if not chunk:
                return
            name = "super_resolved.webp" if final and not parts else f"super_resolved_{len(parts):03d}.webp"
            (tmp / name).write_bytes(encode_webp(np.stack(chunk), quality=85, method=0, frame_ms=sub_ms))
            parts.append(name)
            chunk.clear()

        def emit(image: np.ndarray, bg: np.ndarray, box, renders: np.ndarray | None, k: int) -> None:
            """Append frame k's ``n`` super-resolved frames; save its crops."""
            if renders is None:
                frames = [image] * n
            else:
                y0, x0, y1, x1 = box
                rr = np.clip(resize(renders, (y1 - y0, x1 - x0)), 0, 1)
                comp = composite(rr, bg[:, y0:y1, x0:x1])
                frames = []
                for t in range(n):
                    f = image.copy()
                    f[:, y0:y1, x0:x1] = comp[t]
                    frames.append(f)
                rgba = to_uint8(torch.from_numpy(rr))
                for i, fr in enumerate(rgba):
                    Image.fromarray(fr, "RGBA").save(tmp / "crops" / f"{k:06d}_subframe_{i:03d}.png")
                    Image.fromarray(fr[..., 3], "L").save(tmp / "crops" / f"{k:06d}_alpha_{i:03d}.png")
                save_animation(tmp / "crops" / f"{k:06d}.webp", flatten_rgba(torch.from_numpy(rr)))
                detections[k] = [int(v) for v in box]
            for f in frames:
                chunk.append(to_uint8(torch.from_numpy(f)))
            if len(chunk) >= chunk_frames:
                flush(False)

        def crop_inputs(images: list[np.ndarray], box) -> np.ndarray:
            y0, x0, y1, x1 = box
            return np.concatenate([resize(im[:, y0:y1, x0:x1], size) for im in images])[None].astype(np.float32)

        try:
            prev = None  # (k, image, bg, detection, assigned renders or None, box)
            for k, image, bg in with_background(source.frames(), window):
                state["frames"] += 1
                det = detect_mover(image, bg, threshold, min_area)
                shape = image.shape[-2:]
                if kind in ("double_blur", "multi_object"):
                    if prev is None:
                        prev = [k, image, bg, det, None, None]
                        continue
                    pk, pimage, pbg, pdet, prenders, pbox = prev
                    renders = box = None
                    if det is not None or pdet is not None:
                        dets = [d for d in (pdet, det) if d is not None]
                        region = dets[0].box if len(dets) == 1 else union(dets[0].box, dets[1].box)
                        radius = max(d.radius for d in dets)
                        box = model_box(grow(region, ext_factor * radius, shape), 0, size, shape)
                        both = predictor.render(crop_inputs([pimage, image], box), frame_times(2 * n).numpy())[0]
                        if prenders is None:
                            prenders, pbox = both[:n], box
                        renders = both[n:]
                    emit(pimage, pbg, pbox, prenders, pk)
                    prev = [k, image, bg, det, renders, box]
                else:
                    renders = box = None
                    if det is not None:
                        box = model_box(grow(det.box, ext_factor * det.radius, shape), 0, size, shape)
                        parts_in = [image, bg] if kind == "background_blur" else [image]
                        renders = predictor.render(crop_inputs(parts_in, box), frame_times(n).numpy())[0]
                    emit(image, bg, box, renders, k)
            if prev is not None:
                emit(prev[1], prev[2], prev[5], prev[4], prev[0])
            if state["frames"] == 0:
                raise DeblurError(f"{video}: no frames could be read")
            if kind in ("double_blur", "multi_object") and state["frames"] < 2:
                raise DeblurError(f"{video}: a double-blur model needs at least 2 frames, the video has 1")
            if not detections:
                raise DeblurError(f"no moving object found in {video} ({state['frames']} frames; nothing differs from "
                                  f"the running-median background by more than {threshold} over {min_area} pixels): "
                                  f"lower --threshold / --min-area, or give --frames A B")
            flush(True)
            summary = {"video": str(video), "frames": state["frames"], "num_frames": n, "frame_ms": source.frame_ms,
                       "model": predictor.source, "detections": {str(k): v for k, v in detections.items()},
                       "files": parts}
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        except VideoError as exc:
            raise DeblurError(str(exc)) from exc
    return {"out_dir": str(out), "frames": state["frames"], "frames_with_object": len(detections),
            "num_frames": n, "files": parts}
