"""The one definition of compositing and blurring, shared by data, losses, evaluation and deblurring.

Keeping a single definition matters: a blur made at training time differently from how it was
rendered (or evaluated) is a classic source of silent bias.
"""
from __future__ import annotations

import numpy as np
import torch

EPS = 1e-6


def frame_times(num_frames: int) -> torch.Tensor:
    """Centre of each of ``num_frames`` equal slices of the exposure [0, 1]."""
    return (torch.arange(num_frames, dtype=torch.float32) + 0.5) / num_frames


def composite(rgba: torch.Tensor, background: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``rgb * alpha + bg * (1 - alpha)`` over the channel axis (-3); rgba ``[...,4,H,W]``, bg ``[...,3,H,W]``.

    Plain slicing and arithmetic: numpy arrays work as well as tensors (evaluation uses both). ``out``
    (tensors): written there, with the same operations (the same values), one temporary fewer."""
    rgb, alpha = rgba[..., :3, :, :], rgba[..., 3:4, :, :]
    if out is None:
        return rgb * alpha + background * (1 - alpha)
    torch.mul(rgb, alpha, out=out)
    return out.add_(background * (1 - alpha))


def over(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """Porter-Duff *over* of two straight-alpha RGBA images ``[...,4,H,W]`` (for stacking objects)."""
    ta, ba = top[..., 3:4, :, :], bottom[..., 3:4, :, :]
    alpha = ta + ba * (1 - ta)
    premult = top[..., :3, :, :] * ta + bottom[..., :3, :, :] * ba * (1 - ta)
    return torch.cat([premult / alpha.clamp_min(EPS), alpha], dim=-3)


def span_mask(times: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Which ``times [..., T]`` fall inside ``span [..., 2]`` (start inclusive, end exclusive but 1.0 kept).
    Arrays or tensors."""
    start, end = span[..., 0:1], span[..., 1:2]
    return (times >= start) & ((times < end) | ((end >= 1.0) & (times <= end)))


def image_of_times(times, spans) -> np.ndarray:
    """For ``times [T]`` and the input images' ``spans [K,2]``: the index of the image whose exposure
    holds each time (the observed image behind a sub-frame; the last span wins where spans overlap)."""
    times, spans = np.asarray(times), np.asarray(spans)
    which = np.zeros(len(times), dtype=int)
    for k, span in enumerate(spans):
        which[span_mask(times, span)] = k
    return which


def blur_from_frames(frames: torch.Tensor, times: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Average straight-alpha RGBA frames ``[B,T,4,H,W]`` whose ``times [B,T]`` lie in ``span [B,2]``.

    Motion blur averages *premultiplied* colour: blur_rgb = mean(rgb*alpha) / mean(alpha).
    Returns straight-alpha RGBA ``[B,4,H,W]``.
    """
    w = span_mask(times, span).to(frames.dtype)  # [B,T]
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1.0)
    w = w[:, :, None, None, None]
    alpha = (frames[:, :, 3:4] * w).sum(1)
    premult = (frames[:, :, :3] * frames[:, :, 3:4] * w).sum(1)
    return torch.cat([premult / alpha.clamp_min(EPS), alpha], dim=1)
