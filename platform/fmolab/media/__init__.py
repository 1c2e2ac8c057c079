"""Pictures: reading images, animated previews (ground truth | prediction | alpha) as WebP and GIF.

The one home of pictures and video, below every stage: :mod:`fmolab.media.codecs` (WebP in and out),
:mod:`fmolab.media.video` (every moving-picture reader), :mod:`fmolab.media.containers` (PyAV). Torch
is imported only by the functions that take tensors: the render actors use this package without it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fmolab.media.codecs import encode_webp

if TYPE_CHECKING:
    import torch


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float ``[..., C, H, W]`` in [0,1] -> uint8 ``[..., H, W, C]``."""
    x = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    x = np.moveaxis(x, -3, -1)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def read_rgb_u8(path: str | Path, error: type[Exception] = ValueError) -> np.ndarray:
    """RGB uint8 ``[H,W,3]`` as stored (16-bit PNGs are read at 8 bits); a missing or unreadable file
    raises ``error`` naming it."""
    from PIL import Image

    if not Path(path).exists():
        raise error(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise error(f"cannot read image {path}: {exc}") from exc


def to_float(rgb: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 ``[H,W,3]`` (or floats in 0..255, e.g. a median of such frames) -> ``[3,H,W]`` in [0, 1]."""
    return np.ascontiguousarray(np.moveaxis(rgb, -1, 0), dtype=dtype) / dtype(255)


def read_rgb(path: str | Path, error: type[Exception] = ValueError, dtype=np.float32) -> np.ndarray:
    """RGB ``[3,H,W]`` in [0,1] as ``dtype`` (``uint8 / 255``): :func:`read_rgb_u8`, converted."""
    return to_float(read_rgb_u8(path, error), dtype)


def checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    """Grey checkerboard ``[3,H,W]`` in [0,1], the usual backdrop that makes transparency visible."""
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // cell + xx // cell) % 2) * 0.25 + 0.6
    return np.repeat(board[None], 3, 0).astype(np.float32)


def flatten_rgba(rgba: torch.Tensor) -> torch.Tensor:
    """RGBA ``[...,4,H,W]`` composited over a checkerboard -> RGB ``[...,3,H,W]``."""
    import torch

    h, w = rgba.shape[-2:]
    board = torch.from_numpy(checkerboard(h, w)).to(rgba)
    alpha = rgba[..., 3:4, :, :]
    return rgba[..., :3, :, :] * alpha + board * (1 - alpha)


def comparison_strip(columns: Sequence[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """Animate columns side by side: each ``[T,3,H,W]`` (or ``[3,H,W]``, held still) -> ``[T,3,H,W']``."""
    import torch

    t = max(c.shape[0] if c.dim() == 4 else 1 for c in columns)
    cols = [c if c.dim() == 4 else c[None].expand(t, -1, -1, -1) for c in columns]
    cols = [c if c.shape[0] == t else c[torch.linspace(0, c.shape[0] - 1, t).round().long()] for c in cols]
    h = cols[0].shape[-2]
    spacer = torch.ones(t, 3, h, gap)
    parts: list[torch.Tensor] = []
    for c in cols:
        parts += [c.float().cpu(), spacer]
    return torch.cat(parts[:-1], dim=-1)


def prediction_animation(inputs_rgb: Sequence[torch.Tensor], frames: torch.Tensor | None, renders: torch.Tensor) -> torch.Tensor:
    """One sample: input image(s) | ground truth | prediction | predicted alpha, as ``[T,3,H,W]``."""
    alpha = renders[:, 3:4].expand(-1, 3, -1, -1)
    cols = list(inputs_rgb)
    if frames is not None:
        cols.append(flatten_rgba(frames))
    cols += [flatten_rgba(renders), alpha]
    return comparison_strip(cols)


def save_animation(path: str | Path, frames: torch.Tensor | np.ndarray, quality: int = 85, method: int = 4) -> Path:
    """Write ``[T,3|4,H,W]`` floats (or ``[T,H,W,C]`` uint8) as an animated WebP (``method``: libwebp's
    effort, 0 fastest .. 6 smallest)."""
    arr = frames if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else to_uint8(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_webp(arr, quality=quality, method=method))
    return path


def save_gif(path: str | Path, frames: torch.Tensor | np.ndarray, frame_ms: int = 120) -> Path:
    """Write ``[T,3|4,H,W]`` floats (or ``[T,H,W,C]`` uint8) as a looping animated GIF: what a browser's
    (and MLflow's artifact viewer's) image tag shows; WebP stays the compact copy."""
    from PIL import Image

    arr = frames if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else to_uint8(frames)
    images = [Image.fromarray(np.ascontiguousarray(f[..., :3])) for f in arr]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def stack_rows(rows: Sequence[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """Stack several ``[T,3,H,W]`` strips vertically (padded to the widest)."""
    import torch

    width = max(r.shape[-1] for r in rows)
    padded = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
    out: list[torch.Tensor] = []
    for r in padded:
        out += [r, torch.ones(r.shape[0], 3, gap, width)]
    return torch.cat(out[:-1], dim=-2)
