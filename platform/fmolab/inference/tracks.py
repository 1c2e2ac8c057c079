"""Objects of a video followed from frame to frame: each object's sub-frame positions (the alpha
centroid of every render) are linked into tracks, online, and drawn over the input."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

Point = list[float]  # [seconds, x, y]


@dataclass
class Track:
    id: int
    frames: list[int] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    last: tuple[float, float] = (0.0, 0.0)  # (x, y) where it was last seen

    def as_dict(self) -> dict:
        return {"id": self.id, "frames": self.frames, "trajectory": self.points}


class Tracker:
    """Greedy nearest-neighbour linking: an object of frame k continues the nearest track seen within
    the last ``max_gap + 1`` frames, if that track ended within ``reach`` of where the object starts
    (``reach``: the object's crop size, the farthest a fast mover gets between two exposures); else
    it starts a new track. Largest objects choose first."""

    def __init__(self, max_gap: int = 2):
        self.max_gap = max_gap
        self.tracks: list[Track] = []

    def add(self, k: int, objects: list[tuple[tuple[int, int, int, int], list[Point]]]) -> list[int]:
        """Link frame ``k``'s objects ``(box, points)`` (points in time order, maybe none); their track ids."""
        taken: set[int] = set()
        ids = []
        for box, points in objects:
            y0, x0, y1, x1 = box
            start = (points[0][1], points[0][2]) if points else ((x0 + x1) / 2, (y0 + y1) / 2)
            reach = max(y1 - y0, x1 - x0)
            live = [t for t in self.tracks if t.id not in taken and t.frames[-1] >= k - 1 - self.max_gap]
            near = min(live, key=lambda t: math.dist(t.last, start), default=None)
            if near is None or math.dist(near.last, start) > reach:
                near = Track(len(self.tracks))
                self.tracks.append(near)
            taken.add(near.id)
            near.frames.append(k)
            near.points.extend(points)
            near.last = (points[-1][1], points[-1][2]) if points else start
            ids.append(near.id)
        return ids


def centroid(alpha: np.ndarray) -> tuple[float, float] | None:
    """``(y, x)`` of an ``[H,W]`` alpha matte's centre of mass (pixel centres), None when it is empty."""
    rows, cols = alpha.sum(1, dtype=np.float64), alpha.sum(0, dtype=np.float64)  # marginals: no index grids
    total = float(rows.sum())
    if total <= 1e-6:
        return None
    return float(rows @ np.arange(len(rows)) / total) + 0.5, float(cols @ np.arange(len(cols)) / total) + 0.5


def draw_trajectory(frame: np.ndarray, paths: list[list[Point]]) -> Image.Image:
    """``frame`` (uint8 ``[H,W,3]``) with each track's sub-frame positions joined in time order, from
    blue (first) to red (last) along the track, and the track's number at its start."""
    picture = Image.fromarray(frame).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for number, path in enumerate(paths):
        n = len(path)
        for i, (_, x, y) in enumerate(path):
            c = (int(255 * i / max(1, n - 1)), 64, int(255 * (1 - i / max(1, n - 1))))
            if i:
                draw.line([tuple(path[i - 1][1:]), (x, y)], fill=c, width=1)
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], outline=c)
        if len(paths) > 1 and path:
            draw.text((path[0][1] + 3, path[0][2] + 3), str(number), fill=(255, 255, 255))
    return picture
