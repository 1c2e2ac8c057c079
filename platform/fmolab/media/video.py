"""Video and frame-sequence input, streamed: one reader for every kind of moving picture fmolab takes.

Readable inputs, told apart by one suffix table (:data:`FRAME_SUFFIXES`, :data:`ANIMATED_SUFFIXES`,
:data:`VIDEO_SUFFIXES`): a folder of frames (sorted by name: png, jpg, jpeg, webp, bmp, tif, tiff), a
multi-frame image Pillow reads (GIF, APNG, animated WebP, multi-page TIFF), or a video container FFmpeg
reads (mp4, mov, avi, mkv, webm, ...: :mod:`fmolab.media.containers`, with each frame's timestamp). Everything is a generator over frames, so a long video is never held in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from fmolab.media import read_rgb_u8, to_float
from fmolab.media.containers import SUFFIXES as CONTAINER_SUFFIXES
from fmolab.media.containers import decode, is_container, probe

FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}  # still images, frames of a folder
ANIMATED_SUFFIXES = {".gif", ".apng"}  # files that are moving pictures for Pillow (a .webp may be either)
VIDEO_SUFFIXES = CONTAINER_SUFFIXES | ANIMATED_SUFFIXES  # files that are always videos
DEFAULT_FRAME_MS = 1000.0 / 30


class VideoError(ValueError):
    """Unreadable or inconsistent video input; the message names the file and the frame."""


@dataclass
class VideoSource:
    path: Path
    frame_ms: float  # duration of one input frame (the container's average rate)
    times: list[float] = field(default_factory=list)  # seconds of each frame read so far (containers)
    stated: int | None = None  # frames the file says it has, read when it was opened (None: not read)

    def count(self) -> int:
        """Frames in the video as its container or file says (0 when it does not say)."""
        p = self.path
        if self.stated is not None:
            return self.stated
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
        for rgb in self.rgb():
            yield to_float(rgb)

    def rgb(self) -> Iterator[np.ndarray]:
        """Frames as decoded, uint8 ``[H,W,3]`` (what a pipeline that works on reduced copies and crops
        reads: no full-frame conversion), one at a time; every frame must have the first's size."""
        size = None
        for i, frame in enumerate(self._raw()):
            if size is None:
                size = frame.shape
            elif frame.shape != size:
                raise VideoError(f"{self.path}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 is "
                                 f"{size[1]}x{size[0]}; all frames of a video must have one size")
            yield frame

    def _raw(self) -> Iterator[np.ndarray]:
        p = self.path
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
            for f in files:
                yield read_rgb_u8(f, VideoError)
            return
        if is_container(p):
            try:
                for rgb, t in decode(p):
                    self.times.append(t)
                    yield rgb
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
                    yield np.asarray(frame.convert("RGB"))
            except VideoError:
                raise
            except Exception as exc:
                raise VideoError(f"cannot decode {p}: {exc}") from exc


def open_video(path: str | Path) -> VideoSource:
    """A :class:`VideoSource` (checks that the input exists and holds at least one frame)."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video {p} does not exist")
    frame_ms, stated = DEFAULT_FRAME_MS, None
    if p.is_file() and p.stat().st_size == 0:
        raise VideoError(f"video {p} is empty (0 bytes): was it copied or written completely?")
    if p.is_dir():
        if not any(f.suffix.lower() in FRAME_SUFFIXES for f in p.iterdir()):
            raise VideoError(f"{p}: no frames ({', '.join(sorted(FRAME_SUFFIXES))}) in this folder")
    elif is_container(p):
        try:
            info = probe(p)
        except ValueError as exc:
            raise VideoError(str(exc)) from None
        frame_ms, stated = 1000.0 / info["fps"], info["frames"]
    else:
        try:
            with Image.open(p) as im:
                frame_ms = float(im.info.get("duration") or DEFAULT_FRAME_MS)
                stated = int(getattr(im, "n_frames", 1))
        except Exception:
            pass  # errors surface, naming the file, when frames are read
    return VideoSource(p, frame_ms, stated=stated)

