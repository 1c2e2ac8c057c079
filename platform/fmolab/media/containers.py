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


REACH, MARGIN = 4, 8  # luma pixels: how far a pasted part changes the chroma; context converted around
# From a megapixel a threaded writer converts only an Overlay's part and runs two x264 threads; below,
# whole frames and one thread. benchmarks/deblur.py on 2 cores, frames/s: parts 5.7-5.9 against whole
# 4.6-4.7 at 1920x1080, 10.1 against 10.5 at 1280x720, 14.3 against 16.4 at 640x480, 35-36 against
# 41-46 at 320x240 (each part is several calls that hand the GIL back and forth with the model's thread)
LARGE_FRAME = 1_000_000


class Overlay:
    """A frame given as ``base`` (uint8 RGB ``[H,W,3]``, the same array over a run of frames) with
    ``part`` (uint8 ``[h,w,3]``, or None) pasted at ``(y, x)``. :class:`Mp4Writer` converts a base to
    the encoder's pixel format once and, for each frame, only the part's box (with surroundings, so that
    the frame's planes come out exactly as a whole-frame conversion gives them): sub-frames that differ
    from their input frame only around the objects cost a copy, not a full-frame conversion each."""

    __slots__ = ("base", "y", "x", "part")

    def __init__(self, base: np.ndarray, y: int = 0, x: int = 0, part: np.ndarray | None = None):
        self.base, self.y, self.x, self.part = base, y, x, part

    def rgb(self) -> np.ndarray:
        """The whole frame, uint8 ``[H,W,3]`` (a new array when a part is pasted)."""
        if self.part is None:
            return self.base
        out = self.base.copy()
        h, w = self.part.shape[:2]
        out[self.y:self.y + h, self.x:self.x + w] = self.part
        return out


def yuv420(rgb: np.ndarray) -> list[np.ndarray]:
    """The Y, U, V planes of an even-sized uint8 RGB image as FFmpeg's swscale converts it to yuv420p."""
    import av

    planes = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").planes
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy() for p in planes]


def _even(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` padded to ``size`` by repeating its last row and column (4:2:0 chroma needs even sizes)."""
    h, w = rgb.shape[:2]
    if (h, w) == size:
        return rgb
    return np.pad(rgb, ((0, size[0] - h), (0, size[1] - w), (0, 0)), mode="edge")


class Mp4Writer:
    """Frames with exact timestamps into an mp4: ``write(frame, seconds)``, a frame being uint8 RGB
    ``[H,W,3]`` or an :class:`Overlay`; ``close()`` (or use as a context manager). Odd sizes are padded
    by one edge pixel (4:2:0 chroma needs even).

    ``threaded``: frames are converted and encoded on a thread of their own (FFmpeg runs without the
    GIL), at most ``queue`` frames behind; a written frame (an overlay's base and part) must not be
    changed afterwards. An encoding error is raised by the next ``write`` or by ``close``. ``threads``:
    the encoder's own threads (0: FFmpeg's choice, one per core and more). A threaded writer, beside
    other work, uses one below :data:`LARGE_FRAME` (x264's frame threads cost more CPU than they save:
    36-38 frames/s against 31-34 at 320x240 in benchmarks/deblur.py) and two from there (encoding goes
    on while the writer's thread waits for the GIL: 6.1-6.4 frames/s against 5.4-5.7 at 1080p)."""

    def __init__(self, path: str | Path, fps: float, crf: int = 20, threaded: bool = False, queue: int = 16,
                 threads: int | None = None):
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
        self.threads = threads if threads is not None else None if threaded else 0  # None: by the frame size
        self.size, self.last_pts, self.frames, self.large = None, -1, 0, False
        self._base: np.ndarray | None = None  # the last overlay's base, it padded, and its planes
        self._padded: np.ndarray | None = None
        self._planes: list[np.ndarray] = []
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

    def _encode(self, frame, seconds: float) -> None:
        import av

        if self.size is None:
            h, w = frame.base.shape[:2] if isinstance(frame, Overlay) else frame.shape[:2]
            self.size = (h + h % 2, w + w % 2)
            self.stream.height, self.stream.width = self.size
            self.large = h * w >= LARGE_FRAME  # decides x264's threads and how overlays are converted
            self.stream.codec_context.thread_count = (2 if self.large else 1) if self.threads is None else self.threads
        if isinstance(frame, Overlay) and not self.large:
            frame = frame.rgb()  # a small frame converts as fast whole, with fewer handoffs of the GIL
        if isinstance(frame, Overlay):
            out = self._overlaid(frame)
        else:
            h, w = frame.shape[:2]
            if (h + h % 2, w + w % 2) == self.size:
                frame = _even(frame, self.size)
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if (out.height, out.width) != self.size:
            raise ValueError(f"{self.path.name}: frame {self.frames} is {out.width}x{out.height}, the video "
                             f"is {self.size[1]}x{self.size[0]}; every frame of a video must have one size")
        out.pts = max(self.last_pts + 1, int(round(seconds * TICKS)))  # strictly increasing
        out.time_base = Fraction(1, TICKS)
        self.last_pts = out.pts
        for packet in self.stream.encode(out):
            self.container.mux(packet)
        self.frames += 1

    def _overlaid(self, ov: Overlay):
        """The overlay as a yuv420p frame: the base's planes (converted when the base changes) with the
        part's box converted again and copied in."""
        import av

        if ov.base is not self._base:
            self._base = ov.base
            self._padded = _even(ov.base, self.size)
            self._planes = yuv420(self._padded)
        out = av.VideoFrame(self.size[1], self.size[0], "yuv420p")
        views = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in out.planes]
        for view, plane in zip(views, self._planes):
            view[:] = plane
        if ov.part is not None:
            H, W = self.size
            h, w = ov.part.shape[:2]
            # the part's box, widened to whole chroma pixels and by the reach of swscale's chroma filter
            # (a pixel changes the chroma rows next to its own); converted with surroundings on every
            # side, from a multiple of 16 columns (the vector code rounds a block's tail differently)
            y0, x0 = max(0, ov.y - REACH) // 2 * 2, max(0, ov.x - REACH) // 2 * 2
            y1, x1 = min(H, -(-(ov.y + h + REACH) // 2) * 2), min(W, -(-(ov.x + w + REACH) // 2) * 2)
            gy0, gx0 = max(0, y0 - MARGIN), max(0, x0 - MARGIN) // 16 * 16
            gy1, gx1 = min(H, y1 + MARGIN), min(W, -(-(x1 + MARGIN) // 16) * 16)
            region = self._padded[gy0:gy1, gx0:gx1].copy()
            region[ov.y - gy0:ov.y - gy0 + h, ov.x - gx0:ov.x - gx0 + w] = ov.part
            bh, bw = ov.base.shape[:2]
            if bh < H and gy1 == H:  # the padding repeats the last real row and column
                region[-1] = region[-2]
            if bw < W and gx1 == W:
                region[:, -1] = region[:, -2]
            for view, plane, f in zip(views, yuv420(region), (1, 2, 2)):
                oy, ox = (y0 - gy0) // f, (x0 - gx0) // f
                view[y0 // f:y1 // f, x0 // f:x1 // f] = plane[oy:oy + (y1 - y0) // f, ox:ox + (x1 - x0) // f]
        return out

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
