"""What ``fmolab deblur`` and ``fmolab evaluate`` take besides their inputs and outputs, as typed
objects checked once when made, in the config tree's style (one line: the option, its value, what is
allowed; exit 2), before any model is loaded. Frozen: no stage changes them afterwards."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from fmolab.config.rules import require

ENSEMBLES = (1, 2, 4, 8)  # test-time self-ensemble: the input, its flips, then their transposes
ANIMATIONS = ("webp", "gif")  # video outputs on request, beside the mp4s
# per object and frame of a video: its sub-frames as an animated WebP; "png" adds its RGBA and alpha
# PNGs (17 files an object a frame: opt-in, they cost a 320x240 video a quarter of its CPU)
CROPS = ("webp", "png", "none")


def check_ensemble(value: int) -> None:
    require(value in ENSEMBLES, "--ensemble", value, f"one of {', '.join(map(str, ENSEMBLES))} (flips, then transposes)")


@dataclass(frozen=True)
class VideoOptions:
    """How movers are found in a video and what is written (``deblur_video``'s keyword arguments)."""

    window: int = 9  # frames in the running-median background
    threshold: float = 0.1  # difference to the background that marks a mover
    min_area: int = 12  # smallest mover in pixels
    max_objects: int = 4  # movers deblurred per frame, largest first
    chunk_frames: int = 240  # output frames per --animations file
    animations: tuple[str, ...] = ()
    crops: str = "webp"

    def __post_init__(self):
        object.__setattr__(self, "animations", tuple(self.animations))
        require(self.window >= 1, "--window", self.window, "must be >= 1")
        require(self.threshold > 0, "--threshold", self.threshold, "must be > 0")
        require(self.min_area >= 1, "--min-area", self.min_area, "must be >= 1")
        require(self.max_objects >= 1, "--max-objects", self.max_objects, "must be >= 1")
        require(self.chunk_frames >= 1, "--chunk-frames", self.chunk_frames, "must be >= 1")
        require(set(self.animations) <= set(ANIMATIONS), "--animations", list(self.animations),
                f"each one of {', '.join(ANIMATIONS)}")
        require(self.crops in CROPS, "--crops", self.crops, f"one of {', '.join(CROPS)}")


@dataclass(frozen=True)
class DeblurOptions:
    """``fmolab deblur``: sub-frames per input, model actors of ``--videos``, the self-ensemble and
    the video options (the still inputs use threshold, min_area and max_objects too)."""

    num_frames: int = 8
    workers: int = 1
    ensemble: int = 1
    video: VideoOptions = VideoOptions()

    def __post_init__(self):
        require(self.num_frames >= 1, "--num-frames", self.num_frames, "must be >= 1")
        require(self.workers >= 1, "--workers", self.workers, "must be >= 1")
        check_ensemble(self.ensemble)


@dataclass(frozen=True)
class EvaluateOptions:
    """``fmolab evaluate``: which samples, at which size and sync, by how many model actors."""

    kind: str = "auto"
    num_frames: int | None = None
    max_samples: int | None = None
    sub_steps: int = 1
    size: tuple[int, int] | None = None  # model input (height, width) for benchmarks
    sync: str = "first"
    workers: int = 0
    protocol: str = "fmolab"
    ensemble: int = 1

    @staticmethod
    def parse_size(text: str) -> tuple[int, int] | None:
        """``"WIDTHxHEIGHT"`` -> ``(height, width)``; "" -> None."""
        if not text:
            return None
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            require(False, "--size", text, "expected WIDTHxHEIGHT, e.g. 320x240")
        require(w >= 16 and h >= 16, "--size", text, "both sides must be >= 16")
        return h, w

    def __post_init__(self):
        require(self.max_samples is None or self.max_samples >= 1, "--max", self.max_samples, "must be >= 1")
        require(self.num_frames is None or self.num_frames >= 1, "--num-frames", self.num_frames, "must be >= 1")
        require(self.sub_steps >= 1, "--sub-steps", self.sub_steps, "must be >= 1")
        require(self.workers >= 0, "--workers", self.workers, "must be >= 0 (0: this process)")
        require(self.sync in ("first", "all"), "--sync", self.sync, "one of first, all")
        require(self.protocol in ("fmolab", "benchmark"), "--protocol", self.protocol, "one of fmolab, benchmark")
        check_ensemble(self.ensemble)

    def evaluate_kwargs(self) -> dict:
        """The keyword arguments of :func:`fmolab.evaluation.evaluate.evaluate`."""
        return {k: v for k, v in asdict(self).items() if k != "ensemble"}
