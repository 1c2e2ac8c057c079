"""The render sections of the config tree (thesis 3.1): trajectories, background clips, the render."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fmolab.config.rules import require


@dataclass(frozen=True)
class TrajectoryConfig:
    """Thesis 3.1 step 3: start/end inside the camera frustum, bounded travel."""

    depth: list[float] = field(default_factory=lambda: [3.0, 6.0])  # object distance from camera
    margin: float = 0.1  # fraction of the frustum kept free at the edges
    min_travel: float = 0.5  # XY travel, in object diameters
    max_travel: float = 3.0
    max_dz: float = 0.5  # change of depth during the exposure
    max_end_rotation: float = 30.0  # degrees: end rotation = start rotation + small random offset
    object_size: list[float] = field(default_factory=lambda: [0.6, 1.2])  # object diameter range

    def check(self) -> None:
        require(len(self.depth) == 2 and 0 < self.depth[0] <= self.depth[1], "render.trajectory.depth",
                 self.depth, "must be [near, far] with 0 < near <= far")
        require(0 <= self.margin < 0.5, "render.trajectory.margin", self.margin, "must be in [0, 0.5)")
        require(0 <= self.min_travel <= self.max_travel, "render.trajectory.min_travel", self.min_travel,
                 f"must be >= 0 and <= max_travel ({self.max_travel})")
        require(self.max_dz >= 0, "render.trajectory.max_dz", self.max_dz, "must be >= 0")
        require(len(self.object_size) == 2 and 0 < self.object_size[0] <= self.object_size[1],
                 "render.trajectory.object_size", self.object_size, "must be [min, max] with 0 < min <= max")


@dataclass(frozen=True)
class BackgroundRenderConfig:
    """Background clips: procedural videos, or frames read from a VOT/OTB-style folder."""

    source: str = "procedural"  # "procedural" or a folder of frame folders / videos
    num_clips: int = 32
    frames_per_clip: int = 8

    def check(self) -> None:
        require(self.num_clips >= 1, "render.backgrounds.num_clips", self.num_clips, "must be >= 1")
        require(self.frames_per_clip >= 2, "render.backgrounds.frames_per_clip", self.frames_per_clip,
                 "must be >= 2 (double blur needs consecutive frames)")


@dataclass(frozen=True)
class RenderConfig:
    """Synthetic FMO dataset generation with Blender (thesis 3.1)."""

    out: str = ""  # dataset folder; "" = <work_dir>/datasets/<name>
    name: str = "fmo"
    num_sequences: int = 1000
    seed: int = 0
    width: int = 320
    height: int = 240
    num_frames: int = 24  # sharp sub-frames per sequence
    motion_blur_steps: int = 40
    blurs: dict[str, list[float]] = field(
        default_factory=lambda: {"full": [0.0, 1.0], "first": [0.0, 0.5], "second": [0.5, 1.0]}
    )
    # A blur whose span two other blurs partition (full = first + second) is their length-weighted
    # premultiplied mean instead of a third engine render (same integral, one render less); false =
    # every blur engine-rendered.
    full_from_halves: bool = True
    # "simulated": rows without Blender (tiny valid images, the real schema) to run and measure the
    # orchestration at scale (render_cluster/simulated.py, benchmarks/render_scale.py)
    engine: Literal["cycles", "eevee", "simulated"] = "cycles"
    device: Literal["cpu", "gpu"] = "cpu"
    # Sample, bounce, denoise and WebP defaults were measured (benchmarks/render.py; docs/render.md).
    samples: int = 4  # blurs use max(samples, motion_blur_steps)
    max_bounces: int = 1
    denoise: bool = True
    objects: str = "procedural"  # "procedural" or a ShapeNetCore.v2-style OBJ folder
    textures: str = "procedural"  # "procedural" or a DTD-style image folder
    min_coverage: float = 0.01  # minimum mean alpha of every blur, else the sample is re-drawn
    max_tries: int = 5
    # More of the draws than this failing on asset files (unreadable meshes or textures) stops the render
    # (one line naming the first failing files, exit 1, a manifest that does not say complete)
    max_bad_asset_fraction: float = 0.5
    webp_quality: int = 80  # alpha is always lossless: lossy alpha erases faint blur tails
    webp_method: int = 5  # WebP effort 0-6 for frames and background clips (size/speed trade-off)
    webp_blur_method: int = 6  # WebP effort 0-6 for the blurs
    shard_rows: int = 64  # rows per shard (bounds shard size)
    workers: int = 0  # render actors; 0 = one per CPU
    start_timeout_s: float = 120.0  # render actors not started by then: a smaller pool (a node lost)
    claim_lease_s: float = 120.0  # a block's claim lasts this long after its last renewal (sharing.py)
    # Blocks per Ray Data pass: the driver's memory grows with a pass's blocks (~7 KB each), so a render
    # of 10^6 sequences runs in passes of this many (each starts its actors again: seconds per pass)
    blocks_per_pass: int = 2048
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    backgrounds: BackgroundRenderConfig = field(default_factory=BackgroundRenderConfig)

    def check(self) -> None:
        require(self.num_sequences >= 1, "render.num_sequences", self.num_sequences, "must be >= 1")
        require(self.width >= 16 and self.height >= 16, "render.width/height", (self.width, self.height),
                 "must both be >= 16")
        require(self.num_frames >= 2, "render.num_frames", self.num_frames, "must be >= 2")
        require(self.motion_blur_steps >= 1, "render.motion_blur_steps", self.motion_blur_steps, "must be >= 1")
        for name, span in self.blurs.items():
            require(len(span) == 2 and 0 <= span[0] < span[1] <= 1, f"render.blurs.{name}", span,
                     "must be [start, end] with 0 <= start < end <= 1")
        require(self.samples >= 1, "render.samples", self.samples, "must be >= 1")
        require(self.start_timeout_s > 0, "render.start_timeout_s", self.start_timeout_s, "must be > 0 (seconds)")
        require(self.blocks_per_pass >= 1, "render.blocks_per_pass", self.blocks_per_pass, "must be >= 1")
        require(self.claim_lease_s >= 5, "render.claim_lease_s", self.claim_lease_s, "must be >= 5 (seconds)")
        require(0 <= self.min_coverage < 1, "render.min_coverage", self.min_coverage, "must be in [0, 1)")
        require(self.max_tries >= 1, "render.max_tries", self.max_tries, "must be >= 1")
        require(0 <= self.max_bad_asset_fraction <= 1, "render.max_bad_asset_fraction", self.max_bad_asset_fraction,
                "must be in [0, 1] (1: never stop for bad asset files)")
        require(1 <= self.webp_quality <= 101, "render.webp_quality", self.webp_quality,
                 "must be 1..100 (101 = lossless)")
        for key in ("webp_method", "webp_blur_method"):
            require(0 <= getattr(self, key) <= 6, f"render.{key}", getattr(self, key), "must be 0..6")
        require(self.shard_rows >= 1, "render.shard_rows", self.shard_rows, "must be >= 1")
        require(self.workers >= 0, "render.workers", self.workers, "must be >= 0")
        require(self.engine != "simulated" or self.blurs == {"full": [0.0, 1.0], "first": [0.0, 0.5], "second": [0.5, 1.0]},
                "render.blurs", self.blurs, "the simulated engine makes the default blurs (full, first, second) only")
