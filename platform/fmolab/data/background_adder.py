"""Background adder: random consecutive frames of background clips, with a minimum FMO contrast.

Decoded clips are cached (resized once to cover the FMO resolution), so a sample costs a crop.
Validation never sees a training background: a held-out fraction of the clips (chosen by clip id
hash, like the objects) serves validation, or a separate folder does (``data.val_backgrounds``; the
thesis validated on OTB clips after training on VOT ones).
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from fmolab import storage
from fmolab.data.loader import val_objects
from fmolab.data.lru import ByteLRU
from fmolab.media.codecs import decode_webp
from fmolab.shard_reader import ShardReader
from fmolab.shards import ShardError

log = logging.getLogger("fmolab.data")

HOW_TO = ("make one with `fmolab render` (it writes <dataset>/backgrounds), point data.backgrounds at a "
          "folder of background shards, or for tests call fmolab.data.synthetic.write_synthetic_dataset(root)")


def contrast(blur: np.ndarray, background: np.ndarray, stride: int = 4) -> float:
    """Mean |fmo_rgb - bg_rgb| in [0, 1], weighted by the blur's alpha (on a pixel grid, for speed)."""
    return mean_contrast(contrast_weights(blur[None], stride), background[None], stride)


def contrast_weights(blurs: np.ndarray, stride: int = 4) -> np.ndarray:
    """What :func:`mean_contrast` needs of ``k`` RGBA blurs ``[k,H,W,4]``, computed once for every draw
    (and kept with a cached row): float32 ``[k,h,w,4]`` on the grid, RGB then each pixel's weight
    ``alpha / (3 * 255 * k * sum(alpha))`` (0 throughout a blur with no alpha), so that one weighted
    sum gives the mean over the ``k`` blurs of their contrasts."""
    b = np.asarray(blurs)[:, ::stride, ::stride].astype(np.float32)
    alpha = b[..., 3]
    total = alpha.sum((1, 2), keepdims=True)
    alpha *= np.where(total > 0, 1 / (3 * 255 * len(b) * np.maximum(total, 1)), 0).astype(np.float32)
    return b


def mean_contrast(weights: np.ndarray, backgrounds: np.ndarray, stride: int = 4) -> float:
    """The mean over ``k`` blurs (their :func:`contrast_weights`) of each one's :func:`contrast` on its
    background ``[k,H,W,3]`` uint8: one weighted sum (a few array operations: it runs for every draw)."""
    d = weights[..., :3] - backgrounds[:, ::stride, ::stride]
    np.abs(d, out=d)
    d *= weights[..., 3:]
    return float(d.sum())


def cover(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``[F,h,w,3]`` so it covers ``height x width`` keeping aspect (no-op when it already fits)."""
    h, w = frames.shape[1:3]
    if h == height and w == width:
        return frames
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


class BackgroundAdder:
    """Picks ``k`` consecutive background frames for ``k`` blurs, retrying for contrast."""

    def __init__(self, root, min_contrast: float = 0.1, max_tries: int = 5, cache_mb: float = 512,
                 split: str = "all", val_fraction: float = 0.0):
        self.root = storage.normalize(root)
        try:
            reader = ShardReader(self.root)
        except ShardError as exc:
            raise ShardError(f"no background dataset at {self.root} ({exc}); {HOW_TO}") from exc
        ids: dict[str, list] = {}
        for f in reader.files:
            pf = reader.parquet(f)
            if "clip_id" in pf.schema_arrow.names:
                ids[f] = pf.read(columns=["clip_id"]).column("clip_id").to_pylist()
        self.reader = reader
        clips = {i: str(ids[r.file][r.row]) for i, r in enumerate(reader.refs) if r.file in ids}
        if not clips:
            raise ShardError(f"{self.root} holds no background clips (column clip_id); {HOW_TO}")
        held = val_objects(clips.values(), val_fraction) if split != "all" else set()
        if split == "all" or not held:
            self.clips = sorted(clips)
            if split != "all" and val_fraction > 0:
                log.warning("%s has %d background clip(s): too few to hold any out, train and val share them",
                            self.root, len(set(clips.values())))
        else:
            self.clips = sorted(i for i, c in clips.items() if (c in held) == (split == "val"))
        self.min_contrast = min_contrast
        self.max_tries = max(1, max_tries)
        self.skipped: dict[str, str] = dict(reader.bad_shards)
        self._cache = ByteLRU(cache_mb * 2**20)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = self._cache.empty()  # decoded pixels are rebuilt where the adder lands
        return state

    def clip(self, c: int, height: int, width: int) -> np.ndarray | None:
        """Frames ``[F,H',W',3]`` uint8 of clip ``c`` covering ``height x width``; None if corrupt."""
        key = (c, height, width)
        frames = self._cache.get(key)
        if frames is not None:
            return frames
        ref = self.reader.refs[c]
        source = f"{storage.basename(ref.file)}#{ref.row}"
        if source in self.skipped:
            return None
        try:
            frames = cover(decode_webp(self.reader.row(c)["frames"], "RGB", error=ShardError), height, width)
        except Exception as exc:
            log.warning("skipping background %s: %s", source, exc)
            self.skipped[source] = str(exc)
            return None
        self._cache.put(key, frames, frames.nbytes)
        return frames

    def _draw(self, k: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray | None:
        c = self.clips[int(rng.integers(len(self.clips)))]
        frames = self.clip(c, height, width)
        if frames is None or len(frames) < k:
            return None
        s = int(rng.integers(len(frames) - k + 1))
        y = int(rng.integers(frames.shape[1] - height + 1))
        x = int(rng.integers(frames.shape[2] - width + 1))
        return frames[s:s + k, y:y + height, x:x + width]

    @property
    def checks_contrast(self) -> bool:
        """Whether drawn backgrounds are tested for contrast (then :meth:`sample` needs the blurs' weights)."""
        return self.min_contrast > 0

    def sample(self, blurs: np.ndarray, rng: np.random.Generator, weights: np.ndarray | None = None) -> np.ndarray:
        """Background frames ``[k,H,W,3]`` uint8 for ``k`` RGBA blurs ``[k,H,W,4]`` (frame j behind blur j).

        Draws until the mean contrast reaches ``min_contrast`` or ``max_tries`` draws, keeping the best.
        ``weights``: the blurs' :func:`contrast_weights`, when the caller keeps them.
        """
        k = len(blurs)
        height, width = blurs[0].shape[:2]
        if self.checks_contrast and weights is None:
            weights = contrast_weights(blurs)
        best, best_c, tries = None, -1.0, 0
        for _ in range(self.max_tries * 4):  # corrupt/short clips do not count as tries
            bg = self._draw(k, height, width, rng)
            if bg is None:
                continue
            tries += 1
            c = mean_contrast(weights, bg) if self.checks_contrast else 1.0
            if c > best_c:
                best, best_c = bg, c
            if c >= self.min_contrast or tries >= self.max_tries:
                break
        if best is None:
            raise ShardError(f"no usable background clip with >= {k} frames under {self.root} "
                             f"(skipped: {self.skipped})")
        return best


def build_adder(cfg, split: str) -> BackgroundAdder:
    """The background adder of ``split`` ("train", "val" or "all") for a :class:`fmolab.config.Config`."""
    d = cfg.data
    if d.val_backgrounds:  # a separate validation folder: each split uses its folder whole
        root, split = (d.val_backgrounds if split == "val" else cfg.backgrounds_dir), "all"
    else:
        root = cfg.backgrounds_dir
    return BackgroundAdder(root, d.min_contrast, d.max_tries, d.bg_cache_mb, split=split,
                           val_fraction=d.bg_val_fraction)
