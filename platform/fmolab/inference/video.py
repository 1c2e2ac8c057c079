"""Temporal super-resolution of a whole video, streamed chunk by chunk (reading and detection:
:mod:`fmolab.inference.video_io`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fmolab.atomic import atomic_dir
from fmolab.compose import composite
from fmolab.geometry import grow, model_box, resize, union
from fmolab.inference.containers import Mp4Writer
from fmolab.inference.predictor import DeblurError, Predictor
from fmolab.inference.video_io import VideoError, detect_mover, open_video, with_background
from fmolab.media import flatten_rgba, save_animation, to_uint8
from fmolab.runtime import progress
from fmolab.shards import encode_webp


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

    * ``super_resolved.mp4``: the same frames as H.264 (:func:`fmolab.inference.containers.encoder`),
      every input frame's span split into ``num_frames`` equal parts at its own timestamp (variable
      frame rate kept), nominally ``num_frames`` times the input rate; one streamed file;
    * ``super_resolved.webp``: ``num_frames`` frames per input frame (the renders composited back into
      the full frame; frames without a mover are repeated), at ``num_frames`` times the frame rate;
      longer videos are split into ``super_resolved_000.webp``, ``_001`` ... of ``chunk_frames`` frames;
    * ``crops/<frame>.webp`` (the sub-frames over a checkerboard), ``crops/<frame>_subframe_<i>.png``
      (RGBA) and ``crops/<frame>_alpha_<i>.png`` for every frame with a mover;
    * ``summary.json``: frames, detections (boxes), files.
    """
    fmt = predictor.input_format
    try:
        source = open_video(video)
    except VideoError as exc:
        raise DeblurError(str(exc)) from exc
    size = predictor.size
    n = int(num_frames)
    out = Path(out_dir)
    rate = 1000.0 / source.frame_ms * n
    with atomic_dir(out) as tmp, Mp4Writer(tmp / "super_resolved.mp4", rate) as mp4, \
            Mp4Writer(tmp / "side_by_side.mp4", rate) as side:
        (tmp / "crops").mkdir()
        path: list[list[float]] = []  # [seconds, x, y] of the object's alpha centroid in every sub-frame
        still: list[np.ndarray] = []  # the first frame, for the trajectory picture
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
            start, span = source.time(k), source.duration(k)
            shown = to_uint8(torch.from_numpy(image))
            if not still:
                still.append(shown)
            for j, f in enumerate(frames):
                chunk.append(shown if renders is None else to_uint8(torch.from_numpy(f)))
                at = start + j * span / n
                mp4.write(chunk[-1], at)
                side.write(np.concatenate([shown, chunk[-1]], axis=1), at)  # input | result
                if renders is not None:
                    centre = centroid(rr[j, 3])
                    if centre is not None:
                        path.append([round(start + (j + 0.5) * span / n, 6), round(centre[1] + box[1], 2),
                                     round(centre[0] + box[0], 2)])
            if len(chunk) >= chunk_frames:
                flush(False)

        def crop_inputs(images: list[np.ndarray], box) -> np.ndarray:
            y0, x0, y1, x1 = box
            return np.concatenate([resize(im[:, y0:y1, x0:x1], size) for im in images])[None].astype(np.float32)

        try:
            prev = None  # (k, image, bg, detection, assigned renders or None, box)
            bar = progress(source.count(), "frame", f"deblur {Path(video).name}")
            for k, image, bg in with_background(source.frames(), window):
                state["frames"] += 1
                bar.update(1)
                det = detect_mover(image, bg, threshold, min_area)
                shape = image.shape[-2:]
                if fmt.n_images == 2:
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
                        both = predictor.render(crop_inputs([pimage, image], box), predictor.times(2 * n).numpy())[0]
                        if prenders is None:
                            prenders, pbox = both[:n], box
                        renders = both[n:]
                    emit(pimage, pbg, pbox, prenders, pk)
                    prev = [k, image, bg, det, renders, box]
                else:
                    renders = box = None
                    if det is not None:
                        box = model_box(grow(det.box, ext_factor * det.radius, shape), 0, size, shape)
                        parts_in = [image, bg] if fmt.background_input else [image]
                        renders = predictor.render(crop_inputs(parts_in, box), predictor.times(n).numpy())[0]
                    emit(image, bg, box, renders, k)
            bar.close()
            if prev is not None:
                emit(prev[1], prev[2], prev[5], prev[4], prev[0])
            if state["frames"] == 0:
                raise DeblurError(f"{video}: no frames could be read")
            if fmt.n_images == 2 and state["frames"] < 2:
                raise DeblurError(f"{video}: a double-blur model needs at least 2 frames, the video has 1")
            if not detections:
                raise DeblurError(f"no moving object found in {video} ({state['frames']} frames; nothing differs from "
                                  f"the running-median background by more than {threshold} over {min_area} pixels): "
                                  f"lower --threshold / --min-area, or give --frames A B")
            flush(True)
            mp4.close()
            side.close()
            draw_trajectory(still[0], path).save(tmp / "trajectory.png")
            parts[:0] = [mp4.path.name, side.path.name, "trajectory.png"]
            summary = {"video": str(video), "frames": state["frames"], "num_frames": n, "frame_ms": source.frame_ms,
                       "input_fps": round(rate / n, 6), "output_fps": round(rate, 6),
                       "mp4": {"file": mp4.path.name, "codec": mp4.codec, "frames": mp4.frames},
                       "model": predictor.source, "detections": {str(k): v for k, v in detections.items()},
                       "outputs": {"super_resolved": mp4.path.name, "side_by_side": side.path.name,
                                   "trajectory": "trajectory.png", "animations": parts[3:],
                                   "crops": sorted(f"crops/{p.name}" for p in (tmp / "crops").iterdir())},
                       "trajectory": path, "files": parts}
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        except VideoError as exc:
            raise DeblurError(str(exc)) from exc
    return {"out_dir": str(out), "frames": state["frames"], "frames_with_object": len(detections),
            "num_frames": n, "files": parts}


def centroid(alpha: np.ndarray) -> tuple[float, float] | None:
    """``(y, x)`` of an ``[H,W]`` alpha matte's centre of mass (pixel centres), None when it is empty."""
    total = float(alpha.sum())
    if total <= 1e-6:
        return None
    yy, xx = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    return float((alpha * yy).sum() / total) + 0.5, float((alpha * xx).sum() / total) + 0.5


def draw_trajectory(frame: np.ndarray, path: list[list[float]]) -> Image.Image:
    """``frame`` (uint8 ``[H,W,3]``) with the object's sub-frame positions joined in time order, from
    blue (first) to red (last)."""
    from PIL import ImageDraw

    picture = Image.fromarray(frame).convert("RGB")
    draw = ImageDraw.Draw(picture)
    n = len(path)
    for i, (_, x, y) in enumerate(path):
        c = (int(255 * i / max(1, n - 1)), 64, int(255 * (1 - i / max(1, n - 1))))
        if i:
            draw.line([tuple(path[i - 1][1:]), (x, y)], fill=c, width=1)
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], outline=c)
    return picture
