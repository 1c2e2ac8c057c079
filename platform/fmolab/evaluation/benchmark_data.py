"""Readers of the real-world FMO deblurring benchmark datasets (Falling Objects, TbD, TbD-3D) in the
on-disk layout published with the FMO deblurring benchmark (Rozumnyi et al., DeFMO, CVPR 2021); it
yields the :class:`~fmolab.evaluation.samples.Sample` objects that :mod:`fmolab.evaluation.evaluate` scores.

Published layout (our reading of the benchmark's loader; see docs/evaluate.md)::

    <root>/                               e.g. falling_objects/, TbD/, TbD-3D/
      imgs/<seq>/00000000.png ...         the video frames (numbering may start at 00000001)
      imgs_gt/<seq>/00000000.png ...      high-speed ground truth: RGB sub-frames composited on the
                                          scene, frame k's sub-frame i is number k*N + i (+1 when the
                                          numbering starts at 1); N = 12 if "-12" is in <seq>, else 8
      imgs/<seq>/gt.txt                   optional: trajectory, 2 rows per frame (x row, y row), N columns
      imgs/<seq>/gtr.txt                  optional: object radius (one value, per frame, or per sub-frame)
      gt_bbox/<seq>.txt                   optional: one "x y w h" line per sub-frame (centre = xy + wh/2,
                                          radius = max(w, h) / 2); used when gt.txt is absent
      templates/<seq>_template.mat        optional (TbD): radius = (template rows / 2) / scale
      roi_frames.txt                      optional: "start end" (inclusive) frame range per sequence,
                                          one line per sequence in sorted sequence order

Sequences: Falling Objects ``imgs/*_GTgamma``, TbD-3D ``imgs/*_GT_*``, TbD ``imgs/*_*`` without
``ping_wall`` and ``fall_coin``. The background of frame k is the median of a sliding window of 50
frames (the first 50 of the sequence; from frame 50 on the window slides to end at frame k-1).
Trajectory coordinates in the files are 1-based pixel centres (MATLAB); they are converted to
fmolab's continuous coordinates (pixel centre at index + 0.5) by subtracting 0.5.
"""
from __future__ import annotations

import glob
import os
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np

from fmolab.data.formats import InputFormat
from fmolab.evaluation.metrics import difference_mask, equivalent_radius
from fmolab.evaluation.samples import TIGHT_MARGIN, Sample
from fmolab.geometry import Box, grow, largest_component, model_box, resize, scoring_crop, union
from fmolab.media import read_rgb

KINDS = ("falling", "tbd", "tbd3d")
MEDIAN_WINDOW = 50


class BenchmarkError(ValueError):
    """A benchmark folder that does not follow the published layout; the message says what is missing."""


# ---------------------------------------------------------------- dataset discovery


def detect_kind(root: str | Path) -> str:
    """"falling", "tbd3d" or "tbd" from the sequence folder names under ``root/imgs``."""
    imgs = Path(root) / "imgs"
    if not imgs.is_dir():
        raise BenchmarkError(f"{root}: no imgs/ folder; expected the FMO benchmark layout (see docs/evaluate.md)")
    names = [p.name for p in imgs.iterdir() if p.is_dir()]
    if any(n.endswith("_GTgamma") for n in names):
        return "falling"
    if any("_GT_" in n for n in names):
        return "tbd3d"
    if any("_" in n for n in names):
        return "tbd"
    raise BenchmarkError(f"{imgs}: no sequence folders (<name>_GTgamma, *_GT_*, or <class>_<name>)")


def list_sequences(root: str | Path, kind: str) -> list[Path]:
    root = Path(root)
    if kind == "falling":
        files = sorted(glob.glob(os.path.join(root, "imgs", "*_GTgamma")))
    elif kind == "tbd3d":
        files = sorted(glob.glob(os.path.join(root, "imgs", "*_GT_*")))
    elif kind == "tbd":
        files = [f for f in glob.glob(os.path.join(root, "imgs", "*_*"))
                 if "ping_wall" not in f and "fall_coin" not in f]
        files.sort(key=lambda f: os.path.split(f)[-1].replace("VS_", ""))
    else:
        raise BenchmarkError(f"unknown benchmark kind {kind!r}; known: {', '.join(KINDS)}")
    files = [f for f in files if os.path.isdir(f)]
    if not files:
        raise BenchmarkError(f"{root}: no {kind} sequences found under imgs/")
    return [Path(f) for f in files]


def _frame_path(folder: Path, index: int) -> Path:
    return folder / f"{index:08d}.png"


class BenchmarkSequence:
    """One sequence folder: frames, running-median background, GT sub-frames and trajectory."""

    def __init__(self, seq_path: Path, seq_index: int, median_window: int = MEDIAN_WINDOW):
        self.path = seq_path
        self.name = seq_path.name
        self.root = seq_path.parent.parent
        self.nsplits = 12 if "-12" in self.name else 8
        nfrms = len(list(seq_path.glob("*.png")))
        start, end = 0, nfrms
        roi = self.root / "roi_frames.txt"
        if roi.exists():
            rows = np.atleast_2d(np.loadtxt(roi)).astype(int)
            if seq_index < len(rows):
                start, end = int(rows[seq_index, 0]), int(rows[seq_index, 1])
                nfrms = end - start + 1
        if not _frame_path(seq_path, 0).exists():
            start += 1
        self.start, self.nfrms = start, nfrms
        if nfrms <= 0:
            raise BenchmarkError(f"{seq_path}: no frames (*.png)")
        self.window = min(median_window, nfrms)
        self.hs_base = self.root / "imgs_gt" / self.name
        # Any sub-frame counts: a sequence whose ROI starts late has its first one at (start * n + 1).
        self.use_hs = self.hs_base.is_dir() and any(self.hs_base.glob("*.png"))
        self.hs_start = 0 if _frame_path(self.hs_base, 0).exists() else 1
        self.pars, self.rads = self._trajectory()
        self._buffer: deque | None = None
        self._next = 0

    # -- trajectory files
    def _trajectory(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        pars = rads = None
        gt = self.path / "gt.txt"
        if gt.exists():
            pars = np.atleast_2d(np.loadtxt(gt))
        gtr = self.path / "gtr.txt"
        if gtr.exists():
            rads = np.atleast_1d(np.loadtxt(gtr)).astype(np.float64)
        else:
            tpl = self.root / "templates" / f"{self.name}_template.mat"
            if tpl.exists():
                from scipy.io import loadmat

                data = loadmat(str(tpl))
                rads = np.atleast_1d(float(data["template"].shape[0] / 2) / np.asarray(data["scale"], float).ravel()[0])
        bbox_file = self.root / "gt_bbox" / f"{self.name}.txt"
        self.from_bboxes = pars is None and bbox_file.exists()
        if self.from_bboxes:
            bb = np.atleast_2d(np.loadtxt(bbox_file))
            n = self.nsplits
            usable = bb.shape[0] // n * n
            centres = (bb[:usable, :2] + 0.5 * bb[:usable, 2:4]).reshape(-1, n, 2).transpose(0, 2, 1).reshape(-1, n)
            r = np.max(0.5 * bb[:usable, 2:4], 1).reshape(-1, n)
            pars = np.r_[np.full((self.start * 2, n), np.nan), centres]
            rads = np.r_[np.full((self.start, n), np.nan), r]
        return pars, rads

    def gt_traj(self, k: int) -> tuple[np.ndarray | None, float | None]:
        """Ground-truth ``[N,2]`` (x, y) positions of frame ``k`` (continuous coordinates) and radius."""
        if self.pars is None:
            return None, None
        f = k + self.start
        if self.pars.shape[0] < 2 * (f + 1):
            return None, None
        par = self.pars[2 * f:2 * f + 2].T.astype(np.float64) - 0.5  # [N, 2], 1-based -> continuous
        if np.isnan(par).all():
            return None, None
        radius = None
        if self.rads is not None:
            r = self.rads
            if r.ndim == 2:
                radius = float(np.nanmax(r[f])) if f < r.shape[0] else None
            elif r.size == 1:
                radius = float(r[0])
            elif f < r.size:
                radius = float(r[f])
        return par, radius

    # -- frames and background
    def frame(self, k: int, dtype=np.float32) -> np.ndarray:
        return read_rgb(_frame_path(self.path, self.start + k), BenchmarkError, dtype)

    def frames_with_background(self, dtype=np.float32) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(k, image, background)`` for every frame, the benchmark's sliding median (bounded memory)."""
        buf = deque((self.frame(i, dtype) for i in range(self.window)), maxlen=self.window)
        for k in range(self.nfrms):
            image = self.frame(k, dtype)
            bg = np.median(np.stack(buf), axis=0).astype(dtype)
            if k >= self.window:
                buf.append(image)
            yield k, image, bg

    def gt_subframes(self, k: int, shape: tuple[int, int], n: int | None = None,
                     dtype=np.float32) -> np.ndarray | None:
        """The ``n`` (default: the sequence's) high-speed sub-frames of frame ``k`` cropped to ``shape``."""
        if not self.use_hs:
            return None
        n = n or self.nsplits
        out = []
        for i in range(n):
            p = _frame_path(self.hs_base, (k + self.start) * n + i + self.hs_start)
            if not p.exists():
                return None
            out.append(read_rgb(p, BenchmarkError, dtype)[:, :shape[0], :shape[1]])
        return np.stack(out)


def _object_boxes(seq: BenchmarkSequence, k: int, image: np.ndarray, bg: np.ndarray, gt: np.ndarray | None):
    """(tight scoring box, trajectory, radius) of frame ``k`` following the benchmark."""
    shape = image.shape[-2:]
    traj, radius = seq.gt_traj(k)
    diff = difference_mask(gt, bg) if gt is not None else None  # [N,H,W]
    if traj is not None:
        filled = np.where(np.isnan(traj), np.nanmean(traj, 0), traj)
        y0, x0 = np.floor(filled[:, 1].min()), np.floor(filled[:, 0].min())
        y1, x1 = np.ceil(filled[:, 1].max()) + 1, np.ceil(filled[:, 0].max()) + 1
        box = (int(y0), int(x0), int(y1), int(x1))
        if radius is None and diff is not None:
            radius = equivalent_radius(diff.astype(np.float64))
        radius = radius if radius is not None and np.isfinite(radius) else 5.0
        box = grow(box, radius, shape)
    elif diff is not None:
        box = scoring_crop(diff, 0)
        radius = max(equivalent_radius(diff.astype(np.float64)), 1.0)
    else:
        return None, None, None
    tight = grow(box, TIGHT_MARGIN, shape)
    if diff is not None:
        y0, x0, y1, x1 = tight
        inner = largest_component(diff[:, y0:y1, x0:x1].any(0))
        if inner is not None:
            (iy0, ix0, iy1, ix1), _ = inner
            tight = (y0 + iy0, x0 + ix0, y0 + iy1, x0 + ix1)
    return tight, traj, float(radius)


def benchmark_samples(root: str | Path, fmt: InputFormat, size: tuple[int, int], kind: str = "auto",
                      sub_steps: int = 1, max_samples: int | None = None, ext_factor: float = 4.0,
                      median_window: int = MEDIAN_WINDOW) -> Iterator[Sample]:
    """Samples of a benchmark folder for a model taking inputs of format ``fmt`` at ``size = (h, w)``.

    A format that sees two frames (``fmt.n_images == 2``: double blur, multi-object): crops of frames
    k-1 and k over the union of both object boxes; the model renders 2N sub-frames over both exposures
    and the second half (frame k's exposure) is scored; the first frame of every sequence has no
    predecessor and is skipped. One frame: the crop of frame k, plus the crop of its background when
    the format takes one (``fmt.background_input``: background + blur).
    """
    kind = detect_kind(root) if kind == "auto" else kind
    count = 0
    for s, path in enumerate(list_sequences(root, kind)):
        seq = BenchmarkSequence(path, s, median_window)
        n = seq.nsplits
        prev: tuple[np.ndarray, Box] | None = None
        for k, image, bg in seq.frames_with_background():
            if max_samples is not None and count >= max_samples:
                return
            gt = seq.gt_subframes(k, image.shape[-2:])
            tight, traj, radius = _object_boxes(seq, k, image, bg, gt)
            if tight is None:
                prev = None
                continue
            double = fmt.n_images == 2
            region = union(prev[1], tight) if double and prev is not None else tight
            place = model_box(region, ext_factor * radius, size, image.shape[-2:])
            y0, x0, y1, x1 = place
            if double:
                if prev is None:
                    prev = (image, tight)
                    continue
                inputs = np.concatenate([resize(prev[0][:, y0:y1, x0:x1], size), resize(image[:, y0:y1, x0:x1], size)])
                times = ((np.arange(2 * n * sub_steps) + 0.5) / (2 * n * sub_steps))[n * sub_steps:]
            else:
                parts = [resize(image[:, y0:y1, x0:x1], size)]
                if fmt.background_input:
                    parts.append(resize(bg[:, y0:y1, x0:x1], size))
                inputs = np.concatenate(parts)
                times = (np.arange(n * sub_steps) + 0.5) / (n * sub_steps)
            prev = (image, tight)
            T = n
            yield Sample(
                sample_id=f"{seq.name}/{k + seq.start:08d}", sequence=seq.name, inputs=inputs.astype(np.float32),
                times=times.astype(np.float32), sub_steps=sub_steps, gt=gt,
                images=np.broadcast_to(image, (T, *image.shape)), backgrounds=np.broadcast_to(bg, (T, *bg.shape)),
                place=place, box=tight, gt_traj=traj, radius=radius, dataset=kind)
            count += 1
