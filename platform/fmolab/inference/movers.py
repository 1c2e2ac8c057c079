"""Fast movers in video and image pairs: the running-median background of a stream of frames, the
moving mask, the detections and their crops, as deblurring and evaluation find objects to deblur.
Frames come from :mod:`fmolab.media.video`.

A video's background is found where it is needed and at the resolution it is needed at: detection
compares each frame with the median of its window on copies reduced to at most :data:`DETECT_SIDE`
pixels (a box filter: 1080p by 3), in uint8; the full-resolution median is taken only inside the
boxes of the objects (what the model and the output see). The median itself is a compare-exchange
network of elementwise min/max over the window's layers (:func:`median_layers`), not ``np.median``
over a stack."""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from fmolab.geometry import Box, box_gap, grow, largest_components, model_box, union
from fmolab.media import to_float


DETECT_SIDE = 640  # the longest side detection works at (a larger frame is reduced by a whole factor)


def median_layers(layers: list[np.ndarray]) -> np.ndarray:
    """The per-pixel median of a few same-shaped arrays, as ``np.median`` over their stack gives it (an
    even count: the mean of the two middle values, as float32), by odd-even transposition: rounds of
    elementwise min/max between neighbours, which sort every pixel's values at once."""
    xs = [np.array(layer) for layer in layers]
    n = len(xs)
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            low = np.minimum(xs[i], xs[i + 1])
            np.maximum(xs[i], xs[i + 1], out=xs[i + 1])
            xs[i] = low
    mid = n // 2
    return xs[mid] if n % 2 else (xs[mid - 1].astype(np.float32) + xs[mid]) / 2


def reduced(frame: np.ndarray, scale: int) -> np.ndarray:
    """``frame`` (uint8 ``[H,W,3]``) reduced by ``scale`` with a box filter (a partial block at the
    right and bottom edges averages the pixels it has)."""
    from PIL import Image

    return frame if scale == 1 else np.asarray(Image.fromarray(frame).reduce(scale))


def detect_scale(shape: tuple[int, ...], side: int = DETECT_SIDE) -> int:
    return max(1, math.ceil(max(shape[:2]) / side))


class Background:
    """One video frame's background: the per-pixel median of the frames of its window. Detection reads
    ``frame`` and ``median`` (the frame and the median reduced by ``scale``, float32 ``[3,h,w]`` in
    [0, 1]); :meth:`region` is the full-resolution median over one box, float32 ``[3,h,w]``."""

    def __init__(self, window: list[tuple[np.ndarray, np.ndarray]], frame_small: np.ndarray, scale: int):
        self.window, self.scale = [full for full, _ in window], scale
        self.frame = to_float(frame_small)
        self.median = to_float(median_layers([small for _, small in window]))
        self._regions: dict[tuple, np.ndarray] = {}

    def region(self, box) -> np.ndarray:
        """The median over ``box``, computed once per box (the model's input and the output both ask
        for it); shared: not to be changed."""
        key = tuple(int(v) for v in box)
        if key not in self._regions:
            y0, x0, y1, x1 = key
            self._regions[key] = to_float(median_layers([f[y0:y1, x0:x1] for f in self.window]))
        return self._regions[key]


def crop_rgb(frame: np.ndarray, box) -> np.ndarray:
    """A box of a uint8 ``[H,W,3]`` frame as float32 ``[3,h,w]`` in [0, 1] (what the model takes)."""
    y0, x0, y1, x1 = box
    return to_float(frame[y0:y1, x0:x1])


def with_background(frames: Iterator[np.ndarray], window: int = 9,
                    side: int = DETECT_SIDE) -> Iterator[tuple[int, np.ndarray, Background]]:
    """``(index, frame, background)`` for uint8 ``[H,W,3]`` frames: the background of the ``window``
    frames centred on each (fewer at the ends). Holds at most ``window`` frames and their reduced
    copies; each frame is reduced once."""
    half = max(1, window // 2)
    buf: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
    last, scale = -1, 1
    for idx, f in enumerate(frames):
        if idx == 0:
            scale = detect_scale(f.shape, side)
        buf.append((idx, f, reduced(f, scale)))
        last = idx
        while buf[0][0] < idx - 2 * half:
            buf.popleft()
        out = idx - half
        if out >= 0:
            yield _with(buf, out, half, scale)
    for out in range(max(0, last - half + 1), last + 1):
        yield _with(buf, out, half, scale)


def _with(buf, out: int, half: int, scale: int) -> tuple[int, np.ndarray, Background]:
    window = [(f, s) for j, f, s in buf if out - half <= j <= out + half]
    frame, small = next((f, s) for j, f, s in buf if j == out)
    return out, frame, Background(window, small, scale)


@dataclass
class Detection:
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive
    area: int
    radius: float  # of the disc with the detected area


def _square3(mask: np.ndarray, both) -> np.ndarray:
    """``both`` (``&``: erosion, ``|``: dilation) over every 3x3 square, outside the image False: the
    square is separable, so a row pass then a column pass of three shifted views each."""
    p = np.pad(mask, 1)
    rows = both(both(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return both(both(rows[:-2], rows[1:-1]), rows[2:])


def opening3(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_opening`` with a 3x3 square, exactly, in a few whole-array boolean
    operations (scipy's generic structuring element is the slowest step of detection)."""
    return _square3(_square3(mask, np.logical_and), np.logical_or)


def moving_mask(difference: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels of a mover in a ``[H,W]`` difference image, by hysteresis: regions above ``threshold / 3``
    that hold a pixel above ``threshold`` (opened with a 3x3 square against noise). A blur streak is
    faint at its ends (the object covers them for a short part of the exposure): a single threshold
    keeps its middle only, and the crop would cut the object off."""
    from scipy import ndimage

    square = np.ones((3, 3))
    strong = opening3(difference > threshold)
    weak = opening3(difference > threshold / 3)
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


def find_movers(frame: np.ndarray, background: Background, threshold: float = 0.1, min_area: int = 12,
                max_objects: int = 1) -> list[Detection]:
    """:func:`detect_movers` of a video frame (uint8 ``[H,W,3]``) on its reduced copy, the boxes,
    areas and radii given back in the frame's own pixels (``min_area`` is in them too)."""
    s = background.scale
    found = detect_movers(background.frame, background.median, threshold, max(1, round(min_area / s ** 2)),
                          max_objects)
    h, w = frame.shape[:2]
    return [Detection((y0 * s, x0 * s, min(h, y1 * s), min(w, x1 * s)), d.area * s * s, d.radius * s)
            for d in found for y0, x0, y1, x1 in [d.box]]


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
