"""Video input for deblurring and evaluation: streamed frame reading, running-median background, fast-mover detection.

Everything is a generator over frames, so a long video is never held in memory: the background needs
``window`` frames, detection one.

Readable inputs: a folder of frames (sorted by name: png, jpg, jpeg, webp, bmp, tif, tiff), a multi-frame
image Pillow reads (GIF, APNG, animated WebP, multi-page TIFF), or a video container FFmpeg reads
(mp4, mov, avi, mkv, webm, ...: :mod:`fmolab.inference.containers`, with each frame's timestamp).
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from fmolab.geometry import Box, box_gap, grow, largest_components, model_box, union
from fmolab.inference.containers import decode, is_container, probe
from fmolab.media import read_rgb

FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_FRAME_MS = 1000.0 / 30


class VideoError(ValueError):
    """Unreadable or inconsistent video input; the message names the file and the frame."""


@dataclass
class VideoSource:
    path: Path
    frame_ms: float  # duration of one input frame (the container's average rate)
    times: list[float] = field(default_factory=list)  # seconds of each frame read so far (containers)

    def count(self) -> int:
        """Frames in the video as its container or file says (0 when it does not say)."""
        p = self.path
        if p.is_dir():
            return sum(f.suffix.lower() in FRAME_SUFFIXES for f in p.iterdir())
        if is_container(p):
            return probe(p)["frames"]
        try:
            with Image.open(p) as im:
                return int(getattr(im, "n_frames", 1))
        except Exception:
            return 0

    def time(self, k: int) -> float:
        """Start of frame ``k`` in seconds: its timestamp when the container has one, else k frame durations."""
        return self.times[k] if k < len(self.times) else k * self.frame_ms / 1000

    def duration(self, k: int) -> float:
        """Seconds frame ``k`` is shown: up to the next frame's timestamp (variable frame rate too)."""
        if k + 1 < len(self.times):
            return self.times[k + 1] - self.times[k]
        return self.frame_ms / 1000

    def frames(self) -> Iterator[np.ndarray]:
        """Frames as float32 ``[3,H,W]`` in [0,1], one at a time; every frame must have the first's size."""
        size = None
        for i, frame in enumerate(self._raw()):
            if size is None:
                size = frame.shape
            elif frame.shape != size:
                raise VideoError(f"{self.path}: frame {i} is {frame.shape[2]}x{frame.shape[1]}, frame 0 is "
                                 f"{size[2]}x{size[1]}; all frames of a video must have one size")
            yield frame

    def _raw(self) -> Iterator[np.ndarray]:
        p = self.path
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
            for f in files:
                yield read_rgb(f, VideoError)
            return
        if is_container(p):
            try:
                for rgb, t in decode(p):
                    self.times.append(t)
                    yield _to_float(rgb)
            except ValueError as exc:
                raise VideoError(str(exc)) from None
            return
        try:
            img = Image.open(p)
        except Exception as exc:
            reason = "not a video nor an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
            raise VideoError(f"cannot read video {p}: {reason}; give an mp4/mov/avi/mkv/webm, an animated "
                             f"GIF/WebP/APNG or a folder of frames") from None
        with img:
            try:
                for frame in ImageSequence.Iterator(img):
                    yield _to_float(np.asarray(frame.convert("RGB")))
            except VideoError:
                raise
            except Exception as exc:
                raise VideoError(f"cannot decode {p}: {exc}") from exc


def _to_float(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(arr.astype(np.float32) / 255.0, -1, 0))


def open_video(path: str | Path) -> VideoSource:
    """A :class:`VideoSource` (checks that the input exists and holds at least one frame)."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video {p} does not exist")
    frame_ms = DEFAULT_FRAME_MS
    if p.is_file() and p.stat().st_size == 0:
        raise VideoError(f"video {p} is empty (0 bytes): was it copied or written completely?")
    if p.is_dir():
        if not any(f.suffix.lower() in FRAME_SUFFIXES for f in p.iterdir()):
            raise VideoError(f"{p}: no frames ({', '.join(sorted(FRAME_SUFFIXES))}) in this folder")
    elif is_container(p):
        try:
            frame_ms = 1000.0 / probe(p)["fps"]
        except ValueError as exc:
            raise VideoError(str(exc)) from None
    else:
        try:
            with Image.open(p) as im:
                frame_ms = float(im.info.get("duration") or DEFAULT_FRAME_MS)
        except Exception:
            pass  # errors surface, naming the file, when frames are read
    return VideoSource(p, frame_ms)


def with_background(frames: Iterator[np.ndarray], window: int = 9) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(index, frame, background)``: the background is the per-pixel median of the ``window`` frames
    centred on the frame (fewer at the ends). Holds at most ``window`` frames."""
    half = max(1, window // 2)
    buf: deque[tuple[int, np.ndarray]] = deque()
    last = -1
    for idx, f in enumerate(frames):
        buf.append((idx, f))
        last = idx
        while buf[0][0] < idx - 2 * half:
            buf.popleft()
        out = idx - half
        if out >= 0:
            yield out, _frame(buf, out), _median(buf, out - half, out + half)
    for out in range(max(0, last - half + 1), last + 1):
        yield out, _frame(buf, out), _median(buf, out - half, out + half)


def _frame(buf, i: int) -> np.ndarray:
    for j, f in buf:
        if j == i:
            return f
    raise KeyError(i)


def _median(buf, lo: int, hi: int) -> np.ndarray:
    return np.median(np.stack([f for j, f in buf if lo <= j <= hi]), axis=0).astype(np.float32)


@dataclass
class Detection:
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive
    area: int
    radius: float  # of the disc with the detected area


def moving_mask(difference: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels of a mover in a ``[H,W]`` difference image, by hysteresis: regions above ``threshold / 3``
    that hold a pixel above ``threshold`` (opened with a 3x3 square against noise). A blur streak is
    faint at its ends (the object covers them for a short part of the exposure): a single threshold
    keeps its middle only, and the crop would cut the object off."""
    from scipy import ndimage

    square = np.ones((3, 3))
    strong = ndimage.binary_opening(difference > threshold, structure=square)
    weak = ndimage.binary_opening(difference > threshold / 3, structure=square)
    labels, n = ndimage.label(weak, structure=square)
    if n == 0:
        return strong
    seeded = np.zeros(n + 1, bool)
    seeded[np.unique(labels[strong & weak])] = True
    seeded[0] = False
    return seeded[labels]


def _merged(items: list, close, join) -> list:
    """``items`` with any two that ``close(a, b)`` says belong together replaced by ``join(a, b)``
    (in the first one's place), until no two do."""
    items = list(items)
    while True:
        pair = next(((i, j) for i, j in itertools.combinations(range(len(items)), 2) if close(items[i], items[j])), None)
        if pair is None:
            return items
        i, j = pair
        items[i] = join(items[i], items[j])
        del items[j]


def movers(mask: np.ndarray, min_area: int = 12, max_objects: int = 1) -> list[Detection]:
    """The ``max_objects`` largest movers of a bool ``[H,W]`` mask, largest first. Regions of at least
    ``min_area`` pixels closer to each other than the larger one's radius are one object (a streak
    split where it is faint)."""
    found = [(box, area) for box, area in largest_components(mask, 4 * max_objects + 4) if area >= min_area]
    found = _merged(found, lambda a, b: box_gap(a[0], b[0]) <= math.sqrt(max(a[1], b[1]) / math.pi),
                    lambda a, b: (union(a[0], b[0]), a[1] + b[1]))
    found.sort(key=lambda f: -f[1])
    return [Detection(tuple(box), area, math.sqrt(area / math.pi)) for box, area in found[:max_objects]]


def detect_pair(first: np.ndarray, second: np.ndarray, threshold: float = 0.1, min_area: int = 12,
                max_objects: int = 1) -> list[Detection]:
    """Movers of two consecutive frames without a background: where they differ is each object's
    streak in each frame (each frame shows the background where the other shows the object). With one
    object the two largest regions are its two streaks (one detection, their union); with more, the
    regions are returned one by one and :func:`crops` joins each object's two (they are adjacent)."""
    mask = moving_mask(np.abs(first - second).max(0), threshold)
    if max_objects > 1:
        return movers(mask, min_area, 2 * max_objects)
    found = movers(mask, min_area, 2)
    if len(found) < 2:
        return found
    a, b = found
    return [Detection(union(a.box, b.box), a.area, a.radius)]


def detect_movers(frame: np.ndarray, background: np.ndarray, threshold: float = 0.1, min_area: int = 12,
                  max_objects: int = 1) -> list[Detection]:
    """The movers where ``frame`` differs from ``background`` (:func:`moving_mask`, :func:`movers`)."""
    return movers(moving_mask(np.abs(frame - background).max(0), threshold), min_area, max_objects)


def crops(found: list[Detection], ext_factor: float, size: tuple[int, int], shape: tuple[int, int],
          max_objects: int = 1) -> list[tuple[Box, float]]:
    """Model crops ``(box, radius)`` around the detections: each box grown by ``ext_factor`` radii on
    every side; overlapping grown boxes are one crop (one object seen twice, or objects too close to
    part); at most ``max_objects``, largest first; then each given the model input's aspect ratio
    ``size`` inside the frame ``shape`` (:func:`fmolab.geometry.model_box`)."""
    groups = [(grow(d.box, ext_factor * d.radius, shape), d.radius, d.area) for d in found]
    groups = _merged(groups, lambda a, b: box_gap(a[0], b[0]) < 0,
                     lambda a, b: (union(a[0], b[0]), max(a[1], b[1]), a[2] + b[2]))
    groups.sort(key=lambda g: -g[2])
    return [(model_box(box, 0, size, shape), radius) for box, radius, _ in groups[:max_objects]]
