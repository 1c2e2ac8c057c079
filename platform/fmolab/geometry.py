"""Boxes and resizing: one definition for deblurring, the benchmark readers and the metrics.

Conventions: images are ``[..., C, H, W]``; boxes are ``(y0, x0, y1, x1)``, end-exclusive (numpy
slicing ``[y0:y1, x0:x1]``); the model takes sizes that are multiples of 16 (:func:`valid_size`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

Box = tuple[int, int, int, int]


def valid_size(h: int, w: int) -> tuple[int, int]:
    """The model needs multiples of 16: round to the nearest (at least 16)."""
    return max(16, int(round(h / 16)) * 16), max(16, int(round(w / 16)) * 16)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of ``[..., C, H, W]`` to ``size = (h, w)``."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    lead = img.shape[:-3]
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).reshape(-1, *img.shape[-3:])
    shrink = size[0] < img.shape[-2] or size[1] < img.shape[-1]
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(*lead, out.shape[-3], *size).numpy()


def crop_box(images: np.ndarray, box: Box) -> np.ndarray:
    """``images[..., y0:y1, x0:x1]``."""
    y0, x0, y1, x1 = box
    return images[..., y0:y1, x0:x1]


def union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def box_gap(a: Box, b: Box) -> int:
    """Pixels between two boxes (the larger of the row and column gaps); negative when they overlap."""
    return max(max(a[0], b[0]) - min(a[2], b[2]), max(a[1], b[1]) - min(a[3], b[3]))


def grow(box: Box, ext: float, shape: tuple[int, int]) -> Box:
    """``box`` grown by ``ext`` pixels on every side, clipped to ``shape = (H, W)``."""
    e = int(round(ext))
    return max(0, box[0] - e), max(0, box[1] - e), min(shape[0], box[2] + e), min(shape[1], box[3] + e)


def model_box(box: Box, ext: float, size: tuple[int, int], shape: tuple[int, int]) -> Box:
    """``box`` grown by ``ext`` pixels in total to the aspect ratio of the model input ``size = (h, w)``,
    shifted inside the image ``shape = (H, W)`` where possible, then clipped.

    (The benchmark's ``extend_bbox`` derives the width from the height only; here the box also always
    covers the object's width.)"""
    y0, x0, y1, x1 = box
    ar = size[0] / size[1]
    h2 = int(math.ceil(max(y1 - y0 + ext, (x1 - x0 + ext) * ar, 1.0)))
    w2 = int(math.ceil(h2 / ar))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ny0, nx0 = int(round(cy - h2 / 2)), int(round(cx - w2 / 2))
    H, W = shape
    ny0 = min(max(ny0, 0), max(H - h2, 0))
    nx0 = min(max(nx0, 0), max(W - w2, 0))
    return ny0, nx0, min(H, ny0 + h2), min(W, nx0 + w2)


def scoring_crop(mask: np.ndarray, margin: int = 10, threshold: float = 0.0) -> Box:
    """Bounding box of ``mask > threshold`` over all sub-frames (``[T,H,W]`` or ``[H,W]``) plus ``margin``
    pixels, clipped to the image; the whole image when the mask is empty (the benchmark's scoring crop)."""
    mask = np.asarray(mask)
    h, w = mask.shape[-2:]
    hit = (mask > threshold).reshape(-1, h, w).any(0)
    if not hit.any():
        return 0, 0, h, w
    rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
    return (max(0, int(rows[0]) - margin), max(0, int(cols[0]) - margin),
            min(h, int(rows[-1]) + 1 + margin), min(w, int(cols[-1]) + 1 + margin))


def largest_components(mask: np.ndarray, count: int) -> list[tuple[Box, int]]:
    """Box and pixel count of the ``count`` largest 8-connected components of a bool ``[H,W]`` mask,
    largest first (fewer when the mask has fewer)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    slices = ndimage.find_objects(labels)
    order = np.argsort(-sizes, kind="stable")[:count]  # ties: the first label, as np.argmax
    return [((slices[k][0].start, slices[k][1].start, slices[k][0].stop, slices[k][1].stop), int(sizes[k]))
            for k in order]


def largest_component(mask: np.ndarray) -> tuple[Box, int] | None:
    """Box and pixel count of the largest 8-connected component of a bool ``[H,W]`` mask (None if empty)."""
    found = largest_components(mask, 1)
    return found[0] if found else None
