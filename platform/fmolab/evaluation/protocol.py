"""``fmolab evaluate --protocol benchmark``: the FMO deblurring benchmark's own protocol (Rozumnyi et al.'s
fmo-deblurring-benchmark, as the DeFMO paper's table was computed), so the numbers mean what the paper's
numbers mean. Written from the benchmark's definitions; where they differ from fmolab's default
protocol (``docs/evaluate.md``):

* ground truth: sub-frames per frame = the columns of ``gt.txt``; a missing position is the mean of its
  two neighbours (the previous one at the end, the first valid one at the start); the radius is rounded
  to an integer; the trajectory's box is truncated to integers; images are float64 (``uint8 / 255``);
* the scoring crop: the trajectory box grown by the radius, then by 10 px, then shrunk to the largest
  8-connected region where any ground-truth sub-frame differs from the background by more than 0.1
  (sum over channels);
* the model's input: that crop grown by 4 radii to the model's aspect ratio (the box's last row and
  column clipped to the image minus one), resized bicubically (Keys a = -0.75, half-pixel centres, as
  OpenCV's ``INTER_CUBIC``) to the model's size; renders at ``linspace(0, 1, 5N + 1)`` without the last
  instant, averaged in groups of 5 (straight RGBA), composited on the background crop, resized back
  bicubically; the trajectory is the alpha centroid in 1-based pixel coordinates;
* scores: TIoU with the integer radius, the better of both orders; a frame whose predicted position is
  missing makes its sequence's TIoU NaN (the sequence drops out of the mean); PSNR from a float32 MSE;
  SSIM per sub-frame with the data range of the prediction; the Bg and Im baselines score TIoU 0;
  means per sequence, then the NaN-ignoring mean over sequences.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fmolab.evaluation import metrics
from fmolab.evaluation.benchmark_data import BenchmarkError, BenchmarkSequence, detect_kind, list_sequences

SUB_STEPS = 5  # renders averaged per sub-frame: the ground truth's own short exposure


def fill_positions(par: np.ndarray) -> np.ndarray:
    """``[N,2]`` positions with NaN rows filled: the mean of both neighbours where the next is known,
    else the previous one; a leading gap takes the first known position."""
    par = par.copy()
    bad = np.isnan(par.sum(1))
    for i in np.flatnonzero(bad):
        if i == 0:
            par[i] = par[np.flatnonzero(~bad)[0]]
        elif i < len(par) - 1 and not bad[i + 1]:
            par[i] = (par[i - 1] + par[i + 1]) / 2
        else:
            par[i] = par[i - 1]
    return par


def frame_truth(seq: BenchmarkSequence, k: int) -> tuple[np.ndarray, int, np.ndarray] | None:
    """``(trajectory [2,N] (x row, y row), 1-based; integer radius; integer box [y0,x0,y1,x1])`` of frame k."""
    if seq.pars is None or seq.rads is None:
        return None
    f = k + seq.start
    pars = seq.pars
    if seq.from_bboxes:  # as the benchmark: zeros before the ROI; NaN rows of gt_bbox stay gaps to be filled
        pars = pars.copy()
        pars[:2 * seq.start] = 0.0
    if pars.shape[0] < 2 * (f + 1):
        return None
    par = fill_positions(pars[2 * f:2 * f + 2].T.astype(np.float64))  # the files' own 1-based values
    rads = seq.rads
    if rads.ndim == 2 and rads.shape[0] > 1:
        radius = float(np.nanmax(rads[f]))  # one radius per sub-frame: the largest
    elif rads.ndim == 1 and rads.size > 1:
        radius = float(rads[f])
    else:
        radius = float(rads.ravel()[0])
    box = np.array([par[:, 1].min(), par[:, 0].min(), par[:, 1].max(), par[:, 0].max()]).astype(int)
    return par.T, int(np.round(radius)), box


def extend_uniform(box: np.ndarray, ext: int, shape) -> np.ndarray:
    box = box.copy() + np.array([-ext, -ext, ext, ext])
    box[box < 0] = 0
    box[2], box[3] = min(box[2], shape[0] - 1), min(box[3], shape[1] - 1)
    return box


def extend_to_aspect(box: np.ndarray, ext: float, aspect: float, shape) -> np.ndarray:
    """Grown by ``ext`` in height, then to ``aspect`` = height / width, split evenly (rounded half to
    even, as numpy rounds) on both sides, clipped to the image minus its last row and column."""
    box = box.copy()
    height, width = box[2] - box[0], box[3] - box[1]
    h2 = int(np.ceil(np.ceil((height + ext) / aspect) * aspect))
    w2 = int(h2 / aspect)
    wdiff, hdiff = w2 - width, h2 - height
    w_half, h_half = int(np.round(wdiff / 2)), int(np.round(hdiff / 2))
    box += np.array([-h_half, -w_half, hdiff - h_half, wdiff - w_half])
    box[box < 0] = 0
    box[2], box[3] = min(box[2], shape[0] - 1), min(box[3], shape[1] - 1)
    return box


def object_box(gt: np.ndarray, bg: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The largest 8-connected region inside ``box`` where any sub-frame ``gt [N,3,H,W]`` differs from
    ``bg [3,H,W]`` by more than 0.1 (sum over channels, float64); ``box`` itself when there is none."""
    from scipy import ndimage

    y0, x0, y1, x1 = box
    moved = metrics.difference_mask(gt[..., y0:y1, x0:x1], bg[:, y0:y1, x0:x1]).any(0)
    labels, n = ndimage.label(moved, structure=np.ones((3, 3)))
    if n == 0:
        return box
    sizes = np.bincount(labels.ravel())[1:]
    sl = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    return np.array([y0 + sl[0].start, x0 + sl[1].start, y0 + sl[0].stop, x0 + sl[1].stop])


def cubic(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[..., C, h, w]`` -> ``[..., C, H, W]``: Keys bicubic (a = -0.75), half-pixel centres, clamped
    border (OpenCV's ``INTER_CUBIC`` and torch's bicubic agree), float64, no antialiasing."""
    lead = images.shape[:-3]
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64)).reshape(-1, *images.shape[-3:])
    out = torch.nn.functional.interpolate(t, size=size, mode="bicubic", align_corners=False)
    return out.reshape(*lead, *out.shape[-3:]).numpy()


def tiou(gt: np.ndarray, est: np.ndarray, radius: int) -> float:
    """Mean disc IoU of ``[2,N]`` trajectories, the better of both orders; NaN if a position is missing."""
    ious = [np.mean(metrics.circle_iou(np.linalg.norm(gt - e, axis=0), radius)) if not np.isnan(e).any()
            else np.nan for e in (est, est[:, ::-1])]
    return float(np.nanmax(ious)) if not all(np.isnan(ious)) else float("nan")


def appearance(gt: np.ndarray, est: np.ndarray) -> tuple[float, float]:
    """PSNR (float32 MSE) and SSIM (per sub-frame, the data range of the prediction) of ``[N,3,h,w]`` crops."""
    mse = float(np.mean((gt.astype(np.float32) - est.astype(np.float32)) ** 2))
    psnr = 100.0 if mse == 0 else 20 * math.log10(1 / math.sqrt(mse))
    rng = float(est.max() - est.min())
    return psnr, float(np.mean([metrics.ssim_image(e, g, rng) for e, g in zip(est, gt)]))


def deblur(predictor, image: np.ndarray, bg: np.ndarray, box: np.ndarray, n: int, radius: int,
           size: tuple[int, int] | None = None):
    """The benchmark's DeFMO method at the model's input ``size`` (default its training size, 240x320 for
    DeFMO): ``(sub-frames [N,3,H,W] in the full frame, trajectory [2,N])``."""
    h, w = size or predictor.size
    place = extend_to_aspect(box, 4 * radius, h / w, image.shape[-2:])
    y0, x0, y1, x1 = place
    im_crop, bg_crop = (np.clip(cubic(a[:, y0:y1, x0:x1], (h, w)), 0, 1) for a in (image, bg))
    fmt = predictor.input_format
    if fmt.n_images != 1:
        raise ValueError(f"--protocol benchmark scores one-image methods (background + blur); {predictor.source} "
                         f"takes {fmt.n_images} frames: evaluate it with the default protocol")
    inputs = np.concatenate([im_crop, bg_crop] if fmt.background_input else [im_crop])[None].astype(np.float32)
    times = np.linspace(0, 1, n * SUB_STEPS + 1)[:-1].astype(np.float32)
    renders = predictor.render(inputs, times)[0].astype(np.float64).reshape(n, SUB_STEPS, 4, h, w).mean(1)
    crop = renders[:, :3] * renders[:, 3:] + bg_crop * (1 - renders[:, 3:])
    est = np.repeat(image[None], n, 0)
    est[..., y0:y1, x0:x1] = cubic(crop, (y1 - y0, x1 - x0))
    alpha = renders[:, 3]
    mass = alpha.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = (alpha.sum(2) * np.arange(1, h + 1)).sum(1) / mass  # 1-based centroid, as the benchmark
        cols = (alpha.sum(1) * np.arange(1, w + 1)).sum(1) / mass
    traj = np.stack([cols * (x1 - x0) / w + x0, rows * (y1 - y0) / h + y0])
    return est, traj


def score_benchmark(predictor, root: str | Path, kind: str = "auto", max_samples: int | None = None,
                    size: tuple[int, int] | None = None) -> list[dict]:
    """One row per frame: the model's and the Bg / Im baselines' TIoU, PSNR, SSIM by the benchmark's rules."""
    kind = detect_kind(root) if kind == "auto" else kind
    rows: list[dict] = []
    for s, path in enumerate(list_sequences(root, kind)):
        seq = BenchmarkSequence(path, s)
        for k, image, bg in seq.frames_with_background(np.float64):  # the benchmark computes in float64
            if max_samples is not None and len(rows) >= max_samples:
                return rows
            truth = frame_truth(seq, k)
            if truth is None:
                raise BenchmarkError(f"{path}: frame {k} has no ground-truth trajectory (gt.txt or gt_bbox)")
            traj, radius, box = truth
            n = traj.shape[1]  # sub-frames: the columns of gt.txt
            gt = seq.gt_subframes(k, image.shape[-2:], n, np.float64)
            if gt is None:
                raise BenchmarkError(f"{path}: frame {k} has no high-speed ground truth under imgs_gt/")
            tight = object_box(gt, bg, extend_uniform(extend_uniform(box, radius, image.shape[-2:]), 10,
                                                      image.shape[-2:]))
            y0, x0, y1, x1 = tight
            est, est_traj = deblur(predictor, image, bg, tight, n, radius, size)
            row = {"sample": f"{seq.name}/{k + seq.start:08d}", "sequence": seq.name, "dataset": kind}
            gt_crop = gt[..., y0:y1, x0:x1]
            for method, frames, tr in (("model", est, est_traj), ("bg", np.repeat(bg[None], n, 0), None),
                                       ("im", np.repeat(image[None], n, 0), None)):
                crop = frames[..., y0:y1, x0:x1]
                crop, flipped = metrics.sync_directions(crop, gt_crop, "first")
                row[f"{method}_psnr"], row[f"{method}_ssim"] = appearance(gt_crop, crop)
                row[f"{method}_tiou"] = tiou(traj, tr, radius) if tr is not None else 0.0
                row[f"{method}_middle_psnr"] = float("nan")
                if method == "model":
                    row["model_reversed"] = float(flipped)
            rows.append(row)
    return rows


def aggregate_strict(rows: list[dict]) -> dict:
    """Means per sequence (a NaN frame makes the sequence NaN), then over sequences ignoring NaN."""
    from fmolab.evaluation.scoring import METHODS, METRICS, by_sequence

    by_seq, out = by_sequence(rows)
    for method in METHODS:
        per_seq = {m: [np.mean([r[f"{method}_{m}"] for r in seq]) for seq in by_seq.values()] for m in METRICS}
        out[method] = {m: float(np.nanmean(v)) if not np.isnan(v).all() else float("nan") for m, v in per_seq.items()}
    out["model"]["reversed_fraction"] = float(np.mean([r["model_reversed"] for r in rows]))
    return out
