"""Supervised losses: renders vs ground-truth frames (DeFMO 2.3, thesis 4.3, Charbonnier from seed 004).

All take ``order=auto|forward|min|both`` (see ``SupervisedLoss``). Reductions are per sample over
all frames and pixels together, so a frame where the object is out of view cannot divide by zero.
"""
from __future__ import annotations

import torch

from fmolab.losses.base import EPS, LOSSES, SupervisedLoss, choice, masked_mean, penalty
from fmolab.losses.ssim import ms_ssim, ssim

RGB_MODES = ("standard", "direct", "gt")
DIMS = (1, 2, 3)  # T, H, W of a [B,T,H,W] alpha map


def rgb_difference(renders: torch.Tensor, frames: torch.Tensor, mode: str) -> torch.Tensor:
    """Thesis 4.3: standard |RGBre*a_re - RGBgt*a_gt|, direct |RGBre - RGBgt|, gt |RGBre*a_gt - RGBgt*a_gt|.

    ``direct`` and ``gt`` never read the rendered alpha, so the RGB loss cannot push the mask around.
    """
    rgb_re, rgb_gt, a_gt = renders[:, :, :3], frames[:, :, :3], frames[:, :, 3:4]
    if mode == "standard":
        return rgb_re * renders[:, :, 3:4] - rgb_gt * a_gt
    if mode == "direct":
        return rgb_re - rgb_gt
    return (rgb_re - rgb_gt) * a_gt


@LOSSES.register()
class DeFMOSupervised(SupervisedLoss):
    """DeFMO's appearance loss: L1 alpha outside the GT mask (mean over outside) + L1 alpha inside
    (mean over inside) + L1 RGB inside (``rgb`` mode, standard as in DeFMO), equally weighted."""

    def __init__(self, weight: float = 1.0, order: str = "auto", rgb: str = "standard"):
        super().__init__(weight, order)
        choice("DeFMOSupervised", "rgb", rgb, RGB_MODES)
        self.rgb = rgb

    def compare(self, renders, frames):
        a_re, a_gt = renders[:, :, 3], frames[:, :, 3]
        inside = (a_gt > 0).to(a_gt.dtype)
        err = (a_re - a_gt).abs()
        rgb = rgb_difference(renders, frames, self.rgb).abs().mean(2)
        return masked_mean(err, 1 - inside, DIMS) + masked_mean(err, inside, DIMS) + masked_mean(rgb, inside, DIMS)


class _AlphaLoss(SupervisedLoss):
    def compare(self, renders, frames):
        return self.alpha(renders[:, :, 3], frames[:, :, 3])

    def alpha(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:  # [B,T,H,W] -> [B]
        raise NotImplementedError


@LOSSES.register()
class AlphaL1(_AlphaLoss):
    def alpha(self, pred, gt):
        return (pred - gt).abs().mean(DIMS)


@LOSSES.register()
class AlphaL2(_AlphaLoss):
    def alpha(self, pred, gt):
        return (pred - gt).square().mean(DIMS)


@LOSSES.register()
class AlphaBCE(_AlphaLoss):
    def alpha(self, pred, gt):
        # written out (not F.binary_cross_entropy) so it also runs inside bf16 autocast
        pred = pred.clamp(EPS, 1 - EPS)
        return -(gt * pred.log() + (1 - gt) * (1 - pred).log()).mean(DIMS)


@LOSSES.register()
class AlphaDice(_AlphaLoss):
    """1 - 2*sum(xy) / (sum(x^2) + sum(y^2)) per frame; ``smooth`` makes two empty masks agree."""

    def __init__(self, weight: float = 1.0, order: str = "auto", smooth: float = 1.0):
        super().__init__(weight, order)
        self.smooth = float(smooth)

    def alpha(self, pred, gt):
        inter = (pred * gt).sum((2, 3))
        dice = (2 * inter + self.smooth) / (pred.square().sum((2, 3)) + gt.square().sum((2, 3)) + self.smooth)
        return (1 - dice).mean(1)


@LOSSES.register()
class AlphaJaccard(_AlphaLoss):
    """Soft IoU: 1 - sum(xy) / (sum(x) + sum(y) - sum(xy)) per frame."""

    def __init__(self, weight: float = 1.0, order: str = "auto", smooth: float = 1.0):
        super().__init__(weight, order)
        self.smooth = float(smooth)

    def alpha(self, pred, gt):
        inter = (pred * gt).sum((2, 3))
        union = pred.sum((2, 3)) + gt.sum((2, 3)) - inter
        return (1 - (inter + self.smooth) / (union + self.smooth)).mean(1)


class _RGBLoss(SupervisedLoss):
    """RGB difference in ``mode``, penalized, averaged weighted by the GT alpha (thesis 4.3)."""

    kind = "l1"

    def __init__(self, weight: float = 1.0, order: str = "auto", mode: str = "standard"):
        super().__init__(weight, order)
        choice(type(self).__name__, "mode", mode, RGB_MODES)
        self.mode = mode
        self.eps = 1e-3

    def compare(self, renders, frames):
        diff = penalty(self.kind, self.eps)(rgb_difference(renders, frames, self.mode))
        return masked_mean(diff, frames[:, :, 3:4].expand_as(diff), (1, 2, 3, 4))


@LOSSES.register()
class RGBL1(_RGBLoss):
    kind = "l1"


@LOSSES.register()
class RGBL2(_RGBLoss):
    kind = "l2"


@LOSSES.register()
class Charbonnier(_RGBLoss):
    """RGB Charbonnier sqrt(d^2 + eps^2) - eps (seed 004); robust L1; ``Reconstruction:kind=charbonnier``
    uses the same penalty on reconstructed inputs."""

    kind = "charbonnier"

    def __init__(self, weight: float = 1.0, order: str = "auto", mode: str = "standard", eps: float = 1e-3):
        super().__init__(weight, order, mode)
        self.eps = float(eps)


@LOSSES.register()
class RGBSSIM(SupervisedLoss):
    """1 - SSIM (``ms=true``: MS-SSIM) of the RGB renders and ground truth, per frame, in ``mode``
    (thesis 4.6: a perceptual RGB loss in place of L1/L2). Both sides are multiplied by the GT alpha
    (``gt``/``direct``: the rendered alpha is never read, as RGBL1's modes) or by their own alpha
    (``standard``), so only the object's colours count; averaged over frames."""

    def __init__(self, weight: float = 1.0, order: str = "auto", mode: str = "gt", ms: bool = False):
        super().__init__(weight, order)
        choice("RGBSSIM", "mode", mode, RGB_MODES)
        self.mode, self.ms = mode, bool(ms)

    def compare(self, renders, frames):
        a_gt = frames[:, :, 3:4]
        a_re = renders[:, :, 3:4] if self.mode == "standard" else a_gt
        pred = renders[:, :, :3] * (a_re if self.mode != "direct" else 1)
        target = frames[:, :, :3] * (a_gt if self.mode != "direct" else 1)
        sim = (ms_ssim if self.ms else ssim)(pred.flatten(0, 1), target.flatten(0, 1))
        return (1 - sim).unflatten(0, renders.shape[:2]).mean(1)


@LOSSES.register()
class MeanAlpha(SupervisedLoss):
    """Against the all-zero alpha (thesis 4.5): |mean rendered alpha - mean GT alpha| per frame, averaged.
    Zero for any render with the right amount of object; large for an empty (fully transparent) one.
    ``target``: a fixed mean alpha instead of the ground truth's (self-supervised use, no GT)."""

    def __init__(self, weight: float = 1.0, order: str = "auto", target: float = -1.0):
        super().__init__(weight, order)
        self.target = float(target)

    def compare(self, renders, frames):
        mean = renders[:, :, 3].mean((2, 3))
        want = frames[:, :, 3].mean((2, 3)) if self.target < 0 else torch.full_like(mean, self.target)
        return (mean - want).abs().mean(1)
