"""What evaluation scores: :class:`Sample`, and the samples of an fmolab shard dataset.

The real benchmarks' samples come from :mod:`fmolab.evaluation.benchmark_data`; both kinds are scored
alike by :mod:`fmolab.evaluation.evaluate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmolab import storage
from fmolab.config import derive
from fmolab.compose import composite, image_of_times
from fmolab.evaluation.metrics import alpha_centroids, equivalent_radius
from fmolab.geometry import Box, scoring_crop

TIGHT_MARGIN = 10  # the benchmark's bbox_tight extension


@dataclass
class Sample:
    """One scored prediction: what to feed the model and what to compare its renders with.

    Renders ``[T*sub_steps, 4, h, w]`` at ``times`` are averaged in groups of ``sub_steps``, resized into
    ``place`` (a box of the evaluation frame), composited on ``backgrounds`` there and on ``images``
    elsewhere; the result is scored against ``gt`` over the scoring crop ``box``.
    """

    sample_id: str
    sequence: str
    inputs: np.ndarray  # [C, h, w] model input, float32
    times: np.ndarray  # [T * sub_steps] render times in [0, 1]
    sub_steps: int
    gt: np.ndarray | None  # [T, 3, H, W] ground-truth sub-frames, composited (None: no appearance GT)
    images: np.ndarray  # [T, 3, H, W] the observed image behind each sub-frame (broadcast views are fine)
    backgrounds: np.ndarray  # [T, 3, H, W]
    place: Box
    box: Box
    gt_traj: np.ndarray | None  # [T, 2] (x, y)
    radius: float | None
    dataset: str = ""


def shard_dataset(cfg, data: str | Path, num_frames: int | None = None):
    """The items of an fmolab shard dataset (a folder or a URI) composited in the model's own input
    format (``cfg`` is the model's config; ``data`` replaces its training data); split "all"."""
    from fmolab.data import build_dataset

    bgs = storage.join(data, "backgrounds")
    cfg = derive(cfg, {"data.train": storage.normalize(data), "data.val": "",
                       "data.backgrounds": bgs if storage.exists(bgs) else cfg.data.backgrounds,
                       "data.frames_per_sample": int(num_frames or cfg.data.frames_per_sample)})
    return build_dataset(cfg, "all")


def shard_sample(dataset, i: int) -> Sample:
    """Item ``i`` of :func:`shard_dataset` as a sample; the ground truth is instantaneous, so renders
    are not sub-sampled."""
    from fmolab.data import to_device

    item = to_device(dataset[i])  # float frames
    frames = item["frames"].numpy()  # [T,4,H,W]
    times = item["times"].numpy()
    spans = item["spans"].numpy()  # [K,2]
    images, backgrounds = item["images"].numpy(), item["backgrounds"].numpy()  # [K,3,H,W]
    which = image_of_times(times, spans)  # the image whose exposure holds each time
    bg_t, im_t = backgrounds[which], images[which]
    alpha = frames[:, 3]
    h, w = frames.shape[-2:]
    traj = alpha_centroids(alpha)
    return Sample(
        sample_id=str(item["seq_id"]), sequence=str(item["seq_id"]), inputs=item["inputs"].numpy(),
        times=times.astype(np.float32), sub_steps=1, gt=composite(frames, bg_t), images=im_t,
        backgrounds=bg_t, place=(0, 0, h, w), box=scoring_crop(alpha, TIGHT_MARGIN, threshold=0.05),
        gt_traj=None if np.isnan(traj).all() else traj, radius=max(equivalent_radius(alpha), 1.0),
        dataset="shards")


def shard_samples(cfg, data: str | Path, num_frames: int | None = None,
                  max_samples: int | None = None) -> Iterator[Sample]:
    """Every row of an fmolab shard dataset as a sample (see :func:`shard_dataset`)."""
    ds = shard_dataset(cfg, data, num_frames)
    for i in range(len(ds) if max_samples is None else min(len(ds), max_samples)):
        yield shard_sample(ds, i)
