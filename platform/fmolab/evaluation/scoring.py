"""Scoring one sample: the model's prediction composited into the evaluation frame, and the
benchmark's metrics of the model and of the "Bg" and "Im" baselines (shared by the local and the
cluster evaluation)."""
from __future__ import annotations

import numpy as np

from fmolab.compose import composite
from fmolab.evaluation import metrics
from fmolab.evaluation.samples import Sample
from fmolab.geometry import resize

METHODS = ("model", "bg", "im")
METRICS = ("tiou", "psnr", "ssim", "middle_psnr")


def predict_sample(predictor, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Composited prediction ``[T,3,H,W]`` in the evaluation frame and its trajectory ``[T,2]``."""
    x = sample.inputs
    size = predictor.input_size(*x.shape[-2:])
    renders = predictor.render(resize(x, size)[None], sample.times)[0]  # [T*s,4,h',w']
    if sample.sub_steps > 1:
        renders = renders.reshape(-1, sample.sub_steps, *renders.shape[1:]).mean(1)
    y0, x0, y1, x1 = sample.place
    renders = resize(renders, (y1 - y0, x1 - x0))
    traj = metrics.alpha_centroids(renders[:, 3])
    traj += np.array([x0, y0], dtype=np.float64)
    pred = np.array(sample.images, dtype=np.float32, copy=True)
    pred[..., y0:y1, x0:x1] = composite(renders, sample.backgrounds[..., y0:y1, x0:x1])
    return pred, traj


def score(predictor, sample: Sample, sync: str = "first") -> dict[str, float]:
    """Metrics of the model and both baselines for one sample (flat dict ``method_metric``)."""
    pred, traj = predict_sample(predictor, sample)
    row: dict[str, float] = {}
    candidates = {"model": (pred, traj), **{k: (v, None) for k, v in metrics.baselines(sample.images, sample.backgrounds).items()}}
    for name, (frames, tr) in candidates.items():
        if sample.gt is not None:
            s = metrics.score_sample(frames, sample.gt, sample.box, sample.gt_traj, tr, sample.radius, sync)
        else:  # no appearance ground truth: trajectory only
            s = {m: float("nan") for m in METRICS}
            if tr is not None and sample.gt_traj is not None and sample.radius:
                s["tiou"] = metrics.trajectory_iou(sample.gt_traj, tr, sample.radius)[0]
        for m in METRICS:
            row[f"{name}_{m}"] = float(s.get(m, float("nan")))
        if name == "model":
            row["model_reversed"] = float(s.get("reversed", float("nan")))
    return row


def by_sequence(rows: list[dict]) -> tuple[dict[str, list[dict]], dict]:
    """Rows grouped by their ``sequence`` and the counts every summary starts with (both averaging
    rules, fmolab's and the benchmark's strict one, group the same way)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["sequence"], []).append(r)
    return groups, {"num_samples": len(rows), "num_sequences": len(groups)}
