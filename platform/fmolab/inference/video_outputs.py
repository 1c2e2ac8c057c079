"""What ``deblur --video`` writes, streamed frame by frame: the super-resolved and side-by-side mp4s,
animations on request, the crops of every object, the tracks and their picture, and the time spent
in each stage."""
from __future__ import annotations

import functools
import math
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from fmolab.compose import composite
from fmolab.geometry import union
from fmolab.inference.movers import crop_rgb, reduced
from fmolab.inference.tracks import Tracker, centroid, draw_trajectory
from fmolab.media import flatten_rgba, save_animation, save_gif, to_uint8
from fmolab.media.codecs import encode_webp
from fmolab.media.containers import Mp4Writer, Overlay

SIDE_WIDTH = 1920  # the side-by-side (input | result) is encoded at most this wide: a screen's width


class Stages:
    """Seconds spent per stage (decode, background, detect, model, composite, crops, encode)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def timed(self, items, name: str) -> Iterator:
        """``items``, adding the time each ``next`` takes to ``name``."""
        it = iter(items)
        while True:
            with self(name):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def report(self) -> dict[str, float]:
        s = dict(self.seconds)
        if "read" in s:  # reading = decoding + the running median
            s["background"] = max(0.0, s.pop("read") - s.get("decode", 0.0))
        return {k: round(v, 3) for k, v in s.items()}


class SideView:
    """The side-by-side (input | result), its halves reduced by a whole factor so that both fit
    :data:`SIDE_WIDTH` (a 1080p video is shown at 960x540 a half: a quarter of the pixels to encode).
    A result differs from its input only inside the objects' box: each sub-frame is the input frame's
    pair with that box's part reduced into the right half (an :class:`Overlay`)."""

    def __init__(self):
        self.scale = 0

    def pair(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` reduced, twice side by side: the base of every sub-frame of the frame."""
        if not self.scale:
            self.scale = max(1, math.ceil(2 * frame.shape[1] / SIDE_WIDTH))
        half = reduced(frame, self.scale)
        return np.concatenate([half, half], axis=1)

    def overlay(self, pair: np.ndarray, frame: np.ndarray, y: int, x: int, part: np.ndarray) -> Overlay:
        """``pair`` with the right half's box of ``frame`` (with ``part`` pasted at ``(y, x)``) reduced into
        it; the box widened to whole blocks of the reduction."""
        s, (h, w) = self.scale, part.shape[:2]
        y0, x0 = y // s * s, x // s * s
        y1, x1 = min(frame.shape[0], -(-(y + h) // s) * s), min(frame.shape[1], -(-(x + w) // s) * s)
        if (y0, x0, y1, x1) != (y, x, y + h, x + w):
            block = frame[y0:y1, x0:x1].copy()
            block[y - y0:y - y0 + h, x - x0:x - x0 + w] = part
        else:
            block = part
        return Overlay(pair, y0 // s, pair.shape[1] // 2 + x0 // s, reduced(np.ascontiguousarray(block), s))


class VideoOutputs:
    """Writes the outputs into ``folder`` as frames come: ``emit`` one input frame with its objects."""

    def __init__(self, folder: Path, rate: float, num_frames: int, chunk_frames: int, animations=(),
                 stages: Stages | None = None, crops: str = "webp"):
        self.folder, self.n, self.chunk_frames = folder, num_frames, chunk_frames
        self.sub_ms = 1000.0 / rate  # one output frame
        self.animations, self.crops = tuple(animations), crops  # crops: VideoOptions.crops
        self.stages = stages or Stages()
        if crops != "none":
            (folder / "crops").mkdir()
        # each encoded on its own thread while the next frame is read, detected and composited
        self.mp4 = Mp4Writer(folder / "super_resolved.mp4", rate, threaded=True)
        self.side = Mp4Writer(folder / "side_by_side.mp4", rate, threaded=True)
        self.side_view = SideView()
        self.crop_writer = ThreadPoolExecutor(1, thread_name_prefix="crops")  # Pillow encodes without the GIL
        self.crops_pending: deque = deque()
        self.tracker = Tracker()
        self.detections: dict[int, list[list[int]]] = {}
        self.chunk: list[np.ndarray] = []  # only with animations: one file's frames
        self.parts: list[str] = []
        self.still: np.ndarray | None = None  # the first frame, for the trajectory picture

    def emit(self, k: int, shown: np.ndarray, background, objects, start: float, span: float) -> None:
        """Frame ``k`` (uint8 ``[H,W,3]``) as ``n`` sub-frames from ``start`` over ``span`` seconds:
        every object ``(box, renders [n,4,h,w] over the box, renders for the crops)`` composited
        over the background of its box (``background.region``); only the union of the boxes is touched
        in float, and only it is converted for the encoders (:class:`Overlay`)."""
        with self.stages("composite"):
            if self.still is None:
                self.still = shown
            if objects:
                union_box = functools.reduce(union, [box for box, *_ in objects])
                uy0, ux0, uy1, ux1 = union_box
                base = crop_rgb(shown, union_box)
                for (y0, x0, y1, x1), *_ in objects:  # the blurred objects go: the renders replace them
                    base[:, y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = background.region((y0, x0, y1, x1))
            points = [self._points(box, renders, start, span) for box, renders, _ in objects]
            ids = self.tracker.add(k, [(box, p) for (box, *_), p in zip(objects, points)])
            if objects:
                self.detections[k] = [[int(v) for v in box] for box, *_ in objects]
        with self.stages("crops"):  # written on the crop thread; waited for only when it falls behind
            for (_, _, small), track in zip(objects, ids) if self.crops != "none" else ():
                self.crops_pending.append(self.crop_writer.submit(self._crops, k, track, small))
            while len(self.crops_pending) > 8:
                self.crops_pending.popleft().result()
        pair = self.side_view.pair(shown)
        for j in range(self.n):
            with self.stages("composite"):
                if objects:  # only the objects' region changes: composite there, in float, paste it in uint8
                    canvas = base.copy()
                    for (y0, x0, y1, x1), renders, _ in objects:
                        part = canvas[:, y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0]
                        canvas[:, y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = composite(renders[j], part)
                    part = to_uint8(canvas)
                    result = Overlay(shown, uy0, ux0, part)
                    side = self.side_view.overlay(pair, shown, uy0, ux0, part)
                else:
                    result, side = Overlay(shown), Overlay(pair)
            with self.stages("encode"):
                at = start + j * span / self.n
                self.mp4.write(result, at)
                self.side.write(side, at)
                if self.animations:
                    self.chunk.append(result.rgb())
                    if len(self.chunk) >= self.chunk_frames:
                        self.flush(False)

    def _points(self, box, renders: np.ndarray, start: float, span: float) -> list[list[float]]:
        """``[seconds, x, y]`` of the alpha centroid of every sub-frame, in frame coordinates."""
        out = []
        for j, alpha in enumerate(renders[:, 3]):
            centre = centroid(alpha)
            if centre is not None:
                out.append([round(start + (j + 0.5) * span / self.n, 6), round(centre[1] + box[1], 2),
                            round(centre[0] + box[0], 2)])
        return out

    def _crops(self, k: int, track: int, renders: np.ndarray) -> None:
        stem = self.folder / "crops" / f"{k:06d}_t{track}"
        for i, fr in enumerate(to_uint8(renders) if self.crops == "png" else ()):
            # fast zlib: these are many small files per frame (level 6 took 0.7 s per 1080p frame)
            Image.fromarray(fr, "RGBA").save(f"{stem}_subframe_{i:03d}.png", compress_level=1)
            Image.fromarray(fr[..., 3], "L").save(f"{stem}_alpha_{i:03d}.png", compress_level=1)
        save_animation(f"{stem}.webp", flatten_rgba(torch.from_numpy(renders)), method=0)

    def flush(self, final: bool) -> None:
        """Write the chunk as one file per requested animation format."""
        if not self.chunk:
            return
        with self.stages("encode"):
            index = len(self.parts) // len(self.animations)
            stem = "super_resolved" if final and not self.parts else f"super_resolved_{index:03d}"
            for kind in self.animations:
                if kind == "webp":
                    (self.folder / f"{stem}.webp").write_bytes(
                        encode_webp(np.stack(self.chunk), quality=85, method=0, frame_ms=self.sub_ms))
                else:  # GIF counts hundredths of a second: a sub-frame lasts at least 10 ms
                    save_gif(self.folder / f"{stem}.gif", np.stack(self.chunk), frame_ms=max(10, round(self.sub_ms)))
                self.parts.append(f"{stem}.{kind}")
            self.chunk.clear()

    def close(self) -> dict:
        """Finish every file; the outputs part of the summary."""
        self.flush(True)
        with self.stages("crops"):
            while self.crops_pending:
                self.crops_pending.popleft().result()
            self.crop_writer.shutdown()
        with self.stages("encode"):
            self.mp4.close()
            self.side.close()
        tracks = [t.as_dict() for t in self.tracker.tracks]
        picture = draw_trajectory(self.still, [t["trajectory"] for t in tracks])
        picture.save(self.folder / "trajectory.png", compress_level=1)  # zlib's level 6: 0.8 s at 1080p
        return {"mp4": {"file": self.mp4.path.name, "codec": self.mp4.codec, "frames": self.mp4.frames},
                "detections": {str(k): v for k, v in self.detections.items()}, "tracks": tracks,
                "outputs": {"super_resolved": self.mp4.path.name, "side_by_side": self.side.path.name,
                            "trajectory": "trajectory.png", "animations": list(self.parts),
                            "crops": sorted(f"crops/{p.name}" for p in (self.folder / "crops").glob("*"))},
                "files": [self.mp4.path.name, self.side.path.name, "trajectory.png", *self.parts]}

    def abort(self) -> None:
        self.crop_writer.shutdown(cancel_futures=True)
        for writer in (self.mp4, self.side):  # both closed (their threads ended), whatever either says
            try:
                writer.close()
            except Exception:
                pass
