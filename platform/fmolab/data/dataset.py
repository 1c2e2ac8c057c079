"""One per-sample code path (:func:`make_item`) behind a torch Dataset and a Ray Data pipeline.

An item is seeded by ``(data.seed, epoch, seq_id)``, so it is the same in both paths, in any worker,
in any order. Corrupt rows are skipped, counted in ``skipped`` and replaced by the next good row.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from fmolab.data.augment import Augment
from fmolab.data.backgrounds import BackgroundAdder
from fmolab.data.formats import InputFormat, assemble, build_format
from fmolab.data.loader import COLUMNS, OPTIONAL, FMOLoader, RowError, Sequence, stable_key
from fmolab.shards import ShardError

log = logging.getLogger("fmolab.data")
MAX_SUBSTITUTES = 32  # consecutive corrupt rows tolerated before an item fails loudly


def item_rng(seed: int, epoch: int, seq_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, stable_key(seq_id)])


def make_item(fmt: InputFormat, rows: list[Sequence], adder, augment: Augment, count: int,
              rng: np.random.Generator) -> dict:
    """The per-sample function: gather layers, augment them, composite into the item dict."""
    layers = fmt.gather(rows, adder, rng, count)
    layers = augment(layers, rng, background=fmt.uses_background)
    return assemble(fmt, layers, rng, augment.noise)


def collate(items: list[dict]) -> dict:
    """Stack tensors on a new batch axis; other values (seq_id) become lists."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return out


def _split_args(cfg, split: str) -> tuple[Path, str]:
    """(dataset folder, loader split): a separate ``data.val`` folder is used whole."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split {split!r}: must be 'train', 'val' or 'all'")
    if split == "val" and cfg.data.val:
        return Path(cfg.data.val), "all"
    return cfg.train_dir, ("all" if split == "train" and cfg.data.val else split)


class FMODataset(Dataset):
    """Items of docs/batches.md, composited on demand."""

    def __init__(self, loader: FMOLoader, fmt: InputFormat, adder: BackgroundAdder | None, augment: Augment,
                 frames_per_sample: int, seed: int = 0, epoch_seed: int = 0):
        self.loader, self.fmt, self.adder, self.augment = loader, fmt, adder, augment
        self.frames_per_sample = frames_per_sample
        self.seed, self.epoch = seed, epoch_seed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def skipped(self) -> dict[str, str]:
        """``{"<shard>#<row>": reason}`` of every row skipped so far (in this process)."""
        bg = self.adder.skipped if self.adder is not None else {}
        return {**self.loader.skipped, **{f"backgrounds/{k}": v for k, v in bg.items()}}

    def _extras(self, i: int, count: int, rng: np.random.Generator) -> list[Sequence]:
        n, out, tries = len(self), [], 0
        while len(out) < count and tries < count * 8 + 8:
            tries += 1
            j = int(rng.integers(n))
            if j == i or self.loader.source(j) in self.loader.skipped:
                continue
            out.append(self.loader.get(j))
        return out

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"item {i} of a dataset of {n}")
        for attempt in range(min(n, MAX_SUBSTITUTES)):
            j = (i + attempt) % n
            if self.loader.source(j) in self.loader.skipped:
                continue
            try:
                row = self.loader.get(j)
                rng = item_rng(self.seed, self.epoch, row.seq_id)
                rows = [row] + self._extras(j, self.fmt.rows_needed(rng) - 1, rng)
                return make_item(self.fmt, rows, self.adder, self.augment, self.frames_per_sample, rng)
            except RowError as exc:
                self.loader._skip(exc.source, exc.reason)
        raise ShardError(f"item {i}: {MAX_SUBSTITUTES} consecutive rows of {self.loader.root} are unusable; "
                         f"skipped so far: {self.skipped}")


def build_dataset(cfg, split: str, epoch_seed: int = 0) -> FMODataset:
    """The dataset of ``split`` ("train", "val" or "all") for a :class:`fmolab.config.Config`."""
    d = cfg.data
    root, loader_split = _split_args(cfg, split)
    loader = FMOLoader(root, split=loader_split, val_fraction=d.val_fraction)
    if len(loader) == 0:
        log.warning("split %r of %s is empty (val_fraction=%s, %d objects)", split, root, d.val_fraction,
                    len(set(loader.object_ids)))
    fmt = build_format(d.format, d)
    adder = (BackgroundAdder(cfg.backgrounds_dir, d.min_contrast, d.max_tries, d.bg_cache_mb)
             if fmt.uses_background else None)
    return FMODataset(loader, fmt, adder, Augment.from_config(d, train=split == "train"), d.frames_per_sample,
                      seed=d.seed, epoch_seed=epoch_seed)


# ---------------------------------------------------------------- Ray Data path


class RayItems:
    """``map_batches`` callable: a batch of shard rows (pyarrow) -> a batch of items (numpy columns).

    Extra objects for ``multi_object`` come from the same batch (the torch path draws from the split).
    """

    def __init__(self, cfg_dict: dict, split: str, epoch_seed: int = 0):
        from fmolab.config import config_from_dict

        cfg = config_from_dict(cfg_dict)
        d = cfg.data
        self.fmt = build_format(d.format, d)
        self.adder = (BackgroundAdder(cfg.backgrounds_dir, d.min_contrast, d.max_tries, d.bg_cache_mb)
                      if self.fmt.uses_background else None)
        self.augment = Augment.from_config(d, train=split == "train")
        self.count, self.seed, self.epoch = d.frames_per_sample, d.seed, epoch_seed
        self.skipped: dict[str, str] = {}

    def __call__(self, batch) -> dict:
        seqs = []
        for r in batch.to_pylist():
            source = f"{Path(r.get('path') or '?').name}:{r.get('seq_id')}"
            try:
                seqs.append(Sequence(r, source))
            except RowError as exc:
                self._skip(exc)
        items = []
        for k, row in enumerate(seqs):
            rng = item_rng(self.seed, self.epoch, row.seq_id)
            others = [s for j, s in enumerate(seqs) if j != k]
            n_extra = min(self.fmt.rows_needed(rng) - 1, len(others))
            extras = [others[j] for j in rng.choice(len(others), n_extra, replace=False)] if n_extra > 0 else []
            try:
                items.append(make_item(self.fmt, [row] + extras, self.adder, self.augment, self.count, rng))
            except RowError as exc:
                self._skip(exc)
        if not items:
            return {}
        out = collate(items)
        return {k: (v.numpy() if isinstance(v, torch.Tensor) else np.array(v, dtype=object)) for k, v in out.items()}

    def _skip(self, exc: RowError) -> None:
        log.warning("skipping row %s: %s", exc.source, exc.reason)
        self.skipped[exc.source] = exc.reason


def ray_dataset(cfg, split: str, epoch_seed: int = 0, batch_size: int = 16, concurrency: int = 1,
                num_cpus: float = 0.25):
    """Shards -> ``read_parquet`` -> split filter -> ``map_batches(RayItems)``: a ``ray.data.Dataset`` of items.

    Feed it to Ray Train and read it with ``get_dataset_shard(name).iter_torch_batches(collate_fn=ray_collate)``.
    Fractional CPUs keep it from starving Train workers on small machines.
    """
    import ray.data

    from fmolab.config import to_dict

    root, loader_split = _split_args(cfg, split)
    loader = FMOLoader(root, split="all", val_fraction=cfg.data.val_fraction)  # shard list + held-out objects
    held_out = loader.val_objects
    # Optional columns only if some shard has them (Ray fills nulls for the shards that do not).
    names = set().union(*(pq.read_schema(f).names for f in loader.files))
    columns = COLUMNS + [c for c in OPTIONAL if c in names]
    ds = ray.data.read_parquet([str(f) for f in loader.files], columns=columns, include_paths=True,
                               ray_remote_args={"num_cpus": num_cpus})
    if loader_split == "train":
        ds = ds.filter(lambda r: r["object_id"] not in held_out, num_cpus=num_cpus)
    elif loader_split == "val":
        ds = ds.filter(lambda r: r["object_id"] in held_out, num_cpus=num_cpus)
    return ds.map_batches(RayItems, fn_constructor_kwargs=dict(cfg_dict=to_dict(cfg), split=split,
                                                               epoch_seed=epoch_seed),
                          batch_size=batch_size, batch_format="pyarrow", concurrency=concurrency,
                          num_cpus=num_cpus)


def ray_collate(batch: dict) -> dict:
    """``iter_torch_batches`` collate_fn: numpy columns -> the same dict as :func:`collate`."""
    return {k: (list(v) if v.dtype == object else torch.from_numpy(np.ascontiguousarray(v))) for k, v in batch.items()}
