"""FMO deblurring metrics, following the conventions of the FMO deblurring benchmark (Rozumnyi et al.,
DeFMO CVPR 2021) plus the middle-frame PSNR of Jin et al. (CVPR 2018), on numpy arrays.

Conventions (see docs/evaluate.md):

* images are float ``[..., C, H, W]`` in [0, 1]; a sub-frame stack is ``[T, C, H, W]``;
* positions are continuous pixel coordinates ``(x, y)``: pixel ``(row i, col j)`` covers
  ``[j, j+1) x [i, i+1)``, its centre is ``(j + 0.5, i + 0.5)``;
* boxes are ``(y0, x0, y1, x1)``, end-exclusive (numpy slicing ``[y0:y1, x0:x1]``).

Metrics:

* **TIoU**: mean over sub-frames of the IoU of two discs of the object radius centred on the ground-truth
  and the predicted positions; the better of the forward and the reversed predicted order.
* **PSNR**: one MSE over the scoring crop and all sub-frames (frames composited on the background),
  ``10 log10(1 / MSE)``; identical inputs give :data:`PSNR_CAP` (100 dB, as the benchmark).
* **SSIM**: per sub-frame (7x7 uniform window, sample covariance, K1=0.01, K2=0.03, averaged over
  channels; the scikit-image defaults the benchmark calls), averaged over sub-frames.
* **middle PSNR**: PSNR of the middle sub-frame only (mean of the two central ones for even T), which
  does not depend on the temporal direction.
"""
from __future__ import annotations

import math

import numpy as np

from fmolab.geometry import Box, crop_box, scoring_crop

PSNR_CAP = 100.0


# ---------------------------------------------------------------- appearance


def psnr(pred: np.ndarray, target: np.ndarray, cap: float = PSNR_CAP) -> float:
    """PSNR in dB from one MSE over every element (peak value 1); ``cap`` when the MSE is 0."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ {pred.shape} vs {target.shape}")
    mse = float(np.mean((pred - target) ** 2))
    if mse <= 0:
        return float(cap)
    return float(min(cap, -10.0 * math.log10(mse)))


def _ssim_channel(a: np.ndarray, b: np.ndarray, data_range: float, win: int) -> float:
    from scipy.ndimage import uniform_filter

    n = win * win
    cov_norm = n / (n - 1)  # sample covariance
    ux, uy = uniform_filter(a, win), uniform_filter(b, win)
    uxx, uyy, uxy = uniform_filter(a * a, win), uniform_filter(b * b, win), uniform_filter(a * b, win)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:s.shape[0] - pad, pad:s.shape[1] - pad].mean())


def ssim_image(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0, win: int = 7) -> float:
    """SSIM of two ``[C,H,W]`` images (mean over channels); images smaller than the window shrink it."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ {pred.shape} vs {target.shape}")
    win = min(win, pred.shape[-1], pred.shape[-2])
    win = win if win % 2 else win - 1
    if win < 3:
        return 1.0 if np.allclose(pred, target) else float("nan")
    data_range = data_range if data_range > 0 else 1.0
    return float(np.mean([_ssim_channel(p, t, data_range, win) for p, t in zip(pred, target)]))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Mean SSIM over sub-frames of ``[T,C,H,W]`` stacks (or one ``[C,H,W]`` image).

    ``data_range`` defaults to the ground truth's value range over the whole stack (the benchmark takes
    it from one of the two stacks; taking it from the ground truth keeps a constant prediction defined).
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if target.ndim == 3:
        pred, target = pred[None], target[None]
    if data_range is None:
        data_range = float(target.max() - target.min())
    return float(np.mean([ssim_image(p, t, data_range) for p, t in zip(pred, target)]))


def middle_frame(frames: np.ndarray) -> np.ndarray:
    """The middle sub-frame of ``[T,...]``; the mean of the two central ones when T is even."""
    t = frames.shape[0]
    if t % 2:
        return frames[t // 2]
    return 0.5 * (frames[t // 2 - 1] + frames[t // 2])


def middle_psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR of the middle sub-frame (Jin et al.'s evaluation): independent of the temporal direction."""
    return psnr(middle_frame(np.asarray(pred, np.float64)), middle_frame(np.asarray(target, np.float64)))


def sync_directions(pred: np.ndarray, target: np.ndarray, mode: str = "first") -> tuple[np.ndarray, bool]:
    """Reverse ``pred [T,...]`` when that matches ``target`` better; returns ``(pred, reversed)``.

    ``mode="first"`` (the benchmark's rule): compare the first predicted sub-frame with the first and
    with the last ground-truth sub-frame. ``mode="all"``: compare the whole stacks in both orders.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if mode == "first":
        fwd = np.mean((pred[0] - target[0]) ** 2)
        bwd = np.mean((pred[0] - target[-1]) ** 2)
    elif mode == "all":
        fwd = np.mean((pred - target) ** 2)
        bwd = np.mean((pred[::-1] - target) ** 2)
    else:
        raise ValueError(f"sync_directions: mode {mode!r} must be 'first' or 'all'")
    if bwd < fwd:
        return pred[::-1], True
    return pred, False


# ---------------------------------------------------------------- trajectories


def circle_iou(distance: np.ndarray | float, radius: float) -> np.ndarray:
    """IoU of two discs of ``radius`` whose centres are ``distance`` apart (1 at 0, 0 from 2r on)."""
    d = np.minimum(np.abs(np.asarray(distance, np.float64)), 2 * radius)
    if radius <= 0:
        return np.where(d == 0, 1.0, 0.0)
    theta = 2 * np.arccos(d / (2 * radius))
    inter = radius * radius * (theta - np.sin(theta))  # two circular segments
    union = 2 * math.pi * radius * radius - inter
    return inter / union


def trajectory_iou(gt: np.ndarray, pred: np.ndarray, radius: float) -> tuple[float, bool]:
    """TIoU of trajectories ``[T,2]``; returns ``(tiou, reversed)`` for the better temporal direction.

    A predicted position that is NaN (empty alpha) scores 0 for its sub-frame; NaN ground-truth
    positions are filled from their neighbours (as the benchmark does).
    """
    gt = _fill_nan(np.asarray(gt, np.float64))
    pred = np.asarray(pred, np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"trajectory_iou: shapes differ {gt.shape} vs {pred.shape}")

    def mean_iou(p: np.ndarray) -> float:
        d = np.linalg.norm(gt - p, axis=-1)
        iou = circle_iou(np.nan_to_num(d, nan=np.inf), radius)
        return float(np.mean(np.where(np.isnan(d), 0.0, iou)))

    fwd, bwd = mean_iou(pred), mean_iou(pred[::-1])
    return (bwd, True) if bwd > fwd else (fwd, False)


def _fill_nan(traj: np.ndarray) -> np.ndarray:
    traj = traj.copy()
    bad = np.isnan(traj).any(-1)
    if bad.all():
        raise ValueError("trajectory_iou: the ground-truth trajectory has no valid position")
    good = np.flatnonzero(~bad)
    for i in np.flatnonzero(bad):
        traj[i] = traj[good[np.argmin(np.abs(good - i))]]
    return traj


def alpha_centroids(alpha: np.ndarray, min_mass: float = 1e-3) -> np.ndarray:
    """Centroid ``(x, y)`` of each alpha matte ``[T,H,W]`` -> ``[T,2]`` (NaN where the matte is empty)."""
    alpha = np.asarray(alpha, np.float64)
    h, w = alpha.shape[-2:]
    mass = alpha.sum(axis=(-2, -1))
    xs = (alpha.sum(-2) * (np.arange(w) + 0.5)).sum(-1)
    ys = (alpha.sum(-1) * (np.arange(h) + 0.5)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.stack([xs / mass, ys / mass], -1)
    out[mass < min_mass] = np.nan
    return out


def equivalent_radius(alpha: np.ndarray) -> float:
    """Radius of the disc with the mean area of the alpha mattes ``[T,H,W]`` (an object radius from GT)."""
    area = float(np.asarray(alpha, np.float64).sum(axis=(-2, -1)).mean())
    return math.sqrt(max(area, 0.0) / math.pi)


# ---------------------------------------------------------------- masks


def difference_mask(frames: np.ndarray, background: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Where ground-truth RGB sub-frames ``[T,3,H,W]`` differ from the background ``[3,H,W]`` (sum of
    absolute channel differences above ``threshold``, the benchmark's object mask) -> bool ``[T,H,W]``."""
    return np.abs(np.asarray(frames) - np.asarray(background)).sum(-3) > threshold


# ---------------------------------------------------------------- one sample


def baselines(images: np.ndarray, backgrounds: np.ndarray) -> dict[str, np.ndarray]:
    """The benchmark's trivial methods: "bg" (the background for every sub-frame) and "im" (the input
    image for every sub-frame); both ``[T,3,H,W]`` given the per-sub-frame image and background."""
    return {"bg": np.asarray(backgrounds), "im": np.asarray(images)}


def score_sample(pred: np.ndarray, gt: np.ndarray, box: Box, gt_traj: np.ndarray | None = None,
                 pred_traj: np.ndarray | None = None, radius: float | None = None,
                 sync: str = "first") -> dict[str, float]:
    """All metrics of one prediction. ``pred``/``gt``: composited RGB ``[T,3,H,W]`` in one frame;
    ``box``: scoring crop; trajectories ``[T,2]`` (TIoU is NaN without them)."""
    p, g = crop_box(np.asarray(pred, np.float64), box), crop_box(np.asarray(gt, np.float64), box)
    p, rev = sync_directions(p, g, sync)
    out = {"psnr": psnr(p, g), "ssim": ssim(p, g), "middle_psnr": middle_psnr(p, g), "reversed": float(rev),
           "tiou": float("nan")}
    if gt_traj is not None and pred_traj is not None and radius is not None:
        out["tiou"], out["tiou_reversed"] = trajectory_iou(gt_traj, pred_traj, radius)
        out["tiou_reversed"] = float(out["tiou_reversed"])
    return out


def score_baselines(frames: np.ndarray, images: np.ndarray, backgrounds: np.ndarray) -> dict[str, float]:
    """The crop PSNR of the benchmark's static baselines on a synthetic sample: "im" (the observed image
    behind each sub-frame, ``images [T,3,H,W]``) and "bg" (its background, ``backgrounds [T,3,H,W]``),
    against the ground-truth RGBA ``frames`` composited on those backgrounds (as :func:`score_renders`)."""
    from fmolab.compose import composite

    frames = np.asarray(frames, np.float32)
    gt, box = composite(frames, backgrounds), scoring_crop(frames[:, 3])
    return {f"{name}_crop_psnr": score_sample(pred, gt, box)["psnr"]
            for name, pred in (("im", images), ("bg", backgrounds))}


def score_renders(renders: np.ndarray, frames: np.ndarray, background: np.ndarray) -> dict[str, float]:
    """The benchmark's scores of predicted RGBA sub-frames ``renders [T,4,H,W]`` against ground-truth
    RGBA ``frames`` of a synthetic sample, both composited on ``background`` (``[3,H,W]``, or ``[T,3,H,W]``
    the one behind each sub-frame): PSNR and SSIM on
    the scoring crop around the ground-truth trajectory, TIoU from alpha centroids with the object's
    equivalent radius (what training validation reports as ``val/crop_psnr``, ``val/ssim``, ``val/tiou``)."""
    from fmolab.compose import composite

    renders, frames = np.asarray(renders, np.float32), np.asarray(frames, np.float32)
    gt_alpha = frames[:, 3]
    s = score_sample(composite(renders, background), composite(frames, background), scoring_crop(gt_alpha),
                     alpha_centroids(gt_alpha), alpha_centroids(renders[:, 3]), equivalent_radius(gt_alpha))
    return {"crop_psnr": s["psnr"], "ssim": s["ssim"], "tiou": s["tiou"]}
