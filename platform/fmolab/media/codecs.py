"""Image codecs: WebP in and out, what shards, previews and animations store. Pillow's libwebp; the
alpha channel is always lossless (lossy alpha erases faint blur tails), frames of an animation share
one file. Decoding can stop at the frames asked for (an animation is read front to back)."""
from __future__ import annotations

import io
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image


def encode_webp(images: np.ndarray, quality: int = 80, method: int = 4, lossless: bool = False,
                frame_ms: int = 40) -> bytes:
    """Encode ``[H,W,C]`` (one image) or ``[N,H,W,C]`` (animation, ``frame_ms`` per frame) uint8
    RGB/RGBA as WebP bytes."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"encode_webp wants uint8 pixels, got {images.dtype}")
    frames = images[None] if images.ndim == 3 else images
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"encode_webp wants [H,W,3|4] or [N,H,W,3|4], got shape {images.shape}")
    mode = "RGBA" if frames.shape[-1] == 4 else "RGB"
    pil = [Image.fromarray(f, mode) for f in frames]
    buf = io.BytesIO()
    options: dict[str, Any] = dict(format="WEBP", quality=quality, method=method, lossless=lossless)
    if len(pil) > 1:
        # minimize_size off: keyframe search costs much time for little gain on short clips.
        options.update(save_all=True, append_images=pil[1:], duration=max(1, round(frame_ms)), loop=0,
                       minimize_size=False)
    pil[0].save(buf, **options)
    return buf.getvalue()


def decode_webp(data: bytes, mode: str = "RGBA", frames: Iterable[int] | None = None,
                error: Callable[[str], Exception] = ValueError, what: str = "WebP") -> np.ndarray:
    """WebP bytes -> ``[N,H,W,C]`` uint8: every frame (N = 1 for a still image), or only ``frames``
    (ascending indices: forward seeks only advance the decoder). Undecodable data raises ``error``
    with a message naming ``what`` and the size."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            n = getattr(img, "n_frames", 1)
            wanted = range(n) if frames is None else list(frames)
            if len(wanted) and max(wanted) >= n:
                raise ValueError(f"frame {max(wanted)} asked, the WebP holds {n}")
            out = []
            for k in wanted:
                if k != img.tell():
                    img.seek(k)
                out.append(np.asarray(img if img.mode == mode else img.convert(mode)))
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise error(f"undecodable {what} ({len(data)} bytes): {exc}") from exc
    return np.stack(out)
