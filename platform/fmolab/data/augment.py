"""Augmentation of gathered layers (before compositing, so ``image = composite(blur, bg)`` still holds).

* flips: the same flip on every spatial layer (blurs, backgrounds, frames, per-object frames);
* time reversal: frames (and per-object frames) reversed, ``times -> 1 - times``; with two input
  images the images swap as well, because in reversed time the second-half blur on frame k+1 comes
  first: blurs and backgrounds are flipped along K and spans mirrored, which is exact for every format;
* colour jitter: one affine brightness/contrast map on every RGB layer (motion blur is a weighted mean
  of colours, so jittering frames and blurs alike keeps them consistent); the uint8 ground-truth
  frames go through the same map as a 256-entry lookup table (within half a grey level);
* sensor noise: on the composited input images only (see :func:`fmolab.data.formats.assemble`).
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

    def __call__(self, layers: dict, rng: np.random.Generator, background: bool = True) -> dict:
        """Geometric changes on the gathered layers, conversion to ``[..., C, H, W]`` tensors (float, but
        uint8 for :data:`UINT8_LAYERS`), then colour jitter."""
        # Draw every random number whatever the flags, so items stay comparable across settings.
        hflip, vflip, reverse = rng.random(3) < 0.5
        bright, contr = rng.uniform(-1, 1, size=2)
        out = dict(layers)
        reversing = self.time_reverse and reverse
        for k in SPATIAL:
            if k not in out:
                continue
            # uint8 layers are [..., H, W, C] (flipped before conversion: a byte copy, not a float one),
            # float layers are [..., C, H, W]; all flips of a layer happen in one copy.
            x = out[k] if isinstance(out[k], torch.Tensor) else torch.from_numpy(out[k])
            h, w = (-3, -2) if x.dtype == torch.uint8 else (-2, -1)
            dims = [d for d, on in ((h, self.flip and vflip), (w, self.flip and hflip)) if on]
            if reversing:
                dims.append(1 if k == "object_frames" else 0)  # T for frames, K for blurs/backgrounds
            out[k] = x.flip(dims) if dims else x
        if reversing:
            out["times"] = 1.0 - out["times"].flip(0)
            out["spans"] = 1.0 - out["spans"].flip([0, 1])
        b, c = self.jitter * bright, 1.0 + self.jitter * contr

        def jit(x):
            return ((x - 0.5) * c + 0.5 + b).clip(0, 1)

        lut = (jit(np.arange(256, dtype=np.float32) / 255) * 255 + 0.5).astype(np.uint8) if self.jitter > 0 else None
        for k in SPATIAL:
            if k not in out:
                continue
            if k in UINT8_LAYERS and out[k].dtype == torch.uint8:
                if lut is not None:
                    x = out[k].numpy()
                    y = x.copy()
                    y[..., :3] = lut[x[..., :3]]
                    out[k] = y
                out[k] = to_chw(out[k])
            else:
                out[k] = to_float(out[k])
        if self.jitter > 0:
            for k in RGB_LAYERS:
                if k in out and out[k].dtype != torch.uint8:
                    t = out[k].clone()
                    t[..., :3, :, :] = jit(t[..., :3, :, :])
                    out[k] = t
            if background:  # a black "no background" stays black
                for k in BG_LAYERS:
                    if k in out:
                        out[k] = jit(out[k])
        return out

