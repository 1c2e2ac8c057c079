"""Augmentation of gathered layers (before compositing, so ``image = composite(blur, bg)`` still holds).

* flips: the same flip on every spatial layer (blurs, backgrounds, frames, per-object frames);
* time reversal: frames (and per-object frames) reversed, ``times -> 1 - times``; with two input
  images the images swap as well, because in reversed time the second-half blur on frame k+1 comes
  first: blurs and backgrounds are flipped along K and spans mirrored, which is exact for every format;
* colour jitter: one affine brightness/contrast map on every RGB layer (motion blur is a weighted mean
  of colours, so jittering frames and blurs alike keeps them consistent); the uint8 ground-truth
  frames go through the same map as a 256-entry lookup table (within half a grey level);
* sensor noise: on the composited input images only (see :func:`fmolab.data.formats.assemble`).

Each item draws its own choices (:meth:`Augment.draw`) and is flipped on its own (:meth:`Augment.orient`,
on uint8 layers); conversion to float and jitter then run once on the whole batch
(:meth:`Augment.colour`), with each item's own brightness and contrast.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fmolab.data.formats import UINT8_LAYERS, to_chw, to_float

SPATIAL = ("blurs", "backgrounds", "frames", "object_frames", "contrast_backgrounds")
RGB_LAYERS = ("blurs", "frames", "object_frames")
BG_LAYERS = ("backgrounds", "contrast_backgrounds")


@dataclass
class Augment:
    flip: bool = False
    time_reverse: bool = False
    jitter: float = 0.0
    noise: float = 0.0

    @classmethod
    def from_config(cls, data_cfg, train: bool = True) -> "Augment":
        """Training gets what the config asks; validation is never augmented."""
        if not train:
            return cls()
        return cls(flip=data_cfg.flip, time_reverse=data_cfg.time_reverse, jitter=data_cfg.jitter,
                   noise=data_cfg.noise)

    @staticmethod
    def draw(rng: np.random.Generator) -> tuple:
        """One item's choices ``(hflip, vflip, reverse, brightness, contrast)``. Every number is drawn
        whatever the flags, so items stay comparable across settings."""
        hflip, vflip, reverse = rng.random(3) < 0.5
        bright, contr = rng.uniform(-1, 1, size=2)
        return bool(hflip), bool(vflip), bool(reverse), bright, contr

    def orient(self, layers: dict, draw: tuple) -> dict:
        """One item's geometric changes on its uint8 ``[..., H, W, C]`` (or float ``[..., C, H, W]``) layers,
        as tensors; times and spans reversed with the frames."""
        hflip, vflip, reverse = draw[:3]
        out = dict(layers)
        reversing = self.time_reverse and reverse
        # the flipped axes' offsets from the channel axis (-1 on uint8 [..., H, W, C], -3 on float [..., C, H, W])
        offsets = [o for o, on in ((1, vflip), (2, hflip)) if on] if self.flip else []
        for k in SPATIAL:
            x = out.get(k)
            if x is None:
                continue
            # torch's flip, not numpy's views: numpy copies a flipped row of 4-byte pixels byte by byte
            if not isinstance(x, torch.Tensor):
                x = torch.from_numpy(x)
            dims = [o - 4 if x.dtype == torch.uint8 else o - 3 for o in offsets]
            if reversing:
                dims.append(1 if k == "object_frames" else 0)  # T for frames, K for blurs/backgrounds
            out[k] = x.flip(dims) if dims else x
        if reversing:
            out["times"] = 1.0 - out["times"].flip(0)
            out["spans"] = 1.0 - out["spans"].flip([0, 1])
        return out

    def colour(self, batch: dict, draws: list[tuple], background: bool = True) -> dict:
        """A stacked batch's layers as ``[B, ..., C, H, W]`` tensors (float, but uint8 for
        :data:`UINT8_LAYERS`), colour-jittered per item (``draws``: each item's :meth:`draw`)."""
        out = dict(batch)
        jitter = self.jitter > 0
        maps = [(self.jitter * d[3], 1.0 + self.jitter * d[4]) for d in draws]
        grey = np.arange(256, dtype=np.float32) / 255
        luts = [(_jit(grey, b, c) * 255 + 0.5).astype(np.uint8) for b, c in maps] if jitter else []
        for k in SPATIAL:
            if k not in out:
                continue
            x = out[k]
            if k in UINT8_LAYERS and x.dtype == torch.uint8:
                if jitter:  # each item's lookup table (uint8 frames stay uint8)
                    x = x.numpy()
                    y = x.copy()
                    for i, lut in enumerate(luts):
                        y[i, ..., :3] = lut[x[i, ..., :3]]
                    x = y
                out[k] = to_chw(x)
            else:
                out[k] = to_float(x)
        if jitter:
            b, c = (torch.tensor([m[j] for m in maps], dtype=torch.float32) for j in (0, 1))
            for k in RGB_LAYERS:
                if k in out and out[k].dtype != torch.uint8:
                    t = out[k].clone()
                    t[..., :3, :, :] = _jit(t[..., :3, :, :], *_per_item(t, b, c))
                    out[k] = t
            if background:  # a black "no background" stays black
                for k in BG_LAYERS:
                    if k in out:
                        out[k] = _jit(out[k], *_per_item(out[k], b, c))
        return out


def _jit(x, b, c):
    return ((x - 0.5) * c + 0.5 + b).clip(0, 1)


def _per_item(x: torch.Tensor, *values: torch.Tensor) -> list[torch.Tensor]:
    """Per-item ``[B]`` values shaped to broadcast over ``x [B, ...]``."""
    return [v.view(-1, *[1] * (x.dim() - 1)) for v in values]
