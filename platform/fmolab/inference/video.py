"""Temporal super-resolution of a whole video, streamed frame by frame (reading and detection:
:mod:`fmolab.media.video` and :mod:`fmolab.inference.movers`; what is written: :mod:`fmolab.inference.video_outputs`)."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fmolab import storage
from fmolab.atomic import atomic_dir
from fmolab.geometry import resize
from fmolab.inference.movers import Background, crop_rgb, crops, find_movers, with_background
from fmolab.inference.options import VideoOptions
from fmolab.inference.predictor import DeblurError, Predictor
from fmolab.inference.video_outputs import Stages, VideoOutputs
from fmolab.media.video import VideoError, open_video
from fmolab.data.prefetch import prefetched
from fmolab.runtime import progress


@contextmanager
def torch_threads_beside_codecs():
    """One core fewer for the model while a video is deblurred: decoding, the two encoders and the
    crop writer run on threads of their own (benchmarks/deblur.py on 2 cores: 23.3 frames/s at
    320x240 with 1 torch thread, 20.5 with 2). The caller's setting comes back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def deblur_video(predictor: Predictor, video: str | Path, out_dir: str | Path, num_frames: int = 8,
                 options: VideoOptions = VideoOptions(), ext_factor: float = 2.0) -> dict:
    """Temporal super-resolution of a video, streamed: at most ``options.window`` input frames in memory
    (and, with ``options.animations``, one file's ``options.chunk_frames`` output frames).

    Each frame's background is the running median of ``window`` frames; the movers are the regions
    differing from it by ``threshold`` over ``min_area`` pixels (up to ``max_objects``). Around each a crop of the model's aspect ratio (grown by
    ``ext_factor`` object radii on every side) is resized to the model's training size. Double-blur
    models see the crops of frames k-1 and k and render ``2 * num_frames`` sub-frames over both
    exposures (the second half is frame k's; the first frame takes the first half of its pair);
    background+blur models see frame k and its background. Outputs in ``out_dir`` (written to a
    temporary folder, renamed at the end):

    * ``super_resolved.mp4``: every input frame's span split into ``num_frames`` equal parts at its own
      timestamp (variable frame rate kept), nominally ``num_frames`` times the input rate; the renders
      are composited back into the full frame (H.264: :func:`fmolab.media.containers.encoder`);
    * ``side_by_side.mp4`` (input | result) and ``trajectory.png`` (every track over the first frame);
    * ``super_resolved.webp`` / ``.gif`` for each of ``animations`` (longer videos in files of
      ``chunk_frames`` frames: ``super_resolved_000.webp`` ...);
    * ``crops/<frame>_t<track>.webp`` (the sub-frames over a checkerboard) for every object of every
      frame, and with ``options.crops == "png"`` ``..._subframe_<i>.png`` (RGBA) and ``..._alpha_<i>.png``
      (none with ``"none"``); at the size of the object's box in the frame (``detections``) or, when
      the box is larger, at the model's (an enlarged render adds no detail);
    * ``summary.json``: frames, detections (boxes per frame), tracks, seconds per stage, files.
    """
    fmt = predictor.input_format
    try:
        source = open_video(video)
    except VideoError as exc:
        raise DeblurError(str(exc)) from exc
    n = int(num_frames)
    out = storage.normalize(out_dir)  # a folder or a URI (atomic_dir uploads the finished folder)
    rate = 1000.0 / source.frame_ms * n
    stages = Stages()

    def render(images: list, found, count: int) -> list[tuple]:
        """``(box, renders [count,4,h,w] over the box, the same at the box's or the model's size,
        whichever is smaller)`` for every crop
        around ``found``; ``images`` are frames (uint8 ``[H,W,3]``) and backgrounds, each read only
        inside the crop."""
        objects = []
        for box, _ in crops(found, ext_factor, predictor.size, images[0].shape[:2], options.max_objects):
            y0, x0, y1, x1 = box
            pixels = [im.region(box) if isinstance(im, Background) else crop_rgb(im, box) for im in images]
            batch = np.concatenate([resize(p, predictor.size) for p in pixels])[None]
            with stages("model"):
                renders = predictor.render(batch.astype(np.float32), count)[0]
            over_box = np.clip(resize(renders, (y1 - y0, x1 - x0)), 0, 1)
            # the crops are written at the smaller of the two sizes: an enlarged render adds no detail
            small = (y1 - y0) * (x1 - x0) <= renders.shape[-2] * renders.shape[-1]
            objects.append((box, over_box, over_box if small else np.clip(renders, 0, 1)))
        return objects

    frames = 0
    with atomic_dir(out) as tmp, torch_threads_beside_codecs():
        result = VideoOutputs(tmp, rate, n, options.chunk_frames, options.animations, stages, options.crops)
        try:
            prev = None  # double blur: (k, image, background, detections, objects of frame k or [])
            bar = progress(source.count(), "frame", f"deblur {Path(video).name}")
            decoded = stages.timed(prefetched(source.rgb()), "decode")  # decoding runs ahead on its own thread
            read = stages.timed(with_background(decoded, options.window), "read")
            for k, image, bg in read:
                frames += 1
                bar.update(1)
                with stages("detect"):
                    found = find_movers(image, bg, options.threshold, options.min_area, options.max_objects)
                if fmt.n_images == 2:
                    if prev is None:
                        prev = (k, image, bg, found, [])
                        continue
                    pk, pimage, pbg, pfound, pobjects = prev
                    both = render([pimage, image], pfound + found, 2 * n) if pfound or found else []
                    if not pobjects:
                        pobjects = [(box, r[:n], s[:n]) for box, r, s in both]
                    result.emit(pk, pimage, pbg, pobjects, source.time(pk), source.duration(pk))
                    prev = (k, image, bg, found, [(box, r[n:], s[n:]) for box, r, s in both])
                else:
                    objects = render([image, bg] if fmt.background_input else [image], found, n) if found else []
                    result.emit(k, image, bg, objects, source.time(k), source.duration(k))
            bar.close()
            if prev is not None:
                result.emit(prev[0], prev[1], prev[2], prev[4], source.time(prev[0]), source.duration(prev[0]))
            if frames == 0:
                raise DeblurError(f"{video}: no frame could be decoded (a header without frames?); give another file")
            if fmt.n_images == 2 and frames < 2:
                raise DeblurError(f"{video}: a double-blur model needs at least 2 frames, the video has 1")
            if not result.detections:
                raise DeblurError(f"no moving object found in {video} ({frames} frames; nothing differs from "
                                  f"the running-median background by more than {options.threshold} over {options.min_area} pixels): "
                                  f"lower --threshold / --min-area, or give --frames A B")
            written = result.close()
        except VideoError as exc:
            result.abort()
            raise DeblurError(str(exc)) from exc
        except BaseException:
            result.abort()
            raise
        summary = {"video": str(video), "frames": frames, "num_frames": n, "frame_ms": source.frame_ms,
                   "input_fps": round(rate / n, 6), "output_fps": round(rate, 6), "model": predictor.source,
                   **written, "seconds": stages.report()}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"out_dir": out, "frames": frames, "frames_with_object": len(result.detections),
            "tracks": len(written["tracks"]), "num_frames": n, "files": written["files"]}
