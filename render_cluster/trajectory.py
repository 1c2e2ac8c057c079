"""Trajectory sampling (thesis 3.1 step 3): pure Python + numpy, no bpy, so it is unit-testable.

Coordinates are Blender's: the camera sits at the origin looking along -Z with +Y up, so an object
at distance ``d`` has ``z = -d``. Positions and Euler rotations are interpolated linearly in time
``t`` in [0, 1] (the exposure), exactly like LINEAR keyframes at t=0 and t=1 in Blender.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# The scene's camera (scene.py uses the same numbers): 50 mm lens on a 36 mm sensor fitted
# horizontally, so tan(half horizontal field of view) = 18 / 50.
CAMERA_LENS_MM = 50.0
CAMERA_SENSOR_MM = 36.0
TAN_HALF_X = CAMERA_SENSOR_MM / 2 / CAMERA_LENS_MM


class TrajectoryError(ValueError):
    """The trajectory bounds cannot be met (e.g. the travel does not fit in the frustum)."""


def frame_times(num_frames: int) -> np.ndarray:
    """Sharp sub-frame i of N sits at t_i = (i + 0.5) / N (docs/batches.md)."""
    return (np.arange(num_frames, dtype=np.float64) + 0.5) / num_frames


def frustum_half_extent(depth: float, width: int, height: int) -> tuple[float, float]:
    """Half width/height of the visible rectangle at distance ``depth`` from the camera."""
    return TAN_HALF_X * depth, TAN_HALF_X * depth * height / width


@dataclass
class Trajectory:
    size: float  # object diameter (scene units)
    start: list[float]  # xyz at t=0
    end: list[float]  # xyz at t=1
    rot_start: list[float]  # Euler XYZ radians at t=0
    rot_end: list[float]  # Euler XYZ radians at t=1
    travel: float  # XY travel in object diameters

    def at(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Location and rotation at time(s) ``t`` (linear interpolation, shape [..., 3])."""
        t = np.asarray(t, dtype=np.float64)[..., None]
        loc = (1 - t) * np.asarray(self.start) + t * np.asarray(self.end)
        rot = (1 - t) * np.asarray(self.rot_start) + t * np.asarray(self.rot_end)
        return loc, rot

    def to_dict(self) -> dict:
        return asdict(self)


def project(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Camera-space points ``[..., 3]`` (z < 0) -> pixel coordinates ``[..., 2]`` (x right, y down)."""
    depth = -points[..., 2]
    hx, hy = TAN_HALF_X, TAN_HALF_X * height / width
    u = (points[..., 0] / depth / hx * 0.5 + 0.5) * width
    v = (0.5 - points[..., 1] / depth / hy * 0.5) * height
    return np.stack([u, v], axis=-1)


def _inside(p: np.ndarray, radius: float, margin: float, width: int, height: int) -> bool:
    """Whether a sphere of ``radius`` at ``p`` lies inside the frustum shrunk by ``margin`` per side."""
    hx, hy = frustum_half_extent(-p[2], width, height)
    return abs(p[0]) + radius <= hx * (1 - 2 * margin) and abs(p[1]) + radius <= hy * (1 - 2 * margin)


def sample_trajectory(rng: np.random.Generator, traj_cfg, width: int, height: int, attempts: int = 200) -> Trajectory:
    """Draw a trajectory within ``traj_cfg`` (fmolab.config.TrajectoryConfig) bounds.

    Start and end both keep the object's bounding sphere inside the frustum with ``margin`` free at
    each edge; XY travel is in [min_travel, max_travel] diameters, |dz| <= max_dz, depth in ``depth``.
    Rejection-samples up to ``attempts`` times, then raises :class:`TrajectoryError`.
    """
    near, far = traj_cfg.depth
    for _ in range(attempts):
        size = float(rng.uniform(*traj_cfg.object_size))
        r = size / 2
        z0 = float(rng.uniform(near, far))
        z1 = float(np.clip(z0 + rng.uniform(-traj_cfg.max_dz, traj_cfg.max_dz), near, far))
        travel = float(rng.uniform(traj_cfg.min_travel, traj_cfg.max_travel))
        angle = float(rng.uniform(0, 2 * math.pi))
        dx, dy = travel * size * math.cos(angle), travel * size * math.sin(angle)
        # Start uniformly where both start and end can be inside: sample start inside its own box,
        # then check the end (cheap rejection; boxes are convex so a valid pair is found quickly).
        hx, hy = frustum_half_extent(z0, width, height)
        ax, ay = hx * (1 - 2 * traj_cfg.margin) - r, hy * (1 - 2 * traj_cfg.margin) - r
        if ax < 0 or ay < 0:
            continue
        start = np.array([rng.uniform(-ax, ax), rng.uniform(-ay, ay), -z0])
        end = start + np.array([dx, dy, 0.0])
        end[2] = -z1
        if not _inside(end, r, traj_cfg.margin, width, height):
            # Try the opposite direction before giving up on this draw (halves rejections).
            end = start - np.array([dx, dy, 0.0])
            end[2] = -z1
            if not _inside(end, r, traj_cfg.margin, width, height):
                continue
        rot0 = rng.uniform(0, 2 * math.pi, size=3)
        offset = np.radians(rng.uniform(-traj_cfg.max_end_rotation, traj_cfg.max_end_rotation, size=3))
        return Trajectory(size=size, start=start.tolist(), end=end.tolist(), rot_start=rot0.tolist(),
                          rot_end=(rot0 + offset).tolist(), travel=travel)
    raise TrajectoryError(
        f"no trajectory found in {attempts} draws: travel {traj_cfg.min_travel}-{traj_cfg.max_travel} diameters of "
        f"objects {traj_cfg.object_size} at depth {traj_cfg.depth} with margin {traj_cfg.margin} does not fit the "
        f"{width}x{height} frustum (tan half-fov {TAN_HALF_X:.2f}); lower min_travel/object_size/margin "
        f"or raise depth")


def check_bounds(traj_cfg, width: int, height: int) -> None:
    """Fail early (before any Ray work) when the bounds can (almost) never be met.

    Uses the most favourable case: farthest depth, smallest object, shortest travel, along the wider
    image axis; then confirms by sampling a few trajectories.
    """
    far = traj_cfg.depth[1]
    hx, hy = frustum_half_extent(far, width, height)
    r = traj_cfg.object_size[0] / 2
    room = 2 * (max(hx, hy) * (1 - 2 * traj_cfg.margin) - r)
    need = traj_cfg.min_travel * traj_cfg.object_size[0]
    if room < need or room <= 0:
        raise TrajectoryError(
            f"impossible trajectory bounds: at the farthest depth {far} the usable frustum span is "
            f"{room:.3f} units but min_travel {traj_cfg.min_travel} x object size {traj_cfg.object_size[0]} needs "
            f"{need:.3f}; lower min_travel/object_size/margin or raise depth")
    rng = np.random.default_rng(0)
    for _ in range(5):
        sample_trajectory(rng, traj_cfg, width, height, attempts=2000)
