"""Self-supervised losses against the inputs (thesis 4.5): input reconstruction, background rejection."""
from __future__ import annotations

import torch

from fmolab.compose import blur_from_frames, composite, span_mask
from fmolab.losses.base import LOSSES, ReconstructionLoss, binarize_st, choice, masked_mean, need, penalty
from fmolab.losses.ssim import ms_ssim, ssim

KINDS = ("l1", "l2", "charbonnier", "ssim", "msssim")


def image_distance(kind: str, pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``[B,3,H,W]`` x2 -> ``[B]`` dissimilarity (0 for identical images)."""
    if kind == "ssim":
        return 1 - ssim(pred, target)
    if kind == "msssim":
        return 1 - ms_ssim(pred, target)
    return penalty(kind, eps)(pred - target).flatten(1).mean(1)


@LOSSES.register()
class Reconstruction(ReconstructionLoss):
    """Re-blur the renders and composite them as the data did; compare with every input image.

    For each image k: renders whose times fall in ``spans[:,k]`` are averaged (compose.blur_from_frames),
    composited on ``backgrounds[:,k]`` and compared with ``images[:,k]``; so a double blur is rebuilt
    half by half. ``binary=true`` rounds the rendered alpha straight-through first (thesis 4.5).

    ``region``: ``image`` averages over the whole image; ``object`` (DeFMO's) only where the ground-truth
    sub-frames of the span have any alpha, the penalty summed over the channels and divided by that
    area (+ 0.01): the background, which the input already shows, does not dilute the object's error.
    """

    def __init__(self, weight: float = 1.0, kind: str = "l2", binary: bool = False, threshold: float = 0.5,
                 eps: float = 1e-3, region: str = "image"):
        super().__init__(weight)
        choice("Reconstruction", "kind", kind, KINDS)
        choice("Reconstruction", "region", region, ("image", "object"))
        if region == "object" and kind in ("ssim", "msssim"):
            raise ValueError(f"Reconstruction: region=object takes a pixel penalty (l1, l2, charbonnier), not {kind}")
        self.kind, self.binary, self.threshold, self.eps = kind, bool(binary), float(threshold), float(eps)
        self.region = region

    def per_sample(self, batch, outputs):
        renders = need(outputs, "renders", self.name, "outputs")
        if self.binary:
            renders = torch.cat([renders[:, :, :3], binarize_st(renders[:, :, 3:], self.threshold)], 2)
        times, spans = need(batch, "times", self.name, "batch"), need(batch, "spans", self.name, "batch")
        images, bgs = need(batch, "images", self.name, "batch"), need(batch, "backgrounds", self.name, "batch")
        total = renders.new_zeros(renders.shape[0])
        frames = need(batch, "frames", self.name, "batch") if self.region == "object" else None
        for k in range(images.shape[1]):
            blur = blur_from_frames(renders, times.to(renders.device), spans[:, k])
            pred = composite(blur, bgs[:, k])
            if frames is None:
                total = total + image_distance(self.kind, pred, images[:, k], self.eps)
                continue
            inside = span_mask(times.to(frames.device), spans[:, k]).to(frames.dtype)[:, :, None, None]
            region = ((frames[:, :, 3] * inside).sum(1) > 0).to(pred.dtype)[:, None]  # [B,1,H,W]
            err = penalty(self.kind, self.eps)(pred - images[:, k]).sum(1, keepdim=True) * region
            total = total + err.sum((1, 2, 3)) / (region.sum((1, 2, 3)) + 0.01)
        return total / images.shape[1]


@LOSSES.register()
class BackgroundRejection(ReconstructionLoss):
    """Penalize opaque rendered pixels whose colour matches the background (thesis 4.5).

    similarity = exp(-mean_c |rgb - bg| / sigma), averaged weighted by the rendered alpha; the
    background of a render is that of the image(s) whose span holds its time.
    """

    def __init__(self, weight: float = 1.0, sigma: float = 0.1):
        super().__init__(weight)
        self.sigma = float(sigma)

    def per_sample(self, batch, outputs):
        renders = need(outputs, "renders", self.name, "outputs")
        bgs, spans = need(batch, "backgrounds", self.name, "batch"), need(batch, "spans", self.name, "batch")
        times = need(batch, "times", self.name, "batch").to(renders.device)
        inside = torch.stack([span_mask(times, spans[:, k]) for k in range(bgs.shape[1])], 2).to(renders.dtype)
        inside = torch.where(inside.sum(2, keepdim=True) > 0, inside, torch.ones_like(inside))  # [B,T,K]
        inside = inside / inside.sum(2, keepdim=True)
        bg = torch.einsum("btk,bkchw->btchw", inside, bgs)
        sim = torch.exp(-(renders[:, :, :3] - bg).abs().mean(2) / self.sigma)
        return masked_mean(sim, renders[:, :, 3], (1, 2, 3))
