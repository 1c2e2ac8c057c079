"""Input formats: how sequence rows + background frames become one item (docs/batches.md).

A format only *gathers* layers (blurs, backgrounds, frames, spans, times), as uint8 ``[..., H, W, C]``
arrays where it can (flips are then free views) or float ``[..., C, H, W]`` tensors; the shared
:func:`assemble` composites them with :func:`fmolab.compose.composite`, so every format
obeys ``image = blur_rgb * alpha + bg * (1 - alpha)`` exactly, and augmentation (applied to layers
between the two) keeps that identity.

The ground-truth frames (:data:`UINT8_LAYERS`) are the biggest tensors of an item (8 RGBA frames are
4x the input images) and nothing on the CPU computes with them, so they stay uint8 until
:func:`fmolab.data.to_device` scales them on the device: 4x less to convert, batch, ship through
Ray's object store and copy to a GPU.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np
import torch

from fmolab.compose import composite, over
from fmolab.data.background_adder import contrast_weights
from fmolab.registry import Registry, SpecError, parse_spec
from fmolab.data.loader import Sequence, frame_indices

FORMATS: Registry = Registry("input format")
UINT8_LAYERS = ("frames", "object_frames")  # items carry these as uint8 [..., 4, H, W] (channels-last memory)


def to_float(x) -> torch.Tensor:
    """uint8 ``[..., H, W, C]`` (array or tensor) -> float32 ``[..., C, H, W]`` in [0, 1]; float passes.

    The result keeps channels-last strides: making it contiguous would cost a second full copy.
    """
    if isinstance(x, torch.Tensor):  # torch's cast and in-place scale (the same values as numpy's, sooner)
        return x.movedim(-1, -3).float().mul_(1 / 255) if x.dtype == torch.uint8 else x
    y = x.astype(np.float32)  # an array may be read-only: torch would warn on it
    y *= np.float32(1 / 255)
    return torch.from_numpy(y).movedim(-1, -3)


def to_chw(x) -> torch.Tensor:
    """uint8 ``[..., H, W, C]`` (array or tensor) -> uint8 ``[..., C, H, W]`` view, no copy."""
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(x)).movedim(-1, -3)


def sub_frame_times(idx: np.ndarray, num_frames: int) -> torch.Tensor:
    """``frame_times(num_frames)[idx]``, computed for the few indices only (the same float32 values)."""
    return torch.from_numpy((idx.astype(np.float32) + np.float32(0.5)) / np.float32(num_frames))


@functools.lru_cache(maxsize=64)  # one or two arguments per dataset, asked once per item
def sample_times(num_frames: int, count: int) -> tuple[np.ndarray, torch.Tensor]:
    """``count`` sub-frames of ``num_frames``: their indices (:func:`frame_indices`) and times. Shared by
    every item: never changed in place (batching stacks them into new tensors)."""
    idx = frame_indices(num_frames, count)
    return idx, sub_frame_times(idx, num_frames)


def over_u8(top: np.ndarray, bottom: np.ndarray, box) -> None:
    """``bottom = over(top, bottom)`` in place on uint8 RGBA ``[..., H, W, 4]``, only inside ``top``'s
    content ``box`` [y0, x0, y1, x1] (outside it ``top`` is transparent, so ``bottom`` is the answer)."""
    y0, x0, y1, x1 = box if box is not None else (0, 0, top.shape[-3], top.shape[-2])
    t = to_float(top[..., y0:y1, x0:x1, :])
    b = to_float(bottom[..., y0:y1, x0:x1, :])
    bottom[..., y0:y1, x0:x1, :] = (over(t, b).movedim(-3, -1) * 255 + 0.5).to(torch.uint8).numpy()


class InputFormat:
    """Base: ``n_images`` input images, stacked into ``in_channels`` channels.

    What a format asks of real footage is read off it, never off its name: ``n_images`` consecutive
    video frames (2: frames k-1 and k), plus the clean background when ``background_input``; at most
    ``max_objects`` objects per image.
    """

    n_images = 1
    in_channels = 6
    blur_names: tuple[str, ...] = ("full",)
    uses_background = True  # blurs are composited on background frames (False: on black)
    background_input = False  # the clean background is an input channel group
    max_objects = 1

    def __init__(self, contrastive: bool = False):
        if contrastive and not self.uses_background:
            raise SpecError(f"{type(self).__name__}: contrastive needs a background to vary, this format has none")
        self.contrastive = bool(contrastive)

    def rows_needed(self, rng: np.random.Generator) -> int:
        return 1

    def inputs(self, images: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
        """The encoder's input from images and backgrounds ``[..., K, 3, H, W]`` (an item, or a batch)."""
        return images.flatten(-4, -3)  # [..., K,3,H,W] -> [..., 3K,H,W]

    def _backgrounds(self, adder, blurs: np.ndarray, rng, shape, weights=None) -> np.ndarray:
        if not self.uses_background:
            return np.zeros(shape, dtype=np.uint8)
        return adder.sample(blurs, rng, weights)

    def _spans(self, row: Sequence) -> torch.Tensor:
        """The row's blur spans ``[n_images, 2]``, kept with the row (shared by its items, like times)."""
        return row.memo(("spans", self.blur_names), lambda: torch.tensor(
            [row.span(n) for n in self.blur_names], dtype=torch.float32))

    def gather(self, rows: list[Sequence], adder, rng: np.random.Generator, count: int) -> dict:
        row = rows[0]
        idx, times = sample_times(row.num_frames, count)
        blurs = row.blurs(self.blur_names)
        weights = None  # the blurs' contrast weights, kept with the row (drawing a background needs them)
        if self.uses_background and adder.checks_contrast:
            weights = row.memo(("contrast", self.blur_names), lambda: contrast_weights(blurs))
        shape = (self.n_images, row.height, row.width, 3)
        layers = dict(
            blurs=blurs,
            backgrounds=self._backgrounds(adder, blurs, rng, shape, weights),
            spans=self._spans(row),
            times=times,
            frames=row.frames(idx),
            seq_id=row.seq_id,
        )
        if self.contrastive:
            layers["contrast_backgrounds"] = self._backgrounds(adder, blurs, rng, shape, weights)
        return layers


@FORMATS.register("background_blur")
class BackgroundBlur(InputFormat):
    """DeFMO: the full blur on a background frame, plus that clean background (C = 6)."""

    background_input = True

    def inputs(self, images, backgrounds):
        return torch.cat([images[..., 0, :, :, :], backgrounds[..., 0, :, :, :]], dim=-3)


@FORMATS.register("double_blur")
class DoubleBlur(InputFormat):
    """First-half blur on background frame k, second-half blur on frame k+1; no clean background (C = 6)."""

    n_images = 2
    blur_names = ("first", "second")


@FORMATS.register("single_blur")
class SingleBlur(InputFormat):
    """The full blur's RGB over black, alpha not given (C = 3)."""

    in_channels = 3
    uses_background = False


@FORMATS.register("multi_object")
class MultiObject(DoubleBlur):
    """Double blur with 1..max FMOs from different rows; later objects are drawn over earlier ones.

    The combined blur is ``over`` of the per-object blurs (exact where objects do not overlap).
    """

    def __init__(self, min_objects: int = 1, max_objects: int = 3, contrastive: bool = False):
        super().__init__(contrastive)
        if not 1 <= min_objects <= max_objects:
            raise SpecError(f"multi_object: need 1 <= min_objects ({min_objects}) <= max_objects ({max_objects})")
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)

    def rows_needed(self, rng):
        return int(rng.integers(self.min_objects, self.max_objects + 1))

    def gather(self, rows, adder, rng, count):
        base = rows[0]
        times = sample_times(base.num_frames, count)[1]
        m = self.max_objects
        object_frames = np.zeros((m, count, base.height, base.width, 4), np.uint8)
        for o, row in enumerate(rows):
            if (row.height, row.width) != (base.height, base.width):
                raise ValueError(f"multi_object: {row.source} is {row.width}x{row.height}, "
                                 f"{base.source} is {base.width}x{base.height}")
            # the same times in every row, whatever its frame count
            ridx = np.minimum((times.numpy() * row.num_frames).astype(np.int64), row.num_frames - 1)
            object_frames[o] = row.frames(ridx)
            b = row.blurs(self.blur_names)
            if o == 0:
                blurs, frames = b, object_frames[0].copy()
            else:  # later objects over earlier ones, computed inside each object's box only
                over_u8(b, blurs, row.box)
                over_u8(object_frames[o], frames, row.box)
        valid = torch.zeros(m, dtype=torch.bool)
        valid[: len(rows)] = True
        contrast_src = blurs  # contrast on what is seen
        shape = (2, base.height, base.width, 3)
        layers = dict(
            blurs=blurs,
            backgrounds=self._backgrounds(adder, contrast_src, rng, shape),
            spans=self._spans(base),
            times=times,
            frames=frames,
            object_frames=object_frames,  # uint8 [M,T,H,W,4]; padding slots stay transparent
            object_valid=valid,
            seq_id="+".join(r.seq_id for r in rows),
        )
        if self.contrastive:
            layers["contrast_backgrounds"] = self._backgrounds(adder, contrast_src, rng, shape)
        return layers


def build_format(spec: str, data_cfg=None) -> InputFormat:
    """Build a format from its spec; ``data_cfg`` supplies defaults the spec leaves out (objects_per_image)."""
    name, kwargs = parse_spec(spec)
    extra = {}
    params = inspect.signature(FORMATS.get(name)).parameters
    if data_cfg is not None and "min_objects" in params:
        extra = dict(min_objects=data_cfg.objects_per_image[0], max_objects=data_cfg.objects_per_image[1])
    return FORMATS.build(spec, **extra)


def in_channels(format_spec: str) -> int:
    """Encoder input channels for a format spec (what the model builder needs)."""
    return build_format(format_spec).in_channels


def noise_draws(layers: dict, rng: np.random.Generator, noise: float) -> list[np.ndarray]:
    """One item's sensor noise, drawn after its other choices: one ``[K, 3, H, W]`` array for its images
    and one for its contrast images, if any (none when ``noise`` is 0)."""
    if noise <= 0:
        return []
    blurs = layers["blurs"]
    k, (h, w) = blurs.shape[0], (blurs.shape[1:3] if blurs.dtype in (np.uint8, torch.uint8) else blurs.shape[-2:])
    return [rng.standard_normal((k, 3, h, w), dtype=np.float32)
            for _ in range(1 + ("contrast_backgrounds" in layers))]


def assemble(fmt: InputFormat, layers: dict, noises: list[list[np.ndarray]], noise: float = 0.0) -> dict:
    """Composite a batch's float layers into the batch of docs/batches.md (``noises``: each item's
    :func:`noise_draws`, added to the images only)."""
    batch = {k: v for k, v in layers.items() if k != "contrast_backgrounds"}

    def images_of(backgrounds: torch.Tensor, which: int) -> torch.Tensor:
        blurs = layers["blurs"]  # images written contiguous: the inputs are then a view of them, not a copy
        images = composite(blurs, backgrounds, out=torch.empty((*blurs.shape[:-3], 3, *blurs.shape[-2:])))
        if noise > 0:
            drawn = torch.from_numpy(np.stack([n[which] for n in noises]))
            images = (images + noise * drawn).clamp_(0, 1)
        return images

    batch["images"] = images_of(layers["backgrounds"], 0)
    batch["inputs"] = fmt.inputs(batch["images"], layers["backgrounds"])
    if "contrast_backgrounds" in layers:
        cb = layers["contrast_backgrounds"]
        batch["contrast_inputs"] = fmt.inputs(images_of(cb, 1), cb)
    return batch
