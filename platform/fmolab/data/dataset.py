"""One per-sample code path behind a torch Dataset and a Ray Data pipeline
(:mod:`fmolab.data.ray_pipeline`): :func:`gather_item` draws and gathers each item on its own,
:func:`make_batch` augments and composites a whole batch of them in one set of array operations.

An item is seeded by ``(data.seed, epoch, seq_id)``, so it is the same in both paths, in any worker,
in any order, and in any batch. Corrupt rows are skipped, counted in ``skipped`` and replaced by the
next good row.
"""
from __future__ import annotations

import hashlib
import logging
import threading

import numpy as np
import torch
from torch.utils.data import Dataset

from fmolab.data.augment import Augment
from fmolab.data.background_adder import BackgroundAdder, build_adder
from fmolab.data.formats import InputFormat, assemble, build_format, noise_draws
from fmolab.data.loader import FMOLoader, RowError, Sequence
from fmolab.shards import ShardError

log = logging.getLogger("fmolab.data")
MAX_SUBSTITUTES = 32  # consecutive corrupt rows tolerated before an item fails loudly


_local = threading.local()  # each thread's item generator (Ray Data, prefetch threads, validation)


def item_rng(seed: int, epoch: int, seq_id: str) -> np.random.Generator:
    """The generator of item ``(seed, epoch, seq_id)``: PCG64 with its 128-bit state and increment
    taken from a BLAKE2b hash of the three. It is this thread's one generator, reseeded: valid until
    the next call in the thread (every item is drawn whole before the next starts). default_rng with
    its SeedSequence cost 17 us an item, ~8% of a small-scale batch; this costs 3."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{seq_id}".encode(), digest_size=32).digest()
    gen = getattr(_local, "gen", None)
    if gen is None:
        gen = _local.gen = np.random.Generator(np.random.PCG64())
    gen.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                               "state": {"state": int.from_bytes(digest[:16], "little"),
                                         "inc": int.from_bytes(digest[16:], "little") | 1}}  # odd, as PCG needs
    return gen


def gather_item(fmt: InputFormat, rows: list[Sequence], adder, augment: Augment, count: int,
                rng: np.random.Generator) -> dict:
    """The per-sample part: gather layers, draw augmentation and noise (in that order), flip.
    Raises :class:`RowError` for an unusable row; what follows cannot fail on data."""
    layers = fmt.gather(rows, adder, rng, count)
    draw = augment.draw(rng)
    noises = noise_draws(layers, rng, augment.noise)
    return {"layers": augment.orient(layers, draw), "draw": draw, "noises": noises}


def make_batch(fmt: InputFormat, gathered: list[dict], augment: Augment) -> dict:
    """Items of :func:`gather_item` -> the batch of docs/batches.md: their uint8 layers stacked, then
    converted, jittered and composited once for the whole batch."""
    layers = collate([g["layers"] for g in gathered])
    layers = augment.colour(layers, [g["draw"] for g in gathered], background=fmt.uses_background)
    return assemble(fmt, layers, [g["noises"] for g in gathered], augment.noise)


def unbatch(batch: dict, i: int = 0) -> dict:
    return {k: v[i] for k, v in batch.items()}


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, keeping channels-last memory (uint8 frames, converted layers) without a transposing copy."""
    if values[0].dim() >= 3 and values[0].movedim(-3, -1).is_contiguous():
        return torch.stack([v.movedim(-3, -1) for v in values]).movedim(-1, -3)
    return torch.stack(values)


def collate(items: list[dict]) -> dict:
    """Stack tensors on a new batch axis; other values (seq_id) become lists."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = _stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return out


def to_device(batch: dict, device: torch.device | str = "cpu", non_blocking: bool = True) -> dict:
    """Move an item or batch to ``device``; uint8 image layers (the ground-truth frames) become float32
    in [0, 1] *there*, after the copy (docs/batches.md). Every consumer of items calls this."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=non_blocking)
            if v.dtype == torch.uint8:
                v = v.float().mul_(1 / 255)
        out[k] = v
    return out


def split_args(cfg, split: str) -> tuple[str, str]:
    """(dataset folder, loader split): a separate ``data.val`` folder is used whole."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split {split!r}: must be 'train', 'val' or 'all'")
    if split == "val" and cfg.data.val:
        return cfg.data.val, "all"
    return cfg.train_dir, ("all" if split == "train" and cfg.data.val else split)


class FMODataset(Dataset):
    """Items of docs/batches.md, composited on demand."""

    def __init__(self, loader: FMOLoader, fmt: InputFormat, adder: BackgroundAdder | None, augment: Augment,
                 frames_per_sample: int, seed: int = 0, epoch_seed: int = 0):
        self.loader, self.fmt, self.adder, self.augment = loader, fmt, adder, augment
        self.frames_per_sample = frames_per_sample
        self.seed, self.epoch = seed, epoch_seed
        self.skipped_elsewhere: dict[str, str] = {}  # rows skipped by a child process making this dataset's batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def skipped(self) -> dict[str, str]:
        """``{"<shard>#<row>": reason}`` of every row skipped so far (in this process)."""
        bg = self.adder.skipped if self.adder is not None else {}
        return {**self.loader.skipped, **{f"backgrounds/{k}": v for k, v in bg.items()}, **self.skipped_elsewhere}

    def _extras(self, i: int, count: int, rng: np.random.Generator) -> list[Sequence]:
        n, out, tries = len(self), [], 0
        while len(out) < count and tries < count * 8 + 8:
            tries += 1
            j = int(rng.integers(n))
            if j == i or (self.loader.skipped and self.loader.source(j) in self.loader.skipped):
                continue
            out.append(self.loader.get(j))
        return out

    def _gathered(self, i: int) -> dict:
        """Item ``i`` gathered (:func:`gather_item`), or the next usable row's when ``i``'s is corrupt."""
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"item {i} of a dataset of {n}")
        for attempt in range(min(n, MAX_SUBSTITUTES)):
            j = (i + attempt) % n
            if self.loader.skipped and self.loader.source(j) in self.loader.skipped:
                continue
            try:
                row = self.loader.get(j)
                rng = item_rng(self.seed, self.epoch, row.seq_id)
                rows = [row] + self._extras(j, self.fmt.rows_needed(rng) - 1, rng)
                return gather_item(self.fmt, rows, self.adder, self.augment, self.frames_per_sample, rng)
            except RowError as exc:
                self.loader._skip(exc.source, exc.reason)
        raise ShardError(f"item {i}: {MAX_SUBSTITUTES} consecutive rows of {self.loader.root} are unusable; "
                         f"skipped so far: {self.skipped}")

    def __getitem__(self, i: int) -> dict:
        return unbatch(self.batch([i]))

    def batch(self, indices) -> dict:
        """The batch of items ``indices`` (what :func:`collate` of them gives, made in one pass)."""
        return make_batch(self.fmt, [self._gathered(int(i)) for i in indices], self.augment)


def build_dataset(cfg, split: str, epoch_seed: int = 0) -> FMODataset:
    """The dataset of ``split`` ("train", "val" or "all") for a :class:`fmolab.config.Config`."""
    d = cfg.data
    root, loader_split = split_args(cfg, split)
    loader = FMOLoader(root, split=loader_split, val_fraction=d.val_fraction, cache_mb=d.row_cache_mb)
    if len(loader) == 0:
        log.warning("split %r of %s is empty (val_fraction=%s, %d objects)", split, root, d.val_fraction,
                    len(set(loader.object_ids)))
    fmt = build_format(d.val_format if split == "val" and d.val_format else d.format, d)
    adder = build_adder(cfg, split) if fmt.uses_background else None
    return FMODataset(loader, fmt, adder, Augment.from_config(d, train=split == "train"), d.frames_per_sample,
                      seed=d.seed, epoch_seed=epoch_seed)
