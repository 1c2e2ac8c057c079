"""Fast movers in video and image pairs: the running-median background of a stream of frames, the
moving mask, the detections and their crops, as deblurring and evaluation find objects to deblur.
Frames come from :mod:`fmolab.media.video`."""
from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from fmolab.geometry import Box, box_gap, grow, largest_components, model_box, union


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
