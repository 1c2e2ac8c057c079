"""Losses built around the time-order ambiguity: per-object order (multi-object inputs) and
Jin et al.'s pairwise order-invariant loss (seed 002)."""
from __future__ import annotations

import torch

from fmolab.losses.base import EPS, LOSSES, ORDERS, BaseLoss, choice, masked_mean, need, penalty


def premultiply(rgba: torch.Tensor) -> torch.Tensor:
    """Straight RGBA -> (rgb*a, a): colour where alpha is 0 is invisible and must not count."""
    return torch.cat([rgba[..., :3, :, :] * rgba[..., 3:4, :, :], rgba[..., 3:4, :, :]], dim=-3)


@LOSSES.register()
class PairwiseOrderInvariant(BaseLoss):
    """Jin et al. 2018 eq. 5 on frames i and T-1-i: | |x^i + x^j| - |x_i + x_j| | + | |x^i - x^j| - |x_i - x_j| |.

    Symmetric in i <-> j, so reversing the predicted sequence leaves it unchanged: the network may
    pick either direction. An odd middle frame is compared directly. RGBA premultiplied.
    """

    def __init__(self, weight: float = 1.0, kind: str = "l1"):
        super().__init__(weight)
        choice("PairwiseOrderInvariant", "kind", kind, ("l1", "l2", "charbonnier"))
        self.kind = kind  # a name, not a function: losses stay picklable

    def per_sample(self, batch, outputs):
        pred = premultiply(need(outputs, "renders", self.name, "outputs"))
        gt = premultiply(need(batch, "frames", self.name, "batch"))
        t, pen = pred.shape[1], penalty(self.kind)
        i = torch.arange(t // 2, device=pred.device)
        j = t - 1 - i
        out = pred.new_zeros(pred.shape[0])
        if len(i):
            for term in (pen((pred[:, i] + pred[:, j]).abs() - (gt[:, i] + gt[:, j]).abs()),
                         pen((pred[:, i] - pred[:, j]).abs() - (gt[:, i] - gt[:, j]).abs())):
                out = out + term.flatten(1).mean(1) * len(i)  # summed over pairs
        if t % 2:
            out = out + pen(pred[:, t // 2] - gt[:, t // 2]).flatten(1).mean(1)
        return out / t  # mean per frame, comparable across T


@LOSSES.register()
class ObjectOrderSupervised(BaseLoss):
    """Multi-object supervision where each object's direction is resolved on its own (beyond the thesis).

    For object m, region R_m = pixels the object covers at any time. Inside R_m the rendered alpha is
    compared with the object's alpha (L1, mean over R_m), and the RGB (``standard`` premultiplied L1)
    inside the object's own mask; this is done for the object's frames forward and reversed, and the
    smaller (``order=min``) is kept per sample and object. Outside every region alpha must be 0.
    Without ``object_frames`` the composite ``frames`` are one object. Overlaps between objects are
    compared with each object alone (an approximation).
    """

    def __init__(self, weight: float = 1.0, order: str = "min"):
        super().__init__(weight)
        choice("ObjectOrderSupervised", "order", order, ORDERS)
        self.order = order

    @staticmethod
    def _object_term(renders: torch.Tensor, obj: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """renders [B,1,T,4,H,W], obj [B,M,T,4,H,W], region [B,M,1,H,W] -> [B,M]."""
        a_re, a_ob = renders[:, :, :, 3], obj[:, :, :, 3]
        dims = (2, 3, 4)
        alpha = masked_mean((a_re - a_ob).abs(), region.expand_as(a_ob), dims)
        rgb = (renders[:, :, :, :3] * renders[:, :, :, 3:4] - obj[:, :, :, :3] * obj[:, :, :, 3:4]).abs().mean(3)
        return alpha + masked_mean(rgb, (a_ob > 0).to(rgb.dtype), dims)

    def per_sample(self, batch, outputs):
        renders = need(outputs, "renders", self.name, "outputs")
        if "object_frames" in batch:
            obj, valid = batch["object_frames"], batch["object_valid"].to(renders.dtype)
        else:
            obj = need(batch, "frames", self.name, "batch")[:, None]
            valid = renders.new_ones(obj.shape[:2])
        region = (obj[:, :, :, 3] > 0).any(2, keepdim=True).to(renders.dtype) * valid[:, :, None, None, None]
        order = self.order
        if order == "auto":
            order = "min" if batch.get("images") is None or batch["images"].shape[1] == 1 else "forward"
        r = renders[:, None]
        per = self._object_term(r, obj, region)
        if order != "forward":
            back = self._object_term(r, obj.flip(2), region)
            per = (per + back) / 2 if order == "both" else torch.minimum(per, back)
        objects = (per * valid).sum(1) / valid.sum(1).clamp_min(EPS)
        outside = 1 - region.amax(1)  # [B,1,H,W], broadcast over time
        background = masked_mean(renders[:, :, 3], outside.expand_as(renders[:, :, 3]), (1, 2, 3))
        return objects + background
