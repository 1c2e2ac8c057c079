"""Video containers through PyAV (FFmpeg, bundled in its wheels): mp4, avi, mov, mkv, webm, ... in,
H.264 mp4 out. Frames keep their own timestamps (variable frame rate too), and both directions stream:
one decoded frame, or one frame to encode, at a time."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
TICKS = 90_000  # output time base (1/90000 s, MPEG's clock): sub-frame times to 11 µs, not whole ms


def is_container(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def probe(path: Path) -> dict:
    """``fps`` (the stream's average rate), ``frames`` (0 when the container does not say), ``codec``,
    ``width``, ``height`` of the first video stream; raises ValueError naming the file."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: the container holds no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            return {"fps": float(rate), "frames": int(stream.frames or 0), "codec": stream.codec_context.name,
                    "width": stream.codec_context.width, "height": stream.codec_context.height}
    except av.FFmpegError as exc:
        raise ValueError(f"cannot read video {path}: {ffmpeg_says(exc)}") from None


def decode(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """``(rgb uint8 [H,W,3], time in seconds)`` per frame, in presentation order."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start = None
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / float(stream.average_rate or 30)
                start = t if start is None else start
                yield frame.to_ndarray(format="rgb24"), t - start
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode {path}: {ffmpeg_says(exc)}") from None


def ffmpeg_says(exc) -> str:
    """FFmpeg's reason (without the path it repeats) and what to try."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return (f"FFmpeg: {reason} (not a video, or cut off: an mp4 written by a program that was stopped has no "
            f"index); check that it plays, or re-encode it: ffmpeg -i IN -c:v libx264 OUT.mp4")


def encoder() -> str:
    """H.264 where this FFmpeg has it (libx264, in PyAV's wheels), else MPEG-4 Part 2 (plays everywhere)."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class Mp4Writer:
    """Frames with exact timestamps into an mp4: ``write(rgb uint8 [H,W,3], seconds)``; ``close()``
    (or use as a context manager). Odd sizes are padded by one edge pixel (4:2:0 chroma needs even).

    ``threaded``: frames are encoded on a thread of their own (FFmpeg runs without the GIL), at most
    ``queue`` frames behind; a written frame must not be changed afterwards. An encoding error is
    raised by the next ``write`` or by ``close``."""

    def __init__(self, path: str | Path, fps: float, crf: int = 20, threaded: bool = False, queue: int = 16):
        import av

        self._thread = None
        if threaded:
            import queue as queues
            import threading

            self._queue: queues.Queue = queues.Queue(maxsize=queue)
            self._error: BaseException | None = None
            self._thread = threading.Thread(target=self._drain, name=f"encode {Path(path).name}", daemon=True)
        self.path, self.fps = Path(path), fps
        self.container = av.open(str(path), "w")
        self.codec = encoder()
        self.stream = self.container.add_stream(self.codec, rate=Fraction(fps).limit_denominator(100000))
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, TICKS)
        self.stream.codec_context.time_base = Fraction(1, TICKS)
        if self.codec == "libx264":
            self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.size, self.last_pts, self.frames = None, -1, 0
        if self._thread is not None:
            self._thread.start()

    def write(self, rgb: np.ndarray, seconds: float) -> None:
        if self._thread is None:
            return self._encode(rgb, seconds)
        if self._error is not None:
            raise self._error
        self._queue.put((rgb, seconds))

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:  # after an error the rest is dropped (the writer is failing anyway)
                try:
                    self._encode(*item)
                except BaseException as exc:
                    self._error = exc

    def _encode(self, rgb: np.ndarray, seconds: float) -> None:
        import av

        h, w = rgb.shape[:2]
        if self.size is None:
            self.size = (h + h % 2, w + w % 2)
            self.stream.height, self.stream.width = self.size
        if rgb.shape[:2] != self.size:
            rgb = np.pad(rgb, ((0, self.size[0] - h), (0, self.size[1] - w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = max(self.last_pts + 1, int(round(seconds * TICKS)))  # strictly increasing
        frame.time_base = Fraction(1, TICKS)
        self.last_pts = frame.pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            if self._error is not None:
                try:
                    self.container.close()
                except Exception:  # the encoding error says more
                    pass
                self.container = None
                raise self._error
        if self.container is None:
            return
        try:
            if self.size is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()
        except Exception:
            if self.size is not None:  # a failure with frames written is real; none written: nothing to lose
                raise
        finally:
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
